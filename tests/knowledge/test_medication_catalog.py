"""cards/medications.yaml: the generated clinical-drug map is up to date with its published inputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from cds_service.knowledge.valuesets import RXNORM, SNOMED, load_valuesets

CARDS = Path(__file__).resolve().parents[2] / "cards"
SOURCES = CARDS / "tools" / "sources"


def _tool():
    path = CARDS / "tools" / "build_medications.py"
    spec = importlib.util.spec_from_file_location("build_medications", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _expansion(name: str) -> list[dict]:
    return json.loads((SOURCES / name).read_text())["expansion"]["contains"]


def test_generated_block_equals_what_the_committed_inputs_give():
    assert _tool().main(["--check"]) == 0, "run python cards/tools/build_medications.py"


def test_every_code_of_the_vsac_adt_value_set_is_adt():
    valuesets = load_valuesets(CARDS)
    codes = _expansion("vsac-2.16.840.1.113762.1.4.1248.352.json")
    assert len(codes) == 21
    for item in codes:
        ingredients = valuesets.drug_index[(RXNORM, item["code"])]
        assert all("adt" in valuesets.ingredients[i].classes for i in ingredients), item
        assert len(ingredients) == 1 and ingredients[0] in item["display"].lower(), item


def test_chemotherapy_codes_map_only_to_ingredients_their_display_names():
    valuesets = load_valuesets(CARDS)
    mapped = 0
    for item in _expansion("vsac-2.16.840.1.113762.1.4.1248.355.json"):
        for ingredient in valuesets.drug_index.get((RXNORM, item["code"]), ()):
            mapped += 1
            assert ingredient in item["display"].lower()
            assert "chemotherapy" in valuesets.ingredients[ingredient].classes
    assert mapped >= 40
    assert (RXNORM, "105585") not in valuesets.drug_index  # methotrexate 2.5 MG Oral Tablet


def test_the_required_agents_are_recognised():
    valuesets = load_valuesets(CARDS)
    needed = {
        (RXNORM, "42375"): "adt", (SNOMED, "397198002"): "adt",  # leuprolide / leuprorelin
        (RXNORM, "50610"): "adt", (RXNORM, "310592"): "adt",  # goserelin
        (RXNORM, "905053"): "adt", (RXNORM, "828749"): "adt",  # triptorelin, degarelix SCDs
        (RXNORM, "1100072"): "arpi", (RXNORM, "1307298"): "arpi",
        (RXNORM, "1999574"): "arpi", (RXNORM, "2180325"): "arpi",
        (RXNORM, "72962"): "chemotherapy", (RXNORM, "996051"): "chemotherapy",
        (RXNORM, "3639"): "chemotherapy", (RXNORM, "3002"): "chemotherapy",
        (RXNORM, "56946"): "chemotherapy", (RXNORM, "40048"): "chemotherapy",
        (RXNORM, "224905"): "her2-targeted", (RXNORM, "1298944"): "her2-targeted",
        (RXNORM, "1547545"): "immunotherapy",
        # hand-listed block: relugolix, histrelin, brands / branded drugs, SNOMED substances
        (RXNORM, "2472778"): "adt", (RXNORM, "2472789"): "adt", (RXNORM, "2472784"): "adt",
        (RXNORM, "50975"): "adt", (RXNORM, "1115449"): "adt", (RXNORM, "858127"): "adt",
        (SNOMED, "441864003"): "adt", (SNOMED, "395915003"): "adt",
        (RXNORM, "1307309"): "arpi", (RXNORM, "1918044"): "arpi", (RXNORM, "1999587"): "arpi",
        (RXNORM, "2180336"): "arpi", (SNOMED, "699678007"): "arpi", (SNOMED, "703125003"): "arpi",
        (SNOMED, "766972001"): "arpi",
        (RXNORM, "1922512"): "her2-targeted", (RXNORM, "1298953"): "her2-targeted",
        (RXNORM, "1657751"): "immunotherapy",
    }
    for key, cls in needed.items():
        ingredients = valuesets.drug_index.get(key, ())
        assert any(cls in valuesets.ingredients[i].classes for i in ingredients), key


def _catalog() -> dict:
    return yaml.safe_load((CARDS / "medications.yaml").read_text())


def test_no_clinical_drug_code_is_listed_twice():
    codes = [d["rxnorm"] for d in _catalog()["clinical_drugs"]]
    assert len(codes) == len(set(codes))
    ingredient_codes = {c for i in _catalog()["ingredients"] for c in i.get("rxnorm", ())}
    assert not ingredient_codes & set(codes)


def test_hand_listed_codes_cite_a_published_code_list():
    hand = [d for d in _catalog()["clinical_drugs"] if not d["source"].startswith("vsac-")]
    assert len(hand) >= 100
    assert {d["source"] for d in hand} <= {"codex-ctm", "codex-ctm-bct"}
    # a branded drug maps to exactly the ingredients of its generic: only Phesgo carries two
    assert [d["rxnorm"] for d in hand if len(d["ingredients"]) > 1] == [
        d["rxnorm"] for d in hand if "pertuzumab" in d["ingredients"] and "trastuzumab" in d["ingredients"]
    ]


def test_gynaecology_look_alikes_and_other_her2_agents_are_not_mapped():
    valuesets = load_valuesets(CARDS)
    for code in ("2556799", "2556803", "1488617", "1488619", "1658087", "2267581"):
        assert (RXNORM, code) not in valuesets.drug_index, code
