"""Fixtures shared by all tests: real PostgreSQL and Mosquitto, chosen by environment variables.

``ANXIN_TEST_DATABASE_URL`` (an admin URL; default the local server's ``postgres`` database)
and ``ANXIN_TEST_MQTT_URL`` (default mqtt://127.0.0.1:1883). Each test gets a database and a
topic prefix of its own. Where a service is unreachable the test is skipped, except in CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.services import (
    ADMIN_URL,
    IN_CI,
    SHARED_BROKER,
    PrivateBroker,
    PrivatePostgres,
    fresh_database,
    port_open,
)


def _unavailable(what: str) -> None:
    message = f"{what} is not reachable"
    if IN_CI:
        pytest.fail(f"{message}; in CI every service must be there", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            pass
    except psycopg.OperationalError:
        _unavailable(f"PostgreSQL at {ADMIN_URL}")
    return ADMIN_URL


@pytest.fixture
def db_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def shared_broker_url() -> str:
    parts = urlsplit(SHARED_BROKER)
    if not port_open(parts.hostname or "127.0.0.1", parts.port or 1883):
        _unavailable(f"Mosquitto at {SHARED_BROKER}")
    return SHARED_BROKER


@pytest.fixture
def topic_prefix() -> str:
    return f"anxin-test-{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """A Mosquitto of this test's own, with the project's configuration (anonymous)."""
    try:
        broker = PrivateBroker()
    except RuntimeError as exc:
        _unavailable(str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres()
    except (RuntimeError, OSError) as exc:
        _unavailable(f"a private PostgreSQL ({exc})")
    server.start()
    try:
        yield server
    finally:
        server.close()


class _FailOnThreadErrors(logging.Handler):
    """Errors logged from background threads fail the test instead of vanishing."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = _FailOnThreadErrors()
    root = logging.getLogger()
    root.addHandler(handler)
    thread_errors: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = thread_errors.append
    try:
        yield
    finally:
        threading.excepthook = previous
        root.removeHandler(handler)
    if request.node.get_closest_marker("allow_logged_errors") is None:
        problems = [f"{r.name}: {r.getMessage()}" for r in handler.records]
        problems += [
            f"thread {a.thread.name if a.thread else '?'}: {a.exc_value!r}" for a in thread_errors
        ]
        if problems:
            pytest.fail(
                "errors were logged or raised in background threads:\n" + "\n".join(problems)
            )
