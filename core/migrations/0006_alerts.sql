-- Alerts (issue 5): one row per alert with its lifecycle state, the timeline of every
-- transition, escalation and reminder, the outbox of deliveries with every attempt, the
-- single-use acknowledge tokens, per-elder routing overrides and the doctors' digest items.
-- alerts/ (docs/alerts.md) writes the alert side; the delivery worker (alerts/delivery.py)
-- drains deliveries. An alert and its deliveries are written in one transaction.

CREATE TABLE alerts (
    id                  bigserial PRIMARY KEY,
    resident_id         uuid NULL,
    device_id           text NULL,
    kind                text NOT NULL,
    severity            text NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'emergency')),
    state               text NOT NULL CHECK (state IN ('pending', 'open', 'acknowledged', 'dispatched',
                                                       'resolved', 'cancelled', 'false_alarm')),
    occurrences         int NOT NULL DEFAULT 1 CHECK (occurrences > 0),
    first_at            timestamptz NOT NULL,
    last_at             timestamptz NOT NULL,
    evidence            jsonb,
    finding_ids         bigint[] NOT NULL DEFAULT '{}',
    cancel_deadline     timestamptz NULL,
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Escalation (alerts/escalation.py): the routing plan chosen when the alert opened, the
    -- tier reached, when the next tier and the next reminder are due.
    rule                text,
    plan                jsonb,
    opened_at           timestamptz,
    tier                int NOT NULL DEFAULT 0,
    next_escalation_at  timestamptz,
    reminders           int NOT NULL DEFAULT 0,
    next_reminder_at    timestamptz,
    closed_at           timestamptz,
    CHECK (resident_id IS NOT NULL OR device_id IS NOT NULL)
);
-- One live alert per elder (or unassigned device) and kind, also under concurrency.
CREATE UNIQUE INDEX alerts_one_live ON alerts ((coalesce(resident_id::text, device_id)), kind)
    WHERE state IN ('pending', 'open', 'acknowledged', 'dispatched');
CREATE INDEX alerts_state_idx ON alerts (state, id);
CREATE INDEX alerts_resident_idx ON alerts (resident_id, id);
CREATE INDEX alerts_due_idx ON alerts (next_escalation_at) WHERE state IN ('pending', 'open');
CREATE INDEX alerts_reminder_idx ON alerts (next_reminder_at) WHERE state = 'open';
CREATE INDEX alerts_deadline_idx ON alerts (cancel_deadline) WHERE state = 'pending';

-- The timeline: every transition (from_state -> to_state), escalation, reminder and note.
CREATE TABLE alert_events (
    id          bigserial PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    at          timestamptz NOT NULL,
    event       text NOT NULL DEFAULT 'transition'
                CHECK (event IN ('transition', 'escalation', 'reminder', 'severity', 'note',
                                 'delivery')),
    from_state  text,
    to_state    text,
    actor       text NOT NULL,
    channel     text,
    note        text
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, id);

-- The outbox: one row per message to one recipient. idempotency_key is the same on every
-- retry, so a receiver can drop duplicates.
CREATE TABLE deliveries (
    id               bigserial PRIMARY KEY,
    alert_id         bigint NOT NULL REFERENCES alerts (id),
    tier             int NOT NULL DEFAULT 0,
    recipient_kind   text NOT NULL CHECK (recipient_kind IN ('dispatch120', 'child', 'relative',
                         'work_unit', 'neighbour', 'community_worker', 'doctor', 'hospital',
                         'operator')),
    recipient_ref    text NULL,
    recipient_name   text,
    channel          text NOT NULL CHECK (channel IN ('apprise', 'dispatch120')),
    address          text NOT NULL,
    language         text NOT NULL DEFAULT 'zh',
    template         text NOT NULL,
    idempotency_key  text UNIQUE NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'delivered', 'failed', 'gave_up',
                                       'cancelled')),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX deliveries_due_idx ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_alert_idx ON deliveries (alert_id);

CREATE TABLE delivery_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES deliveries (id),
    at           timestamptz NOT NULL DEFAULT now(),
    ok           bool NOT NULL,
    status_code  int NULL,
    error        text NULL,
    duration_ms  int
);
CREATE INDEX delivery_attempts_delivery_idx ON delivery_attempts (delivery_id, id);

-- Acknowledge links: only the SHA-256 of the token is stored; a token works once, until
-- expires_at (alerts/ack.py).
CREATE TABLE ack_tokens (
    id           bigserial PRIMARY KEY,
    alert_id     bigint NOT NULL REFERENCES alerts (id),
    delivery_id  bigint REFERENCES deliveries (id),
    token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    recipient    text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX ack_tokens_alert_idx ON ack_tokens (alert_id);

-- Per-elder routing: rules (same shape as alerts/routing.yaml) tried before the default policy.
CREATE TABLE alert_routing_overrides (
    resident_id  uuid PRIMARY KEY,
    rules        jsonb NOT NULL CHECK (jsonb_typeof(rules) = 'array'),
    updated_by   text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Trends and low scores for the family doctor's daily digest (not alerts).
CREATE TABLE digest_items (
    id           bigserial PRIMARY KEY,
    resident_id  uuid,
    device_id    text NOT NULL,
    kind         text NOT NULL,
    severity     text NOT NULL,
    at           timestamptz NOT NULL,
    evidence     jsonb NOT NULL,
    finding_id   bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX digest_items_resident_idx ON digest_items (resident_id, at);
