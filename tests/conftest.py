"""Suite-wide fixtures: a throwaway PostgreSQL for the state tests (tests/pg_cluster.py).

One cluster per session, started on first use (a run that needs no PostgreSQL starts none), each
test on a fresh database of it. Without PostgreSQL binaries the PostgreSQL tests skip with the
reason, except in CI (`CI` or `TEST_REQUIRE_POSTGRES` set, as .ci/run does): there they fail, so a
CI machine without PostgreSQL cannot pass the suite by skipping them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests import pg_cluster

_databases = itertools.count(1)


def _required() -> bool:
    flags = (os.environ.get(name, "").strip().lower() for name in ("CI", "TEST_REQUIRE_POSTGRES"))
    return any(flag not in ("", "0", "false") for flag in flags)


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_cluster.PgCluster]:
    reason = pg_cluster.available()
    if reason is not None:
        if _required():
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(reason)
    cluster = pg_cluster.PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres: pg_cluster.PgCluster) -> str:
    """A fresh, empty PostgreSQL database for this test."""
    return postgres.create_database(f"t{next(_databases)}")
