import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge import KnowledgeError
from cds_service.knowledge.valuesets import load_valuesets
from cds_service.knowledge.vocabulary import CONCEPTS, LABS
from tests.facts.conftest import CARDS, ICD, LNC, RXN, SCT

# The ids rule files may name (the loader's closed vocabulary): each needs a value set to be read.
VOCABULARY = sorted(CONCEPTS | LABS | {"psa"})


def test_every_shared_vocabulary_id_has_a_value_set(valuesets):
    missing = [v for v in VOCABULARY if v not in valuesets.sets]
    assert missing == []


def test_icd10cm_prefix_matches_with_or_without_dot(valuesets):
    assert {"metastatic-disease", "metastasis-bone"} <= valuesets.ids_for(ICD, "C79.51")
    assert {"metastatic-disease", "metastasis-bone"} <= valuesets.ids_for(ICD, "C7951")
    assert "breast-cancer" in valuesets.ids_for(ICD, "C50.912")


def test_icd10_who_uri_is_a_synonym_for_icd10cm(valuesets):
    assert "prostate-cancer" in valuesets.ids_for("http://hl7.org/fhir/sid/icd-10", "C61")


def test_prefix_is_not_applied_to_other_systems(valuesets):
    # "C61" is an ICD-10-CM category; the same string in SNOMED means nothing to us
    assert valuesets.ids_for(SCT, "C61") == frozenset()
    assert valuesets.ids_for(SCT, "3996") == frozenset()  # not a prefix of 399068003


def test_skin_cancer_c44_is_not_other_cancer(valuesets):
    assert "other-cancer" not in valuesets.ids_for(ICD, "C44.91")
    assert "other-cancer" in valuesets.ids_for(ICD, "C18.9")


def test_display_text_is_never_matched(valuesets):
    concept = {
        "coding": [{"system": SCT, "code": "999999", "display": "Malignant tumor of prostate"}],
        "text": "prostate cancer",
    }
    assert valuesets.ids_for_concept(concept) == frozenset()


def test_all_codings_of_a_concept_are_synonyms(valuesets):
    concept = {
        "coding": [{"system": "http://example.org/local", "code": "PC"}, {"system": ICD, "code": "C61"}]
    }
    assert "prostate-cancer" in valuesets.ids_for_concept(concept)


def test_clinical_drug_and_ingredient_map_to_the_same_ingredient(valuesets):
    scd = {"coding": [{"system": RXN, "code": "752899"}]}
    ingredient = {"coding": [{"system": RXN, "code": "42375"}]}
    substance = {"coding": [{"system": SCT, "code": "397198002"}]}
    assert valuesets.ingredients_for(scd) == valuesets.ingredients_for(ingredient) == ("leuprolide",)
    assert valuesets.ingredients_for(substance) == ("leuprolide",)
    assert valuesets.ingredients["leuprolide"].classes == frozenset({"adt"})


def test_answer_values(valuesets):
    assert valuesets.value_in("receptor-answers", {"coding": [{"system": LNC, "code": "LA6577-6"}]}) == [
        "negative"
    ]
    assert valuesets.value_in(
        "gleason-grade-group-values", {"coding": [{"system": SCT, "code": "1279718003"}]}
    ) == [4]


@pytest.fixture
def cards_copy(tmp_path: Path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(CARDS / "valuesets", target / "valuesets")
    shutil.copy(CARDS / "medications.yaml", target / "medications.yaml")
    shutil.copytree(CARDS / "text", target / "text")
    return target


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_copy_loads(cards_copy):
    assert "psa" in load_valuesets(cards_copy).sets


def test_schema_error_names_file_and_path(cards_copy):
    _edit(cards_copy / "valuesets" / "psa.yaml", lambda d: d["codes"][1].pop("system"))
    with pytest.raises(KnowledgeError, match=r"psa\.yaml: codes/1: 'system' is a required property"):
        load_valuesets(cards_copy)


def test_unknown_system_is_rejected(cards_copy):
    _edit(
        cards_copy / "valuesets" / "headache.yaml",
        lambda d: d["codes"][0].update(system="http://example.org"),
    )
    with pytest.raises(KnowledgeError, match=r"headache\.yaml: codes/0/system"):
        load_valuesets(cards_copy)


def test_prefix_outside_icd10cm_is_rejected(cards_copy):
    def change(d):
        d["codes"].insert(0, {"system": SCT, "prefix": "C61", "display": "x", "source": "ck-2.1"})

    _edit(cards_copy / "valuesets" / "prostate-cancer.yaml", change)
    with pytest.raises(
        KnowledgeError, match=r"prostate-cancer\.yaml: codes/0: prefix entries .* ICD-10-CM only"
    ):
        load_valuesets(cards_copy)


def test_undeclared_source_is_rejected(cards_copy):
    _edit(cards_copy / "valuesets" / "alp.yaml", lambda d: d["codes"][0].update(source="nowhere"))
    with pytest.raises(KnowledgeError, match=r"alp\.yaml: codes/0/source: 'nowhere'"):
        load_valuesets(cards_copy)


def test_file_name_must_match_id(cards_copy):
    (cards_copy / "valuesets" / "psa.yaml").rename(cards_copy / "valuesets" / "psa-total.yaml")
    with pytest.raises(KnowledgeError, match=r"psa-total\.yaml: id"):
        load_valuesets(cards_copy)


def test_invalid_yaml_names_file(cards_copy):
    (cards_copy / "valuesets" / "psa.yaml").write_text("id: [unclosed\n")
    with pytest.raises(KnowledgeError, match=r"psa\.yaml: cannot read YAML"):
        load_valuesets(cards_copy)


def test_medication_with_unknown_ingredient_is_rejected(cards_copy):
    _edit(
        cards_copy / "medications.yaml", lambda d: d["clinical_drugs"][0].update(ingredients=["unobtainium"])
    )
    with pytest.raises(KnowledgeError, match=r"medications\.yaml: clinical_drugs/0/ingredients: unknown"):
        load_valuesets(cards_copy)


def test_medication_with_unknown_class_is_rejected(cards_copy):
    _edit(cards_copy / "medications.yaml", lambda d: d["ingredients"][0].update(classes=["vitamin"]))
    with pytest.raises(KnowledgeError, match=r"medications\.yaml: ingredients/0/classes/0"):
        load_valuesets(cards_copy)


# --- every listed code exists in the code system release it claims -------------------------------


def _icd10cm_entries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((CARDS / "valuesets").glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["codes"]:
            if entry["system"] == ICD:
                kind = "prefix" if "prefix" in entry else "code"
                out.append((path.name, kind, entry[kind]))
    return out


# the library reads its bundled release with importlib.resources calls Python 3.11 marks deprecated
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_icd10cm_code_and_prefix_exists_in_icd10cm():
    # simple-icd-10-cm carries the CDC/NCHS tabular list (April 2026 release in 1.5.x). A prefix must be
    # an existing category or code so that it covers exactly that category's descendants; a partial
    # string such as "C0" would silently cover whatever codes happen to start with it.
    import simple_icd_10_cm as icd  # test extra; `make install` or pip install -e '.[test]'

    entries = _icd10cm_entries()
    assert len(entries) > 100
    unknown = [(f, kind, v) for f, kind, v in entries if not icd.is_valid_item(v)]
    assert unknown == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_icd10cm_check_rejects_a_made_up_code():
    import simple_icd_10_cm as icd

    assert not icd.is_valid_item("C0")
    assert not icd.is_valid_item("M54.47")
    assert icd.is_valid_item("M54.4") and icd.is_valid_item("Z85.46")


# --- invariants between value sets ----------------------------------------------------------------


def _exact(valuesets, set_id):
    return {(c.system, c.code) for c in valuesets.codes_of(set_id) if c.code}


def test_every_metastasis_site_code_is_also_metastatic_disease(valuesets):
    for site in ("metastasis-bone", "metastasis-brain", "metastasis-liver", "metastasis-lung"):
        assert _exact(valuesets, site) <= _exact(valuesets, "metastatic-disease"), site


def test_generalised_weakness_is_never_a_focal_deficit(valuesets):
    assert not _exact(valuesets, "weakness") & _exact(valuesets, "focal-neuro-deficit")
    for code in ("M62.81", "R53.1", "R29.898"):
        assert "focal-neuro-deficit" not in valuesets.ids_for(ICD, code)


def test_history_codes_are_never_active_cancer(valuesets):
    active = {"prostate-cancer", "breast-cancer", "other-cancer", "metastatic-disease"}
    for history in ("history-of-prostate-cancer", "history-of-breast-cancer", "history-of-cancer"):
        for entry in valuesets.codes_of(history):
            if entry.code:
                assert not valuesets.ids_for(entry.system, entry.code) & active, entry


def test_prostate_breast_and_other_cancer_share_no_snomed_code(valuesets):
    prostate, breast = _exact(valuesets, "prostate-cancer"), _exact(valuesets, "breast-cancer")
    other = _exact(valuesets, "other-cancer")
    assert not prostate & breast and not prostate & other and not breast & other
