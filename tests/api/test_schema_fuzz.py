"""Property-based API test: schemathesis generates requests from the app's OpenAPI schema and
sends them, with an admin token and with a family member's token, through its own ASGI client
(lifespan included); no answer may be a 5xx. Bounded: a few examples per operation,
derandomized, well under two minutes per role."""

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

# Per operation and role; the family member's requests are mostly refused early (403, 404),
# so fewer of them find as much.
EXAMPLES_PER_OPERATION = {Role.ADMIN: 15, Role.FAMILY: 8}


@pytest.mark.parametrize("role", [Role.ADMIN, Role.FAMILY])
def test_no_server_errors(db_url: str, role: Role) -> None:
    app = create_app(load_settings(db={"url": db_url}))
    with psycopg.connect(db_url, autocommit=True) as conn:
        relatives = []
        if role is Role.FAMILY:
            row = conn.execute(
                """INSERT INTO residents (name, sex, birth_date)
                   VALUES ('Fuzz Elder', 'female', '1940-01-01') RETURNING id"""
            ).fetchone()
            assert row is not None
            relatives = [row[0]]
        pid = access.create_principal(conn, "Test fuzz", role, resident_ids=relatives)
        issued = access.issue_token(conn, pid)
    headers = {"Authorization": f"Bearer {issued.token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @settings(
                max_examples=EXAMPLES_PER_OPERATION[role],
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
