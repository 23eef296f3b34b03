"""Typed values of the registry. Pure: no I/O.

Inputs (``*In``, ``*Patch``) are pydantic models with ``extra="forbid"``: an unknown field is an
error, not silently dropped. Outputs are frozen models. The repository (devices/repository/)
takes inputs and returns outputs; the HTTP API serialises the same models.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Generic, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from core.placement import Placement
from devices.phones import PhoneError, normalise_phone
from devices.registry import RegistryError

# --- errors -------------------------------------------------------------------------------


class NotFoundError(RegistryError):
    """The resident, contact, team, ... does not exist (HTTP 404)."""


class ConflictError(RegistryError):
    """The request contradicts the stored state: a bad lifecycle transition, a duplicate (409)."""


class ExtensionError(RegistryError):
    """The extension section of a profile does not match the registered extension fields."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"extension.{name}: {msg}" for name, msg in self.problems))


# --- enums --------------------------------------------------------------------------------


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class ResidentStatus(StrEnum):
    ACTIVE = "active"
    MOVED = "moved"
    DECEASED = "deceased"
    RETIRED = "retired"


class SpecialFlag(StrEnum):
    """Special populations (特殊群体), served first and visited monthly."""

    EMPTY_NEST = "empty_nest"  # 空巢
    LIVING_ALONE = "living_alone"  # 独居
    DISABLED = "disabled"  # 失能
    SEMI_DISABLED = "semi_disabled"  # 半失能
    DEMENTIA = "dementia"  # 失智
    VERY_OLD = "very_old"  # 高龄
    EXTREMELY_POOR = "extremely_poor"  # 特困
    LOW_INCOME = "low_income"  # 低保
    VETERAN = "veteran"
    BEREAVED_PARENT = "bereaved_parent"  # 失独
    CHRONIC_DISEASE = "chronic_disease"
    HOME_CARE_BED = "home_care_bed"  # 家庭养老床位


class ConsentScope(StrEnum):
    REGISTRY = "registry"
    EMERGENCY_PROFILE = "emergency_profile"
    SHARE_WITH_120 = "share_with_120"
    SHARE_WITH_DOCTOR = "share_with_doctor"
    SHARE_WITH_FAMILY = "share_with_family"
    MONITORING = "monitoring"
    LOCATION = "location"


class ConsentRelation(StrEnum):
    SELF = "self"
    GUARDIAN = "guardian"
    CHILD = "child"
    SPOUSE = "spouse"
    OTHER_RELATIVE = "other_relative"
    OTHER = "other"


class ContactRole(StrEnum):
    CHILD = "child"
    SPOUSE = "spouse"
    RELATIVE = "relative"
    WORK_UNIT = "work_unit"
    NEIGHBOUR = "neighbour"
    COMMUNITY_WORKER = "community_worker"
    VOLUNTEER = "volunteer"
    GUARDIAN = "guardian"
    OTHER = "other"


class ChannelKind(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    WECHAT_WORK = "wechat_work"
    DINGTALK = "dingtalk"
    FEISHU = "feishu"


class TeamRole(StrEnum):
    DOCTOR = "doctor"
    NURSE = "nurse"
    PUBLIC_HEALTH = "public_health"
    PHARMACIST = "pharmacist"
    REHABILITATION = "rehabilitation"
    OTHER = "other"


class RecordStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class CommunityKind(StrEnum):
    COMMUNITY = "community"
    CARE_INSTITUTION = "care_institution"


class BloodType(StrEnum):
    A_POS = "A+"
    A_NEG = "A-"
    B_POS = "B+"
    B_NEG = "B-"
    AB_POS = "AB+"
    AB_NEG = "AB-"
    O_POS = "O+"
    O_NEG = "O-"
    UNKNOWN = "unknown"


class ExtensionType(StrEnum):
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    TEXT_LIST = "text_list"


class DeviceKind(StrEnum):
    WRISTBAND = "wristband"
    PENDANT = "pendant"
    WATCH = "watch"
    BELT_CLIP = "belt_clip"
    BED_SENSOR = "bed_sensor"
    HUB = "hub"
    SOS_BUTTON = "sos_button"


PLACEMENT_BY_KIND: dict[DeviceKind, Placement] = {
    DeviceKind.WRISTBAND: Placement.WRIST,
    DeviceKind.WATCH: Placement.WRIST,
    DeviceKind.PENDANT: Placement.CHEST,
    DeviceKind.BELT_CLIP: Placement.WAIST,
}
"""Where each kind of wearable is worn; other kinds (bed sensor, hub, SOS button) are unknown."""


def placement_of(kind: DeviceKind, explicit: Placement | None = None) -> Placement:
    """Where a device is worn: its explicit placement if set, else what its kind says."""
    if explicit is not None:
        return explicit
    return PLACEMENT_BY_KIND.get(kind, Placement.UNKNOWN)


class DeviceState(StrEnum):
    PROVISIONED = "provisioned"
    ACTIVE = "active"
    RETIRED = "retired"


class ProfileChange(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    VERIFY = "verify"
    ROTATE = "rotate"


class MatchVia(StrEnum):
    RESIDENT_LANDLINE = "resident_landline"
    RESIDENT_MOBILE = "resident_mobile"
    CONTACT = "contact"


#: Allowed device lifecycle moves; retired is final.
DEVICE_TRANSITIONS: Mapping[DeviceState, frozenset[DeviceState]] = {
    DeviceState.PROVISIONED: frozenset({DeviceState.ACTIVE, DeviceState.RETIRED}),
    DeviceState.ACTIVE: frozenset({DeviceState.RETIRED}),
    DeviceState.RETIRED: frozenset(),
}

#: Allowed resident status moves. A moved resident may come back; deceased and retired are final.
RESIDENT_TRANSITIONS: Mapping[ResidentStatus, frozenset[ResidentStatus]] = {
    ResidentStatus.ACTIVE: frozenset(
        {ResidentStatus.MOVED, ResidentStatus.DECEASED, ResidentStatus.RETIRED}
    ),
    ResidentStatus.MOVED: frozenset(
        {ResidentStatus.ACTIVE, ResidentStatus.DECEASED, ResidentStatus.RETIRED}
    ),
    ResidentStatus.DECEASED: frozenset({ResidentStatus.RETIRED}),
    ResidentStatus.RETIRED: frozenset(),
}


def check_device_transition(device_id: str, old: DeviceState, new: DeviceState) -> None:
    """Raises ConflictError unless ``old -> new`` is a lifecycle move."""
    if new not in DEVICE_TRANSITIONS[old]:
        allowed = ", ".join(sorted(DEVICE_TRANSITIONS[old])) or "none (retired is final)"
        raise ConflictError(
            f"Device {device_id!r} cannot go from {old.value!r} to {new.value!r}. Allowed: {allowed}."
        )


def check_resident_transition(resident_id: UUID, old: ResidentStatus, new: ResidentStatus) -> None:
    if new not in RESIDENT_TRANSITIONS[old]:
        allowed = ", ".join(sorted(RESIDENT_TRANSITIONS[old])) or "none (retired is final)"
        raise ConflictError(
            f"Resident {resident_id} cannot go from {old.value!r} to {new.value!r}. Allowed: {allowed}."
        )


# --- small validated types ----------------------------------------------------------------


def _phone(value: str) -> str:
    try:
        normalise_phone(value)
    except PhoneError as exc:
        raise ValueError(str(exc)) from exc
    return value.strip()


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"Time zone {value!r} is not known. Expected an IANA name such as 'Asia/Shanghai'."
        ) from exc
    return value


PhoneStr = Annotated[str, Field(min_length=3, max_length=40), AfterValidator(_phone)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=2000)]
Item = Annotated[str, Field(min_length=1, max_length=500)]
ExtensionValue = str | int | float | bool | list[str] | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- residents ----------------------------------------------------------------------------


class Address(_In):
    province: ShortText | None = None
    city: ShortText | None = None
    district: ShortText | None = None
    street: ShortText | None = None
    community: ShortText | None = Field(
        None, description="Residential community (小区/社区) as written."
    )
    text: LongText | None = Field(None, description="Free text: building, unit, room, directions.")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)

    @model_validator(mode="after")
    def _both_coordinates(self) -> Address:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together: give both or neither")
        return self


class ResidentIn(_In):
    name: Name
    sex: Sex
    birth_date: dt.date
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = Field(
        None, description="Resident identity card number (18 characters); encrypted at rest."
    )
    health_card: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Health card or medical insurance number; encrypted at rest."
    )
    landline: PhoneStr | None = None
    mobile: PhoneStr | None = None
    address: Address = Field(default_factory=Address)
    flags: frozenset[SpecialFlag] = frozenset()
    community_id: UUID | None = Field(
        None, description="Responsible community or care institution."
    )
    hospital_id: UUID | None = Field(None, description="Partner hospital of the green channel.")

    @model_validator(mode="after")
    def _plausible_birth(self) -> ResidentIn:
        if not dt.date(1880, 1, 1) <= self.birth_date <= dt.date(2100, 1, 1):
            raise ValueError(f"birth_date {self.birth_date} is not plausible")
        return self


def _not_null(value: object) -> object:
    """A patch may leave a required field out (it stays), never set it to null."""
    if value is None:
        raise ValueError("this field is required: leave it out to keep it, null is not allowed")
    return value


class ResidentPatch(_In):
    """Fields to change; absent fields stay. ``None`` clears an optional field."""

    name: Name | None = None
    sex: Sex | None = None
    birth_date: dt.date | None = None
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = None
    health_card: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    landline: PhoneStr | None = None
    mobile: PhoneStr | None = None
    address: Address | None = None
    flags: frozenset[SpecialFlag] | None = None
    status: ResidentStatus | None = None
    community_id: UUID | None = None
    hospital_id: UUID | None = None

    @field_validator("name", "sex", "birth_date", "address", "flags", "status", mode="before")
    @classmethod
    def _required_not_null(cls, value: object) -> object:
        return _not_null(value)


class Resident(_Out):
    id: UUID
    name: str
    sex: Sex
    birth_date: dt.date
    id_number: str | None
    health_card: str | None
    landline: str | None
    mobile: str | None
    address: Address
    flags: frozenset[SpecialFlag]
    status: ResidentStatus
    community_id: UUID | None
    hospital_id: UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ConsentIn(_In):
    given_by: Name
    relation: ConsentRelation
    given_at: dt.datetime
    scopes: frozenset[ConsentScope] = Field(min_length=1)


class Consent(_Out):
    id: int
    resident_id: UUID
    given_by: str
    relation: ConsentRelation
    given_at: dt.datetime
    scopes: frozenset[ConsentScope]
    withdrawn_at: dt.datetime | None
    recorded_at: dt.datetime


# --- emergency profile --------------------------------------------------------------------


class ResponderNotes(_In):
    """What the ambulance crew needs at the door."""

    door_code: Annotated[str, Field(max_length=200)] | None = None
    mobility: Annotated[str, Field(max_length=500)] | None = None
    language: Annotated[str, Field(max_length=200)] | None = None
    hearing: Annotated[str, Field(max_length=500)] | None = None
    other: Annotated[str, Field(max_length=2000)] | None = None


class ProfileIn(_In):
    """The whole profile: every write stores a new version with all of it."""

    conditions: list[Item] = Field(default_factory=list, max_length=100)
    medications: list[Item] = Field(default_factory=list, max_length=100)
    allergies: list[Item] = Field(default_factory=list, max_length=100)
    blood_type: BloodType = BloodType.UNKNOWN
    past_treatments: list[Item] = Field(
        default_factory=list, max_length=100, description="Past treatment measures (历史救治措施)."
    )
    responder_notes: ResponderNotes = Field(default_factory=ResponderNotes)
    extension: dict[str, ExtensionValue] = Field(
        default_factory=dict,
        description="Region-added fields, checked against profile_extension_fields.",
    )


class EmergencyProfile(_Out):
    resident_id: UUID
    version: int
    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    allergies: tuple[str, ...]
    blood_type: BloodType
    past_treatments: tuple[str, ...]
    responder_notes: ResponderNotes
    extension: Mapping[str, ExtensionValue]
    last_verified_at: dt.datetime | None
    last_verified_by: str | None
    changed_by: str
    change_kind: ProfileChange
    changed_at: dt.datetime


class ExtensionFieldIn(_In):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    type: ExtensionType
    description: LongText
    required: bool = False


class ExtensionField(_Out):
    name: str
    type: ExtensionType
    description: str
    required: bool


class UnverifiedProfile(_Out):
    resident_id: UUID
    name: str
    version: int | None  # None: the resident has no profile at all
    last_verified_at: dt.datetime | None
    last_verified_by: str | None


def validate_extension(
    fields: Sequence[ExtensionField], values: Mapping[str, ExtensionValue]
) -> dict[str, ExtensionValue]:
    """The extension object checked and coerced against the registered fields.

    Dates are stored as ISO strings (``YYYY-MM-DD``); integers are accepted for numbers.

    Raises:
        ExtensionError: with every problem (unknown field, wrong type, required field missing).
    """
    by_name = {f.name: f for f in fields}
    problems: list[tuple[str, str]] = []
    out: dict[str, ExtensionValue] = {}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            problems.append(
                (name, f"is not a registered extension field (known: {sorted(by_name) or 'none'})")
            )
            continue
        if value is None:
            if spec.required:
                problems.append((name, "is required"))
            continue
        ok, coerced = _coerce(spec.type, value)
        if not ok:
            problems.append((name, f"has value {value!r}. Expected {spec.type.value}."))
        else:
            out[name] = coerced
    for spec in fields:
        if spec.required and spec.name not in values:
            problems.append((spec.name, "is required"))
    if problems:
        raise ExtensionError(problems)
    return out


def _coerce(kind: ExtensionType, value: ExtensionValue) -> tuple[bool, ExtensionValue]:
    if kind is ExtensionType.TEXT:
        return isinstance(value, str) and len(value) <= 2000, value
    if kind is ExtensionType.BOOLEAN:
        return isinstance(value, bool), value
    if kind is ExtensionType.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is ExtensionType.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok and isinstance(value, int | float) else value
    if kind is ExtensionType.DATE:
        if not isinstance(value, str):
            return False, value
        try:
            return True, dt.date.fromisoformat(value).isoformat()
        except ValueError:
            return False, value
    # TEXT_LIST
    ok = isinstance(value, list) and all(isinstance(v, str) and len(v) <= 500 for v in value)
    return ok, value


# --- care circle --------------------------------------------------------------------------


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


# --- devices ------------------------------------------------------------------------------


class DeviceIn(_In):
    device_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")]
    kind: DeviceKind
    resident_id: UUID | None = None
    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")] | None = None
    label: ShortText | None = None
    expected_interval_s: int = Field(60, gt=0, le=86400)
    placement: Placement | None = Field(
        None, description="where it is worn, when not what its kind says (a wristband on the ankle)"
    )


class Device(_Out):
    device_id: str
    kind: DeviceKind
    placement: Placement = Field(
        description="where it is worn: the explicit one, else from its kind"
    )
    placement_explicit: bool = False
    status: DeviceState
    resident_id: UUID | None
    gateway_id: str | None
    label: str | None
    expected_interval_s: int
    registered_at: dt.datetime
    activated_at: dt.datetime | None
    retired_at: dt.datetime | None
    has_secret: bool
    revoked: bool


# --- lookups and pages --------------------------------------------------------------------

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
