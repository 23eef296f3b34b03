-- Findings of the detectors (what ingest saw in the stream) and the detectors' per-device
-- state, so that a restarted ingester carries on where it stopped.

CREATE TABLE findings (
    id              bigserial PRIMARY KEY,
    ts              timestamptz NOT NULL,          -- the event itself (impact, SOS press)
    detected_at     timestamptz NOT NULL,          -- the detector call that produced it
    device_id       text NOT NULL,
    resident_id     uuid,
    kind            text NOT NULL,
    severity        text NOT NULL,
    evidence        jsonb NOT NULL,                -- numbers only, never the raw window
    -- A few seconds of signal around a fall impact: little-endian float32 x, y, z in g.
    window_samples  bytea,
    window_rate_hz  real,
    window_start    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((window_samples IS NULL) = (window_rate_hz IS NULL)
           AND (window_samples IS NULL) = (window_start IS NULL))
);
CREATE INDEX findings_device_ts ON findings (device_id, ts);
CREATE INDEX findings_kind_ts ON findings (kind, ts);

CREATE TABLE detector_state (
    device_id   text NOT NULL,
    detector    text NOT NULL,
    state       bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, detector)
);
