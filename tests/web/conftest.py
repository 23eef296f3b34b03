"""Browser tests of the screens: a real headless Chromium (the system's, Debian's ``chromium``,
installed by ``make tools``) driven by Playwright, which never downloads a browser of its own.

Without a Chromium the tests skip, and fail in CI (``CI=true``). ``ANXIN_TEST_CHROMIUM`` names
another binary. Each test's screenshots go to docs/img/ (the README shows them).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devices import access
from devices.access import Role
from tests.services import IN_CI, ROOT

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

SHOTS = ROOT / "docs" / "img"
DISPATCH_VIEWPORT = {"width": 1366, "height": 768}
PHONE_VIEWPORT = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    return (
        os.environ.get("ANXIN_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium for one test module. Not for the session: Playwright's sync API
    keeps an event loop running in the main thread while it is open, which the async tests of
    other modules need for their own."""
    path = chromium_path()
    if path is None:
        reason = "no Chromium: install Debian's chromium (make tools) for the browser tests"
        if IN_CI:
            pytest.fail(f"{reason}; in CI it must be there", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> Path:
    """Save a screenshot of the page as docs/img/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@dataclass(frozen=True)
class Person:
    principal_id: uuid.UUID
    token: str


def person(db_url: str, name: str, role: Role, **scopes: Any) -> Person:
    """A principal of ``role`` with a fresh token."""
    with psycopg.connect(db_url) as conn:
        pid = access.create_principal(conn, name, role, **scopes)
        issued = access.issue_token(conn, pid, days=1)
    return Person(pid, issued.token)
