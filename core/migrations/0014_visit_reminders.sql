-- Reminders of due home visits (issue 13) go through the alerts' outbox and delivery worker
-- to the community worker and the family doctor (alerts/visit_reminders.py): one reminder per
-- elder and due day (a visit moves the due day, and the next one is reminded in its turn).
-- A delivery is about an alert or about a visit reminder, never both.

CREATE TABLE visit_reminders (
    id           bigserial PRIMARY KEY,
    resident_id  uuid NOT NULL REFERENCES residents (id),
    due_on       date NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resident_id, due_on)
);

ALTER TABLE deliveries ALTER COLUMN alert_id DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN visit_reminder_id bigint REFERENCES visit_reminders (id);
ALTER TABLE deliveries ADD CONSTRAINT deliveries_about_one
    CHECK ((alert_id IS NULL) <> (visit_reminder_id IS NULL));
CREATE INDEX deliveries_visit_reminder_idx ON deliveries (visit_reminder_id)
    WHERE visit_reminder_id IS NOT NULL;
