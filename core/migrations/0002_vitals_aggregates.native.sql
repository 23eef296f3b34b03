-- Per-minute and per-hour vitals as views (TimescaleDB mode makes them continuous aggregates).
CREATE VIEW vitals_1m AS
SELECT device_id, date_trunc('minute', ts) AS bucket,
       avg(heart_rate) AS heart_rate, min(heart_rate) AS heart_rate_min, max(heart_rate) AS heart_rate_max,
       avg(spo2) AS spo2, min(spo2) AS spo2_min,
       avg(resp_rate) AS resp_rate, avg(temperature) AS temperature,
       avg(systolic) AS systolic, avg(diastolic) AS diastolic, count(*) AS n
FROM vitals GROUP BY device_id, date_trunc('minute', ts);

CREATE VIEW vitals_1h AS
SELECT device_id, date_trunc('hour', ts) AS bucket,
       avg(heart_rate) AS heart_rate, min(heart_rate) AS heart_rate_min, max(heart_rate) AS heart_rate_max,
       avg(spo2) AS spo2, min(spo2) AS spo2_min,
       avg(resp_rate) AS resp_rate, avg(temperature) AS temperature,
       avg(systolic) AS systolic, avg(diastolic) AS diastolic, count(*) AS n
FROM vitals GROUP BY device_id, date_trunc('hour', ts);
