"""End to end: the discordant-imaging scenario and the rising-PSA-with-stable-bone-scan pitfall
survive when the imaging reports arrive as text only (no conclusionCode), as radiology reports
usually do (issue 8). Each case is replayed with its reports re-encoded as conclusion text, as
presentedForm text/plain and as presentedForm HTML, and must give the outcome of the coded case."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from e2e_support import CASES_DIR, all_cases, check

from cds_service import replay

# report code -> text a radiologist would write for the same coded conclusion
TEXTS = {
    "breast-mets-ct-positive-bone-scan-negative": {
        "72254-6": "New lytic lesions in T10 and L2, suspicious for osseous metastases.",
        "78306": "No scintigraphic evidence of osseous metastatic disease.",
    },
    "prostate-mets-rising-psa-stable-bone-scan": {
        "78306": "Stable osseous metastases, no new lesions.",
    },
}
CASES = [
    "breast-ct-positive-bone-scan-negative-bone-scan",
    "breast-ct-positive-bone-scan-negative-ct-cap",
    "prostate-mets-discordant-bone-scan",
]


def _encode(report: dict[str, Any], sentence: str, how: str) -> None:
    report.pop("conclusionCode", None)
    report.pop("conclusion", None)
    if how == "conclusion":
        report["conclusion"] = sentence
        return
    body, media = (
        (f"FINDINGS: see below.\nIMPRESSION: {sentence}\n", "text/plain")
        if how == "plain"
        else (f"<div><p><b>Impression</b></p><p>{sentence}</p></div>", "text/html")
    )
    report["presentedForm"] = [{"contentType": media, "data": base64.b64encode(body.encode()).decode()}]


def _text_only(bundle: dict[str, Any], how: str) -> int:
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    texts = TEXTS[patient["id"]]
    changed = 0
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] != "DiagnosticReport":
            continue
        codes = {c.get("code") for c in res["code"].get("coding", ())}
        for code, sentence in texts.items():
            if code in codes:
                _encode(res, sentence, how)
                changed += 1
    return changed


def _case(name: str) -> dict[str, Any]:
    return next(c for c in all_cases() if c["name"] == name)


@pytest.mark.parametrize("how", ["conclusion", "plain", "html"])
@pytest.mark.parametrize("name", CASES)
def test_text_only_reports_give_the_coded_outcome(name, how, e2e):
    case = _case(name)
    hook = case["hooks"][0]
    rp = replay.load(CASES_DIR / f"{name}.json")
    rp.hook = hook
    rp.bundle = copy.deepcopy(rp.bundle)
    assert _text_only(rp.bundle, how) == len(TEXTS[rp.patient_id])
    ids = {n: o["id"] for n, o in zip(case["orders"], rp.orders, strict=True)}
    status, body, _ = replay.run(rp, e2e.app(rp.as_of))
    check(case, ids, status, body, hook=hook)
    if body["cards"]:  # every card that quotes a report says it was read from its text
        details = "\n".join(c.get("detail", "") for c in body["cards"])
        assert "read from the" in details and "report of" in details
