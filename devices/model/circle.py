"""The care circle: contact channels, quiet hours, contacts, doctor teams and their members."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field, field_validator, model_validator

from devices.model._base import (
    Name,
    PhoneStr,
    ShortText,
    _In,
    _Out,
    _zone,
)
from devices.model.kinds import (
    ChannelKind,
    ContactRole,
    RecordStatus,
)
from devices.model.residents import (
    _not_null,
)


class ChannelIn(_In):
    """Either an apprise URL (``url``) or a channel kind and its address."""

    url: (
        Annotated[str, Field(min_length=4, max_length=2000, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://")]
        | None
    ) = Field(
        None,
        description="Apprise URL, e.g. 'dingtalk://token/'; encrypted at rest (it holds tokens).",
    )
    kind: ChannelKind | None = None
    address: ShortText | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ChannelIn:
        pair = self.kind is not None and self.address is not None
        if (self.kind is None) != (self.address is None):
            raise ValueError("kind and address go together")
        if (self.url is None) == (not pair):
            raise ValueError("give either url or kind and address, not both and not neither")
        return self


class Channel(_Out):
    url: str | None
    kind: ChannelKind | None
    address: str | None

    def masked(self) -> Channel:
        """What everyone but an admin sees: the kind of channel, never its tokens. An apprise
        URL keeps its scheme only (``dingtalk://…``); an address that is a URL likewise."""
        return self.model_copy(
            update={"url": mask_url(self.url), "address": mask_url(self.address)}
        )


MASK = "…"


def mask_url(value: str | None) -> str | None:
    """``scheme://…`` for a URL (whatever follows may be a token); other text as it is."""
    if value is None or "://" not in value:
        return value
    return value.split("://", 1)[0] + "://" + MASK


class QuietHours(_In):
    """No routine message between ``start`` and ``end`` (local time; may span midnight).

    Emergencies (SOS, falls) ignore quiet hours; the alerts package decides.
    """

    start: dt.time
    end: dt.time
    timezone: Annotated[str, AfterValidator(_zone)] = "Asia/Shanghai"

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end of quiet hours are the same")
        return self

    def contains(self, moment: dt.datetime) -> bool:
        """Whether ``moment`` (timezone-aware) falls inside the quiet hours."""
        local = moment.astimezone(ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


class ContactIn(_In):
    name: Name
    role: ContactRole
    priority: int = Field(1, ge=1, le=99, description="1 is called first.")
    phones: list[PhoneStr] = Field(default_factory=list, max_length=5)
    channel: ChannelIn | None = None
    quiet_hours: QuietHours | None = None


class ContactPatch(_In):
    name: Name | None = None
    role: ContactRole | None = None
    priority: int | None = Field(None, ge=1, le=99)
    phones: list[PhoneStr] | None = Field(None, max_length=5)
    channel: ChannelIn | None = None
    quiet_hours: QuietHours | None = None

    @field_validator("name", "role", "priority", "phones", mode="before")
    @classmethod
    def _required_not_null(cls, value: object) -> object:
        return _not_null(value)


class Contact(_Out):
    id: UUID
    resident_id: UUID
    name: str
    role: ContactRole
    priority: int
    phones: tuple[str, ...]
    channel: Channel | None
    quiet_hours: QuietHours | None
    status: RecordStatus
    created_at: dt.datetime
    updated_at: dt.datetime

    def masked(self) -> Contact:
        return self.model_copy(update={"channel": self.channel and self.channel.masked()})
