-- devgate schema: OTA updates (Golioth's ".u" service). Artifacts are
-- named per project by package and version; their bytes are stored once
-- per sha256 in ota_blobs, whatever the number of artifacts that share
-- them. A release is a set of artifacts for all the project's devices or
-- for a list of them; a device's desired manifest is the newest release
-- that targets it and is not rolled back.

CREATE TABLE ota_blobs (
	id     INTEGER PRIMARY KEY,
	sha256 TEXT NOT NULL UNIQUE, -- 64 lowercase hex digits
	size   INTEGER NOT NULL,
	data   BLOB NOT NULL         -- written and read in chunks (sqlite3_blob_*)
);

CREATE TABLE ota_artifacts (
	id         INTEGER PRIMARY KEY,
	project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	package    TEXT NOT NULL,
	version    TEXT NOT NULL,
	blob_id    INTEGER NOT NULL REFERENCES ota_blobs(id),
	sha256     TEXT NOT NULL,
	size       INTEGER NOT NULL,
	bootloader TEXT NOT NULL, -- "mcuboot" or ""
	created_at INTEGER NOT NULL,
	UNIQUE (project_id, package, version)
);

CREATE TABLE ota_releases (
	id          INTEGER PRIMARY KEY,
	project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	all_devices INTEGER NOT NULL, -- 1: every device; 0: those of ota_release_devices
	rolled_back INTEGER NOT NULL DEFAULT 0,
	created_at  INTEGER NOT NULL
);
CREATE INDEX ota_releases_project ON ota_releases(project_id, id);

-- The artifacts of a release, in the order of the manifest's components.
CREATE TABLE ota_release_artifacts (
	release_id  INTEGER NOT NULL REFERENCES ota_releases(id) ON DELETE CASCADE,
	position    INTEGER NOT NULL,
	artifact_id INTEGER NOT NULL REFERENCES ota_artifacts(id),
	PRIMARY KEY (release_id, position)
);

CREATE TABLE ota_release_devices (
	release_id INTEGER NOT NULL REFERENCES ota_releases(id) ON DELETE CASCADE,
	device_id  INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	PRIMARY KEY (release_id, device_id)
);
CREATE INDEX ota_release_devices_device ON ota_release_devices(device_id, release_id);

-- A device's last state report for each package (POST ".u/c/<package>"):
-- state is golioth_ota_state (0..3), reason golioth_ota_reason (0..11).
CREATE TABLE ota_reports (
	device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	package   TEXT NOT NULL,
	state     INTEGER NOT NULL,
	reason    INTEGER NOT NULL,
	version   TEXT,
	target    TEXT,
	at        INTEGER NOT NULL,
	PRIMARY KEY (device_id, package)
);
