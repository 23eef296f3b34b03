-- Per-elder NEWS2 settings set by the signed family doctor (issue 12): SpO2 scale 2 for
-- confirmed hypercapnic respiratory failure, and any chart the doctor changed (the others stay
-- the RCP chart). bands: chart name -> {"starts": [first value of each band after the first],
-- "scores": [score of each band]} (detectors/vitals.py, News2Settings). An elder without a row
-- is scored on the RCP chart. Set through PUT /api/v1/residents/{id}/news2/settings (audited);
-- the ingester reads the rows at start and again when count or newest updated_at change.

CREATE TABLE news2_settings (
    resident_id  uuid PRIMARY KEY REFERENCES residents (id),
    spo2_scale   smallint NOT NULL DEFAULT 1 CHECK (spo2_scale IN (1, 2)),
    bands        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(bands) = 'object'),
    note         text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text NOT NULL DEFAULT ''
);
