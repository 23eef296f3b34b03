"""What ``anxin demo`` registers: the demo elder with a full (sample) emergency profile and
care circle (a child, a work unit, a family doctor under contract, a partner hospital, a
community) bound to the first demo wristband, a sample token for each screen of the people who
act, and the closing of the alerts an earlier run left open. The elder, the team and the
places are registered once and reused; the channels follow this run's receiver.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

from alerts.lifecycle import TransitionRefused
from alerts.model import Actor, ActorKind, AlertState
from alerts.service import AlertService
from demo.receiver import DemoReceiver
from devices import access
from devices import repository as registry
from devices.crypto import Keyring
from devices.model import (
    Address,
    BloodType,
    ChannelIn,
    CommunityIn,
    ConsentIn,
    ConsentRelation,
    ConsentScope,
    ContactIn,
    ContactPatch,
    ContactRole,
    ContractIn,
    DoctorTeamIn,
    HospitalIn,
    ProfileIn,
    ResidentIn,
    ResponderNotes,
    Sex,
    SpecialFlag,
    TeamMemberIn,
    TeamRole,
)

DEVICE_PREFIX = "demo-wb"


# -- the demo elder and the care circle -----------------------------------------------------
# Every name, number and address below is made up for the demo; people are named by role.

DEMO_BY = "anxin demo"
DEMO_ELDER = "演示老人 Demo elder (sample)"
DEMO_COMMUNITY = "安心示例社区 Sample community"
DEMO_HOSPITAL = "示例市第一人民医院 Sample partner hospital"
DEMO_TEAM = "示例家庭医生团队 Sample family doctor team"
DEMO_DOCTOR = "Demo family doctor (sample)"
#: (name, role, priority, phone, receiver path) of the demo elder's care circle.
DEMO_CONTACTS = (
    ("Demo child (sample)", ContactRole.CHILD, 1, "13800000002", "child"),
    ("Demo work unit, retirement office (sample)", ContactRole.WORK_UNIT, 2, "0371-55550102", "work-unit"),
)  # fmt: skip
#: Receiver paths of the family and the doctor (the rest: hospital, community, operator).
FAMILY_PATHS = frozenset({"child", "work-unit", "doctor"})


def _demo_profile() -> ProfileIn:
    return ProfileIn(
        conditions=["高血压 hypertension", "2 型糖尿病 type 2 diabetes"],
        medications=[
            "氨氯地平 amlodipine 5 mg, mornings",
            "二甲双胍 metformin 500 mg, twice a day",
        ],
        allergies=["青霉素 penicillin"],
        blood_type=BloodType.A_POS,
        past_treatments=["2021 年心脏支架 coronary stent, 2021 (sample)"],
        responder_notes=ResponderNotes(
            door_code="门禁 0000# (sample)",
            mobility="walks with a cane; stairs are hard",
            language="普通话 Mandarin",
            hearing="hard of hearing on the left",
        ),
    )


def _find(conn: Any, query: str, *params: object) -> uuid.UUID | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None else cast(uuid.UUID, row[0])


def ensure_demo_elder(
    conn: Any, keyring: Keyring, receiver: DemoReceiver, device_id: str
) -> uuid.UUID:
    """The demo elder, registered once and reused: profile, consent, care circle (a child and a
    work unit), a family doctor under contract, a partner hospital and a community, and
    ``device_id`` bound to them. The channels point at this run's ``receiver`` (its port
    changes from run to run). Returns the elder's id."""
    today = dt.date.today()
    community = _find(
        conn, "SELECT id FROM communities WHERE name = %s AND status = 'active'", DEMO_COMMUNITY
    ) or registry.create_community(
        conn, CommunityIn(name=DEMO_COMMUNITY, address="示例市演示区样例路 1 号 (sample)",
                          phone="0371-55550100"),
    ).id  # fmt: skip
    hospital = _find(
        conn, "SELECT id FROM hospitals WHERE name = %s AND status = 'active'", DEMO_HOSPITAL
    ) or registry.create_hospital(
        conn, HospitalIn(name=DEMO_HOSPITAL, address="示例市演示区健康路 120 号 (sample)",
                         green_channel_phone="0371-55550120"),
    ).id  # fmt: skip
    elder = _find(
        conn,
        "SELECT id FROM residents WHERE name = %s AND status = 'active' ORDER BY created_at LIMIT 1",
        DEMO_ELDER,
    )
    if elder is None:
        elder = registry.create_resident(
            conn,
            ResidentIn(
                name=DEMO_ELDER, sex=Sex.FEMALE, birth_date=dt.date(1941, 3, 8),
                landline="0371-55550101", mobile="13800000001",
                address=Address(
                    province="示例省", city="示例市", district="演示区", street="样例路 8 号",
                    community="安心示例小区", text="3 号楼 2 单元 401 (sample address)",
                    lat=34.7802, lon=113.6651,
                ),
                flags=frozenset({SpecialFlag.LIVING_ALONE, SpecialFlag.EMPTY_NEST,
                                 SpecialFlag.CHRONIC_DISEASE}),
                community_id=community, hospital_id=hospital,
            ),
            keyring=keyring,
        ).id  # fmt: skip
        registry.record_consent(
            conn, elder,
            ConsentIn(given_by=DEMO_ELDER, relation=ConsentRelation.SELF,
                      given_at=dt.datetime.now(dt.UTC),
                      scopes=frozenset({ConsentScope.REGISTRY, ConsentScope.EMERGENCY_PROFILE,
                                        ConsentScope.SHARE_WITH_120, ConsentScope.SHARE_WITH_DOCTOR,
                                        ConsentScope.SHARE_WITH_FAMILY, ConsentScope.MONITORING})),
        )  # fmt: skip
        registry.put_profile(
            conn, elder, _demo_profile(), by=DEMO_BY, keyring=keyring,
            verified_at=dt.datetime.now(dt.UTC),
        )  # fmt: skip
    have = {c.name: c for c in registry.list_contacts(conn, elder, keyring=keyring)}
    for name, role, priority, phone, path in DEMO_CONTACTS:
        channel = ChannelIn(url=receiver.phone_url(path))
        if name in have:
            registry.update_contact(
                conn, have[name].id, ContactPatch(channel=channel), keyring=keyring
            )
        else:
            registry.add_contact(
                conn, elder,
                ContactIn(name=name, role=role, priority=priority, phones=[phone], channel=channel),
                keyring=keyring,
            )  # fmt: skip
    doctor = TeamMemberIn(
        name=DEMO_DOCTOR, role=TeamRole.DOCTOR, phone="13700000003",
        channel=ChannelIn(url=receiver.phone_url("doctor")),
    )  # fmt: skip
    team = _find(
        conn, "SELECT id FROM doctor_teams WHERE name = %s AND status = 'active'", DEMO_TEAM
    )
    if team is None:
        team = registry.create_team(
            conn,
            DoctorTeamIn(
                name=DEMO_TEAM, institution="示例社区卫生服务中心 (sample)", members=[doctor]
            ),
            keyring=keyring,
        ).id
    else:
        url = receiver.phone_url("doctor")
        members = registry.get_team(conn, team, keyring=keyring).members
        current = [m for m in members if m.name == DEMO_DOCTOR and m.status == "active"]
        if not any(m.channel is not None and m.channel.url == url for m in current):
            for m in current:  # an earlier run's receiver port: the member with the new one
                registry.retire_team_member(conn, m.id)
            registry.add_team_member(conn, team, doctor, keyring=keyring)
    contract = registry.active_contract(conn, elder, on=today)
    if contract is None or contract.team_id != team:
        registry.sign_contract(
            conn, elder,
            ContractIn(team_id=team, service_package="慢病管理 chronic disease care (sample)",
                       starts_on=today - dt.timedelta(days=30), ends_on=today + dt.timedelta(days=365)),
        )  # fmt: skip
    if registry.get_device(conn, device_id).resident_id != elder:
        registry.bind_device(conn, device_id, resident_id=elder, gateway_id=None, by=DEMO_BY)
    return elder


#: The screens ``make demo`` prints, with the role whose sample token opens each.
SCREEN_LINKS: tuple[tuple[str, str], ...] = (
    ("120 dispatcher:", "/app/dispatch"),
    ("family doctor:", "/app/doctor"),
    ("care operator:", "/app/operator"),
    ("family (signed in):", "/app/family"),
)


def sample_tokens(conn: Any, elder: uuid.UUID, operator_token: str) -> dict[str, str]:
    """A token valid today for each screen of :data:`SCREEN_LINKS`: a dispatcher, the demo
    team's doctor, the operator of the console, and the demo elder's child."""
    member = _find(
        conn,
        """SELECT m.id FROM doctor_team_members m JOIN doctor_teams t ON t.id = m.team_id
            WHERE t.name = %s AND m.name = %s AND m.status = 'active' ORDER BY m.id LIMIT 1""",
        DEMO_TEAM,
        DEMO_DOCTOR,
    )
    dispatcher = access.create_principal(conn, "demo 120 dispatcher", access.Role.DISPATCHER)
    doctor = access.create_principal(
        conn, f"demo {DEMO_DOCTOR}", access.Role.DOCTOR, member_ids=[member] if member else []
    )
    family = access.create_principal(conn, "demo child", access.Role.FAMILY, resident_ids=[elder])
    return {
        "/app/dispatch": access.issue_token(conn, dispatcher, days=1).token,
        "/app/doctor": access.issue_token(conn, doctor, days=1).token,
        "/app/operator": operator_token,
        "/app/family": access.issue_token(conn, family, days=1).token,
    }


def close_leftover_alerts(conn: Any, service: AlertService, device_prefix: str) -> int:
    """Close the live alerts an earlier demo run left on the demo devices, so that this run's
    first SOS opens a new alert (a live one would only count one more occurrence)."""
    rows = conn.execute(
        """SELECT id, state FROM alerts WHERE device_id LIKE %s
              AND state IN ('pending', 'open', 'acknowledged', 'dispatched')""",
        (f"{device_prefix}-%",),
    ).fetchall()
    operator = Actor(ActorKind.OPERATOR, DEMO_BY)
    now = dt.datetime.now(dt.UTC)
    closed = 0
    for alert_id, state in rows:
        target = AlertState.CANCELLED if state == "pending" else AlertState.RESOLVED
        try:
            service.transition(
                conn, alert_id, target, operator, now, channel="api",
                note="left open by an earlier demo run; closed at start-up",
            )  # fmt: skip
        except TransitionRefused:
            continue
        closed += 1
    return closed
