"""Fixtures of the API tests: a fresh database per test module on the real PostgreSQL.

The helpers are the suite's own (tests/services.py); unreachable services skip, or fail in CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import fresh_database as _fresh_database


@pytest.fixture(scope="module")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A migrated database of its own (anxin_t_<hex>), dropped after the module."""
    with _fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def fresh_database(postgres_admin_url: str) -> Iterator[str]:
    """An empty database of its own (not migrated), dropped after the test."""
    with _fresh_database(postgres_admin_url, migrate=False) as url:
        yield url
