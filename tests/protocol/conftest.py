"""Shared fixtures for the protocol tests: an app per test, example requests, JWT signing keys."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.model import EngineResult
from cds_service.protocol.discovery import load_prefetch_templates

EXAMPLES = Path(__file__).resolve().parent / "examples"
FHIR = "https://fhir.example.org/r4"
PATIENT_ID = "pat-1"
BASE = "http://localhost"  # Flask test client root


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        today=date(2026, 11, 22),
        # the Flask test client's root; trusted-clients mode refuses to start without a public URL
        public_base_url=BASE,
        feedback_db=tmp_path / "feedback.sqlite3",
        fhir_allowed_hosts=("fhir.example.org", "http://localhost:9999"),
        fhir_deadline=3.0,
        strict_responses=True,
    )


@pytest.fixture
def make_app(settings: Settings) -> Callable[..., Any]:
    def build(**overrides: Any):
        app = create_app(replace(settings, **overrides))
        app.testing = True
        return app

    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def patient(pid: str = PATIENT_ID) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1950-01-01"}


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


def condition(cid: str, pid: str = PATIENT_ID) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C61"}]},
    }


def service_request(rid: str = "sr-1", pid: str = PATIENT_ID) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "78306"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def full_prefetch(pid: str = PATIENT_ID) -> dict[str, Any]:
    """Every template key satisfied (no FHIR query needed)."""
    # every key of cards/prefetch.yaml, so a template added there needs no edit here
    out: dict[str, Any] = {key: bundle() for key in load_prefetch_templates()}
    out.update({"patient": patient(pid), "conditions": bundle(condition("c1", pid))})
    return out


def hook_request(
    hook: str = "order-select", prefetch: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "userId": "Practitioner/doc-1",
        "patientId": PATIENT_ID,
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": service_request()}]},
    }
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/sr-1"]
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = copy.deepcopy(prefetch)
    body.update(extra)
    return body


def sandbox_request():
    """Shaped like the CDS Hooks sandbox's PAMA tab: non-R4 draft order, Bundle without type."""
    return {
        "hookInstance": "5b1c3c2e-0f3e-4a51-9d0c-0d1c1f6c7a11",
        "hook": "order-select",
        "fhirServer": "http://localhost:9999/fhir",
        "context": {
            "userId": "Practitioner/COREPRACTITIONER1",
            "patientId": PATIENT_ID,
            "selections": ["ServiceRequest/example-request-id"],
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {
                "resourceType": "ServiceRequest", "id": "example-request-id", "status": "draft",
                "code": {"coding": [{}]},
                "category": {"coding": [{"system": "http://snomed.info/sct", "code": "363679005"}]},
                "reasonCode": {"coding": [{"system": "http://snomed.info/sct", "code": "279039007"}]},
                "subject": {"reference": f"Patient/{PATIENT_ID}"},
            }}]},
        },
        "prefetch": full_prefetch(),
    }


def service_url(hook: str) -> str:
    service = "imaging-appropriateness" if hook == "order-select" else "imaging-appropriateness-sign"
    return f"/cds-services/{service}"


# --- JWT ---------------------------------------------------------------------------------------


class Signer:
    """A CDS Client with its own key pair, signing real JWTs."""

    def __init__(self, iss: str = "https://ehr.example.org", alg: str = "ES384", kid: str = "key-1") -> None:
        self.iss, self.alg, self.kid = iss, alg, kid
        if alg.startswith("ES"):
            curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
            self.private = ec.generate_private_key(curve)
            public_jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**public_jwk, "kid": kid, "use": "sig", "alg": alg}

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def token(self, audience: str, /, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = time.time()
        payload = {"iss": self.iss, "aud": audience, "iat": int(now), "exp": int(now) + 300,
                   "jti": str(uuid.uuid4())}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=header)

    def auth(self, audience: str, /, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(audience, **kwargs)}"}


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def trusted_file(tmp_path: Path, signer: Signer) -> Path:
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({signer.iss: {"jwks": signer.jwks}}))
    return path


@pytest.fixture
def captured(monkeypatch):
    """The PatientRecord the engine receives (the engine itself is not under test here)."""
    seen = {}

    def capture(request, record, knowledge, options=None):
        seen["request"], seen["record"] = request, record
        return EngineResult()

    monkeypatch.setattr("cds_service.engine.evaluate", capture)
    return seen


@pytest.fixture
def fhir():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
