-- Access control (issue 3, point 6): principals and their scopes, API tokens (stored as
-- SHA-256), caller-lookup grants of the dispatchers, and the append-only audit log of every
-- emergency-profile read and every refusal. devices/access.py holds the rules;
-- docs/registry.md "Who may see what" the table.

CREATE TABLE principals (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'dispatcher', 'doctor', 'family')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz
);

-- A doctor principal is one or more members of doctor teams (doctor_team_members): the teams of
-- those members are the doctor's scope.
CREATE TABLE principal_members (
    principal_id  uuid NOT NULL REFERENCES principals (id),
    member_id     uuid NOT NULL REFERENCES doctor_team_members (id),
    PRIMARY KEY (principal_id, member_id)
);

-- A family principal's relatives.
CREATE TABLE principal_residents (
    principal_id  uuid NOT NULL REFERENCES principals (id),
    resident_id   uuid NOT NULL REFERENCES residents (id),
    PRIMARY KEY (principal_id, resident_id)
);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    principal_id  uuid NOT NULL REFERENCES principals (id),
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX api_tokens_principal_idx ON api_tokens (principal_id);

-- A dispatcher's caller-number lookup lets them read the matching residents' profiles for a
-- short while (devices/access.py LOOKUP_GRANT_MINUTES).
CREATE TABLE lookup_grants (
    id            bigserial PRIMARY KEY,
    principal_id  uuid NOT NULL REFERENCES principals (id),
    resident_id   uuid NOT NULL REFERENCES residents (id),
    number        text NOT NULL,
    granted_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CHECK (expires_at > granted_at)
);
CREATE INDEX lookup_grants_live_idx ON lookup_grants (principal_id, resident_id, expires_at);

-- Who read (or was refused) which resident's profile, why and when. No foreign keys: the log
-- outlives what it names. Append-only: the trigger below refuses UPDATE, DELETE and TRUNCATE
-- for every role, the table owner included (only dropping the trigger, a schema change, can
-- get round it).
CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    principal_id     uuid,
    principal_name   text NOT NULL,
    role             text NOT NULL,
    action           text NOT NULL,
    resident_id      uuid,
    profile_version  integer,
    purpose          text NOT NULL,
    granted          boolean NOT NULL,
    reason           text NOT NULL
);
CREATE INDEX audit_log_resident_idx ON audit_log (resident_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Belt and braces: no role but the owner gets to change the log; where the deployment runs the
-- services as a separate role named anxin_app (docs/registry.md), it may insert and select only.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anxin_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM anxin_app;
        GRANT SELECT, INSERT ON audit_log TO anxin_app;
        GRANT USAGE ON SEQUENCE audit_log_id_seq TO anxin_app;
    END IF;
END
$$;
