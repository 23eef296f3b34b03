-- Per-elder behaviour watching (issue 13): who lives alone, the day and night windows in the
-- elder's local time, and the limits of the behaviour detectors (detectors/behaviour.py). An
-- elder without a row is watched with the defaults, living alone when the registry flags say
-- so ('living_alone'). Set through PUT /api/v1/residents/{id}/behaviour (audited).

CREATE TABLE behaviour_settings (
    resident_id      uuid PRIMARY KEY REFERENCES residents (id),
    lives_alone      boolean,                       -- NULL: from the flag 'living_alone'
    timezone         text NOT NULL DEFAULT 'Asia/Shanghai',
    day_start_min    smallint NOT NULL CHECK (day_start_min BETWEEN 0 AND 1439),
    day_end_min      smallint NOT NULL CHECK (day_end_min BETWEEN 0 AND 1439),
    max_inactive_s   integer NOT NULL CHECK (max_inactive_s BETWEEN 600 AND 86400),
    night_start_min  smallint NOT NULL CHECK (night_start_min BETWEEN 0 AND 1439),
    night_end_min    smallint NOT NULL CHECK (night_end_min BETWEEN 0 AND 1439),
    out_of_bed_s     integer NOT NULL CHECK (out_of_bed_s BETWEEN 60 AND 43200),
    bed_empty_s      integer NOT NULL CHECK (bed_empty_s BETWEEN 60 AND 43200),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text NOT NULL DEFAULT ''
);
