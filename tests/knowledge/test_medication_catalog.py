"""cards/medications.yaml: the generated clinical-drug map is up to date with its published inputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
    }
    for key, cls in needed.items():
        ingredients = valuesets.drug_index.get(key, ())
        assert any(cls in valuesets.ingredients[i].classes for i in ingredients), key
