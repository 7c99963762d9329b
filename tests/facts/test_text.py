"""Report and problem text read with medspaCy ConText: negation, uncertainty, history, hypothesis,
family; each report sentence quoted in issue 8; the target file is schema- and vocabulary-checked."""

import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from cds_service.facts import text
from cds_service.knowledge import KnowledgeError
from cds_service.knowledge.text_targets import load_text_targets
from tests.facts.conftest import CARDS


@pytest.fixture(scope="module")
def targets():
    return load_text_targets(CARDS)


def flags(sentence, target, targets, kind=None):
    found = [
        m for m in text.mentions(sentence, targets) if m.target == target and (kind is None or m.kind == kind)
    ]
    assert found, f"{target} not found in {sentence!r}"
    m = found[0]
    return {k for k in ("negated", "uncertain", "historical", "hypothetical", "family") if getattr(m, k)}


def concepts(sentence, targets):
    return set(text.affirmed_concepts(sentence, None, None, targets=targets))


def findings(sentence, targets):
    return set(text.report_findings(sentence, targets).findings)


# --- ConText modifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("Spinal cord compression at T6.", set()),
        ("No evidence of cord compression.", {"negated"}),
        ("Rule out cord compression.", {"uncertain"}),
        ("Findings concerning for cord compression at T4.", {"uncertain"}),
        ("MRI to evaluate for cord compression.", {"uncertain"}),
        ("History of cord compression in 2019.", {"historical"}),
        ("If leg weakness develops, consider cord compression.", {"hypothetical"}),
        ("Mother had cord compression.", {"family"}),
    ],
)
def test_context_modifiers(sentence, expected, targets):
    assert flags(sentence, "cord-compression", targets) == expected


@pytest.mark.parametrize(
    "sentence", ["Patient denies headache.", "Headache: no", "Headache: no. Seizure: yes"]
)
def test_negated_symptoms(sentence, targets):
    assert flags(sentence, "headache", targets) == {"negated"}


def test_only_affirmed_or_suspected_mentions_make_a_concept(targets):
    assert concepts("Low back pain with paresis of lower extremity", targets) == {
        "back-pain",
        "focal-neuro-deficit",
    }
    assert concepts("New headache and seizure", targets) == {"headache", "seizure"}
    assert concepts("Rule out cord compression", targets) == {"cord-compression"}  # suspicion counts
    for sentence in (
        "No headache, no seizure.",
        "History of cord compression in 2019.",
        "If symptoms worsen, evaluate for cord compression.",
        "Mother had breast cancer.",
    ):
        assert concepts(sentence, targets) == set(), sentence


def test_cancer_phrases_and_combined_targets(targets):
    assert concepts("Metastatic castration-resistant prostate cancer", targets) == {
        "castration-resistant",
        "prostate-cancer",
    }
    assert concepts("Metastatic prostate adenocarcinoma", targets) == {
        "prostate-cancer",
        "metastatic-disease",
    }
    assert concepts("Invasive ductal carcinoma of the breast, left", targets) == {"breast-cancer"}
    assert concepts("Bone metastases", targets) == {"metastasis-bone"}


def test_evidence_quotes_the_sentence_and_is_marked_as_text(targets):
    found = text.affirmed_concepts(
        "Chronic back pain. Rule out cord compression.", date(2026, 11, 9), "Condition/c1", targets=targets
    )
    (ev,) = found["cord-compression"]
    assert ev.text == "'Rule out cord compression.'"
    assert ev.from_text and not ev.from_order
    assert (ev.date, ev.source) == (date(2026, 11, 9), "Condition/c1")
    (order_ev,) = text.affirmed_concepts("headache", None, None, from_order=True, targets=targets)["headache"]
    assert order_ev.from_text and order_ev.from_order


def test_long_sentences_are_trimmed_around_the_mention(targets):
    sentence = (
        "Comparison is made with several prior examinations " * 6 + "and there is cord compression at T9."
    )
    (m,) = [m for m in text.mentions(sentence, targets) if m.target == "cord-compression"]
    assert len(m.snippet) <= text.SNIPPET_CHARS + 2
    assert "cord compression" in m.snippet and m.snippet.startswith("…")


# --- the report sentences of issue 8 ----------------------------------------------------------


def test_new_lytic_lesions_suspicious_for_osseous_metastases(targets):
    sentence = "New lytic lesions in T10 and L2, suspicious for osseous metastases."
    assert findings(sentence, targets) == {"bone-metastases", "new-lesions"}
    assert flags(sentence, "bone-metastases", targets, "finding") == {"uncertain"}


def test_no_scintigraphic_evidence_of_osseous_metastatic_disease(targets):
    assert findings("No scintigraphic evidence of osseous metastatic disease.", targets) == {
        "no-bone-metastases"
    }
    assert findings("No abnormal osseous tracer uptake.", targets) == {"no-bone-metastases"}
    assert findings("Impression: no bone metastases", targets) == {"no-bone-metastases"}


def test_stable_osseous_metastases_no_new_lesions(targets):
    assert findings("Stable osseous metastases, no new lesions.", targets) == {"bone-metastases", "stable"}
    assert findings("Known osseous metastases, stable compared with 2026-02.", targets) == {
        "bone-metastases",
        "stable",
    }


def test_no_new_metastases_is_not_no_metastases(targets):
    # "no NEW osseous metastases" says nothing against the known ones
    assert findings("No new osseous metastases.", targets) == set()
    assert findings("New osseous metastases in the pelvis.", targets) == {"bone-metastases", "new-lesions"}


def test_a_stated_lesion_outweighs_a_negated_one(targets):
    found = findings("No osseous metastases in the spine. Osseous metastasis in the left sixth rib.", targets)
    assert found == {"bone-metastases"}


def test_negated_uncertain_or_hypothetical_absence_says_nothing(targets):
    assert findings("Osseous metastases cannot be excluded.", targets) <= {"bone-metastases"}
    assert "no-bone-metastases" not in findings("If no osseous metastases are seen, stop.", targets)


def test_progression_and_visceral(targets):
    assert findings("Progression of osseous metastases with new liver metastases.", targets) == {
        "progression",
        "bone-metastases",
        "visceral-metastases",
        "new-lesions",
    }


def test_indication_and_history_sections_are_not_read(targets):
    report = (
        "NM BONE SCAN WHOLE BODY\n"
        "Indication: breast cancer, evaluate for osseous metastases.\n"
        "Clinical history: known bone metastases elsewhere?\n"
        "Findings: Physiologic tracer distribution.\n"
        "Impression: No scintigraphic evidence of osseous metastatic disease."
    )
    assert findings(report, targets) == {"no-bone-metastases"}


def test_modality_from_a_text_only_report_code(targets):
    assert text.modality_from_text("NM bone scan whole body", targets) == {"bone-scan"}
    assert "psma-pet" in text.modality_from_text("PSMA PET/CT skull base to mid-thigh", targets)
    assert text.modality_from_text("Complete blood count", targets) == frozenset()


# --- caching and the pipeline ------------------------------------------------------------------


def test_results_are_cached_by_text_digest(targets):
    text.clear_cache()
    first = text.mentions("Rule out cord compression.", targets)
    assert text.mentions("Rule out cord compression.", targets) is first
    assert len(text._pipelines) == 1  # one pipeline per target set, never per call


def test_empty_or_non_text_input(targets):
    assert text.mentions("", targets) == ()
    assert text.mentions("   ", targets) == ()
    assert text.mentions(None, targets) == ()  # type: ignore[arg-type]


# --- the target file ---------------------------------------------------------------------------


@pytest.fixture
def cards_copy(tmp_path: Path) -> Path:
    shutil.copytree(CARDS / "text", tmp_path / "text")
    return tmp_path


def _edit(cards: Path, change) -> None:
    path = cards / "text" / "targets.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_target_file_loads_and_every_target_cites_a_source(targets):
    assert targets.targets and all(t.source in targets.sources for t in targets.targets)


def test_unknown_concept_is_rejected(cards_copy):
    _edit(cards_copy, lambda d: d["targets"][0]["concepts"].append("prostate-cancr"))
    with pytest.raises(KnowledgeError, match=r"targets/0/concepts: unknown id 'prostate-cancr'"):
        load_text_targets(cards_copy)


def test_unlisted_source_and_schema_errors_are_rejected(cards_copy):
    _edit(cards_copy, lambda d: d["targets"][1].update(source="nowhere"))
    with pytest.raises(KnowledgeError, match=r"targets/1/source"):
        load_text_targets(cards_copy)
    _edit(cards_copy, lambda d: d["targets"][1].pop("source"))
    with pytest.raises(KnowledgeError, match=r"'source' is a required property"):
        load_text_targets(cards_copy)


def test_generic_metastatic_disease(targets):
    # negated on a report: a negative study (imaging.py keeps it for bone scans only)
    assert findings("No evidence of metastatic disease.", targets) == {"no-bone-metastases"}
    # affirmed without a site: metastatic disease, never bone metastases
    assert findings("Metastatic disease.", targets) == set()
    assert concepts("Metastatic disease", targets) == {"metastatic-disease"}
    assert findings("Multiple metastases in the liver.", targets) == {"visceral-metastases"}


@pytest.mark.parametrize(
    "report",
    [
        "Known metastases, stable. No new metastases.",
        "No new metastatic disease.",
        "Abnormal uptake in T10. No osseous metastases elsewhere.",
    ],
)
def test_no_new_or_no_other_metastases_is_not_a_negative_study(report, targets):
    assert "no-bone-metastases" not in findings(report, targets)


def test_a_reader_failure_is_logged_without_the_text_and_reads_nothing(targets, monkeypatch, caplog):
    def boom(self, text):
        raise ValueError("spaCy choked")

    monkeypatch.setattr(text._Pipeline, "read", boom)
    text.clear_cache()
    assert text.mentions("Secret patient words: cord compression", targets) == ()
    assert "could not read" in caplog.text and "Secret" not in caplog.text


def test_the_pipeline_does_not_load_quickumls_or_nltk(targets):
    import sys

    text.mentions("Rule out cord compression.", targets)
    assert "nltk" not in sys.modules  # the never-enabled QuickUMLS component stays out (RSS, start time)


def test_reading_a_new_text_adds_no_lines_to_the_service_log():
    """PyFastNER logs on the root logger for every sentence split; those lines must not reach the log."""
    import logging

    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    handler, level = Collect(level=logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        text.mentions("New lytic lesion in T11, suspicious for osseous metastasis (log test).")
        logging.info("the service's own root line")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert [r.getMessage() for r in seen] == ["the service's own root line"]
