"""Settings: environment variables, nesting, and errors that name the key and the value."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import load_settings


def test_nested_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANXIN_INGEST__BATCH_SIZE", "1234")
    monkeypatch.setenv("ANXIN_MQTT__URL", "mqtts://broker.example:8883")
    settings = load_settings()
    assert settings.ingest.batch_size == 1234
    assert (
        settings.mqtt.tls and settings.mqtt.port == 8883 and settings.mqtt.host == "broker.example"
    )


def test_a_bad_value_names_the_key_the_value_and_what_was_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANXIN_INGEST__BATCH_SIZE", "lots")
    with pytest.raises(
        ConfigError, match=r"Config 'ANXIN_INGEST__BATCH_SIZE' has value 'lots'\. .*integer"
    ):
        load_settings()


def test_out_of_bounds_and_wrong_scheme_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANXIN_MQTT__RECEIVE_MAXIMUM", "70000")
    monkeypatch.setenv("ANXIN_DB__URL", "mysql://x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "ANXIN_MQTT__RECEIVE_MAXIMUM" in str(info.value) and "65535" in str(info.value)
    assert "ANXIN_DB__URL" in str(info.value) and "postgresql://" in str(info.value)


def test_unknown_nested_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANXIN_INGEST__BATCH_SIZ", "10")
    with pytest.raises(ConfigError, match="BATCH_SIZ"):
        load_settings()


def test_production_refuses_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANXIN_ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="ANXIN_REGISTRY__FIELD_KEYS"):
        load_settings()
    assert load_settings(environment="development").environment == "development"


def test_a_lane_of_its_own_on_the_engine_is_refused_with_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANXIN_INGEST__SOURCE", "engine")
    monkeypatch.setenv("ANXIN_MQTT__PROTOCOL", "3.1.1")
    monkeypatch.setenv("ANXIN_INGEST__LANE", "telemetry")
    with pytest.raises(ConfigError, match=r"SOS presses included; use lane 'all'"):
        load_settings()
    monkeypatch.setenv("ANXIN_INGEST__LANE", "all")
    assert load_settings().ingest.source == "engine"


def test_mqtt_5_on_the_engine_is_refused_with_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANXIN_INGEST__SOURCE", "engine")
    with pytest.raises(ConfigError, match=r"ANXIN_MQTT__PROTOCOL must be 3\.1\.1"):
        load_settings()
