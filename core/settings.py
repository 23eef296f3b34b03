"""One settings object for every Anxin process.

Values come from ``ANXIN_*`` environment variables (nested with ``__``, for example
``ANXIN_INGEST__BATCH_SIZE=5000``) and optionally from a ``.env``-style file named by
``ANXIN_ENV_FILE``. Nothing is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

#: Development field-encryption key (base64 of 32 bytes), refused in production.
DEFAULT_FIELD_KEY = "YW54aW4tZGV2LW9ubHktZmllbGQta2V5LTMyYnl0ZSE="
DEFAULT_FIELD_KEY_ID = "dev"
DEFAULT_DISPATCH120_SECRET = "dev-only-120-secret-change-me"  # noqa: S105 - refused in production
DEFAULT_ACK_SECRET = "dev-only-ack-secret-change-me"  # noqa: S105 - refused in production


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/anxin",
        description="libpq connection URL of the PostgreSQL/TimescaleDB database.",
    )
    pool_min: int = Field(1, ge=1, le=100, description="Connections the pool keeps open.")
    pool_max: int = Field(8, ge=1, le=500, description="Most connections the pool opens.")
    connect_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Timeout of one connection attempt."
    )
    require_timescale: bool = Field(
        False,
        description="Refuse to create the schema on plain PostgreSQL: a new database must get "
        "TimescaleDB (installed and preloaded), or the migration stops with what to change.",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres"}:
            raise ValueError(f"expected a postgresql:// URL, got scheme {scheme!r}")
        return value


class MqttSettings(_Section):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    username: str | None = Field(None, description="Username of the ingest service at the broker.")
    password: SecretStr | None = Field(
        None, description="Password of the ingest service at the broker."
    )
    ca_file: Path | None = Field(None, description="CA bundle for mqtts://; system CAs when unset.")
    client_id: str = Field(
        "anxin-ingest",
        min_length=1,
        max_length=64,
        description="Client id; with a persistent session the broker keeps unacknowledged "
        "messages for this id while the ingester is down.",
    )
    topic_prefix: str = Field(
        "anxin/v1",
        pattern=r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$",
        description="Prefix of every device topic, without a trailing slash.",
    )
    shared_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="When set, subscribe as $share/<group>/... so several ingesters split the load.",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        "5",
        description="MQTT version of the service's own connections. With 5 the ingester announces "
        "receive_maximum, so the broker never has more unacknowledged messages in flight to it "
        "than that (this bounds its memory); with 3.1.1 only the broker's configuration can.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="How long the broker keeps the ingester's session (and queued messages) "
        "while it is disconnected.",
    )
    receive_maximum: int = Field(
        20000,
        ge=1,
        le=65535,
        description="MQTT 5 Receive Maximum: unacknowledged messages the broker may have in "
        "flight to the ingester. Acknowledgement happens after commit, so this window bounds "
        "the in-memory backlog and caps throughput when too small.",
    )

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"}:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {value!r}")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if self.tls else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in {"mqtts", "ssl"}


IngestLane = Literal["all", "telemetry", "urgent"]
IngestSource = Literal["mqtt", "engine"]
"""Which messages an ingester process takes (ingest/lanes.py)."""


class IngestSettings(_Section):
    batch_size: int = Field(
        4000, ge=1, le=200_000, description="Messages per database transaction at most."
    )
    writers: int = Field(
        2,
        ge=1,
        le=16,
        description="Telemetry batches written at the same time, each on its own database "
        "connection; writers past the first help only while a full batch waits (a backlog). "
        "Acknowledgements and detection still follow receive order.",
    )
    flush_interval_s: float = Field(
        0.02,
        gt=0,
        le=10,
        description="After an idle moment, how long the first message waits for others to join "
        "its batch. Under load batches form by themselves (all that arrived during the last commit).",
    )
    max_payload_bytes: int = Field(
        65536, ge=256, le=1 << 20, description="Larger payloads are dead-lettered."
    )
    max_readings_per_message: int = Field(
        600, ge=1, le=10_000, description="Most readings one telemetry message may carry."
    )
    max_future_skew_s: float = Field(
        300.0, ge=0, description="A reading stamped further ahead of the server clock is refused."
    )
    max_age_days: float = Field(
        30.0,
        gt=0,
        description="A reading older than this is refused (late backlog within it is kept).",
    )
    registry_refresh_s: float = Field(
        10.0, gt=0, description="How often the device registry cache is reloaded."
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the ingester's /metrics endpoint; 0 disables it."
    )
    metrics_host: str = Field("127.0.0.1", description="Address /metrics binds to.")
    log_every_s: float = Field(5.0, gt=0, description="Interval of the one-line summary log.")
    detection: bool = Field(
        True,
        description="Run the detectors (falls, SOS, NEWS2, device health) on every committed batch "
        "and store their findings.",
    )
    retry_max_s: float = Field(10.0, gt=0, description="Longest back-off between database retries.")
    switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Python's thread switch interval in the ingester (sys.setswitchinterval). "
        "The urgent lane waits for the GIL at every step of an SOS (commit, detection, alert, "
        "push) while telemetry threads hold it; Python's default of 5 ms per wait adds up.",
    )
    sweep_every_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often stored events and findings that a crash or a failure left "
        "without detection or alert are looked for (they are taken up at start-up too).",
    )
    sweep_grace_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="The sweep leaves rows younger than this to the live path.",
    )
    replay_window_s: float = Field(
        600.0,
        gt=0,
        description="At start-up the fall detector replays the accelerometer bursts stored since "
        "its last saved state, at most this far back.",
    )
    nice: int | None = Field(
        None,
        ge=-20,
        le=19,
        description="CPU priority of the ingester process (os.nice; only root may lower it "
        "below 0). Unset: 10 in the telemetry lane's process, so that the urgent lane's process, "
        "the broker and the database run first when the cores are busy (an SOS then waits "
        "for no telemetry batch); unchanged in the others.",
    )
    source: IngestSource = Field(
        "mqtt",
        description="mqtt: subscribe to the broker (one machine); engine: read the partitions of "
        "the clustered engine that this ingester owns (ANXIN_ENGINE__*).",
    )
    lane: IngestLane = Field(
        "all",
        description="What this ingester process takes. all: everything, in one process (one "
        "machine, the default). urgent: SOS presses only, in a process and broker session of "
        "their own (client id and shared group suffixed -urgent): stored, alerted and pushed to "
        "120 without waiting for telemetry. telemetry: everything else (readings, statuses, "
        "fall and cancel events, detection). Run the two side by side: while the urgent "
        "process is down, SOS presses wait for it at the broker (docs/operations.md).",
    )

    @model_validator(mode="after")
    def _one_lane_on_the_engine(self) -> IngestSettings:
        if self.source == "engine" and self.lane != "all":
            raise ValueError(
                f"lane {self.lane!r} with source 'engine': an ingester on the engine reads every "
                "message of the partitions it owns, SOS presses included; use lane 'all' "
                "(docs/operations.md, 'Past one machine')"
            )
        return self


class EngineSettings(_Section):
    """The clustered engine of the partitioned ingest (NATS JetStream; docs/operations.md)."""

    urls: str = Field(
        "nats://127.0.0.1:4222",
        description="Comma-separated nats:// URLs of the engine's nodes (the client fails over).",
    )
    subject_root: str = Field(
        "anxin.part",
        pattern=r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$",
        description="First tokens of the partitioned subjects the engine maps device topics to.",
    )
    partitions: int = Field(
        16, ge=1, le=1024, description="Partitions of the stream (the engine's mapping must agree)."
    )
    replicas: int = Field(
        1,
        ge=1,
        le=5,
        description=(
            "Copies of the engine's MQTT stream, which the first ingester makes; the same as "
            "the engine's mqtt stream_replicas."
        ),
    )
    max_age_days: float = Field(
        7.0, gt=0, description="How long the engine's MQTT stream keeps a message, read or not."
    )
    max_gb: float = Field(
        40.0,
        gt=0,
        description=(
            "Most the engine's MQTT stream keeps on a node, in GB; past it the oldest messages "
            "go (below the nodes' jetstream max_file_store; docs/operations.md sizes it)."
        ),
    )

    @property
    def stream_limits(self) -> dict[str, Any]:
        """The MQTT stream's limits, as :meth:`core.engine.EngineLink.ensure_mqtt_stream`
        takes them."""
        return {"max_age_s": self.max_age_days * 86_400, "max_bytes": int(self.max_gb * 1e9)}

    rebalance_every_s: float = Field(
        2.0, gt=0, description="How often an ingester checks which partitions it should own."
    )
    ack_wait_s: float = Field(
        30.0, gt=0, description="How long the engine waits for a batch's acknowledgement."
    )
    consumer_prefix: str = Field(
        "ingest",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Durable consumers' names: <prefix>-p<n>.",
    )
    lock_namespace: int = Field(
        0x616E78, ge=1, le=2**31 - 2,
        description="First key of the PostgreSQL advisory locks that hold partition ownership.",
    )  # fmt: skip


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP API and console.")


class RegistrySettings(_Section):
    field_keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {DEFAULT_FIELD_KEY_ID: SecretStr(DEFAULT_FIELD_KEY)},
        description="Keyring of the field encryption of sensitive health data (AES-256-GCM): a "
        "JSON object of key id to base64 of 32 random bytes, e.g. "
        '\'{"2025a": "..."}\'. Keep old keys until `rotate` has re-encrypted every row.',
    )
    current_key_id: str = Field(
        DEFAULT_FIELD_KEY_ID,
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Id of the key in field_keys that new writes use.",
    )

    @field_validator("field_keys")
    @classmethod
    def _keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("expected at least one key")
        for key_id, key in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", key_id):
                raise ValueError(
                    f"key id {key_id!r} is not 1 to 32 characters of A-Z, a-z, 0-9, _ . -"
                )
            try:
                raw = base64.b64decode(key.get_secret_value(), validate=True)
            except binascii.Error as exc:
                raise ValueError(f"key {key_id!r} is not valid base64") from exc
            if len(raw) != 32:
                raise ValueError(f"key {key_id!r} decodes to {len(raw)} bytes, expected 32")
        return value

    @field_validator("current_key_id")
    @classmethod
    def _current_known(cls, value: str, info: ValidationInfo) -> str:
        keys = info.data.get("field_keys")
        if keys is not None and value not in keys:
            raise ValueError(f"expected one of the key ids in field_keys: {sorted(keys)}")
        return value


class AlertsSettings(_Section):
    dispatch120_url: str = Field(
        "http://127.0.0.1:8120/anxin/emergency",
        description="URL of the 120 dispatch centre's endpoint that receives the signed push.",
    )
    dispatch120_secret: SecretStr = Field(
        SecretStr(DEFAULT_DISPATCH120_SECRET),
        description="HMAC-SHA256 key shared with the 120 dispatch centre. Must be set in production.",
    )
    operator_url: str | None = Field(
        None, description="Apprise URL of the care operator's channel (device trouble, give-ups)."
    )
    sms_url: str | None = Field(
        None,
        description="Apprise URL of an SMS gateway with {phone} in it, for recipients that have a "
        "phone but no channel of their own (e.g. json://sms.example/send?to={phone}).",
    )
    ack_base_url: str = Field(
        "http://127.0.0.1:8080/api/v1/ack/",
        description="Acknowledge links in messages are this URL followed by the token.",
    )
    ack_secret: SecretStr = Field(
        SecretStr(DEFAULT_ACK_SECRET),
        description="Key the acknowledge tokens are derived from. Must be set in production.",
    )
    ack_ttl_s: float = Field(24 * 3600.0, gt=0, description="How long an acknowledge link works.")
    routing_file: Path | None = Field(
        None, description="A routing policy (YAML) replacing alerts/routing.yaml."
    )
    fall_cancel_window_s: float = Field(
        30.0, gt=0, le=600, description="Cancel window of a suspected fall before it opens."
    )
    fall_grace_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="After the cancel window, how long the detector's own verdict is awaited "
        "before the clock opens the alert.",
    )
    escalation_scale: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Multiplies every tier delay and reminder interval of the routing policy "
        "(e.g. 0.5 escalates twice as fast).",
    )
    escalation_every_s: float = Field(
        5.0, gt=0, le=300, description="How often the escalation clock looks for due alerts."
    )
    visit_reminder_every_s: float = Field(
        900.0,
        ge=0,
        le=86400,
        description="How often the alerts worker looks for due home visits to remind the "
        "community worker and the family doctor of (each due visit once); 0: never.",
    )
    dispatch120_format: Literal["json", "cap"] = Field(
        "json",
        description="Body of the 120 push: Anxin's JSON emergency record, or CAP 1.2 XML "
        "(application/cap+xml) for dispatch systems that take CAP.",
    )
    cap_sender: str = Field(
        "anxin@localhost",
        pattern=r"^[^\s,<&]+$",
        description="CAP 'sender' of the 120 push (no spaces, commas, '<' or '&').",
    )
    delivery_max_attempts: int = Field(
        8,
        ge=1,
        le=100,
        description="Attempts of one delivery before it gives up (and the operator is told).",
    )
    delivery_max_age_s: float = Field(
        6 * 3600.0, gt=0, description="A failing delivery older than this gives up."
    )
    delivery_backoff_base_s: float = Field(
        1.0, gt=0, le=3600, description="Retry delay after the first failure; doubles each time."
    )
    delivery_backoff_max_s: float = Field(
        300.0, gt=0, le=86400, description="Longest delay between two attempts of a delivery."
    )
    delivery_lease_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How long a claimed delivery stays with its process. The process renews the "
        "lease every third of it while sending, so a slow 120 centre keeps its push; a process "
        "that dies leaves its deliveries to the worker once the lease runs out.",
    )
    first_push_120: bool | None = Field(
        None,
        description="The ingester sends the first 120 push of a new alert itself, right after "
        "the alert's commit (the delivery leased to it); the worker retries on failure and "
        "takes it over if the ingester dies. Unset: on in the urgent lane's process, off in "
        "the others, where the push would compete with telemetry for the interpreter lock "
        "and is slower than the worker's (docs/benchmarks.md).",
    )


class Settings(BaseSettings):
    """Everything an Anxin process can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="ANXIN_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    environment: Environment = Field(
        Environment.DEVELOPMENT, description="development, test or production."
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @model_validator(mode="after")
    def _mqtt_311_on_the_engine(self) -> Settings:
        # The services' MQTT connection (commands to devices) goes to the engine's listener.
        if self.ingest.source == "engine" and self.mqtt.protocol != "3.1.1":
            raise ValueError(
                "ANXIN_MQTT__PROTOCOL must be 3.1.1 with ANXIN_INGEST__SOURCE=engine: the "
                "engine's MQTT listener, which carries the commands to devices, speaks 3.1.1 only"
            )
        return self

    def check_production(self) -> None:
        """Refuse development defaults for secrets outside development and test."""
        if self.environment is not Environment.PRODUCTION:
            return
        keys = self.registry.field_keys.values()
        if any(k.get_secret_value() == DEFAULT_FIELD_KEY for k in keys):
            raise ConfigError(
                "Config 'ANXIN_REGISTRY__FIELD_KEYS' holds the development key. "
                "Set keys of 32 random bytes (base64) in production."
            )
        if self.alerts.dispatch120_secret.get_secret_value() == DEFAULT_DISPATCH120_SECRET:
            raise ConfigError(
                "Config 'ANXIN_ALERTS__DISPATCH120_SECRET' has the development default. "
                "Set the key agreed with the 120 dispatch centre in production."
            )
        if self.alerts.ack_secret.get_secret_value() == DEFAULT_ACK_SECRET:
            raise ConfigError(
                "Config 'ANXIN_ALERTS__ACK_SECRET' has the development default. "
                "Set a random secret in production."
            )


def _describe(error: dict[str, Any]) -> str:
    key = "ANXIN_" + "__".join(str(part).upper() for part in error.get("loc", ()))
    # Never echo a secret back into a message or a log.
    loc = error.get("loc", ())
    secret = "field_keys" in loc or any(str(p).endswith("_secret") for p in loc)
    value = "***" if secret else error.get("input")
    return f"Config {key!r} has value {value!r}. {error.get('msg', 'invalid')}."


def load_settings(
    **overrides: Annotated[Any, "field values that win over the environment"],
) -> Settings:
    """Read the settings from the environment (and ``ANXIN_ENV_FILE``), with overrides.

    Raises:
        ConfigError: a value is missing or malformed; the message names the key, the value
            and what was expected.
    """
    env_file = os.environ.get("ANXIN_ENV_FILE")
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc
    settings.check_production()
    return settings
