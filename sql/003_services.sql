-- devgate schema, version 3: device services (LightDB State, Stream, logs).

-- One JSON document per device: its LightDB State.
CREATE TABLE state (
	device_id  INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
	doc        TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);

-- State changes made outside the daemon (the CLI); the daemon reads the
-- new rows to notify observing devices. Old rows are pruned.
CREATE TABLE state_changes (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	device_id INTEGER NOT NULL,
	path      TEXT NOT NULL,
	at        INTEGER NOT NULL
);

CREATE TABLE stream (
	id        INTEGER PRIMARY KEY,
	device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	path      TEXT NOT NULL,
	ts        INTEGER NOT NULL, -- ms since the epoch
	value     TEXT NOT NULL     -- JSON
);
CREATE INDEX stream_device_ts ON stream(device_id, ts);

CREATE TABLE logs (
	id        INTEGER PRIMARY KEY,
	device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	ts        INTEGER NOT NULL,
	level     TEXT NOT NULL,
	module    TEXT,
	msg       TEXT,
	extra     TEXT -- the rest of the entry, JSON, when it had more members
);
CREATE INDEX logs_device_ts ON logs(device_id, ts);
