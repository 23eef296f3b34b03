"""Fixtures of the API tests: a fresh database per test module on the real PostgreSQL.

The helpers are the suite's own (tests/services.py); unreachable services skip, or fail in CI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from api.app import create_app
from core.settings import load_settings
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


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API as an ASGI app on this test's database, its lifespan running."""
    app = create_app(load_settings(db={"url": db_url}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://anxin.test"
        ) as client,
    ):
        yield client
