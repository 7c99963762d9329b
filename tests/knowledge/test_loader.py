"""The knowledge loader: the built-in base loads; every kind of bad file is refused, naming file and path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge import DEFAULT_CARDS_DIR, KnowledgeError, load_knowledge
from cds_service.knowledge import vocabulary as voc

SCENARIO_IDS = {
    "prostate-metastatic-systemic-therapy",
    "breast-neoadjuvant-suspected-metastases",
    "breast-early-stage-asymptomatic",
    "prostate-biochemical-recurrence",
    "prostate-initial-staging",
    "breast-metastatic-discordant-bone-imaging",
    "prostate-nonmetastatic-systemic-therapy",
    "red-flag-cord-compression",
    "red-flag-new-neuro-symptoms",
    "prostate-post-prostatectomy-early-rising-psa",
    "prostate-post-prostatectomy-undetectable-psa",
    "breast-aggressive-subtype-staging",
}
CATALOG_IDS = {
    "bone-scan-whole-body",
    "psma-pet-ct",
    "fdg-pet-ct",
    "fluciclovine-pet-ct",
    "pet-ct-unspecified-tracer",
    "ct-cap-contrast",
    "ct-cap-noncontrast",
    "ct-ap-contrast",
    "ct-chest-contrast",
    "ct-abdomen-pelvis-noncontrast",
    "ct-chest-noncontrast",
    "mri-cap",
    "mri-spine-whole-wwo",
    "mri-spine-cervical",
    "mri-spine-thoracic",
    "mri-spine-lumbar",
    "mri-brain-wwo",
    "mri-brain-wo",
    "mri-pelvis-wwo",
    "mri-whole-body",
    "ct-head-wo",
    "spect-ct",
    "radiograph-chest",
    "mammography-diagnostic",
    "mri-breast-wwo",
    "ultrasound-breast",
}


@pytest.fixture()
def cards(tmp_path: Path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, target)
    return target


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_builtin_knowledge_loads_every_scenario_and_catalog_id():
    k = load_knowledge()
    assert k.version == (DEFAULT_CARDS_DIR / "VERSION").read_text().strip()
    assert {s.id for s in k.scenarios} == SCENARIO_IDS
    assert set(k.catalog.procedures) >= CATALOG_IDS
    assert set(k.pitfalls) == voc.PITFALL_IDS


def test_red_flags_are_evaluated_before_every_scenario():
    kinds = [s.kind for s in load_knowledge().scenarios]
    assert kinds[:2] == ["red-flag", "red-flag"] and "red-flag" not in kinds[2:]


def test_every_scenario_cites_seed_files_and_every_rating_a_source():
    for s in load_knowledge().scenarios:
        assert s.seeds, s.id
        for v in s.variants:
            assert all(r.source and r.rationale for r in v.ratings.values()), s.id


def _strings(node, path=""):
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}/{i}")


def test_rule_texts_cite_source_articles_by_title_never_by_file_id():
    """Cards show rule texts to clinicians: a source article is named so that it can be looked up."""
    internal = re.compile(r"\bseeds? \d{3}\b|\d{3}_[0-9a-f]{16}\.txt", re.IGNORECASE)
    files = [*sorted((DEFAULT_CARDS_DIR / "scenarios").glob("*.yaml")), DEFAULT_CARDS_DIR / "pitfalls.yaml"]
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for where, text in _strings(data):
            if not where.startswith("/seeds/"):  # the ids themselves, resolved through source_articles
                assert not internal.search(text), f"{path.name}{where}: {text}"
    texts = load_knowledge().texts
    for s in load_knowledge().scenarios:
        assert all(not internal.search(texts.cite(seed)) for seed in s.seeds), s.id


def test_hcpcs_http_variant_is_an_alias_of_the_https_system():
    catalog = load_knowledge().catalog
    assert (
        catalog.tracer("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "A9595").procedure
        == "psma-pet-ct"
    )


def test_digest_changes_when_a_file_changes(cards: Path):
    before = load_knowledge(cards).digest
    (cards / "pitfalls.yaml").write_text((cards / "pitfalls.yaml").read_text() + "\n# reviewed\n")
    assert load_knowledge(cards).digest != before


@pytest.mark.parametrize(
    ("relative", "change", "expected"),
    [
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d["variants"][0]["ratings"]["bone-scan-whole-body"].update(category="sometimes"),
            "scenarios/prostate-initial-staging.yaml",
        ),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d.update(population={"concept_typo": "prostate-cancer"}),
            "unknown predicate 'concept_typo'",
        ),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d.update(population={"concept": "prostate-cancr"}),
            "population.concept: unknown concept",
        ),
        (
            "scenarios/prostate-biochemical-recurrence.yaml",
            lambda d: d["criteria"]["any"].append({"all": [{"psa_at_least": "high"}]}),
            "criteria.any[3].all[0]",
        ),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d["variants"][0]["ratings"].update(
                {
                    "pet-mri": {
                        "category": "usually-appropriate",
                        "rationale": "x" * 12,
                        "source": "seed 002",
                        "source_kind": "acr",
                    }
                }
            ),
            "unknown or unratable procedure id 'pet-mri'",
        ),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d.update(pitfalls=["made-up-pitfall"]),
            "pitfalls[0]: unknown pitfall id",
        ),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d["variants"][0].update(preferred=["ct-knee"]),
            "variants[0].preferred[0]: unknown procedure id 'ct-knee'",
        ),
        (
            "scenarios/prostate-initial-staging.yaml",
            lambda d: d.pop("seeds"),
            "'seeds' is a required property",
        ),
        ("pitfalls.yaml", lambda d: d["pitfalls"][0].update(trigger={"always": False}), "trigger.always"),
        (
            "pitfalls.yaml",
            lambda d: d["pitfalls"][0]["applies_to"].update(procedures=["nope"]),
            "applies_to.procedures[0]: unknown procedure id",
        ),
        ("procedures.yaml", lambda d: d["procedures"][0].update(contrast="barium"), "procedures/0/contrast"),
        (
            "procedures.yaml",
            lambda d: d["procedures"][1]["codes"].append(dict(d["procedures"][0]["codes"][0])),
            "already maps to 'bone-scan-whole-body'",
        ),
        (
            "procedures.yaml",
            lambda d: d["pet_tracers"][0].update(procedure="ct-head-wo"),
            "is not a tracer-specific PET study",
        ),
        ("texts/general.yaml", lambda d: d["override_reasons"][0].pop("display"), "texts/general.yaml"),
        (
            "texts/general.yaml",
            lambda d: d["source_articles"].pop("002_db7f87b07cc52b8b.txt"),
            "seeds/0: no citation for '002_db7f87b07cc52b8b.txt'",
        ),
    ],
)
def test_invalid_files_are_refused_with_file_and_path(cards: Path, relative, change, expected):
    edit(cards / relative, change)
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(cards)
    assert expected in str(err.value)
    assert Path(relative).name in str(err.value)


def test_scenario_id_must_match_its_file_name(cards: Path):
    src = cards / "scenarios" / "prostate-initial-staging.yaml"
    src.rename(cards / "scenarios" / "prostate-staging.yaml")
    with pytest.raises(KnowledgeError, match="must equal the file name"):
        load_knowledge(cards)


def test_invalid_yaml_is_refused(cards: Path):
    (cards / "pitfalls.yaml").write_text("pitfalls: [unclosed\n")
    with pytest.raises(KnowledgeError, match="pitfalls.yaml: invalid YAML"):
        load_knowledge(cards)


def test_missing_version_is_refused(cards: Path):
    (cards / "VERSION").unlink()
    with pytest.raises(KnowledgeError, match="VERSION"):
        load_knowledge(cards)
