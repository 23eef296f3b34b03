-- The delivery worker (alerts/delivery.py) LISTENs on anxin_deliveries: a new row in the
-- outbox wakes it at once instead of at its next poll. One notification per statement, after
-- commit (PostgreSQL delivers NOTIFY only when the inserting transaction commits), so an alert
-- with several recipients wakes the worker once.
CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('anxin_deliveries', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_notify_insert
    AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();
