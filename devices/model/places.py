"""Doctor contracts, hospitals and communities."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from pydantic import Field, model_validator

from devices.model._base import (
    LongText,
    Name,
    PhoneStr,
    ShortText,
    _In,
    _Out,
)
from devices.model.circle import (
    Channel,
    ChannelIn,
)
from devices.model.kinds import (
    CommunityKind,
    RecordStatus,
    TeamRole,
)


class TeamMemberIn(_In):
    name: Name
    role: TeamRole
    phone: PhoneStr | None = None
    channel: ChannelIn | None = None


class TeamMember(_Out):
    id: UUID
    team_id: UUID
    name: str
    role: TeamRole
    phone: str | None
    channel: Channel | None
    status: RecordStatus

    def masked(self) -> TeamMember:
        return self.model_copy(update={"channel": self.channel and self.channel.masked()})


class DoctorTeamIn(_In):
    name: Name
    institution: ShortText | None = Field(None, description="Community health centre or hospital.")
    members: list[TeamMemberIn] = Field(default_factory=list, max_length=50)


class DoctorTeam(_Out):
    id: UUID
    name: str
    institution: str | None
    members: tuple[TeamMember, ...]
    status: RecordStatus
    created_at: dt.datetime
    updated_at: dt.datetime

    def masked(self) -> DoctorTeam:
        return self.model_copy(update={"members": tuple(m.masked() for m in self.members)})


class ContractIn(_In):
    team_id: UUID
    service_package: ShortText = Field(
        description="e.g. 'basic', 'chronic disease', 'home visits'."
    )
    starts_on: dt.date
    ends_on: dt.date

    @model_validator(mode="after")
    def _period(self) -> ContractIn:
        if self.ends_on < self.starts_on:
            raise ValueError(f"ends_on {self.ends_on} is before starts_on {self.starts_on}")
        return self


class Contract(_Out):
    id: UUID
    resident_id: UUID
    team_id: UUID
    service_package: str
    starts_on: dt.date
    ends_on: dt.date
    status: str


class HospitalIn(_In):
    name: Name
    address: LongText | None = None
    green_channel_phone: PhoneStr | None = None


class Hospital(_Out):
    id: UUID
    name: str
    address: str | None
    green_channel_phone: str | None
    status: RecordStatus


class CommunityIn(_In):
    name: Name
    kind: CommunityKind = CommunityKind.COMMUNITY
    address: LongText | None = None
    phone: PhoneStr | None = None


class Community(_Out):
    id: UUID
    name: str
    kind: CommunityKind
    address: str | None
    phone: str | None
    status: RecordStatus
