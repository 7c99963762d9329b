"""The site file (CDS_SITE_CONFIG): schema and knowledge checks, each error naming file and field;
the knowledge view the engine gets from it (knowledge/site.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cds_service.knowledge import load_knowledge
from cds_service.knowledge.site import SiteConfigError, groups, load_site, site_view

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "fixtures" / "site" / "example-site.yaml"
KNOWLEDGE = load_knowledge()
SERVICES = ("imaging-appropriateness", "imaging-appropriateness-sign")
RULE = "    reason: a reason\n    approved_by: Dr X\n"


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_site(path, KNOWLEDGE, SERVICES)


def test_the_example_site_file_loads():
    site = load_site(EXAMPLE, KNOWLEDGE, SERVICES)
    assert site.version == "2026-11-30.1" and site.site == "Example General Hospital"
    assert site.unavailable == {"psma-pet-ct"}
    assert site.switched_off == {"contrast-kidney-risk"} and site.downgraded == {"flare-phenomenon"}
    assert site.rules["contrast-kidney-risk"].approved_on == "2026-11-02"  # a YAML date, kept as text
    assert site.services["imaging-appropriateness-sign"].snooze_hours == 72
    assert site.contact == ("Radiology consult, Example General (ext. 4321)",
                            "https://intranet.example.org/radiology/consult")


def test_minimal_file_needs_only_a_version(tmp_path):
    site = load_text(tmp_path, 'version: "7"\n')
    assert site.version == "7" and not site.unavailable and not site.rules


ERRORS = [
    ("site: X\n", "(top level): 'version' is a required property"),
    ("version: 3\n", "version: 3 is not of type 'string' (quote it"),
    ('version: "1"\nunavailble: [psma-pet-ct]\n', "(top level): Additional properties are not allowed"),
    ('version: "1"\nunavailable: [fdg-pet-ct, psma-pet-mri]\n',
     "unavailable[1]: 'psma-pet-mri' is not a catalog procedure; did you mean 'psma-pet-ct'?"),
    ('version: "1"\nunavailable: [gamma-camera-xyz]\n',
     "unavailable[0]: 'gamma-camera-xyz' is not a catalog procedure (cards/procedures.yaml) or group"),
    ('version: "1"\nunavailable: psma-pet-ct\n', "unavailable: 'psma-pet-ct' is not of type 'array'"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    off: true\n    approved_by: X\n',
     "rules.flare-phenomenon: 'reason' is a required property"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    off: true\n    reason: a reason\n',
     "rules.flare-phenomenon: 'approved_by' is a required property"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    indicator: warning\n' + RULE,
     "rules.flare-phenomenon.indicator: 'info' was expected"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    off: false\n' + RULE,
     "rules.flare-phenomenon.off: True was expected"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    off: true\n    indicator: info\n' + RULE,
     "rules.flare-phenomenon: give exactly one change: `off: true` or `indicator: info`"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n' + RULE,
     "rules.flare-phenomenon: give exactly one change"),
    ('version: "1"\nrules:\n  flair-phenomenon:\n    off: true\n' + RULE,
     "rules.flair-phenomenon: 'flair-phenomenon' is not a rule or pitfall id; "
     "did you mean 'flare-phenomenon'?"),
    ('version: "1"\nrules:\n  red-flag-cord-compression:\n    off: true\n' + RULE,
     "rules.red-flag-cord-compression: 'red-flag-cord-compression' is a red flag"),
    ('version: "1"\nrules:\n  red-flag-new-neuro-symptoms:\n    indicator: info\n' + RULE,
     "red flags can never be switched off or shown as info"),
    ('version: "1"\nrules:\n  insufficient-data:\n    off: true\n' + RULE,
     "rules.insufficient-data: 'insufficient-data' is an engine rule"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    off: true\n    approved_on: "2026-13-01"\n' + RULE,
     "rules.flare-phenomenon.approved_on: '2026-13-01' is not a date"),
    ('version: "1"\nrules:\n  flare-phenomenon:\n    off: true\n    approved_on: 2026-13-01\n' + RULE,
     "invalid date (month must be in 1..12); write dates as YYYY-MM-DD"),
    ('version: "1"\nservices:\n  imaging-appropriateness-sing: {quiet: false}\n',
     "services.imaging-appropriateness-sing: 'imaging-appropriateness-sing' is not a service id; "
     "did you mean 'imaging-appropriateness-sign'?"),
    ('version: "1"\nservices:\n  imaging-appropriateness: {snooze_hours: -1}\n',
     "services.imaging-appropriateness.snooze_hours: -1 is less than the minimum of 0"),
    ('version: "1"\nservices:\n  imaging-appropriateness: {quiet: maybe}\n',
     "services.imaging-appropriateness.quiet: 'maybe' is not of type 'boolean'"),
    ('version: "1"\ndisplay_names:\n  psma-pet: PSMA scan\n',
     "display_names.psma-pet: 'psma-pet' is not a catalog procedure; did you mean 'psma-pet-ct'?"),
    ('version: "1"\ncontact: {label: Radiology, url: "ftp://x.example.org"}\n', "contact.url: 'ftp://x.example.org'"),
    ('version: "1"\ncontact: {label: Radiology}\n', "contact: 'url' is a required property"),
    ("", "(top level): None is not of type 'object'"),
    ("version: [1\n", "invalid YAML"),
]


@pytest.mark.parametrize("text, message", ERRORS, ids=[m[:60] for _, m in ERRORS])
def test_each_error_names_the_file_and_the_field(tmp_path, text, message):
    with pytest.raises(SiteConfigError) as refused:
        load_text(tmp_path, text)
    assert str(refused.value).startswith(f"{tmp_path / 'site.yaml'}: ")
    assert message in str(refused.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SiteConfigError, match=r"nowhere\.yaml: cannot read \(No such file"):
        load_site(tmp_path / "nowhere.yaml", KNOWLEDGE, SERVICES)


def test_groups_come_from_the_catalog():
    g = groups(KNOWLEDGE.catalog)
    assert g["pet"] == {
        "psma-pet-ct", "fdg-pet-ct", "fluciclovine-pet-ct", "fes-pet-ct", "pet-ct-unspecified-tracer"
    }
    assert g["modality:psma-pet"] == {"psma-pet-ct"}
    assert "mri-spine-whole-wwo" in g["modality:mri"] and "ct-cap-contrast" in g["family:ct-cap"]


def test_a_combined_study_is_unavailable_when_no_set_of_its_parts_can_be_done(tmp_path):
    def unavailable(listed: str) -> frozenset[str]:
        return load_text(tmp_path, f'version: "1"\nunavailable: [{listed}]\n').unavailable

    assert "mri-spine-whole-wwo" in unavailable("mri-spine-cervical")
    assert "ct-cap-contrast" in unavailable("ct-chest-contrast")
    # CT abdomen/pelvis not offered as one study: C/A/P is still chest + abdomen + pelvis
    assert "ct-cap-contrast" not in unavailable("ct-ap-contrast")


def test_the_view_changes_what_the_engine_sees_and_leaves_the_base_alone():
    site = load_site(EXAMPLE, KNOWLEDGE, SERVICES)
    view = site_view(KNOWLEDGE, site)
    assert view.pitfalls["flare-phenomenon"].indicator == "info"
    assert KNOWLEDGE.pitfalls["flare-phenomenon"].indicator == "warning"
    assert all("contrast-kidney-risk" not in s.pitfalls for s in view.scenarios)
    assert any("contrast-kidney-risk" in s.pitfalls for s in KNOWLEDGE.scenarios)
    assert view.catalog.procedures["fluciclovine-pet-ct"].display == "Axumin PET/CT (fluciclovine F-18)"
    assert view.local.unavailable == {"psma-pet-ct"} and view.local.version == "2026-11-30.1"
    assert KNOWLEDGE.local.unavailable == frozenset() and site_view(KNOWLEDGE, None) is KNOWLEDGE


def test_a_switched_off_scenario_is_not_selected(tmp_path):
    text = 'version: "1"\nrules:\n  prostate-biochemical-recurrence:\n    off: true\n' + RULE
    site = load_text(tmp_path, text)
    view = site_view(KNOWLEDGE, site)
    assert view.scenario("prostate-biochemical-recurrence") is None
    assert len(view.scenarios) == len(KNOWLEDGE.scenarios) - 1
    assert dataclasses.replace(site, rules={}).switched_off == frozenset()


def test_a_downgraded_scenario_is_marked_info_only(tmp_path):
    text = 'version: "1"\nrules:\n  breast-early-stage-asymptomatic:\n    indicator: info\n' + RULE
    site = load_text(tmp_path, text)
    assert site_view(KNOWLEDGE, site).local.info_only == {"breast-early-stage-asymptomatic"}
