"""The shipped deployment files: Prometheus config and rules (promtool), systemd units
(systemd-analyze), compose and Grafana files (parsed), and every metric they name exported
by the code. Outside CI a missing tool skips its test; in CI (CI=true) it fails."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from api.metrics import DatabaseCounts, LiveAlerts, families
from core.settings import Settings
from ingest.detection import create_detection_metrics
from ingest.metrics import create_engine_metrics, create_metrics
from ingest.recovery import Recovery
from tests.services import IN_CI, ROOT, PrivateBroker, free_port, port_open, wait_until

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_PARTITIONED = DEPLOY / "compose" / "compose.partitioned.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "anxin.json"
METRIC = re.compile(r"\banxin_[a-z0-9_]+")


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({hint})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


# --------------------------------------------------------------------------- Prometheus
@pytest.fixture(scope="module")
def promtool() -> str:
    return _tool("promtool", "Debian: apt-get install prometheus")


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.partitioned.yml"])
def test_prometheus_config_and_its_rule_file_pass_promtool(promtool: str, config: str) -> None:
    out = _run([promtool, "check", "config", str(PROMETHEUS / config)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def test_alerting_rules_pass_promtool(promtool: str) -> None:
    out = _run([promtool, "check", "rules", str(PROMETHEUS / "rules.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_fire_on_series_shaped_like_the_exported_ones(promtool: str) -> None:
    """promtool's rule unit tests: an SOS open too long, a broker gone, a sweep with work."""
    out = _run([promtool, "test", "rules", str(PROMETHEUS / "rules.test.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_rules_cover_what_an_operator_must_be_told() -> None:
    names = {rule["alert"] for rule in _rules()}
    for wanted in (
        "AnxinIngestQueueBacklog",
        "AnxinIngestLatencyHigh",
        "AnxinDeadLetterRate",
        "AnxinDeliveriesFailing",
        "AnxinManyDevicesOffline",
        "AnxinSosNotAcknowledged",
        "AnxinBrokerDisconnected",
        "AnxinRecoverySweepFoundWork",
        "AnxinEnginePartitionsUnread",
        "AnxinEngineBacklog",
    ):
        assert wanted in names
    assert all(rule["labels"]["severity"] in {"warning", "critical"} for rule in _rules())


# --------------------------------------------------------------------------- metric names
def _exported() -> set[str]:
    """Every sample name the ingester's and the API's /metrics can show."""
    registry = CollectorRegistry()
    create_metrics(registry)
    create_engine_metrics(registry, 16)
    create_detection_metrics(registry)
    Recovery(None, None, registry=registry)  # type: ignore[arg-type]  # only its counter
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    # A labelled metric shows no sample until a label is used: name it from its family.
    names = {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }
    counts = DatabaseCounts([LiveAlerts("sos", "open", 1, 60.0)], {}, 0, 0, 0.0)
    names |= {s.name for family in families(counts) for s in family.samples}
    return names


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_metric_in_the_rules_and_the_dashboard_is_exported_by_the_code() -> None:
    exported = _exported()
    used = {
        name: where
        for where, exprs in (
            ("rules.yml", [rule["expr"] for rule in _rules()]),
            ("rules.test.yml", [(PROMETHEUS / "rules.test.yml").read_text()]),
            ("anxin.json", _dashboard_exprs()),
        )
        for expr in exprs
        for name in METRIC.findall(expr)
    }
    assert len(used) >= 15
    missing = {name: where for name, where in used.items() if name not in exported}
    assert not missing, f"named but not exported: {missing}"


def test_the_name_check_would_catch_a_counter_without_its_total_suffix() -> None:
    assert "anxin_ingest_dead_letters_total" in _exported()
    assert "anxin_ingest_dead_letters" not in _exported()


# --------------------------------------------------------------------------- Grafana
def test_the_dashboard_parses_and_every_panel_uses_the_provisioned_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert {p["datasource"]["uid"] for p in panels} == {uid}
    titles = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert titles == {"Ingest", "Detection", "Alerts", "Deliveries"}
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


# --------------------------------------------------------------------------- compose
def _compose(path: Path = COMPOSE) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _mounts_exist(path: Path) -> None:
    for name, service in _compose(path)["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (path.parent / source).exists(), f"{name} mounts missing {source}"


def test_compose_has_the_single_machine_services_and_every_mounted_file_exists() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "db",
        "broker",
        "broker-auth",
        "ingest",
        "ingest-urgent",
        "alerts-worker",
        "api",
        "prometheus",
        "grafana",
    }
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert [
        services[s]["command"] for s in ("ingest", "ingest-urgent", "alerts-worker", "api")
    ] == [
        ["ingest", "--lane", "telemetry"],
        ["ingest", "--lane", "urgent"],
        ["alerts", "worker"],
        ["api"],
    ]
    build = services["ingest"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    _mounts_exist(COMPOSE)
    mounted = {v.split(":")[1] for v in services["broker"]["volumes"]}
    assert "/mosquitto/config/conf.d/10-anxin.conf" in mounted  # the project's configuration


def test_compose_of_the_partitioned_layout_wires_ingesters_to_a_three_node_engine() -> None:
    """Three engine nodes named as the routes of node.conf.example name them, each keeping
    JetStream's files in a volume of its own; two ingesters on the engine with client ids of
    their own, MQTT 3.1.1 for the commands; Prometheus scraping both ingesters."""
    services = _compose(COMPOSE_PARTITIONED)["services"]
    nodes = [f"nats-{i}" for i in (1, 2, 3)]
    assert set(services) >= {"db", *nodes, "ingest-1", "ingest-2", "alerts-worker", "api"}
    assert set(services) >= {"prometheus", "grafana"} and "broker" not in services
    routes = set(re.findall(r"nats-route://([a-z0-9-]+):6222", (DEPLOY / "nats" / "node.conf.example").read_text()))  # fmt: skip
    assert routes == set(nodes)
    for node in nodes:
        command = services[node]["command"]
        assert command[command.index("--name") + 1] == node
        assert any(v.endswith(":/var/lib/nats") for v in services[node]["volumes"])
        assert "/etc/nats/mapping.conf" in {v.split(":")[1] for v in services[node]["volumes"]}
    ids = set()
    for name in ("ingest-1", "ingest-2"):
        env = services[name]["environment"]
        assert services[name]["command"] == ["ingest", "--source", "engine"]
        assert env["ANXIN_INGEST__SOURCE"] == "engine" and env["ANXIN_MQTT__PROTOCOL"] == "3.1.1"
        assert set(env["ANXIN_ENGINE__URLS"].split(",")) == {f"nats://{n}:4222" for n in nodes}
        ids.add(env["ANXIN_MQTT__CLIENT_ID"])
    assert len(ids) == 2
    for service in services.values():
        keys = [k for k in service.get("environment", {}) if k.startswith("ANXIN_")]
        assert [k for k in keys if not _setting_exists(k)] == []
    _mounts_exist(COMPOSE_PARTITIONED)
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.partitioned.yml").read_text())
    ingest = next(j for j in scrape["scrape_configs"] if j["job_name"] == "anxin-ingest")
    assert ingest["static_configs"][0]["targets"] == ["ingest-1:9108", "ingest-2:9108"]


def test_the_dockerfile_installs_the_lock_then_the_project_without_dependencies() -> None:
    text = (DEPLOY / "compose" / "Dockerfile").read_text()
    lock = text.index("--require-hashes -r requirements.lock")
    assert lock < text.index("pip install --no-deps .")
    assert "USER anxin" in text


def _env_keys(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return dict(pairs)


def _setting_exists(key: str) -> bool:
    section, _, field = key.removeprefix("ANXIN_").lower().partition("__")
    top = Settings.model_fields.get(section)
    if top is None or top.annotation is None:
        return False
    if not field:
        return True
    return field in getattr(top.annotation, "model_fields", {})


@pytest.mark.parametrize(
    "path", [DEPLOY / "compose" / ".env.example", DEPLOY / "systemd" / "anxin.env.example"]
)
def test_env_examples_name_real_settings_and_hold_no_secrets(path: Path) -> None:
    env = _env_keys(path)
    anxin = [k for k in env if k.startswith("ANXIN_")]
    assert anxin
    assert [k for k in anxin if not _setting_exists(k)] == []
    secret = re.compile(r"PASSWORD|SECRET|FIELD_KEYS")
    for key, value in env.items():
        if secret.search(key):
            assert "<" in value and ">" in value, f"{key} must be a <placeholder>"


def test_the_compose_environment_and_the_env_example_name_real_settings() -> None:
    env_example = _env_keys(DEPLOY / "compose" / ".env.example")
    text = COMPOSE.read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)", text)) <= set(env_example)
    for service in _compose()["services"].values():
        keys = [k for k in service.get("environment", {}) if k.startswith("ANXIN_")]
        assert [k for k in keys if not _setting_exists(k)] == []


# --------------------------------------------------------------------------- systemd
@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root with the system's units, the units under test and a stand-in executable."""
    _tool("systemd-analyze", "Debian: the systemd package")
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, units)
    for path in ("opt/anxin/venv/bin/anxin", "usr/sbin/nats-server"):
        exe = tmp_path / path
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return tmp_path


def test_the_units_of_both_layouts_exist_and_share_the_environment_file() -> None:
    assert [u.name for u in UNITS] == [
        "anxin-alerts-worker.service",
        "anxin-api.service",
        "anxin-engine.service",
        "anxin-ingest-engine.service",
        "anxin-ingest-urgent.service",
        "anxin-ingest.service",
    ]
    execs = {u.name: next(x for x in u.read_text().splitlines() if x.startswith("ExecStart=")) for u in UNITS}  # fmt: skip
    # One machine: the two ingest lanes; the partitioned layout: the engine's nodes and one
    # ingester on the engine per ingest machine.
    assert execs["anxin-ingest.service"].endswith("anxin ingest --lane telemetry")
    assert execs["anxin-ingest-urgent.service"].endswith(
        "anxin ingest --lane urgent --metrics-port 9109"
    )
    assert execs["anxin-ingest-engine.service"].endswith("anxin ingest --source engine")
    assert execs["anxin-engine.service"] == "ExecStart=/usr/sbin/nats-server -c /etc/nats/node.conf"
    for unit in UNITS:
        text = unit.read_text()
        assert "Restart=always" in text
        if unit.name == "anxin-engine.service":
            assert "DynamicUser=yes" in text and "StateDirectory=nats" in text
            continue
        assert "EnvironmentFile=/etc/anxin/anxin.env" in text
        assert "User=anxin" in text


def test_the_engine_node_configuration_keeps_what_the_ingest_relies_on() -> None:
    """Three copies of the MQTT streams, JetStream's files where the unit keeps its state,
    and the partition mapping beside it."""
    text = (DEPLOY / "nats" / "node.conf.example").read_text()
    assert re.search(r"^\s*stream_replicas: 3\b", text, re.M)
    assert "store_dir: /var/lib/nats/jetstream" in text
    assert 'include "mapping.conf"' in text


def test_units_pass_systemd_analyze_verify_without_a_warning(unit_root: Path) -> None:
    paths = [str(unit_root / "etc/systemd/system" / u.name) for u in UNITS]
    out = _run(["systemd-analyze", "verify", f"--root={unit_root}", *paths])
    assert out.returncode == 0, out.stderr
    # verify warns (and still exits 0) on a directive it ignores: a warning is a failure here.
    assert out.stdout + out.stderr == ""


@pytest.mark.parametrize("unit", [u.name for u in UNITS])
def test_units_are_rated_ok_by_systemd_analyze_security(unit_root: Path, unit: str) -> None:
    out = _run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--root={unit_root}",
            "--threshold=20",  # exposure x 10: at most 2.0 of 10
            unit,
        ]
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert re.search(r"Overall exposure level for \S+: [01]\.\d OK", out.stdout)


# --------------------------------------------------------------------------- broker TLS
@pytest.fixture
def tls_broker() -> Iterator[tuple[int, Path]]:
    """The project's broker configuration plus the TLS example, with a fresh CA and server
    certificate for localhost."""
    _tool("mosquitto", "Debian: apt-get install mosquitto")
    openssl = _tool("openssl", "Debian: apt-get install openssl")
    # Not under tmp_path (0700): the broker reads the files as its own user.
    certs = Path(tempfile.mkdtemp(prefix="anxin-tls-"))
    certs.chmod(0o755)

    def ssl_cmd(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=certs)

    ssl_cmd(
        *[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=anxin-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]
    )
    ssl_cmd(
        *[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "s.csr",
        ]
    )
    (certs / "ext").write_text("subjectAltName=DNS:localhost\n")
    ssl_cmd(
        *[
            "x509",
            "-req",
            "-in",
            "s.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "server.crt",
        ]
    )
    for f in certs.iterdir():
        f.chmod(0o644)  # the broker reads them after dropping to its own user
    port = free_port()
    tls = (DEPLOY / "mosquitto" / "tls.conf.example").read_text()
    tls = tls.replace("listener 8883", f"listener {port} 127.0.0.1")
    tls = tls.replace("/etc/mosquitto/certs/", f"{certs}/")
    broker = PrivateBroker(extra=tls)
    broker.start()
    try:
        yield port, certs / "ca.crt"
    finally:
        broker.close()
        shutil.rmtree(certs, ignore_errors=True)


def test_the_tls_example_opens_an_mqtt_listener_with_the_given_certificate(
    tls_broker: tuple[int, Path],
) -> None:
    port, ca = tls_broker
    context = ssl.create_default_context(cafile=str(ca))

    def connack() -> bytes:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            # MQTT 3.1.1 CONNECT, clean session, keep-alive 60, empty client id.
            tls.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
            return tls.recv(4)

    wait_until(lambda: port_open("127.0.0.1", port, 0.5), 10, "the TLS listener")
    assert connack() == b"\x20\x02\x00\x00"  # CONNACK, accepted
