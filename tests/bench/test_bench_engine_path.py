"""The bench's workloads exercise the real engine: the draft order comes back rated, in the
metastatic-prostate scenario the chart was built for, so the benchmark measures the rating path."""

import pytest

from bench import workloads as wl
from cds_service.app import create_app
from cds_service.config import Settings

PAMA = "http://fhir.org/argonaut/CodeSystem/pama-rating"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(today=wl.AS_OF, feedback_db=tmp_path_factory.mktemp("fb") / "f.db")
    return create_app(settings).test_client()


def _inner(resource, name):
    for ext in resource.get("extension", ()):
        for sub in ext.get("extension", ()):
            if sub["url"] == name:
                return sub.get("valueCode")
    return None


@pytest.mark.parametrize("size", ["small", "typical", "large"])
def test_workload_order_is_rated_by_the_engine(client, size):
    service = wl.pick_service(client.get("/cds-services").get_json())
    body = wl.build_request(service, wl.generate_chart(wl.SIZES[size]))
    answer = client.post(f"/cds-services/{service['id']}", json=body)
    assert answer.status_code == 200
    actions = answer.get_json().get("systemActions", [])
    assert len(actions) == 1 and actions[0]["type"] == "update"
    rated = actions[0]["resource"]
    assert rated["id"] == "bench-order-1"
    ratings = [
        c["code"]
        for e in rated["extension"]
        for c in e.get("valueCodeableConcept", {}).get("coding", ())
        if c.get("system") == PAMA
    ]
    assert ratings == ["appropriate"]
    assert _inner(rated, "scenario") == "prostate-metastatic-systemic-therapy"
    assert _inner(rated, "procedure") == "bone-scan-whole-body"
