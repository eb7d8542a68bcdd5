-- devgate schema, version 2: per-project certificate trust.
--
-- CAs and CRLs come from the files of projects_dir/<slug>/cas/ and crls/.
-- `source` is the file a row came from (relative to the project
-- directory); a file that turns bad keeps its rows until it is fixed or
-- removed.

CREATE TABLE cas (
	id          INTEGER PRIMARY KEY,
	project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	fingerprint TEXT NOT NULL, -- SHA-256 of the DER, lowercase hex
	subject     TEXT NOT NULL,
	not_before  INTEGER NOT NULL, -- ms since the epoch
	not_after   INTEGER NOT NULL,
	source      TEXT NOT NULL,
	der         BLOB NOT NULL,
	UNIQUE (project_id, fingerprint)
);

CREATE TABLE crls (
	id         INTEGER PRIMARY KEY,
	project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
	source     TEXT NOT NULL,
	der        BLOB NOT NULL
);

CREATE INDEX cas_project ON cas(project_id);
CREATE INDEX crls_project ON crls(project_id);

-- Devices are looked up by certificate ID on every first connection.
CREATE INDEX devices_certificate ON devices(project_id, certificate_id);

-- Bumped by every change the daemon's registry snapshot depends on (file
-- syncs, CLI edits); the daemon polls it to rebuild its snapshot.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('registry_serial', 0);
