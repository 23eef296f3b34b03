-- anxin: no-transaction
-- Continuous aggregates cannot be created inside a transaction block: the runner applies this
-- file statement by statement, outside one.
CREATE MATERIALIZED VIEW vitals_1m WITH (timescaledb.continuous) AS
SELECT device_id, time_bucket(interval '1 minute', ts) AS bucket,
       avg(heart_rate) AS heart_rate, min(heart_rate) AS heart_rate_min, max(heart_rate) AS heart_rate_max,
       avg(spo2) AS spo2, min(spo2) AS spo2_min,
       avg(resp_rate) AS resp_rate, avg(temperature) AS temperature,
       avg(systolic) AS systolic, avg(diastolic) AS diastolic, count(*) AS n
FROM vitals GROUP BY device_id, time_bucket(interval '1 minute', ts) WITH NO DATA;

CREATE MATERIALIZED VIEW vitals_1h WITH (timescaledb.continuous) AS
SELECT device_id, time_bucket(interval '1 hour', ts) AS bucket,
       avg(heart_rate) AS heart_rate, min(heart_rate) AS heart_rate_min, max(heart_rate) AS heart_rate_max,
       avg(spo2) AS spo2, min(spo2) AS spo2_min,
       avg(resp_rate) AS resp_rate, avg(temperature) AS temperature,
       avg(systolic) AS systolic, avg(diastolic) AS diastolic, count(*) AS n
FROM vitals GROUP BY device_id, time_bucket(interval '1 hour', ts) WITH NO DATA;

SELECT add_continuous_aggregate_policy('vitals_1m', start_offset => interval '2 hours',
       end_offset => interval '1 minute', schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('vitals_1h', start_offset => interval '3 days',
       end_offset => interval '1 hour', schedule_interval => interval '30 minutes');
