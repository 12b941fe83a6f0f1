from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import postgres_server
import pytest

REQUIRE_ENV = "QCO_REQUIRE_POSTGRES"
"""Set by CI: a PostgreSQL server that cannot be started fails the tests instead of skipping them."""
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[postgres_server.PostgresServer]:
    try:
        server = postgres_server.start()
    except (RuntimeError, OSError) as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"PostgreSQL is required here ({REQUIRE_ENV} is set) but could not start: {exc}")
        pytest.skip(f"no PostgreSQL server can be started here: {exc}")
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres: postgres_server.PostgresServer) -> str:
    """A fresh database per test on the session's server."""
    return postgres_server.create_database(postgres, f"qco_test_{next(_names)}")
