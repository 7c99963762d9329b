from datetime import date

from cds_service.model import Evidence, Facts


def test_facts_has_reads_concepts():
    facts = Facts(as_of=date(2026, 11, 22), concepts={"prostate-cancer": (Evidence("C61"),)})
    assert facts.has("prostate-cancer")
    assert not facts.has("breast-cancer")
