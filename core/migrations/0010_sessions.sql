-- Browser sessions of the screens (issue 12): a sign-in with an API token gives a short-lived
-- session whose random value travels in an HttpOnly cookie; only its SHA-256 is stored. A
-- session acts for the token it was made from: revoking or expiring the token, or disabling
-- the principal, ends its sessions at once (api/sessions.py joins api_tokens on every use).
CREATE TABLE api_sessions (
    id            bigserial PRIMARY KEY,
    token_id      uuid NOT NULL REFERENCES api_tokens (id),
    session_hash  bytea NOT NULL UNIQUE CHECK (octet_length(session_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX api_sessions_token_idx ON api_sessions (token_id);
