"""Codings with non-string members (seen in sloppy client payloads) are ignored, never fatal."""

from cds_service.knowledge.valuesets import canonical_system


def test_non_string_system_is_not_a_system():
    assert canonical_system({"a": 1}) is None
    assert canonical_system(["http://snomed.info/sct"]) is None
    assert canonical_system(" http://snomed.info/sct ") == "http://snomed.info/sct"
