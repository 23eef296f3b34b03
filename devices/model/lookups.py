"""Pages, resident search and the caller-number lookup."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Generic, TypeVar
from uuid import UUID

from pydantic import Field

from devices.model._base import (
    PhoneStr,
    ShortText,
    _In,
    _Out,
)
from devices.model.circle import (
    Contact,
)
from devices.model.kinds import (
    MatchVia,
    ResidentStatus,
    SpecialFlag,
)
from devices.model.residents import (
    Resident,
)

T = TypeVar("T")


class Page(_Out, Generic[T]):
    items: tuple[T, ...]
    total: int
    limit: int
    offset: int


class ResidentSearch(_In):
    """Filters of :func:`devices.repository.list_residents`; all given ones must match."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="Substring of the name, case-insensitive."
    )
    phone: PhoneStr | None = Field(
        None, description="The resident's landline or mobile, any format."
    )
    community_id: UUID | None = None
    community_name: ShortText | None = Field(
        None, description="Substring of the address community."
    )
    flags: frozenset[SpecialFlag] = frozenset()
    status: ResidentStatus | None = None
    team_id: UUID | None = Field(
        None, description="Residents with an active contract with this team."
    )


class OpenAlertRef(_Out):
    """Placeholder for the alerts package: an open alert of a matched resident."""

    alert_id: str
    kind: str
    opened_at: dt.datetime


class CallerMatch(_Out):
    resident: Resident
    via: MatchVia
    contact: Contact | None = Field(None, description="Set when the number is a contact's.")
    open_alerts: tuple[OpenAlertRef, ...] = ()

    def masked(self) -> CallerMatch:
        return self.model_copy(update={"contact": self.contact and self.contact.masked()})


class CallerLookup(_Out):
    raw: str
    national: str
    matches: tuple[CallerMatch, ...]
