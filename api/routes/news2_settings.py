"""An elder's NEWS2 settings over HTTP: what the signed family doctor changed from the RCP
chart (devices/news2_settings.py stores them; the ingester scores with them, see
ingest/news2_settings.py).

Reading is scoped like the vitals and NEWS2 history (the emergency profile's scope: admins,
the signed doctor, the family, a dispatcher during an emergency); changing is the signed
family doctor's and the admins' (``news2.write``), and every change and every refusal is in
the audit log. A chart is given as its band starts and scores, checked by the same rules the
detector applies (:class:`detectors.news2_charts.Bands`), so a 422 names the chart and the field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import CurrentPrincipal, DbConn, authorize_resident
from api.routes.registry import by_name
from detectors.news2_charts import DEFAULT_SETTINGS, Bands, chart_of
from devices import news2_settings as store
from devices.access import Action

router = APIRouter(prefix="/api/v1", tags=["trends"])

ChartValue = Annotated[float, Field(ge=0, le=400, allow_inf_nan=False)]


class BandsIn(BaseModel):
    """One chart: ``starts`` are the first values of each band after the lowest (ascending),
    ``scores`` the score of each band (one more than ``starts``), e.g. the RCP pulse chart is
    ``starts [41, 51, 91, 111, 131]``, ``scores [3, 1, 0, 1, 2, 3]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    starts: list[ChartValue] = Field(min_length=1, max_length=8)
    scores: list[Annotated[int, Field(ge=0, le=3)]] = Field(min_length=2, max_length=9)

    @model_validator(mode="after")
    def _chart(self) -> BandsIn:
        # The detector's own rules (one more score than starts, starts ascending).
        Bands(tuple(self.starts), tuple(self.scores))
        return self


class News2SettingsIn(BaseModel):
    """The charts the doctor changed (left out or null: the RCP chart) and the SpO2 scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spo2_scale: Literal[1, 2] = Field(
        1, description="2 for confirmed hypercapnic respiratory failure (RCP SpO2 scale 2)."
    )
    respiration_rate: BandsIn | None = None
    spo2_scale1: BandsIn | None = None
    spo2_scale2_air: BandsIn | None = None
    spo2_scale2_oxygen: BandsIn | None = None
    systolic_bp: BandsIn | None = None
    pulse: BandsIn | None = None
    temperature: BandsIn | None = None
    note: Annotated[str, Field(max_length=500)] = Field("", description="Why (for the record).")


CHART_FIELDS = (
    "respiration_rate", "spo2_scale1", "spo2_scale2_air", "spo2_scale2_oxygen", "systolic_bp",
    "pulse", "temperature",
)  # fmt: skip


class News2SettingsOut(BaseModel):
    """The settings in force: every chart (the doctor's or the RCP chart's)."""

    resident_id: uuid.UUID
    spo2_scale: int
    respiration_rate: BandsIn
    spo2_scale1: BandsIn
    spo2_scale2_air: BandsIn
    spo2_scale2_oxygen: BandsIn
    systolic_bp: BandsIn
    pulse: BandsIn
    temperature: BandsIn
    changed: list[str] = Field(description="The charts that differ from the RCP chart.")
    note: str = ""
    stored: bool = Field(description="False: nothing was ever set (the RCP chart, scale 1).")
    updated_at: dt.datetime | None = None
    updated_by: str = ""


def _out(resident_id: uuid.UUID, stored: store.StoredNews2 | None) -> News2SettingsOut:
    charts: dict[str, BandsIn] = {}
    changed: list[str] = []
    for name in CHART_FIELDS:
        mine = stored.bands.get(name) if stored is not None else None
        if mine is not None:
            changed.append(name)
            charts[name] = BandsIn(starts=list(mine[0]), scores=list(mine[1]))
        else:
            chart = chart_of(DEFAULT_SETTINGS, name)
            charts[name] = BandsIn(starts=list(chart.starts), scores=list(chart.scores))
    return News2SettingsOut(
        resident_id=resident_id,
        spo2_scale=stored.spo2_scale if stored is not None else 1,
        **charts,
        changed=changed,
        note=stored.note if stored is not None else "",
        stored=stored is not None,
        updated_at=stored.updated_at if stored is not None else None,
        updated_by=stored.updated_by if stored is not None else "",
    )


@router.get("/residents/{resident_id}/news2/settings")
def get_news2_settings(
    resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal
) -> News2SettingsOut:
    """The NEWS2 settings the elder is scored with."""
    authorize_resident(
        conn, principal, Action.PROFILE_READ, resident_id, purpose="GET news2 settings"
    )
    return _out(resident_id, store.get(conn, resident_id))


@router.put("/residents/{resident_id}/news2/settings")
def put_news2_settings(
    resident_id: uuid.UUID, body: News2SettingsIn, conn: DbConn, principal: CurrentPrincipal
) -> News2SettingsOut:
    """Replace the elder's NEWS2 settings (charts left out go back to the RCP chart); the
    ingester scores with them within seconds. Audited."""
    authorize_resident(
        conn,
        principal,
        Action.NEWS2_WRITE,
        resident_id,
        purpose="PUT news2 settings",
        audit_granted=True,
    )
    bands: dict[str, store.ChartBands] = {}
    for name in CHART_FIELDS:
        given: BandsIn | None = getattr(body, name)
        if given is None:
            continue
        default = chart_of(DEFAULT_SETTINGS, name)
        if tuple(given.starts) == default.starts and tuple(given.scores) == default.scores:
            continue  # the RCP chart as it is: not a change
        bands[name] = (tuple(given.starts), tuple(given.scores))
    stored = store.put(
        conn,
        resident_id,
        spo2_scale=body.spo2_scale,
        bands=bands,
        note=body.note,
        by=by_name(principal),
    )
    return _out(resident_id, stored)
