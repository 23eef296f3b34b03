-- Where a device is worn, when it is not what its kind says. NULL (the usual case): from the
-- kind (devices.model.placement_of: wristband and watch on the wrist, pendant on the chest,
-- belt clip on the waist). The ingester feeds each device's accelerometer to the fall detector
-- of its placement. A plain column: the same on TimescaleDB and plain PostgreSQL.
ALTER TABLE devices ADD COLUMN placement text
    CHECK (placement IN ('wrist', 'waist', 'chest', 'unknown'));

-- A belt or waist clip is its own kind of device.
ALTER TABLE devices DROP CONSTRAINT devices_kind_check;
ALTER TABLE devices ADD CONSTRAINT devices_kind_check
    CHECK (kind IN ('wristband', 'pendant', 'watch', 'belt_clip', 'bed_sensor', 'hub', 'sos_button'));
