-- devgate schema, version 4: a change feed for every kind of device
-- resource, and RPC calls.

-- state_changes becomes the change feed: `kind` is what changed (0 state,
-- 1 settings, 2 an RPC call, 3 the OTA manifest; enum dg_obs_kind),
-- `project_id` the project, `device_id` the device (0: every device of the
-- project), `ref` what the row is about (an RPC call's rpc_calls.id).
ALTER TABLE state_changes ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE state_changes ADD COLUMN project_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE state_changes ADD COLUMN ref INTEGER NOT NULL DEFAULT 0;

-- One remote procedure call to a device. `call_id` is the "id" the device
-- sees and answers with. status: 'pending' (made, not yet taken by the
-- daemon), 'queued' (in the device's session queue), 'done' (the device
-- answered: status_code, detail), 'offline', 'not_observing', 'busy' (the
-- queue was full), 'timeout'. A pending or queued call past its deadline
-- is timed out whoever notices it first.
CREATE TABLE rpc_calls (
	id          INTEGER PRIMARY KEY,
	device_id   INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
	call_id     TEXT NOT NULL UNIQUE,
	method      TEXT NOT NULL,
	params      TEXT NOT NULL, -- JSON array
	status      TEXT NOT NULL CHECK (status IN ('pending', 'queued', 'done', 'offline',
	                                            'not_observing', 'busy', 'timeout')),
	status_code INTEGER,
	detail      TEXT, -- JSON
	created_at  INTEGER NOT NULL,
	deadline    INTEGER NOT NULL,
	done_at     INTEGER
);
CREATE INDEX rpc_calls_device ON rpc_calls(device_id, created_at);
