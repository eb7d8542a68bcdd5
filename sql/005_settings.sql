-- devgate schema, version 5: the Settings service.
--
-- A project's settings come from projects_dir/<slug>/settings.json
-- (source 'file'; `devgate settings set` without --device edits that file
-- and these rows together); a device's overrides are set with the CLI.
-- `value` has no declared type, so SQLite keeps what is bound: INTEGER for
-- int and bool (0 or 1), REAL for float, TEXT for string; `type` says
-- which, and a float stays a float even when it is integral.

CREATE TABLE project_settings (
	project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	type       TEXT NOT NULL CHECK (type IN ('int', 'float', 'bool', 'string')),
	value      NOT NULL,
	source     TEXT NOT NULL CHECK (source IN ('file', 'cli')),
	PRIMARY KEY (project_id, name)
);

CREATE TABLE device_settings (
	device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	name      TEXT NOT NULL,
	type      TEXT NOT NULL CHECK (type IN ('int', 'float', 'bool', 'string')),
	value     NOT NULL,
	PRIMARY KEY (device_id, name)
);

-- The version of a project's settings (device_id 0) and of each device's
-- overrides: ms since the epoch of the latest change, and always above
-- every version of the project so far (previous + 1 when two changes land
-- in the same ms), so a device's effective version, the larger of its
-- project's and its own, grows with every change of either.
CREATE TABLE settings_versions (
	project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	device_id  INTEGER NOT NULL,
	version    INTEGER NOT NULL,
	PRIMARY KEY (project_id, device_id)
);

-- What a device last reported on POST .c/status.
CREATE TABLE settings_status (
	device_id   INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
	version     INTEGER NOT NULL,
	errors      TEXT NOT NULL, -- JSON array of {"setting_key", "error_code", "details"?}
	reported_at INTEGER NOT NULL
);
