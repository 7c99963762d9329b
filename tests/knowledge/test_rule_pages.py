"""GET /rules/<rule_id>: a readable, escaped page per scenario, pitfall and outcome; 404 otherwise."""

from __future__ import annotations

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
