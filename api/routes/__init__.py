"""Routers of the registry API under /api/v1; ``api.app.create_app`` includes them."""

from __future__ import annotations

from fastapi import APIRouter


def registry_routers() -> list[APIRouter]:
    """The routers of the registry API, access and audit (imported here, not at package import)."""
    from api.routes import (  # noqa: PLC0415 - keeps importing api.routes cheap
        access,
        bulk,
        care,
        circle,
        devices,
        fhir,
        lookup,
        news2_settings,
        registry,
        reports,
        visits,
    )

    # bulk first: /residents/export must not be taken for /residents/{resident_id}.
    return [
        access.router,
        bulk.router,
        registry.router,
        circle.router,
        devices.router,
        lookup.router,
        care.router,
        news2_settings.router,
        reports.router,
        fhir.router,
        visits.router,
    ]
