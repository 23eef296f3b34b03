-- TimescaleDB: hypertables, compression segmented by device, retention, continuous aggregates.
SELECT create_hypertable('vitals', 'ts', chunk_time_interval => interval '1 day', migrate_data => true);
SELECT create_hypertable('accel_bursts', 'ts', chunk_time_interval => interval '1 hour', migrate_data => true);
SELECT create_hypertable('bed_readings', 'ts', chunk_time_interval => interval '1 day', migrate_data => true);
SELECT create_hypertable('battery_readings', 'ts', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('positions', 'ts', chunk_time_interval => interval '7 days', migrate_data => true);
SELECT create_hypertable('device_events', 'ts', chunk_time_interval => interval '30 days', migrate_data => true);
SELECT create_hypertable('device_status', 'ts', chunk_time_interval => interval '30 days', migrate_data => true);

ALTER TABLE vitals SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                        timescaledb.compress_orderby = 'ts DESC, seq');
ALTER TABLE accel_bursts SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                              timescaledb.compress_orderby = 'ts DESC, seq');
ALTER TABLE bed_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                              timescaledb.compress_orderby = 'ts DESC, seq');
ALTER TABLE battery_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                                  timescaledb.compress_orderby = 'ts DESC, seq');
ALTER TABLE positions SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                           timescaledb.compress_orderby = 'ts DESC, seq');

SELECT add_compression_policy('vitals', interval '2 days');
SELECT add_compression_policy('accel_bursts', interval '6 hours');
SELECT add_compression_policy('bed_readings', interval '2 days');
SELECT add_compression_policy('battery_readings', interval '14 days');
SELECT add_compression_policy('positions', interval '14 days');

-- Raw accelerometer is kept for days, not years; the evidence window of each fall is kept
-- with its finding. Vitals are kept for the length of a family doctor contract and more.
SELECT add_retention_policy('accel_bursts', interval '7 days');
SELECT add_retention_policy('vitals', interval '3 years');
SELECT add_retention_policy('bed_readings', interval '3 years');
SELECT add_retention_policy('battery_readings', interval '1 year');
SELECT add_retention_policy('positions', interval '90 days');
