-- Plain PostgreSQL: BRIN indexes make time-range scans across devices cheap on append-only tables.
CREATE INDEX vitals_ts_brin ON vitals USING brin (ts);
CREATE INDEX accel_bursts_ts_brin ON accel_bursts USING brin (ts);
CREATE INDEX bed_readings_ts_brin ON bed_readings USING brin (ts);
CREATE INDEX battery_readings_ts_brin ON battery_readings USING brin (ts);
CREATE INDEX positions_ts_brin ON positions USING brin (ts);
CREATE INDEX device_events_ts_brin ON device_events USING brin (ts);
CREATE INDEX device_status_ts_brin ON device_status USING brin (ts);
