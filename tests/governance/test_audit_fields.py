"""The audit row of a hook call carries the governance fields: imaging orders in focus, facts the
cards asked for, kinds of unreadable or missing data, imaging order codes outside the catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cds_service import replay
from cds_service.bundle_search import BundleStore
from cds_service.config import Settings

REPO = Path(__file__).resolve().parents[2]
ORDERS = REPO / "fixtures" / "orders"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(feedback_db=tmp_path_factory.mktemp("audit") / "state.sqlite3", cache_dir=None,
                    strict_responses=True)


def call(settings: Settings, case: str, hook: str = "order-select", drop: tuple[str, ...] = (),
         extra_orders: tuple[str, ...] = (), select_first_only: bool = False,
         orders_dir: Path = ORDERS) -> dict[str, Any]:
    rp = replay.load(REPO / "fixtures" / "cases" / f"{case}.json")
    rp.hook = hook
    rp.orders = [*rp.orders, *(json.loads((orders_dir / f"{o}.json").read_text()) for o in extra_orders)]
    transport = replay.InProcess(rp.as_of, settings=settings)
    service = replay.SERVICE_IDS[hook]
    request = replay.build_request(rp)
    if select_first_only:
        request["context"]["selections"] = request["context"]["selections"][:1]
    replay.fill_prefetch(request, replay.discovery_templates(transport, service), BundleStore(rp.bundle))
    for key in drop:
        del request["prefetch"][key]
    status, body = transport.post(f"/cds-services/{service}", request)
    assert status == 200, body
    store = transport.client.application.extensions["cds"].feedback
    row = next(r for r in store.audit_rows() if r["hook_instance"] == request["hookInstance"])
    return {k: json.loads(row[k]) if k in ("missing_facts", "unreadable", "unknown_codes") else row[k]
            for k in ("orders", "missing_facts", "unreadable", "unknown_codes")}


def test_a_complete_chart_has_nothing_missing_or_unreadable(settings):
    row = call(settings, "breast-early-stage-bone-scan")
    assert row == {"orders": 1, "missing_facts": [], "unreadable": [], "unknown_codes": []}


def test_the_open_question_card_asks_for_the_t_category(settings):
    row = call(settings, "prostate-new-diagnosis-t-category-unknown-bone-scan")
    assert row["missing_facts"] == ["t-category"]


def test_the_insufficient_data_card_names_the_failed_requirement(settings):
    row = call(settings, "prostate-cancer-no-other-data-psma-pet")
    assert "risk-group" in row["missing_facts"]


def test_data_not_sent_and_not_fetchable_is_not_retrieved(settings):
    row = call(settings, "breast-early-stage-bone-scan", drop=("procedures", "medications"))
    assert set(row["unreadable"]) == {"not-retrieved:procedures", "not-retrieved:medications"}
    assert row["missing_facts"] == []


def test_orders_count_imaging_in_focus_only_and_unknown_codes_are_codes(settings):
    lab = call(settings, "breast-early-stage-bone-scan", hook="order-sign",
               extra_orders=("lab-psa-nonimaging",))
    assert lab["orders"] == 1 and lab["unknown_codes"] == []  # a lab order is not imaging, not unknown
    two = call(settings, "prostate-mets-adt-rising-psa-select-one-of-two", select_first_only=True)
    assert two["orders"] == 1
    both = call(settings, "prostate-mets-adt-rising-psa-select-one-of-two", hook="order-sign")
    assert both["orders"] == 2


def test_an_imaging_order_outside_the_catalog_is_an_unknown_code(settings, tmp_path):
    unlisted = {"resourceType": "ServiceRequest", "id": "unlisted", "status": "draft", "intent": "order",
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "78999",
                                     "display": "Unlisted nuclear medicine procedure"}],
                         "text": "free text never kept"},
                "subject": {"reference": "Patient/PATIENT"}}
    (tmp_path / "unlisted.json").write_text(json.dumps(unlisted))
    row = call(settings, "breast-early-stage-bone-scan", extra_orders=("unlisted",), orders_dir=tmp_path)
    assert row["orders"] == 2  # CPT 7xxxx is imaging: in focus, not rated
    assert row["unknown_codes"] == ["http://www.ama-assn.org/go/cpt|78999"]
