"""Fixtures of the demo's tests: an empty database of each test's own on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import fresh_database as _fresh_database


@pytest.fixture
def fresh_database(postgres_admin_url: str) -> Iterator[str]:
    """An empty database of its own (not migrated: the demo migrates it), dropped afterwards."""
    with _fresh_database(postgres_admin_url, migrate=False) as url:
        yield url
