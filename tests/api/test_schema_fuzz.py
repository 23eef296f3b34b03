"""Property-based API test: schemathesis generates requests from the app's OpenAPI schema and
sends them, with an admin token, through its own ASGI client (lifespan included); no answer may
be a 5xx. Bounded: a few examples per operation, derandomized, well under two minutes in all."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.python import asgi

from api.app import create_app
from core.settings import load_settings
from devices import access
from devices.access import Role

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 15


def test_no_server_errors(db_url: str) -> None:
    app = create_app(load_settings(db={"url": db_url}))
    with psycopg.connect(db_url, autocommit=True) as conn:
        issued = access.issue_token(conn, access.create_principal(conn, "Test fuzz", Role.ADMIN))
    headers = {"Authorization": f"Bearer {issued.token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def run(case: Any) -> None:
                response = case.call(headers=headers)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{response.text[:300]}"
                    )

            run()
    finally:
        asgi.shutdown_lifespans()  # closes the app's pools before the database is dropped
    assert operations > 40
    assert failures == []
