"""Routers of the registry API under /api/v1; ``api.app.create_app`` includes them."""

from __future__ import annotations

from fastapi import APIRouter


def registry_routers() -> list[APIRouter]:
    """The routers of the registry API, access and audit (imported here, not at package import)."""
    from api.routes import access, registry  # noqa: PLC0415 - keeps importing api.routes cheap

    return [access.router, registry.bulk_router, registry.router]
