"""docs/knowledge.md is generated from cards/ and must be regenerated when the data changes."""

from __future__ import annotations

import json

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
    assert "What Imaging Is Best for Follow-Up of Metastatic Prostate Cancer on Systemic Therapy?" in text
    assert "000_aa4e98105df44be0.txt" not in text  # source articles are cited, never named by file id


def test_check_mode_passes_on_the_committed_file():
    assert main(["--check"]) == 0


def test_docs_list_value_sets_per_concept_with_source_and_version():
    text = render(load_knowledge())
    section = text[text.index("## Value sets per concept") : text.index("## Facts that may come from text")]
    for concept in ("prostate-cancer", "breast-cancer", "history-of-breast-cancer", "weakness", "back-pain"):
        assert f"- `{concept}`:" in section
    # the published set, its OID and version travel with the concept that uses it
    prostate = section[section.index("- `prostate-cancer`:") :].split("\n- `")[0]
    assert "2.16.840.1.113883.3.526.3.319" in prostate and "version 20200306" in prostate
    assert "ICD-10-CM 1 category with their descendants" in prostate


def test_text_section_lists_what_the_text_targets_file_says(tmp_path):
    knowledge = load_knowledge()
    assert "## Facts that may come from text\n\nnone\n" in render(knowledge, cards_dir=tmp_path)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "targets.yaml").write_text(
        "targets:\n"
        "  - {id: cord, concepts: [cord-compression], phrases: [cord compression], source: s}\n"
        "  - {id: mets, concepts: [metastasis-bone], findings: [bone-metastases], phrases: [x], source: s}\n"
    )
    text = render(knowledge, cards_dir=tmp_path)
    assert "| `cord-compression` | `cord` |" in text
    assert "| `bone-metastases` | `mets` |" in text
    assert "\nnone\n" not in text[text.index("## Facts that may come from text") :]


def test_docs_show_per_rule_its_source_kind_review_date_and_e2e_cases():
    knowledge = load_knowledge()
    text = render(knowledge)
    for scenario in knowledge.scenarios:
        section = text[text.index(f"### `{scenario.id}`") :].split("\n### ")[0]
        assert "- Source kind: " in section and f"- Reviewed: {scenario.reviewed}" in section
        assert "- e2e cases" in section, scenario.id
    staging = text[text.index("### `prostate-initial-staging`") :].split("\n### ")[0]
    assert "another guideline's statement translated by the project (not an ACR rating) from AUA" in staging
    assert "| translated (AUA) |" in staging and "| ACR |" in staging
    assert "`prostate-low-risk-bone-scan`" in staging  # an e2e case that fires the rule
    flare = next(line for line in text.splitlines() if line.startswith("| `flare-phenomenon` |"))
    assert "| seed |" in flare and "`prostate-mets-flare-bone-scan`" in flare


def test_docs_list_e2e_cases_from_the_cases_directory(tmp_path):
    case = {"name": "made-up-case", "expected": {"scenario": "prostate-initial-staging", "orders": {},
                                                 "red_flags": [], "red_flags_absent": []}}
    (tmp_path / "made-up-case.json").write_text(json.dumps(case))
    text = render(load_knowledge(), cases_dir=tmp_path)
    staging = text[text.index("### `prostate-initial-staging`") :].split("\n### ")[0]
    assert "- e2e cases where it fires: `made-up-case`" in staging
    assert "`prostate-low-risk-bone-scan`" not in text


def test_docs_for_a_site_list_its_changes_and_the_default_stays_without_them(tmp_path):
    from pathlib import Path

    site = Path(__file__).resolve().parents[2] / "fixtures" / "site" / "example-site.yaml"
    out = tmp_path / "knowledge.md"
    assert main(["--site", str(site), "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Knowledge base at Example General Hospital")
    assert "version **2026-11-30.1**" in text and "Not offered here (`psma-pet-ct`)" in text
    who = "`contrast-kidney-risk`: switched off at this site by Dr A. Rivera, CDS committee on 2026-11-02"
    assert who in text
    assert "| warning → info here |" in text and "| switched off here |" in text
    assert main(["--site", str(site), "--output", str(out), "--check"]) == 0
    default = render(load_knowledge())
    assert "Example General" not in default and "at this site" not in default


def test_docs_refuse_a_bad_site_file_naming_file_and_field(tmp_path, capsys):
    bad = tmp_path / "site.yaml"
    bad.write_text('version: "1"\nunavailable: [psma-pet-mri]\n')
    assert main(["--site", str(bad), "--output", str(tmp_path / "k.md")]) == 2
    assert f"{bad}: unavailable[0]: 'psma-pet-mri' is not a catalog procedure" in capsys.readouterr().err
