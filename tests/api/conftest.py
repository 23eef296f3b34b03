"""Fixtures of the API tests: a fresh database per test module on the real PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from core import db
from core.embedded import reachable_postgres

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("ANXIN_TEST_DATABASE_URL", DEFAULT_URL)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def require_postgres() -> str:
    """The admin URL; skips the test when nothing answers there, fails instead under CI=true."""
    url = admin_url()
    if not reachable_postgres(url, timeout=3):
        message = f"no PostgreSQL at {db.redact_url(url)} (set ANXIN_TEST_DATABASE_URL)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A migrated database of its own (anxin_t_<hex>), dropped after the module."""
    admin = require_postgres()
    name = f"anxin_t_{secrets.token_hex(6)}"
    db.create_database(admin, name)
    url = with_database(admin, name)
    try:
        db.upgrade(url)
        yield url
    finally:
        db.drop_database(admin, name)


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty database of its own (not migrated), dropped after the test."""
    admin = require_postgres()
    name = f"anxin_t_{secrets.token_hex(6)}"
    db.create_database(admin, name)
    try:
        yield with_database(admin, name)
    finally:
        db.drop_database(admin, name)
