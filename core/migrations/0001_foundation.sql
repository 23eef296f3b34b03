-- Foundation: the device table ingest checks against, telemetry, events, status, dead letters.
-- Every telemetry row carries the device's own timestamp (ts) and sequence number (seq);
-- (device_id, ts, seq) is unique, which both deduplicates redelivered messages and serves
-- as the per-device time index.

CREATE TABLE devices (
    device_id      text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_-]{3,64}$'),
    kind           text NOT NULL CHECK (kind IN ('wristband', 'pendant', 'watch', 'bed_sensor',
                                                 'hub', 'sos_button')),
    resident_id    uuid,
    gateway_id     text REFERENCES devices (device_id),
    status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('provisioned', 'active', 'retired')),
    registered_at  timestamptz NOT NULL DEFAULT now(),
    secret_hash    text,
    secret_rotated_at timestamptz,
    revoked_at     timestamptz,
    expected_interval_s integer NOT NULL DEFAULT 60 CHECK (expected_interval_s > 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_gateway_idx ON devices (gateway_id) WHERE gateway_id IS NOT NULL;

CREATE TABLE vitals (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    heart_rate  real,
    spo2        real,
    resp_rate   real,
    temperature real,
    systolic    real,
    diastolic   real,
    on_oxygen   boolean,
    consciousness char(1)
);
CREATE UNIQUE INDEX vitals_device_ts_seq ON vitals (device_id, ts, seq);

-- One row per burst: samples is little-endian int16 (x, y, z interleaved), scale converts
-- counts to g. Stored as one value, not one row per sample.
CREATE TABLE accel_bursts (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    rate_hz     real NOT NULL,
    scale_g     real NOT NULL,
    n_samples   integer NOT NULL,
    samples     bytea NOT NULL
);
CREATE UNIQUE INDEX accel_bursts_device_ts_seq ON accel_bursts (device_id, ts, seq);

CREATE TABLE bed_readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    presence    boolean,
    heart_rate  real,
    resp_rate   real,
    movement    real
);
CREATE UNIQUE INDEX bed_readings_device_ts_seq ON bed_readings (device_id, ts, seq);

CREATE TABLE battery_readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    level_pct   real NOT NULL,
    charging    boolean
);
CREATE UNIQUE INDEX battery_readings_device_ts_seq ON battery_readings (device_id, ts, seq);

CREATE TABLE positions (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    accuracy_m  real,
    indoor      text
);
CREATE UNIQUE INDEX positions_device_ts_seq ON positions (device_id, ts, seq);

CREATE TABLE device_events (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    kind        text NOT NULL,
    detail      jsonb
);
CREATE UNIQUE INDEX device_events_device_ts_seq ON device_events (device_id, ts, seq);

CREATE TABLE device_status (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    received_at timestamptz NOT NULL,
    online      boolean NOT NULL,
    reason      text,
    firmware    text,
    battery_pct real
);
CREATE UNIQUE INDEX device_status_device_ts ON device_status (device_id, ts, online);

-- Messages refused by ingest, with the raw bytes, so nothing sent is ever lost silently.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    device_id   text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea NOT NULL
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);
