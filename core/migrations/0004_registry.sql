-- The registry (issue 3): residents (elders), their versioned emergency profiles, care circles
-- (contacts, family doctor teams, partner hospitals, communities) and device bindings.
--
-- Columns ending in _enc hold AES-GCM ciphertext written by devices/crypto.py (key id, nonce,
-- ciphertext and tag in one value); the key never reaches the database. Columns ending in
-- _norm hold phone numbers in the national form of devices/phones.py, the caller lookup's index.
-- docs/registry.md describes every table.

-- Responsible community (社区) or care institution (养老机构).
CREATE TABLE communities (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind          text NOT NULL DEFAULT 'community' CHECK (kind IN ('community', 'care_institution')),
    address       text,
    phone         text,
    phone_norm    text,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Partner hospital of the green channel (priority reception).
CREATE TABLE hospitals (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address             text,
    green_channel_phone text,
    phone_norm          text,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Family doctor team (家庭医生团队) and its members.
CREATE TABLE doctor_teams (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    institution   text,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE doctor_team_members (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id         uuid NOT NULL REFERENCES doctor_teams (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role            text NOT NULL CHECK (role IN ('doctor', 'nurse', 'public_health', 'pharmacist',
                                                   'rehabilitation', 'other')),
    phone           text,
    phone_norm      text,
    channel_kind    text,
    channel_address text,
    channel_url_enc bytea,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX doctor_team_members_team_idx ON doctor_team_members (team_id);

CREATE TABLE residents (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    sex              text NOT NULL CHECK (sex IN ('female', 'male', 'other', 'unknown')),
    birth_date       date NOT NULL,
    id_number_enc    bytea,
    health_card_enc  bytea,
    landline         text,
    landline_norm    text,
    mobile           text,
    mobile_norm      text,
    province         text,
    city             text,
    district         text,
    street           text,
    community_name   text,
    address_text     text,
    lat              double precision CHECK (lat BETWEEN -90 AND 90),
    lon              double precision CHECK (lon BETWEEN -180 AND 180),
    flags            text[] NOT NULL DEFAULT '{}' CHECK (flags <@ ARRAY[
                         'empty_nest', 'living_alone', 'disabled', 'semi_disabled', 'dementia',
                         'very_old', 'extremely_poor', 'low_income', 'veteran', 'bereaved_parent',
                         'chronic_disease', 'home_care_bed']::text[]),
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'moved', 'deceased', 'retired')),
    community_id     uuid REFERENCES communities (id),
    hospital_id      uuid REFERENCES hospitals (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((lat IS NULL) = (lon IS NULL))
);
CREATE INDEX residents_name_idx ON residents (lower(name), id);
CREATE INDEX residents_landline_idx ON residents (landline_norm) WHERE landline_norm IS NOT NULL;
CREATE INDEX residents_mobile_idx ON residents (mobile_norm) WHERE mobile_norm IS NOT NULL;
CREATE INDEX residents_flags_idx ON residents USING gin (flags);
CREATE INDEX residents_community_idx ON residents (community_id);

-- Consent (PIPL: sensitive personal information needs separate consent): who gave it, when, to
-- what scopes. Withdrawal is a timestamp, never a delete.
CREATE TABLE resident_consents (
    id            bigserial PRIMARY KEY,
    resident_id   uuid NOT NULL REFERENCES residents (id),
    given_by      text NOT NULL CHECK (length(given_by) BETWEEN 1 AND 200),
    relation      text NOT NULL CHECK (relation IN ('self', 'guardian', 'child', 'spouse',
                                                    'other_relative', 'other')),
    given_at      timestamptz NOT NULL,
    scopes        text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY[
                      'registry', 'emergency_profile', 'share_with_120', 'share_with_doctor',
                      'share_with_family', 'monitoring', 'location']::text[]),
    withdrawn_at  timestamptz,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resident_consents_resident_idx ON resident_consents (resident_id);

-- Fields a region adds to the emergency profile: the schema the extension object is checked against.
CREATE TABLE profile_extension_fields (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    type         text NOT NULL CHECK (type IN ('text', 'integer', 'number', 'boolean', 'date',
                                               'text_list')),
    description  text NOT NULL,
    required     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per version; never updated. The latest version is the profile, the rest its history.
-- body_enc holds every health field (conditions, medications, allergies, blood type, past
-- treatment, notes for responders, the extension object) as encrypted JSON.
CREATE TABLE emergency_profiles (
    resident_id       uuid NOT NULL REFERENCES residents (id),
    version           integer NOT NULL CHECK (version > 0),
    body_enc          bytea NOT NULL,
    last_verified_at  timestamptz,
    last_verified_by  text,
    changed_by        text NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 200),
    change_kind       text NOT NULL CHECK (change_kind IN ('create', 'update', 'verify', 'rotate')),
    changed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resident_id, version),
    CHECK ((last_verified_at IS NULL) = (last_verified_by IS NULL))
);

-- The care circle: children, relatives, work unit, neighbours, community workers.
CREATE TABLE contacts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id      uuid NOT NULL REFERENCES residents (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role             text NOT NULL CHECK (role IN ('child', 'spouse', 'relative', 'work_unit',
                                                   'neighbour', 'community_worker', 'volunteer',
                                                   'guardian', 'other')),
    priority         integer NOT NULL DEFAULT 1 CHECK (priority BETWEEN 1 AND 99),
    phones           text[] NOT NULL DEFAULT '{}',
    phones_norm      text[] NOT NULL DEFAULT '{}',
    channel_kind     text,
    channel_address  text,
    channel_url_enc  bytea,
    quiet_start      time,
    quiet_end        time,
    quiet_tz         text,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL) AND (quiet_start IS NULL) = (quiet_tz IS NULL)),
    CHECK ((channel_kind IS NULL) = (channel_address IS NULL))
);
CREATE INDEX contacts_resident_idx ON contacts (resident_id, priority);
CREATE INDEX contacts_phones_idx ON contacts USING gin (phones_norm);

-- A resident's signed family doctor contract (家庭医生签约): team, service package, period.
CREATE TABLE doctor_contracts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    resident_id      uuid NOT NULL REFERENCES residents (id),
    team_id          uuid NOT NULL REFERENCES doctor_teams (id),
    service_package  text NOT NULL,
    starts_on        date NOT NULL,
    ends_on          date NOT NULL,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_on >= starts_on)
);
CREATE INDEX doctor_contracts_resident_idx ON doctor_contracts (resident_id);
CREATE INDEX doctor_contracts_team_idx ON doctor_contracts (team_id);
-- At most one active contract per resident.
CREATE UNIQUE INDEX doctor_contracts_one_active ON doctor_contracts (resident_id) WHERE status = 'active';

-- Devices: extended, not replaced (ingest reads device_id, kind, status, registered_at,
-- gateway_id, resident_id, revoked_at). devices.resident_id stays without a foreign key: ingest
-- and its tests tag devices with residents that the registry may not hold.
ALTER TABLE devices ADD COLUMN label text;
ALTER TABLE devices ADD COLUMN activated_at timestamptz;
ALTER TABLE devices ADD COLUMN retired_at timestamptz;
CREATE INDEX devices_resident_idx ON devices (resident_id) WHERE resident_id IS NOT NULL;

-- Every binding of a device to a resident or gateway, for history (who wore what, when).
CREATE TABLE device_bindings (
    id           bigserial PRIMARY KEY,
    device_id    text NOT NULL REFERENCES devices (device_id),
    resident_id  uuid,
    gateway_id   text,
    bound_by     text NOT NULL,
    bound_at     timestamptz NOT NULL DEFAULT now(),
    unbound_at   timestamptz
);
CREATE INDEX device_bindings_device_idx ON device_bindings (device_id, bound_at);
