"""Symptoms and exam findings recorded as Observations -> the same concepts as a coded Condition.

EHRs record a neuro exam finding or a reported symptom as an Observation, in one of two shapes:
the symptom is the `code` ("Low back pain", with `valueBoolean: true` or a Yes/Present answer or
no value at all), or the `code` is a generic question ("Neurological finding") and the symptom is
the `valueCodeableConcept` ("Muscle weakness"). Both count, with evidence, when the result is
final / amended / corrected / preliminary (a preliminary exam note is still what the clinician
saw) and nothing says the finding is absent: `valueBoolean: false`, a No/Absent/Negative answer
(cards/valuesets/finding-presence-answers.yaml), or an interpretation of negative / not detected /
normal. An answer that is neither a presence nor an absence code, on an Observation whose code is
the symptom, is a relevant result the service cannot read: reported, not guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.facts._util import Partial, add_evidence, codings, concept_label, freeze, ref
from cds_service.facts.labs import observation_date
from cds_service.facts.selection import Hit
from cds_service.knowledge.valuesets import ValueSets, canonical_system
from cds_service.model import Evidence

COUNTED_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
ANSWERS = "finding-presence-answers"
# HL7 v3 ObservationInterpretation (terminology.hl7.org/CodeSystem/v3-ObservationInterpretation):
# NEG negative, ND not detected, N normal. For a symptom or exam-finding Observation each says the
# finding is not there.
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ABSENT_INTERPRETATIONS = frozenset({"NEG", "ND", "N"})


def _interpreted_absent(obs: Mapping[str, Any]) -> bool:
    for concept in obs.get("interpretation") or ():
        for coding in codings(concept):
            code = coding.get("code")
            if canonical_system(coding.get("system")) == _INTERPRETATION and code in ABSENT_INTERPRETATIONS:
                return True
    return False


def _presence(obs: Mapping[str, Any], valuesets: ValueSets, symptom_in_value: bool) -> str:
    """"present", "absent" or "unreadable" for one symptom Observation."""
    if obs.get("valueBoolean") is False or _interpreted_absent(obs):
        return "absent"
    if symptom_in_value:
        return "present"  # the value names the finding: its presence is the assertion
    value = obs.get("valueCodeableConcept")
    if value is None:
        return "present"  # the code names the finding; valueBoolean true or no value asserts it
    answers = set(valuesets.value_in(ANSWERS, value))
    if len(answers) == 1:
        return str(answers.pop())  # "present" or "absent"
    return "unreadable"  # no known answer, or codings that contradict each other


def extract_symptom_observations(hits: Iterable[Hit], valuesets: ValueSets) -> Partial:
    concepts: dict[str, list[Evidence]] = {}
    issues: list[str] = []
    for hit in hits:
        obs = hit.resource
        if obs.get("status") not in COUNTED_STATUSES:
            continue
        code_ids = set(valuesets.ids_for_concept(obs.get("code"))) & hit.ids
        symptom_in_value = not code_ids
        presence = _presence(obs, valuesets, symptom_in_value)
        when = observation_date(obs)
        if presence == "unreadable":
            on = f" on {when.isoformat()}" if when else ""
            what = ", ".join(sorted(hit.ids))
            issues.append(f"{what} observation{on} ({ref(obs)}): answer code not recognised; not used")
            continue
        if presence != "present":
            continue
        shown = obs.get("valueCodeableConcept") if symptom_in_value else obs.get("code")
        evidence = Evidence(text=f"{concept_label(shown)} (observation)", date=when, source=ref(obs))
        for concept in hit.ids:
            add_evidence(concepts, concept, evidence)
    return Partial(concepts=freeze(concepts), issues=tuple(issues))
