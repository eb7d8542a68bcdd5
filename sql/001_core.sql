-- devgate schema, version 1: projects, devices and PSK credentials.
-- Times are milliseconds since the Unix epoch, UTC.

CREATE TABLE projects (
	id             INTEGER PRIMARY KEY,
	slug           TEXT NOT NULL UNIQUE,
	name           TEXT NOT NULL,
	enabled        INTEGER NOT NULL DEFAULT 1,
	auto_provision INTEGER NOT NULL DEFAULT 1,
	created_at     INTEGER NOT NULL
);

CREATE TABLE devices (
	id             INTEGER PRIMARY KEY,
	project_id     INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	name           TEXT NOT NULL,
	certificate_id TEXT,
	blocked        INTEGER NOT NULL DEFAULT 0,
	created_at     INTEGER NOT NULL,
	last_seen      INTEGER,
	UNIQUE (project_id, name),
	UNIQUE (project_id, certificate_id)
);

-- A device may hold several credentials at once (key rotation). Rows from
-- a project's psk.json have source 'file' and follow that file; rows made
-- with the CLI have source 'cli' and are never touched by a file sync.
CREATE TABLE credentials (
	id         INTEGER PRIMARY KEY,
	device_id  INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	identity   TEXT NOT NULL UNIQUE,
	psk        BLOB NOT NULL,
	source     TEXT NOT NULL CHECK (source IN ('file', 'cli')),
	created_at INTEGER NOT NULL
);

CREATE INDEX credentials_device ON credentials(device_id);
