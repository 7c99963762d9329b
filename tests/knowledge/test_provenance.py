"""Issue 9 point 5: every rating says whether it is an ACR rating or a translated guideline statement,
every rule carries a review date, and a translated category is never sent as an ACR category."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge import DEFAULT_CARDS_DIR, KnowledgeError, load_knowledge
from tests.engine.builders import KNOWLEDGE, cpt, facts, med, ours, psa, run

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture()
def cards(tmp_path: Path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, target)
    return target


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_every_rating_names_its_source_kind_and_how_to_look_it_up():
    for s in KNOWLEDGE.scenarios:
        for v in s.variants:
            for r in v.ratings.values():
                assert r.source_kind in ("acr", "translated"), (s.id, r.procedure_id)
                if r.source_kind == "acr":
                    assert r.acr and r.acr["topic"] and r.acr["variant"] and r.acr["version"], s.id
                    assert r.provenance.startswith("ACR Appropriateness Criteria: ")
                else:
                    assert r.guideline and r.acr is None, (s.id, r.procedure_id)
                    assert "not an ACR rating" in r.provenance


def test_every_rule_has_a_review_date_not_in_the_future():
    rules = [*KNOWLEDGE.scenarios, *KNOWLEDGE.pitfalls.values()]
    for rule in rules:
        assert ISO.match(rule.reviewed), rule.id
        assert date.fromisoformat(rule.reviewed) <= date.today(), rule.id


def test_a_scenario_without_ratings_is_seed_only():
    # the MBC conflicting-imaging Q&A recommends studies but gives no category
    discordant = KNOWLEDGE.scenario("breast-metastatic-discordant-bone-imaging")
    assert discordant.source_kinds == ("seed",)


def test_aua_low_risk_staging_statements_are_translations_not_acr_ratings():
    # AUA Statement 6: "Clinicians should not routinely perform PSMA PET scan, cross-sectional imaging,
    # or bone scan for nodal or metastatic staging in asymptomatic patients with low- or favorable
    # intermediate-risk prostate cancer." An AUA statement, not an ACR variant.
    staging = KNOWLEDGE.scenario("prostate-initial-staging")
    low = next(v for v in staging.variants if v.id == "low-or-favorable-intermediate")
    assert {r.source_kind for r in low.ratings.values()} == {"translated"}
    assert all("AUA" in (r.guideline or "") for r in low.ratings.values())
    assert set(staging.source_kinds) == {"acr", "translated"}
    assert "AUA" in staging.translated_from


def test_translated_rating_is_never_sent_as_an_acr_category():
    low_risk = facts("prostate-cancer", grade_group=1, tnm={"T": "cT1c"}, psa=psa(4.1))
    [action] = run(low_risk, cpt("bs", "78306")).system_actions
    ext = ours(action)
    assert "category" not in ext
    assert ext["translatedCategory"] == "usually-not-appropriate"
    assert ext["sourceKind"] == "translated"


def test_acr_rating_is_sent_as_an_acr_category():
    adt = med("leuprolide", "adt", started=540)
    treated = facts("prostate-cancer", "metastatic-disease", medications=(adt,))
    [action] = run(treated, cpt("bs", "78306")).system_actions
    ext = ours(action)
    assert ext["category"] == "usually-appropriate" and ext["sourceKind"] == "acr"
    assert "translatedCategory" not in ext


def _rating(d: dict) -> dict:
    return d["variants"][0]["ratings"]["bone-scan-whole-body"]


@pytest.mark.parametrize(
    ("relative", "change", "expected"),
    [
        ("scenarios/prostate-initial-staging.yaml", lambda d: _rating(d).pop("source_kind"), "source_kind"),
        ("scenarios/prostate-initial-staging.yaml", lambda d: _rating(d).pop("guideline"), "guideline"),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: _rating(d).update(source_kind="seed"),
            "bone-scan-whole-body/source_kind",
        ),
        (
            "scenarios/breast-metastatic-discordant-bone-imaging.yaml",
            lambda d: d["variants"][0]["ratings"].update(
                {
                    "fdg-pet-ct": {
                        "category": "usually-appropriate",
                        "rationale": "x" * 12,
                        "source": "the MBC Q&A",
                        "source_kind": "acr",
                    }
                }
            ),
            "an ACR rating needs the ACR topic and variant",
        ),
        ("scenarios/prostate-initial-staging.yaml", lambda d: d.pop("reviewed"), "'reviewed' is a required"),
        ("scenarios/prostate-initial-staging.yaml", lambda d: d.update(reviewed="last spring"), "reviewed"),
        ("pitfalls.yaml", lambda d: d["pitfalls"][0].pop("reviewed"), "'reviewed' is a required"),
        ("pitfalls.yaml", lambda d: d["pitfalls"][0].update(source_kind="translated"), "'guideline'"),
    ],
)
def test_provenance_fields_are_checked_at_load(cards: Path, relative, change, expected):
    _edit(cards / relative, change)
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(cards)
    assert expected in str(err.value) and Path(relative).name in str(err.value)


def test_an_unquoted_yaml_review_date_is_read_as_iso_text(cards: Path):
    path = cards / "pitfalls.yaml"
    path.write_text(re.sub(r"reviewed: [0-9-]+", "reviewed: 2025-01-31", path.read_text()), encoding="utf-8")
    assert {p.reviewed for p in load_knowledge(cards).pitfalls.values()} == {"2025-01-31"}
