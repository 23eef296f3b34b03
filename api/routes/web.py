"""The screens of the people who act, served by the API: ``/app/<screen>`` (api/web/).

One page (``app.html``) loads the screen named by the path; scripts and styles come from the
package (``/app/static/<file>``), never from a CDN: dispatch centres run on closed networks.
Every screen reads and writes through the HTTP API like any other client; which screens a
role has is :data:`api.routes.session.SCREENS`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8"}  # fmt: skip
PAGES = ("login", "dispatch", "doctor", "operator", "family")
# Only our own scripts, styles and API; no inline script, no framing, no referrer.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}


@cache
def _asset(name: str) -> bytes | None:
    entry = resources.files("api").joinpath("web", name)
    return entry.read_bytes() if entry.is_file() else None


def asset_names() -> list[str]:
    """The files the screens are made of."""
    return sorted(e.name for e in resources.files("api").joinpath("web").iterdir() if e.is_file())


@router.get("/app")
@router.get("/app/")
def app_root() -> RedirectResponse:
    return RedirectResponse("/app/login", status_code=307)


@router.get("/app/static/{name}")
def static(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = _asset(name) if suffix in _TYPES and "/" not in name else None
    if body is None:
        raise HTTPException(status_code=404, detail=f"No asset {name!r}.")
    return Response(
        body, media_type=_TYPES[suffix], headers={**HEADERS, "Cache-Control": "no-cache"}
    )


@router.get("/app/{page}")
def page(page: str) -> Response:
    if page not in PAGES:
        raise HTTPException(status_code=404, detail=f"No screen {page!r}.")
    body = _asset("app.html")
    assert body is not None  # noqa: S101 - shipped in the package (package-data)
    return Response(
        body, media_type=_TYPES[".html"], headers={**HEADERS, "Cache-Control": "no-store"}
    )
