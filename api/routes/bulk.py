"""CSV import and export of residents (admins and operators).

On a router of their own, included before the registry's: /residents/export must not be taken
for /residents/{resident_id}.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from api.auth import DbConn, require
from api.routes.registry import Keys, by_name
from devices import access, csv_io
from devices.access import Action, Decision, Principal, Role

router = APIRouter(prefix="/api/v1", tags=["registry"])


class RowErrorOut(BaseModel):
    row: int = Field(description="Row number as in a spreadsheet (the header is row 1).")
    column: str
    message: str


class ImportOut(BaseModel):
    imported: int
    resident_ids: list[uuid.UUID]
    errors: list[RowErrorOut]


_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/residents/import",
    openapi_extra=_CSV_BODY,
    responses={422: {"model": ImportOut, "description": "Nothing imported; every bad row."}},
)
async def import_residents(
    request: Request,
    conn: DbConn,
    keys: Keys,
    principal: Annotated[Principal, Depends(require(Action.BULK))],
) -> JSONResponse:
    """Residents, profiles and contacts from CSV (devices/csv_io.py): all rows or none.

    With any bad row nothing is written and the answer is 422 with every problem by row.
    """
    raw = await request.body()  # at most api.guard.CSV_LIMIT: the guard read it first
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            status_code=422, detail=f"CSV is not UTF-8 (byte {exc.start}): {exc.reason}."
        ) from exc
    # The import is sync database work: off the event loop.
    report = await run_in_threadpool(
        csv_io.import_residents, conn, text, keyring=keys, by=by_name(principal)
    )
    out = ImportOut(
        imported=report.imported,
        resident_ids=list(report.resident_ids),
        errors=[RowErrorOut(row=e.row, column=e.column, message=e.message) for e in report.errors],
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=422 if out.errors else 200)


@router.get("/residents/export", response_class=PlainTextResponse)
def export_residents(
    conn: DbConn,
    keys: Keys,
    principal: Annotated[Principal, Depends(require(Action.BULK))],
    include_profiles: bool = False,
) -> PlainTextResponse:
    """Residents and contacts as CSV in the import format; health fields only for admins who
    ask (``include_profiles``), and then the export is audited."""
    # Contacts' channels hold tokens: in clear for admins only.
    text = csv_io.export_residents(
        conn, keyring=keys, mask_channels=principal.role is not Role.ADMIN
    )
    if include_profiles:
        decision = access.decide(principal, Action.PROFILE_READ)
        if access.scope_of(principal.role, Action.PROFILE_READ) is not access.Scope.ALL:
            decision = Decision(False, f"role {principal.role} may not export profiles")
        access.audit(conn, principal, Action.PROFILE_READ, decision, purpose="CSV export")
        if not decision.granted:
            raise HTTPException(status_code=403, detail=f"Forbidden: {decision.reason}.")
    else:
        text = _drop_columns(text, set(csv_io.PROFILE_COLUMNS))
    return PlainTextResponse(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="residents.csv"'},
    )


def _drop_columns(text: str, drop: set[str]) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    keep = [i for i, name in enumerate(rows[0]) if name not in drop]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row[i] for i in keep])
    return out.getvalue()
