"""The notation parser: stage groups, TNM categories and Gleason grade written the ways charts write them."""

import pytest

from cds_service.facts.stage_notation import (
    ajcc_category,
    ajcc_stage,
    is_text_staging_code,
    parse_grade,
    parse_stage,
    parse_tnm,
    vocabulary_stage,
)
from cds_service.knowledge.vocabulary import STAGE_GROUPS


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("Stage IIA", "IIA"),
        ("stage 2A", "IIA"),
        ("STAGE IIa", "IIA"),
        ("IIA", "IIA"),
        ("2A", "IIA"),
        ("IIA (AJCC)", "IIA"),
        ("Stage IIA (AJCC 8th edition)", "IIA"),
        ("AJCC stage group: IB", "IB"),
        ("Clinical stage: IA", "IA"),
        ("pathologic stage group 3C", "IIIC"),
        ("Breast cancer, stage IA, T1cN0M0", "IA"),
        ("Stage 0", "0"),
        ("stage 0is", "0"),
        ("Stage IV", "IV"),
        ("stage 4", "IV"),
        ("Stage IVB", "IVB"),
        ("Stage IIC", "IIC"),
        ("Stage IIIC1", "IIIC"),  # sub-group folds into its group
        ("Stage IA2", "IA"),
    ],
)
def test_stage_spellings(text, stage):
    assert parse_stage(text) == stage
    assert stage in STAGE_GROUPS


@pytest.mark.parametrize(
    "text",
    [
        "",
        "stage",
        "Stage 5",
        "stage 12",
        "Stage IIE",  # lymphoma modifier: not a TNM stage group the rules know
        "Stage IIA or IIB",  # two stages in one text: unreadable, never a pick
        "Grade 2",
        "I",  # a bare "I" is a stage only as a whole value; as a word it is not read
        "I had a scan",
        "Staging CT of the chest",
    ],
)
def test_not_a_stage(text):
    expected = "I" if text == "I" else None
    assert parse_stage(text) == expected


@pytest.mark.parametrize(
    ("code", "stage"),
    [
        ("1A", "IA"),
        ("2B", "IIB"),
        ("3C", "IIIC"),
        ("4", "IV"),
        ("0", "0"),
        ("IIA", "IIA"),
        ("9Z", None),
        ("", None),
    ],
)
def test_ajcc_stage_codes(code, stage):
    # mCODE examples code AJCC stage groups as "3C" (display IIIC) and "2B" (display IIB)
    assert ajcc_stage(code) == stage


@pytest.mark.parametrize(
    ("label", "group"),
    [
        ("IA1", "IA"),
        ("IIIC2", "IIIC"),
        ("0is", "0"),
        ("0a", "0"),
        ("IIB", "IIB"),
        ("IE", None),
        ("IID", None),
    ],
)
def test_vocabulary_folding(label, group):
    assert vocabulary_stage(label) == group


@pytest.mark.parametrize(
    ("text", "tnm"),
    [
        ("cT2b", {"T": "T2b"}),
        ("pT3a", {"T": "T3a"}),
        ("T2bN0M0", {"T": "T2b", "N": "N0", "M": "M0"}),
        ("cT2b N0 M0", {"T": "T2b", "N": "N0", "M": "M0"}),
        ("pT3a pN0 cM0", {"T": "T3a", "N": "N0", "M": "M0"}),
        ("ypT2 ypN1mi", {"T": "T2", "N": "N1mi"}),
        ("pN0(i+)", {"N": "N0"}),
        ("pN1a(sn)", {"N": "N1a"}),
        ("cM1a(1)", {"M": "M1a"}),
        ("cM1b", {"M": "M1b"}),
        ("Tis (DCIS)", {"T": "Tis"}),
        ("TX NX M0", {"T": "TX", "N": "NX", "M": "M0"}),
        ("cTNM: T1c N0 M0", {"T": "T1c", "N": "N0", "M": "M0"}),
        ("T2b and later T3a", {}),  # the same category twice with two values: left out
        ("PSMA PET", {}),
        ("Stage IIA", {}),
    ],
)
def test_tnm_spellings(text, tnm):
    assert parse_tnm(text) == tnm


@pytest.mark.parametrize(
    ("code", "category", "label"),
    [
        ("cT3", "T", "T3"),
        ("pN0", "N", "N0"),
        ("cM0", "M", "M0"),
        ("cM1c", "M", "M1c"),
        ("T2b", "T", "T2b"),
        ("2b", "T", "T2b"),  # a bare value in a T category record
        ("cN3", "T", None),  # an N value in a T record is not a T category
        ("cT3", None, "T3"),
        ("xyz", "T", None),
    ],
)
def test_ajcc_category_codes(code, category, label):
    assert ajcc_category(code, category) == label


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("Grade group 1 (Gleason 3+3=6)", 1),
        ("Gleason 3+4=7", 2),
        ("Gleason score 7 (4+3)", 3),
        ("Gleason 3 + 4 = 7", 2),
        ("GG 2", 2),
        ("GG2", 2),
        ("ISUP grade 3", 3),
        ("ISUP grade group 4", 4),
        ("WHO/ISUP grade group 5", 5),
        ("Gleason 8", 4),
        ("Gleason score: 9 (4+5)", 5),
        ("Gleason 6", 1),
    ],
)
def test_grade_spellings(text, group):
    reading = parse_grade(text)
    assert (reading.group, reading.problem) == (group, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Gleason 7", "ambiguous"),
        ("Grade group 1 (Gleason 3+4=7)", "disagree"),
        ("Gleason 3+4=8", "does not add up"),
        ("Grade 2", None),  # a histologic grade (e.g. Nottingham) is not an ISUP grade group
        ("3+4", None),  # a bare pattern outside a Gleason record is not read
        ("Stage IIA", None),
    ],
)
def test_grade_not_read(text, problem):
    reading = parse_grade(text)
    assert reading.group is None
    if problem is None:
        assert reading.problem is None
    else:
        assert problem in (reading.problem or "")


def test_bare_values_count_in_a_gleason_record():
    assert parse_grade("3+4", gleason_context=True).group == 2
    assert parse_grade("6", gleason_context=True).group == 1
    assert parse_grade("7", gleason_context=True).group is None


@pytest.mark.parametrize(
    ("concept", "staging"),
    [
        ({"text": "Clinical stage"}, True),
        ({"text": "Gleason score"}, True),
        ({"text": "TNM"}, True),
        ({"text": "cT2b N0 M0"}, True),
        ({"coding": [{"system": "urn:oid:1.2.3.4", "code": "STG"}], "text": "AJCC stage"}, True),
        ({"text": "Hemoglobin"}, False),
        # a standard code says what the record is; its text is a display and is not matched
        ({"coding": [{"system": "http://loinc.org", "code": "718-7"}], "text": "Stage"}, False),
        (None, False),
    ],
)
def test_text_staging_code_probe(concept, staging):
    assert is_text_staging_code(concept) is staging
