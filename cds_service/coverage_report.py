"""`cds-service report rated-share`: how many in-scope oncology imaging orders get an answer.

Over every fixture case (fixtures/cases/*.json) and each of its hooks, each rated draft order whose
code is in the procedure catalog is counted for a patient in a recognised oncology scenario (a
scenario or red flag matched). It is ANSWERED when it receives a rating (PAMA appropriate /
not-appropriate) or a card specific to it (a card about its study; a red-flag card, which covers
every order of the call; a missing-facts card). A SILENT order got `no-criteria-apply` and no card:
the issue 9 target is a rated share >= 95 % and 0 silent orders. The case runs through the same
stages as a hook call (request parsing, prefetch reading, engine) without HTTP, so the card index
that ties each card to its study is at hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_service import engine, replay
from cds_service.bundle_search import BundleStore
from cds_service.config import Settings
from cds_service.engine.orders import studies_to_rate
from cds_service.engine.scenario import INSUFFICIENT_DATA, NO_CRITERIA_APPLY
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.model import EngineResult, HookRequest, PatientRecord
from cds_service.protocol.discovery import SERVICES_BY_ID, load_prefetch_templates
from cds_service.protocol.prefetch import gather_record
from cds_service.protocol.request import parse_hook_request

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "fixtures" / "cases"


@dataclass
class Share:
    in_scope: int = 0
    answered: int = 0
    silent: list[str] = field(default_factory=list)  # "case/hook/order: procedure"
    unanswered: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.answered / self.in_scope if self.in_scope else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_scope_orders": self.in_scope,
            "answered": self.answered,
            "rated_share": round(self.share, 4),
            "silent_no_criteria_apply": self.silent,
            "unanswered": self.unanswered,
        }


def parse_replay(rp: replay.Replay, templates: Any, settings: Settings) -> tuple[HookRequest, PatientRecord]:
    """The engine's inputs for a replay, read as the service reads a hook call (prefetch from the bundle)."""
    body = replay.build_request(rp)
    strings = {key: t.query for key, t in templates.items()}
    replay.fill_prefetch(body, strings, BundleStore(rp.bundle))
    service = next(s for s in SERVICES_BY_ID.values() if s.hook == rp.hook)
    call = parse_hook_request(body, service, "https://cds.report.test")
    record, _ = gather_record(call, templates, settings, rp.as_of)
    return call.request, record


def evaluate_case(
    case: Path, hook: str, knowledge: Knowledge, templates: Any, settings: Settings
) -> tuple[HookRequest, EngineResult]:
    """(engine request, engine result) of one fixture case under one hook, as the service would answer."""
    rp = replay.load_case(case)
    rp.hook = hook
    request, record = parse_replay(rp, templates, settings)
    return request, engine.evaluate(request, record, knowledge)


def rated_share(cases: Sequence[Path] | None = None, knowledge: Knowledge | None = None) -> Share:
    settings = Settings.from_env()
    knowledge = knowledge or load_knowledge(settings.cards_dir)
    templates = load_prefetch_templates(settings.cards_dir or None)
    red_flags = {s.id for s in knowledge.scenarios if s.kind == "red-flag"}
    out = Share()
    for case in cases or sorted(CASES.glob("*.json")):
        for hook in json.loads(case.read_text())["hooks"]:
            request, result = evaluate_case(case, hook, knowledge, templates, settings)
            ratings = {a["resource"]["id"]: a["resource"] for a in result.system_actions}
            cards = list(result.card_index.values())
            scenario_ids = {c["scenario_id"] for c in cards} | {
                v for res in ratings.values() for v in _ext_values(res, "scenario")
            }
            recognised = bool(scenario_ids - {NO_CRITERIA_APPLY, INSUFFICIENT_DATA, ""})
            covers_all = any(c["scenario_id"] in red_flags | {INSUFFICIENT_DATA} for c in cards)
            carded = {c["procedure_id"] for c in cards}
            for study in studies_to_rate(hook, request.draft_orders, request.selections, knowledge.catalog):
                if study.procedure_id is None or not recognised:
                    continue  # not an imaging order of the catalog, or no oncology scenario recognised
                for order in study.to_rate:
                    out.in_scope += 1
                    oid = order.reference.split("/", 1)[1]
                    pama = next(iter(_ext_values(ratings.get(oid, {}), "pama")), None)
                    label = f"{case.stem}/{hook}/{oid}: {study.procedure_id}"
                    rated = pama in ("appropriate", "not-appropriate")
                    if rated or covers_all or study.procedure_id in carded:
                        out.answered += 1
                    elif pama == NO_CRITERIA_APPLY:
                        out.silent.append(label)
                    else:
                        out.unanswered.append(label)
    return out


def _ext_values(resource: Any, name: str) -> list[str]:
    """Values of the rating extensions of a rated ServiceRequest: 'pama' or one of ours by url tail."""
    found = []
    for ext in replay._walk_extensions(resource.get("extension") or []) if isinstance(resource, dict) else []:
        url = str(ext.get("url", ""))
        tail = "pama" if url.endswith("/pama-rating") else url.rstrip("/").rsplit("/", 1)[-1]
        value = replay._ext_value(ext)
        if tail == name and value is not None:
            found.append(value)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cds-service report", description=__doc__.split("\n\n")[0])
    p.add_argument("report", choices=["rated-share"])
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(list(argv) if argv is not None else None)
    share = rated_share()
    if args.json:
        print(json.dumps(share.as_dict(), indent=2))
    else:
        print(
            f"rated share: {share.answered}/{share.in_scope} in-scope oncology imaging orders answered "
            f"({share.share:.1%}); silent no-criteria-apply: {len(share.silent)}"
        )
        for line in share.silent + share.unanswered:
            print(f"  not answered: {line}")
    return 0 if share.share >= 0.95 and not share.silent else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
