"""docs/knowledge.md is generated from cards/ and must be regenerated when the data changes."""

from __future__ import annotations

from cds_service.knowledge import load_knowledge
from cds_service.knowledge.docs import DOCS_PATH, main, render


def test_committed_docs_equal_the_generated_text():
    assert DOCS_PATH.read_text(encoding="utf-8") == render(load_knowledge()), "run `make docs`"


def test_docs_list_every_scenario_with_categories_radiation_and_sources():
    text = render(load_knowledge())
    for scenario in load_knowledge().scenarios:
        assert f"### `{scenario.id}`" in text
    assert "| Bone scan whole body (Tc-99m MDP) | ☢☢☢ |" in text
    assert "ACR Appropriateness Criteria: Monitoring Response to Neoadjuvant Systemic Therapy" in text
    assert "000_aa4e98105df44be0.txt" in text


def test_check_mode_passes_on_the_committed_file():
    assert main(["--check"]) == 0
