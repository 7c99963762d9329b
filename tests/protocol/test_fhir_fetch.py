"""Joining the code-filtered Observation templates into one query and splitting the answer back
(cds_service.protocol.fhir_fetch; issue 11 point 3). Pure functions: no server, no app."""

from cds_service.protocol.discovery import load_prefetch_templates
from cds_service.protocol.fhir_fetch import plan, split, unjoin

TEMPLATES = load_prefetch_templates()
SEARCHES = {k: t.query.replace("{{context.patientId}}", "pat-1")
            for k, t in TEMPLATES.items() if not t.is_read}
JOINED = ("observations", "staging-observations", "symptom-observations")
LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"


def _joined():
    joined = [q for q in plan(SEARCHES) if q.joined]
    assert len(joined) == 1
    return joined[0]


def _obs(rid, *codings):
    return {"resourceType": "Observation", "id": rid,
            "code": {"coding": [{"system": s, "code": c} for s, c in codings]}}


def test_the_code_filtered_observation_templates_become_one_query():
    queries = plan(SEARCHES)
    joined = _joined()
    assert set(joined.keys) == set(JOINED)
    # every other template is asked as written, value-concept included (another parameter)
    assert sorted(q.query for q in queries if not q.joined) == sorted(
        q for k, q in SEARCHES.items() if k not in JOINED)
    path, _, qs = joined.query.partition("?")
    params = [p.split("=", 1) for p in qs.split("&")]
    assert path == "Observation"
    assert [n for n, _ in params].count("patient") == 1 and ["_count", "1000"] in params
    asked = {tuple(t.split("|")) for n, v in params if n == "code" for t in v.split(",")}
    assert asked == {c for k in JOINED for c in TEMPLATES[k].codes}
    assert len(asked) == len([t for n, v in params if n == "code" for t in v.split(",")])  # no repeats


def test_each_template_gets_the_observations_of_its_own_codes():
    psa = _obs("psa", (LOINC, "2857-1"))
    stage = _obs("stage", (SNOMED, "399537006"))
    both = _obs("both", (LOINC, "2857-1"), (SNOMED, "399537006"))  # codings are synonyms: both keys
    back_pain = _obs("back", (SNOMED, "161891005"))
    wrong_system = _obs("wrong", ("http://example.org/local", "2857-1"))
    unasked = _obs("unasked", (LOINC, "8480-6"))  # a server that ignored the filter
    no_code = {"resourceType": "Observation", "id": "none"}
    shares = split(_joined(), [psa, stage, both, back_pain, wrong_system, unasked, no_code])
    ids = {key: [r["id"] for r in share] for key, share in shares.items()}
    assert ids == {"observations": ["psa", "both"], "staging-observations": ["stage", "both"],
                   "symptom-observations": ["back"]}


def test_a_refused_joined_query_stands_for_the_templates_as_written():
    singles = unjoin(_joined(), SEARCHES)
    assert {q.query for q in singles} == {SEARCHES[k] for k in JOINED}
    assert all(not q.joined for q in singles)


def test_only_searches_that_differ_in_their_code_list_are_joined():
    searches = {
        "a": "Observation?patient=p&code=http://loinc.org|1-1",
        "b": "Observation?patient=p&code=http://loinc.org|2-2&_count=50",
        "c": "Observation?patient=p&category=laboratory&code=http://loinc.org|3-3",  # other params
        "d": "Observation?patient=p&code=4-4,http://loinc.org|5-5",  # a code without its system
        "e": "Condition?patient=p&code=http://snomed.info/sct|6",
    }
    queries = plan(searches)
    joined = [q for q in queries if q.joined]
    assert [q.keys for q in joined] == [("a", "b")]
    assert joined[0].query == "Observation?patient=p&_count=50&code=http://loinc.org|1-1,http://loinc.org|2-2"
    assert sorted(q.query for q in queries if not q.joined) == sorted(searches[k] for k in "cde")
