"""Errors, kinds and states of the registry, and the lifecycle moves allowed between states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from uuid import UUID

from core.placement import Placement
from devices.registry import RegistryError


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
