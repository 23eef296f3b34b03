-- Home visits (issue 13): how often the special populations are visited (per flag, optionally
-- per community) and the visits community workers and doctors record. docs/care.md.

-- Months between visits for elders with a flag; a community's row wins over the default
-- (community_id NULL). Without any row: every month.
CREATE TABLE visit_rules (
    id            bigserial PRIMARY KEY,
    community_id  uuid REFERENCES communities (id),
    flag          text NOT NULL CHECK (flag IN ('empty_nest', 'living_alone', 'disabled',
                      'semi_disabled', 'dementia', 'very_old', 'extremely_poor', 'low_income',
                      'veteran', 'bereaved_parent', 'chronic_disease', 'home_care_bed')),
    every_months  smallint NOT NULL CHECK (every_months BETWEEN 1 AND 12),
    updated_by    text NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (community_id, flag)
);

CREATE TABLE visits (
    id              bigserial PRIMARY KEY,
    resident_id     uuid NOT NULL REFERENCES residents (id),
    visited_at      timestamptz NOT NULL,
    visitor         text NOT NULL CHECK (length(visitor) BETWEEN 1 AND 200),
    visitor_role    text NOT NULL CHECK (visitor_role IN ('community_worker', 'doctor', 'nurse',
                                                          'volunteer', 'other')),
    kind            text NOT NULL CHECK (kind IN ('home', 'phone', 'video', 'clinic')),
    notes           text CHECK (length(notes) <= 4000),
    follow_up_on    date,
    follow_up       text CHECK (length(follow_up) <= 1000),
    recorded_by     text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX visits_resident_idx ON visits (resident_id, visited_at);
