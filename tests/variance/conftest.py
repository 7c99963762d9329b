"""Session fixtures of the data-variance suite: one in-process service, canonical runs cached."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cds_service.config import Settings
from tests.variance.harness import TODAY, Harness
from tests.variance.variants import Runs


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    settings = Settings(
        today=TODAY,
        feedback_db=tmp_path_factory.mktemp("variance") / "feedback.sqlite3",
        strict_responses=True,
    )
    yield Runs(Harness(settings))
