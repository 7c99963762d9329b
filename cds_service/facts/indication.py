"""The draft orders' indications (reasonCode, reasonReference) -> concepts, dated today.

The indication is what the ordering clinician states now, so a symptom or finding in it counts like
the same fact in the chart, dated "today" (`record.as_of`) and marked `from_order=True` so the cards
can say where it came from. Read defensively: EHRs and the CDS Hooks sandbox send a single object
where R4 has a list, `coding: [{}]`, text without codes, and references in every form.

- reasonCode: codings -> condition value sets; with no coding that any value set knows, the
  CodeableConcept text is read by the clinical-text reader (negation and uncertainty handled there).
- reasonReference to a Condition / Observation / DiagnosticReport: resolved among the order's
  contained resources, then in the patient's record (the protocol layer has read targets the
  prefetch did not bring). A referenced resource is read the way the chart is read: a refuted,
  entered-in-error or resolved Condition never counts; another patient's resource never counts.
- An indication that cannot be resolved or read is named in data_issues (it shows on the card).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from cds_service.facts._util import Partial, add_evidence, concept_label, freeze
from cds_service.facts.conditions import HANDLED_ELSEWHERE, counts, metastasis_sites
from cds_service.facts.selection import record_identity
from cds_service.facts.text import affirmed_concepts
from cds_service.fhir_refs import Ref, parse_reference
from cds_service.identity import OWN, resolve_reference
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Evidence, PatientRecord, Resource

REASON_TYPES = frozenset({"Condition", "Observation", "DiagnosticReport"})
# Value-set kinds an indication can assert: diagnoses, symptoms and findings. Observation-kind sets
# (PSA, receptors, stage) are measurements: a code without its value says nothing.
INDICATION_KINDS = frozenset({"condition"})
VOID_STATUSES = frozenset({"entered-in-error", "cancelled"})
# How many references of one order are followed: an order with dozens is malformed, not richer.
MAX_REFERENCES = 10


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def order_reference(order: Mapping[str, Any]) -> str:
    rid = order.get("id")
    rtype = order.get("resourceType") if isinstance(order.get("resourceType"), str) else "ServiceRequest"
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid else f"{rtype} (draft without id)"


def reason_references(order: Mapping[str, Any]) -> list[Ref]:
    """The parsed reasonReference targets of one draft order (malformed entries skipped)."""
    refs = [parse_reference(r) for r in _as_list(order.get("reasonReference"))[:MAX_REFERENCES]]
    return [r for r in refs if r is not None]


def _concepts_of(concept: Any, valuesets: ValueSets) -> frozenset[str]:
    ids = valuesets.ids_for_concept(concept) if isinstance(concept, Mapping) else frozenset()
    return frozenset(i for i in ids if valuesets.kind_of(i) in INDICATION_KINDS) - HANDLED_ELSEWHERE


def _text_of(concept: Any) -> str | None:
    text = concept.get("text") if isinstance(concept, Mapping) else None
    return text.strip() if isinstance(text, str) and text.strip() else None


def _read_text(
    text: str, as_of: date, source: str, valuesets: ValueSets
) -> list[tuple[str, Evidence]]:
    """Concepts the text affirms (negated, hypothetical, historical and family mentions excluded),
    with the text targets of the loaded knowledge base (a site's own cards/ directory included)."""
    found = affirmed_concepts(text, as_of, source, from_order=True, targets=valuesets.text_targets)
    return [(concept, ev) for concept, evidence in found.items() for ev in evidence]


class _Reader:
    """Collects the concepts and issues of every indication of the draft orders."""

    def __init__(self, record: PatientRecord, valuesets: ValueSets) -> None:
        self.record = record
        self.valuesets = valuesets
        self.as_of = record.as_of
        self.concepts: dict[str, list[Evidence]] = {}
        self.issues: list[str] = []
        self._index: dict[tuple[str, str], Resource] | None = None

    # --- reasonCode -------------------------------------------------------------------------

    def reason_code(self, concept: Any, source: str) -> None:
        if not isinstance(concept, Mapping):
            return
        ids = _concepts_of(concept, self.valuesets)
        if ids:
            evidence = Evidence(concept_label(concept), self.as_of, source, from_order=True)
            for concept_id in ids:
                add_evidence(self.concepts, concept_id, evidence)
            return
        text = _text_of(concept)
        if text:
            self._text(text, source)

    def _text(self, text: str, source: str) -> None:
        for concept_id, evidence in _read_text(text, self.as_of, source, self.valuesets):
            add_evidence(self.concepts, concept_id, evidence)

    # --- reasonReference --------------------------------------------------------------------

    def reason_reference(self, order: Mapping[str, Any], reference: Any, source: str) -> None:
        ref = parse_reference(reference)
        display = reference.get("display") if isinstance(reference, Mapping) else None
        if ref is None:
            if isinstance(display, str) and display.strip():
                self._text(display.strip(), source)  # a display-only reference is free text
            return
        target = self._resolve(order, ref)
        if target is None:
            self.issues.append(f"the indication of {source} ({_ref_label(ref)}) could not be read")
            if isinstance(display, str) and display.strip():
                self._text(display.strip(), source)
            return
        rtype = target.get("resourceType")
        if rtype not in REASON_TYPES:
            return
        if not self._own(target):
            self.issues.append(
                f"the indication of {source} ({_ref_label(ref)}) is another patient's record; not used"
            )
            return
        if rtype == "Condition":
            self._condition(target, source)
        elif rtype == "Observation":
            self._observation(target, source)
        else:
            self._report(target, source)

    def _resolve(self, order: Mapping[str, Any], ref: Ref) -> Resource | None:
        if ref.kind == "contained":
            for res in _as_list(order.get("contained")):
                if isinstance(res, Mapping) and res.get("id") == ref.id:
                    return res
            return None
        index = self._record_index()
        if ref.type:
            return index.get((ref.type, ref.id))
        # urn:uuid: the Bundle-local id; converters that keep it use it as the resource id too
        return next((index[(t, ref.id)] for t in sorted(REASON_TYPES) if (t, ref.id) in index), None)

    def _record_index(self) -> dict[tuple[str, str], Resource]:
        if self._index is None:
            self._index = {}
            for rtype in REASON_TYPES:
                for res in self.record.resources.get(rtype, ()):
                    rid = res.get("id") if isinstance(res, Mapping) else None
                    if isinstance(rid, str):
                        self._index.setdefault((rtype, rid), res)
        return self._index

    def _own(self, resource: Resource) -> bool:
        """True unless the resource names a subject that is not the record's patient.

        A reference without a subject (a contained reason) belongs to the order, which is about
        the context patient. A subject that cannot be confirmed as this patient is not used.
        """
        subject = resource.get("subject", resource.get("patient"))
        if subject is None:
            return True
        # The one patient-identity rule of the service (cds_service.identity).
        identity = record_identity(self.record)
        return identity is not None and resolve_reference(subject, identity) == OWN

    # --- referenced resources, read like the chart --------------------------------------------

    def _add(self, ids: Iterable[str], evidence: Evidence) -> None:
        for concept_id in ids:
            add_evidence(self.concepts, concept_id, evidence)

    def _condition(self, condition: Resource, source: str) -> None:
        if not counts(condition):
            return  # refuted, entered in error or no longer active: as in the chart
        code = condition.get("code")
        ids = _concepts_of(code, self.valuesets)
        evidence = Evidence(concept_label(code), self.as_of, source, from_order=True)
        self._add(ids, evidence)
        if "metastatic-disease" in ids:
            for concept_id, site in metastasis_sites(condition, self.valuesets):
                add_evidence(
                    self.concepts,
                    concept_id,
                    Evidence(f"{evidence.text}, site {site}", self.as_of, source, from_order=True),
                )
        if not ids:
            text = _text_of(code)
            if text:
                self._text(text, source)

    def _observation(self, observation: Resource, source: str) -> None:
        if observation.get("status") in VOID_STATUSES:
            return
        if observation.get("valueBoolean") is False:
            return  # "finding: no"
        code, value = observation.get("code"), observation.get("valueCodeableConcept")
        value_ids = _concepts_of(value, self.valuesets)
        if value_ids:  # "neurological examination: paresis of lower limb"
            self._add(value_ids, Evidence(concept_label(value), self.as_of, source, from_order=True))
            return
        ids = _concepts_of(code, self.valuesets)
        if ids and isinstance(value, Mapping):
            # the finding is coded, but its answer (present? absent?) is not one we can read
            self.issues.append(f"{source}: the indication {concept_label(code)} has an unreadable value")
            return
        if ids:
            self._add(ids, Evidence(concept_label(code), self.as_of, source, from_order=True))
        elif _text_of(code):
            self._text(str(_text_of(code)), source)

    def _report(self, report: Resource, source: str) -> None:
        if report.get("status") in VOID_STATUSES:
            return
        coded = False
        for concept in _as_list(report.get("conclusionCode")):
            ids = _concepts_of(concept, self.valuesets)
            if ids:
                coded = True
                self._add(ids, Evidence(concept_label(concept), self.as_of, source, from_order=True))
        conclusion = report.get("conclusion")
        if not coded and isinstance(conclusion, str) and conclusion.strip():
            self._text(conclusion.strip(), source)


def _ref_label(ref: Ref) -> str:
    return f"{ref.type}/{ref.id}" if ref.type else ("contained " if ref.kind == "contained" else "") + ref.id


def extract_indication(orders: Iterable[Resource], record: PatientRecord, valuesets: ValueSets) -> Partial:
    """Concepts stated by the draft orders' reasonCode and reasonReference, dated `record.as_of`."""
    reader = _Reader(record, valuesets)
    for order in orders:
        if not isinstance(order, Mapping):
            continue
        source = order_reference(order)
        for concept in _as_list(order.get("reasonCode")):
            reader.reason_code(concept, source)
        for reference in _as_list(order.get("reasonReference"))[:MAX_REFERENCES]:
            reader.reason_reference(order, reference, source)
    return Partial(concepts=freeze(reader.concepts), issues=tuple(dict.fromkeys(reader.issues)))


__all__ = ["extract_indication", "order_reference", "reason_references"]
