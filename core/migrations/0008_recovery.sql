-- Crash safety of the way from a stored SOS or fall to its alert (docs/operations.md).
--
-- An event that can raise a finding (sos, fall, cancel) is stored first and handled after
-- the commit; handled_at says the detectors have seen it. A finding is stored once (unique
-- per device, kind and time, so a replay after a crash cannot double it) and alerted_at says
-- the alert service has acted on it. An ingester that starts, and a sweep every few seconds,
-- take up whatever a crash left unhandled.

ALTER TABLE device_events ADD COLUMN handled_at timestamptz;
-- What was stored before this migration was handled by the ingester that stored it.
UPDATE device_events SET handled_at = received_at;
CREATE INDEX device_events_unhandled ON device_events (received_at) WHERE handled_at IS NULL;

ALTER TABLE findings ADD COLUMN alerted_at timestamptz;
UPDATE findings SET alerted_at = created_at;
DELETE FROM findings a USING findings b
 WHERE a.device_id = b.device_id AND a.kind = b.kind AND a.ts = b.ts AND a.id > b.id;
CREATE UNIQUE INDEX findings_once ON findings (device_id, kind, ts);
CREATE INDEX findings_unalerted ON findings (id) WHERE alerted_at IS NULL;
