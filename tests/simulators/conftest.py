"""One running deployment shared by the scenario tests of a session: a fresh database, the
shared Mosquitto with a topic prefix of its own, ``anxin ingest`` and ``anxin alerts worker`` as
child processes (as an operator runs them), and the demo's stand-in for the 120 centre and the
family's phones. Every scenario run registers elders and devices of its own (ids with a run
suffix), so the runs do not see each other."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings, load_settings
from demo.receiver import DemoReceiver
from tests.ingest.test_fault_injection import _Worker, services_env
from tests.services import ROOT, IngestProcess, fresh_database

DATASETS = ROOT.parent / "shared" / "datasets"


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    """What ``anxin scenario run`` reads from ANXIN_* in a real deployment."""
    env: dict[str, str]
    receiver: DemoReceiver
    phones: str
    ingest_log: Path


@pytest.fixture(scope="session")
def deployment(
    postgres_admin_url: str, shared_broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    logs = tmp_path_factory.mktemp("scenario-services")
    secret = secrets.token_hex(16)
    with fresh_database(postgres_admin_url) as url, DemoReceiver(secret) as receiver:
        env = services_env(
            url,
            shared_broker_url,
            receiver.dispatch120_url,
            "scn",
            ANXIN_ALERTS__DISPATCH120_SECRET=secret,
            ANXIN_ALERTS__OPERATOR_URL=receiver.phone_url("operator"),
            ANXIN_ALERTS__SMS_URL=receiver.phone_url("sms-{phone}"),
            ANXIN_INGEST__REGISTRY_REFRESH_S="1",
            ANXIN_ALERTS__FALL_CANCEL_WINDOW_S="20",
            ANXIN_ALERTS__DELIVERY_BACKOFF_BASE_S="0.2",
            ANXIN_INGEST__SWEEP_EVERY_S="2",
        )
        ingester = IngestProcess(env, logs / "ingest.log")
        worker = _Worker(env, logs / "worker.log")
        ingester.start()
        worker.start()
        settings = load_settings(
            db={"url": url},
            mqtt={
                "url": shared_broker_url,
                "topic_prefix": env["ANXIN_MQTT__TOPIC_PREFIX"],
                "client_id": "scenario-runner",
            },
            registry={
                "field_keys": {"t1": env["ANXIN_REGISTRY__FIELD_KEYS"].split('"')[3]},
                "current_key_id": "t1",
            },
            ingest={"registry_refresh_s": 1.0},
        )
        try:
            yield Deployment(
                settings, env, receiver, receiver.phone_url("").rstrip("/"), logs / "ingest.log"
            )
        finally:
            ingester.stop()
            worker.stop()
