"""The closed predicate vocabulary and the prostate risk groups, evaluated on hand-built Facts."""

from __future__ import annotations

import pytest

from cds_service.knowledge import predicates
from cds_service.knowledge.predicates import Context, check, describe, evaluate
from cds_service.knowledge.risk import assess_risk
from cds_service.model import Evidence, MedicationFact
from tests.engine.builders import days_ago, facts, lab, med, prior, proc, psa


def test_every_declared_predicate_has_an_evaluator():
    assert set(predicates._LEAVES) == set(predicates._EVALUATORS)


@pytest.mark.parametrize(
    ("pred", "problem"),
    [
        ({"concept": "prostate-cancr"}, "unknown concept"),
        ({"any_med_class": []}, "non-empty list"),
        ({"psa_at_least": -1}, "non-negative number"),
        ({"all": [{"concept": "breast-cancer"}, {"bogus": 1}]}, "all[1].bogus: unknown predicate"),
        ({"not": {"lab_above_ref": "psa"}}, "not.lab_above_ref: unknown lab"),
        ({"imaging": {"modality": ["ct"]}}, "expected {modality"),
        ({"receptor": {"er": "weak"}}, "unknown receptor status"),
        ({"concept": "a", "psa_rising": True}, "exactly one key"),
    ],
)
def test_check_reports_each_problem_with_its_path(pred, problem):
    errors = check(pred, "criteria")
    assert errors and problem in errors[0] and errors[0].startswith("criteria")


def test_any_collects_evidence_from_every_true_branch():
    f = facts("bone-pain", "weight-loss")
    m = evaluate({"any": [{"concept": "bone-pain"}, {"concept": "weight-loss"}, {"concept": "headache"}]}, f)
    assert m.ok and len(m.evidence) == 2 and "on 2026-11-12" in m.evidence[0]


def test_not_inverts_and_all_needs_every_branch():
    f = facts("breast-cancer")
    assert evaluate({"not": {"concept": "metastatic-disease"}}, f).ok
    assert not evaluate({"all": [{"concept": "breast-cancer"}, {"concept": "bone-pain"}]}, f).ok


def test_lab_above_reference_needs_a_reference_range():
    assert evaluate({"lab_above_ref": "alp"}, facts(labs={"alp": lab(180, 120)})).ok
    assert not evaluate({"lab_above_ref": "alp"}, facts(labs={"alp": lab(100, 120)})).ok
    assert not evaluate({"lab_above_ref": "alp"}, facts(labs={"alp": lab(180, None)})).ok


def test_psa_rising_compares_the_last_two_values_and_nadir_uses_earlier_minimum():
    assert evaluate({"psa_rising": True}, facts(psa=psa(0.1, 0.3))).ok
    assert not evaluate({"psa_rising": True}, facts(psa=psa(0.3, 0.1))).ok
    assert not evaluate({"psa_rising": True}, facts(psa=psa(0.3))).ok
    assert evaluate({"psa_above_nadir": 2}, facts(psa=psa(4.0, 0.5, 2.6))).ok
    assert not evaluate({"psa_above_nadir": 2}, facts(psa=psa(4.0, 0.5, 2.4))).ok


def test_current_medications_exclude_stopped_and_old_completed_requests():
    f = facts(
        medications=(
            med("docetaxel", "chemotherapy", status="stopped", started=30),
            med("leuprolide", "adt", status="completed", started=400),
        )
    )
    assert not evaluate({"any_med_class": ["adt", "chemotherapy"]}, f).ok
    recent = facts(medications=(med("leuprolide", "adt", status="completed", started=60),))
    assert evaluate({"med_class": "adt"}, recent).ok


def test_treated_with_counts_stopped_and_old_therapy_but_not_withdrawn_records():
    stopped_long_ago = facts(medications=(med("leuprolide", "adt", status="stopped", started=900),))
    m = evaluate({"treated_with_med_class": ["adt", "arpi"]}, stopped_long_ago)
    assert m.ok and m.evidence == (f"leuprolide (adt, stopped) since {days_ago(900).isoformat()}",)
    # the same fact is not *current* therapy
    assert not evaluate({"any_med_class": ["adt"]}, stopped_long_ago).ok
    assert evaluate({"treated_with_med_class": ["adt"]},
                    facts(medications=(med("leuprolide", "adt", status="completed", started=2000),))).ok
    # a withdrawn record never counts, even if one reached the facts
    for status in ("entered-in-error", "not-taken", "cancelled", "draft", "not-done", "intended"):
        f = facts(medications=(med("leuprolide", "adt", status=status, started=30),))
        assert not evaluate({"treated_with_med_class": ["adt"]}, f).ok, status
        assert not evaluate({"any_med_class": ["adt"]}, f).ok, status
    assert not evaluate({"treated_with_med_class": ["chemotherapy"]}, stopped_long_ago).ok


def test_orchiectomy_is_current_adt_for_good_with_its_own_evidence_line():
    castration = MedicationFact("surgical-castration", frozenset({"adt"}), days_ago(3000), "completed",
                                "Procedure/o1", permanent=True, label="bilateral orchiectomy")
    f = facts(medications=(castration,))
    expected = (f"bilateral orchiectomy on {days_ago(3000).isoformat()} (surgical castration)",)
    for pred in ({"any_med_class": ["adt"]}, {"med_class": "adt"}, {"treated_with_med_class": ["adt"]}):
        m = evaluate(pred, f)
        assert m.ok and m.evidence == expected, pred
    assert not evaluate({"any_med_class": ["arpi"]}, f).ok


def test_an_infusion_in_progress_is_current_therapy():
    f = facts(medications=(med("paclitaxel", "chemotherapy", status="in-progress", started=400),))
    assert evaluate({"any_med_class": ["chemotherapy"]}, f).ok


def test_med_started_within_days_reports_how_long_ago():
    f = facts(medications=(med("enzalutamide", "arpi", started=30),))
    m = evaluate({"med_started_within_days": {"classes": ["arpi"], "days": 90}}, f)
    assert m.ok and "started 30 days ago" in m.evidence[0]
    assert not evaluate({"med_started_within_days": {"classes": ["adt"], "days": 90}}, f).ok


def test_imaging_latest_only_looks_at_the_most_recent_study_of_that_modality():
    f = facts(imaging=(prior("bone-scan", "stable", ago=300), prior("bone-scan", "progression", ago=30)))
    assert evaluate({"imaging": {"modality": ["bone-scan"], "findings_any": ["stable"]}}, f).ok
    assert not evaluate(
        {"imaging": {"modality": ["bone-scan"], "findings_any": ["stable"], "latest": True}}, f
    ).ok


def test_imaging_accepts_catalog_ids_through_the_modality_map():
    f = facts(imaging=(prior("ct-cap-contrast", "bone-metastases"),))
    pred = {"imaging": {"modality": ["ct"], "findings_any": ["bone-metastases"]}}
    assert not evaluate(pred, f).ok
    assert evaluate(pred, f, Context(modality_of={"ct-cap-contrast": "ct"})).ok


def test_procedure_and_stage_predicates():
    f = facts(procedures=(proc("radical-prostatectomy"),), stage_group="IIA")
    assert evaluate({"procedure": "radical-prostatectomy"}, f).ok
    assert evaluate({"stage_in": ["I", "IIA"]}, f).ok and evaluate({"stage_known": True}, f).ok
    assert not evaluate({"stage_known": True}, facts()).ok


def test_staging_read_from_text_is_quoted_in_the_evidence():
    written = Evidence('Stage IIA, read from the text "stage 2A"', None, "Observation/s", from_text=True)
    f = facts(stage_group="IIA", staging_evidence={"stage_group": written})
    assert evaluate({"stage_in": ["IIA"]}, f).evidence == (
        'stage group IIA; Stage IIA, read from the text "stage 2A"',
    )
    coded = Evidence("Stage IIA", None, "Observation/s")
    assert evaluate(
        {"stage_in": ["IIA"]}, facts(stage_group="IIA", staging_evidence={"stage_group": coded})
    ).evidence == ("stage group IIA",)
    grade = Evidence(
        'Gleason grade group 1, read from the text "GG 1, cT1c"', None, "Observation/g", from_text=True
    )
    t = Evidence('TNM T1c, read from the text "GG 1, cT1c"', None, "Observation/g", from_text=True)
    low = facts(
        grade_group=1, tnm={"T": "T1c"}, psa=psa(5.2), staging_evidence={"grade_group": grade, "T": t}
    )
    (line,) = evaluate({"risk_group_in": ["low"]}, low).evidence
    assert line.endswith('; Gleason grade group 1 and TNM T1c, read from the text "GG 1, cT1c"')


def test_describe_renders_words():
    assert (
        describe({"all": [{"concept": "a"}, {"not": {"psa_rising": True}}]})
        == "(concept: a AND NOT psa rising: True)"
    )


@pytest.mark.parametrize(
    ("t", "gg", "psa_value", "group"),
    [
        ("cT1c", 1, 5.0, "low"),
        ("T2b", 1, 5.0, "favorable-intermediate"),
        ("T2a", 3, 5.0, "unfavorable-intermediate"),
        ("T2b", 2, 12.0, "unfavorable-intermediate"),
        ("T1c", 4, 5.0, "high"),
        ("T1c", 1, 25.0, "high"),
        ("cT3b", 1, 5.0, "very-high"),
        ("T3a", 4, 5.0, "very-high"),
        (None, 5, None, "high"),  # a high-risk feature decides even with other inputs missing
        (None, 1, 5.0, None),  # could be low or intermediate: never guessed
        ("T2", 1, 5.0, None),  # T2a is low, T2b favourable intermediate
        ("T2", 3, 5.0, "unfavorable-intermediate"),  # GG3 decides whatever the T sub-category
    ],
)
def test_risk_groups(t, gg, psa_value, group):
    f = facts(tnm={"T": t} if t else {}, grade_group=gg, psa=psa(psa_value) if psa_value is not None else ())
    risk = assess_risk(f)
    assert risk.group == group
    if group is None:
        assert len(risk.missing) == 1 and risk.missing[0].startswith("T ")


def test_repeat_doses_of_an_ongoing_therapy_are_not_a_new_start():
    """Depot ADT charted as one administration per injection: the latest dose is not a therapy
    change (no flare window), unless the series was interrupted for longer than the current window."""
    doses = tuple(
        med("leuprolide", "adt", started=ago, status="completed")
        for ago in (600, 516, 432, 348, 264, 180, 96, 12)
    )
    pred = {"med_started_within_days": {"classes": ["adt"], "days": 90}}
    assert not evaluate(pred, facts(medications=doses)).ok
    restarted = (
        med("leuprolide", "adt", started=700, status="completed"),
        med("leuprolide", "adt", started=30),
    )
    m = evaluate(pred, facts(medications=restarted))
    assert m.ok and "started 30 days ago" in m.evidence[0]


def test_imaging_done_is_any_study_of_the_modality_whatever_it_found():
    # "no PSMA PET on record" (issue 9 point 3, Lu-177 selection) must not depend on coded findings
    f = facts(imaging=(prior("psma-pet", ago=60), prior("bone-scan", "stable", ago=400)))
    m = evaluate({"imaging_done": {"modality": ["psma-pet"]}}, f)
    assert m.ok and "PSMA PET on" in m.evidence[0]
    assert not evaluate({"imaging_done": {"modality": ["fdg-pet"]}}, f).ok
    assert not evaluate({"imaging_done": {"modality": ["bone-scan"], "within_days": 180}}, f).ok
    assert check({"imaging_done": {"modality": ["pet"]}}, "t") == ["t.imaging_done: unknown modality ['pet']"]
    problems = check({"imaging_done": {"modality": ["ct"], "latest": True}}, "t")
    assert "unknown imaging_done keys" in problems[0]
