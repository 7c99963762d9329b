"""GET /rules/<rule_id>: a readable, escaped page per scenario, pitfall and outcome; 404 otherwise."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from flask import Flask

from cds_service import rule_pages
from cds_service.knowledge import DEFAULT_CARDS_DIR, load_knowledge


def client_for(knowledge=None):
    app = Flask("test")
    if knowledge is not None:
        app.extensions["cds"] = SimpleNamespace(knowledge=knowledge)
    app.register_blueprint(rule_pages.blueprint)
    return app.test_client()


@pytest.mark.parametrize("rule_id", [s.id for s in load_knowledge().scenarios])
def test_every_scenario_has_a_page_with_ratings_and_sources(rule_id):
    response = client_for().get(f"/rules/{rule_id}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert load_knowledge().scenario(rule_id).title in page
    assert "Knowledge base version" in page


def test_scenario_page_shows_category_radiation_and_citation():
    page = client_for().get("/rules/breast-neoadjuvant-suspected-metastases").get_data(as_text=True)
    assert "Usually not appropriate" in page and "☢☢☢ 1-10 mSv" in page
    assert "TopicId 235" in page and "001_b0aab85b4ad18bf0.txt" not in page
    assert "Should You Order a Bone Scan for Staging Suspected Metastatic Breast Cancer?" in page


@pytest.mark.parametrize(
    "rule_id",
    [
        "flare-phenomenon",
        "contrast-kidney-risk",
        "insufficient-data",
        "pet-tracer-unspecified",
        "no-criteria-apply",
    ],
)
def test_pitfall_and_outcome_pages(rule_id):
    assert client_for().get(f"/rules/{rule_id}").status_code == 200


@pytest.mark.parametrize("rule_id", ["unknown-rule", "%3Cscript%3E"])
def test_unknown_rule_is_404(rule_id):
    assert client_for().get(f"/rules/{rule_id}").status_code == 404


def test_rule_text_is_escaped(tmp_path: Path):
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    path = cards / "scenarios" / "prostate-initial-staging.yaml"
    data = yaml.safe_load(path.read_text())
    data["title"] = "Staging <script>alert(1)</script>"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    page = client_for(load_knowledge(cards)).get("/rules/prostate-initial-staging").get_data(as_text=True)
    assert "<script>" not in page and "&lt;script&gt;" in page


REPR = re.compile(r"\['|'\]|\{'|\bTrue\b|\bFalse\b|\bNone\b|[a-z]+_[a-z_]+:")


def _visible(page: str) -> str:
    """The text a reader sees (tags and the style sheet removed)."""
    body = page.split("</head>", 1)[1]
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_rules_index_links_every_rule_with_source_kind_and_review_date():
    k = load_knowledge()
    page = client_for().get("/rules").get_data(as_text=True)
    for rule_id in [s.id for s in k.scenarios] + list(k.pitfalls) + list(k.texts.outcomes):
        assert f'href="/rules/{rule_id}"' in page, rule_id
    text = _visible(page)
    assert "another guideline's statement translated by this service (not an ACR rating) from AUA" in text
    assert k.scenario("prostate-initial-staging").reviewed in text


@pytest.mark.parametrize(
    "rule_id", [s.id for s in load_knowledge().scenarios] + sorted(load_knowledge().pitfalls)
)
def test_rule_pages_show_provenance_reasoning_codes_and_cases_without_python_reprs(rule_id):
    page = client_for().get(f"/rules/{rule_id}").get_data(as_text=True)
    text = _visible(page)
    assert "Source kind:" in text and "Reviewed:" in text
    assert "Concepts and their codes" in text and "End-to-end cases" in text
    assert not REPR.search(text), REPR.search(text).group(0)
    assert not re.search(r"\d{3}_[0-9a-f]{16}\.txt|clinical-knowledge", text)


def test_scenario_page_has_the_alternatives_table_reasoning_in_words_and_concept_codes():
    text = _visible(client_for().get("/rules/prostate-initial-staging").get_data(as_text=True))
    assert "Translated from AUA: not an ACR rating" in text  # the source kind of each rating
    assert "variant high risk (Gleason >= 8, PSA > 20 or T3-T4), 2017 version" in text
    assert "not: had radical prostatectomy or radiotherapy" in text  # the population in words
    assert "risk group low, favorable intermediate" in text
    assert "C61* (category)" in text and "399068003" in text  # prostate-cancer codes
    page = client_for().get("/rules/prostate-initial-staging").get_data(as_text=True)
    assert 'href="/rules/cases/prostate-low-risk-bone-scan"' in page


def test_case_page_shows_the_case_and_cites_source_articles_by_title():
    response = client_for().get("/rules/cases/prostate-low-risk-bone-scan")
    assert response.status_code == 200
    text = _visible(response.get_data(as_text=True))
    assert "prostate-low-risk-new-diagnosis" in text and "not-appropriate" in text
    assert '"PSMA PET scan" patient guide' in text and "002_db7f87b07cc52b8b.txt" not in text


@pytest.mark.parametrize("name", ["no-such-case", "..%2F..%2Fpyproject.toml", "%3Cscript%3E"])
def test_unknown_case_is_404(name):
    assert client_for().get(f"/rules/cases/{name}").status_code == 404


def test_a_sentence_marked_unverified_is_labelled_on_the_rule_page(tmp_path: Path):
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    path = cards / "scenarios" / "prostate-initial-staging.yaml"
    data = yaml.safe_load(path.read_text())
    data["evidence"] = "Verified figure 92% (Lancet 2020). Detection 45% at PSA < 0.25 [I]."
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    page = client_for(load_knowledge(cards)).get("/rules/prostate-initial-staging").get_data(as_text=True)
    text = _visible(page)
    assert "Detection 45% at PSA < 0.25. (unverified figure, not shown on cards)" in text
    assert "[I]" not in text
