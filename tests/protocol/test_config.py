from datetime import date
from pathlib import Path

import pytest

from cds_service.config import ConfigError, Settings


def test_defaults_are_safe():
    settings = Settings.from_env({})
    assert settings.trusted_clients is None and settings.fhir_allowed_hosts == ()
    assert settings.today is None and settings.cors_origins == ("*",)
    assert settings.jwt_algorithms == ("ES384", "RS384")


def test_values_are_read_from_cds_variables():
    settings = Settings.from_env({
        "CDS_TODAY": "2026-11-22",
        "CDS_CARDS_DIR": "/srv/cards",
        "CDS_PUBLIC_BASE_URL": "https://cds.example.org/",
        "CDS_FHIR_ALLOWED_HOSTS": "fhir.example.org, http://localhost:8081",
        "CDS_FHIR_DEADLINE": "2.5",
        "CDS_FHIR_PAGE_CAP": "4",
        "CDS_FEEDBACK_DB": "/data/fb.sqlite3",
        "CDS_TRUSTED_CLIENTS": "/etc/cds/trusted.json",
        "CDS_CORS_ORIGINS": "https://sandbox.cds-hooks.org",
        "CDS_JWT_ALGORITHMS": "ES384,RS384,ES256",
        "CDS_STRICT_RESPONSES": "true",
        "CDS_TRUST_PROXY_HEADERS": "1",
    })
    assert settings.today == date(2026, 11, 22)
    assert settings.cards_dir == Path("/srv/cards")
    assert settings.public_base_url == "https://cds.example.org"
    assert settings.fhir_allowed_hosts == ("fhir.example.org", "http://localhost:8081")
    assert settings.fhir_deadline == 2.5 and settings.fhir_page_cap == 4
    assert settings.feedback_db == Path("/data/fb.sqlite3")
    assert settings.trusted_clients == Path("/etc/cds/trusted.json")
    assert settings.cors_origins == ("https://sandbox.cds-hooks.org",)
    assert settings.jwt_algorithms == ("ES384", "RS384", "ES256")
    assert settings.strict_responses is True
    assert settings.trust_proxy_headers == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [("CDS_TODAY", "22/11/2026"), ("CDS_FHIR_DEADLINE", "soon"), ("CDS_FHIR_DEADLINE", "0"),
     ("CDS_FHIR_PAGE_CAP", "-1"), ("CDS_STRICT_RESPONSES", "maybe")],
)
def test_bad_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_fhir_byte_cap_is_a_setting():
    assert Settings.from_env({}).fhir_max_bytes == 20 * 1024 * 1024
    assert Settings.from_env({"CDS_FHIR_MAX_BYTES": "5000000"}).fhir_max_bytes == 5_000_000
    with pytest.raises(ConfigError, match="CDS_FHIR_MAX_BYTES"):
        Settings.from_env({"CDS_FHIR_MAX_BYTES": "20MB"})
