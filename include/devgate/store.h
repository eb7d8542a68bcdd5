/*
 * The store: SQLite in WAL mode, schema from sql/ compiled in and applied
 * by PRAGMA user_version, and a write queue that commits on its own thread
 * so that a worker loop never waits for an fsync.
 */
#ifndef DEVGATE_STORE_H
#define DEVGATE_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dg_store dg_store;

/* Flags for dg_store_open(). */
#define DG_STORE_WRITER 0x1 /* Start the write-queue thread. */

/*
 * Opens (creating if needed, with its parent directory) the database at
 * `path`, applies pending migrations and prepares statements. With
 * DG_STORE_WRITER, starts the thread that drains the write queue. Returns
 * 0 and sets *out, or a negative errno; `err` receives a reason.
 */
int dg_store_open(const char *path, int flags, dg_store **out, char *err, size_t errlen);

/*
 * Flushes the write queue (waiting for its last commit), stops the writer
 * thread and closes the database. NULL is a no-op.
 */
void dg_store_close(dg_store *st);

/* Returns the schema version the database is at. */
int dg_store_schema_version(dg_store *st);

/* One credential of a project's psk.json, as dg_store_sync_psk() takes it. */
typedef struct dg_psk_entry {
	const char *identity; /* "<psk-id>@<slug>" */
	const char *device;   /* Device name. */
	const uint8_t *key;
	size_t key_len;
} dg_psk_entry;

/*
 * Makes the store match one project's psk.json in a single transaction:
 * creates the project if missing, creates each named device if missing,
 * inserts or updates each credential as source 'file', and deletes the
 * project's 'file' credentials the list no longer holds. Credentials made
 * with the CLI are left alone. Returns 0 or a negative errno.
 */
int dg_store_sync_psk(dg_store *st, const char *slug, const dg_psk_entry *entries, size_t n);

/* Makes sure a project row exists for `slug`. Returns 0 or a negative errno. */
int dg_store_ensure_project(dg_store *st, const char *slug);

/* A credential joined with its device and project, for building the registry. */
typedef struct dg_psk_row {
	int64_t project_id;
	int64_t device_id;
	const char *slug;
	const char *device;
	const char *identity;
	const uint8_t *key;
	size_t key_len;
	int project_enabled;
	int device_blocked;
} dg_psk_row;

/*
 * Calls cb for every credential; the row is borrowed until cb returns. A
 * nonzero return from cb stops the walk and is returned. Returns 0 or a
 * negative errno.
 */
int dg_store_each_psk(dg_store *st, int (*cb)(void *arg, const dg_psk_row *row), void *arg);

/* A device as `devgate devices list` shows it. */
typedef struct dg_device_row {
	int64_t id;
	const char *project;
	const char *name;
	const char *certificate_id; /* NULL for PSK-only devices. */
	int blocked;
	int64_t created_at; /* ms since the epoch */
	int64_t last_seen;  /* ms since the epoch, or -1 when never seen */
} dg_device_row;

/*
 * Calls cb for every device, ordered by project slug and name. Same
 * contract as dg_store_each_psk().
 */
int dg_store_each_device(dg_store *st, int (*cb)(void *arg, const dg_device_row *row), void *arg);

/*
 * Queues an update of a device's last_seen to `ts_ms`. Never blocks on
 * the disk; the writer thread commits queued writes in batches. Returns 0,
 * or -ENOMEM, or -EPIPE when the store has no writer.
 */
int dg_store_touch_device(dg_store *st, int64_t device_id, int64_t ts_ms);

/*
 * Waits until every write queued before this call is committed. For
 * tests and shutdown. Returns 0 or the first error the writer met.
 */
int dg_store_flush(dg_store *st);

/* Milliseconds since the Unix epoch. */
int64_t dg_now_ms(void);

#endif
