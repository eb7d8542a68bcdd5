/*
 * The store: SQLite in WAL mode, schema from sql/ compiled in and applied
 * by PRAGMA user_version, and a write queue that commits on its own thread
 * so that a worker loop never waits for an fsync.
 */
#ifndef DEVGATE_STORE_H
#define DEVGATE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "devgate/trust.h"

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
	const char *source; /* "file" or "cli" */
	int64_t created_at;
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
	int64_t project_id;
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

/* The bound of the write queue until dg_store_set_max_queue() says otherwise. */
#define DG_STORE_DEFAULT_MAX_QUEUE 10000

/*
 * Bounds the write queue: once `max_queue` writes wait for their commit
 * (the batch being written included), dg_store_job() and
 * dg_store_provision_async() refuse with -EAGAIN until the writer catches
 * up (last_seen updates have their own, larger bound). Safe from any thread, at any time (a
 * reload).
 */
void dg_store_set_max_queue(dg_store *st, uint64_t max_queue);

/*
 * Queues an update of a device's last_seen to `ts_ms`. Never blocks on
 * the disk and never wakes the writer: the update goes with the writer's
 * next batch or its sweep (within about a second), so many sessions cost
 * one commit. The writer coalesces them, writing at most one per device
 * per minute (see dg_store_set_touch_interval()) and the last one at a
 * flush or a close. Returns 0, or -ENOMEM, or -EAGAIN when a million
 * updates already wait, or -EPIPE when the store has no writer.
 */
int dg_store_touch_device(dg_store *st, int64_t device_id, int64_t ts_ms);

/*
 * Waits until every write and read queued before this call has finished
 * (its callback returned) and every coalesced last_seen is written. For
 * tests and shutdown. Returns 0 or the first error the writer met.
 */
int dg_store_flush(dg_store *st);

/* Writes queued and not yet committed. Safe from any thread. */
uint64_t dg_store_queue_depth(dg_store *st);

/* As dg_store_flush(), giving up after timeout_ms with -ETIMEDOUT. */
int dg_store_flush_timeout(dg_store *st, unsigned timeout_ms);

/* A project's settings from its project.json (or the defaults). */
typedef struct dg_project_settings {
	const char *name; /* NULL: the slug. */
	int enabled;
	int auto_provision;
} dg_project_settings;

/* Creates or updates a project's row. Returns 0 or a negative errno. */
int dg_store_set_project(dg_store *st, const char *slug, const dg_project_settings *s);

/*
 * Disables every project whose slug is not among `present` (its directory
 * was removed). Returns 0 or a negative errno.
 */
int dg_store_disable_missing(dg_store *st, const char *const *present, size_t n);

/* One file of cas/ or crls/ as dg_store_sync_trust() takes it. */
typedef struct dg_trust_file {
	const char *source;    /* "cas/root.pem" */
	int ok;                /* 0: the file is bad now; keep what it gave before. */
	const dg_ca_cert *cas; /* For cas/ files. */
	size_t n_cas;
	const uint8_t *crl; /* For crls/ files: the blob of dg_trust_read_crls(). */
	size_t crl_len;
} dg_trust_file;

/*
 * Makes a project's CAs and CRLs match its files, in one transaction: the
 * rows of each good file are replaced, a bad file's rows are kept, and
 * rows whose file is gone are deleted. Returns 0 or a negative errno.
 */
int dg_store_sync_trust(dg_store *st, const char *slug, const dg_trust_file *ca_files,
                        size_t n_ca_files, const dg_trust_file *crl_files, size_t n_crl_files);

typedef struct dg_project_row {
	int64_t id;
	const char *slug;
	const char *name;
	int enabled;
	int auto_provision;
	int64_t devices; /* Number of devices. */
} dg_project_row;

/* Calls cb for every project, by slug. Same contract as dg_store_each_psk(). */
int dg_store_each_project(dg_store *st, int (*cb)(void *arg, const dg_project_row *row), void *arg);

typedef struct dg_ca_row {
	int64_t project_id;
	const char *fingerprint;
	const char *subject;
	const char *source;
	int64_t not_before;
	int64_t not_after;
	const uint8_t *der;
	size_t der_len;
} dg_ca_row;

/* Calls cb for every CA, by project and source. */
int dg_store_each_ca(dg_store *st, int (*cb)(void *arg, const dg_ca_row *row), void *arg);

typedef struct dg_crl_row {
	int64_t project_id;
	const char *source;
	const uint8_t *der; /* A blob as dg_trust_read_crls() makes. */
	size_t der_len;
} dg_crl_row;

/* Calls cb for every CRL file's blob. */
int dg_store_each_crl(dg_store *st, int (*cb)(void *arg, const dg_crl_row *row), void *arg);

/*
 * Blocks or unblocks the device `name` of project `slug`. Returns 0,
 * -ENOENT when there is no such device, or a negative errno.
 */
int dg_store_set_blocked(dg_store *st, const char *slug, const char *name, int blocked);

/*
 * Adds a CLI credential for device `name` of project `slug` (the device
 * is created when missing). Returns 0, -EEXIST when the identity is taken,
 * -ENOENT when the project does not exist, or a negative errno.
 */
int dg_store_psk_add(dg_store *st, const char *slug, const char *name, const char *identity,
                     const uint8_t *key, size_t key_len);

/*
 * Removes a CLI credential by identity. Returns 0, -ENOENT when there is
 * none, or -EPERM when the identity comes from a psk.json (edit the file).
 */
int dg_store_psk_remove(dg_store *st, const char *identity);

/*
 * Returns the registry serial: a number that changes whenever something
 * the registry snapshot is built from changes. -1 on error.
 */
int64_t dg_store_registry_serial(dg_store *st);

/* The outcome of provisioning a certificate device. */
typedef struct dg_provision_result {
	int rc; /* 0, or a negative errno. */
	int64_t device_id;
	char name[160];
	int created;  /* 1: a new device. */
	int attached; /* 1: an existing device got this certificate ID. */
	int blocked;  /* 1: the device found is blocked (the connection must be refused). */
} dg_provision_result;

/*
 * Finds or creates the device of a verified certificate, by Golioth's
 * rules, in one transaction: the project's device with this certificate ID;
 * else a device named like the certificate ID that has none, which gets it;
 * else a new device named like the certificate ID (with a short random
 * suffix when that name is taken by another certificate). Runs on the
 * caller's connection.
 */
void dg_store_provision(dg_store *st, int64_t project_id, const char *cert_id,
                        dg_provision_result *res);

/*
 * As dg_store_provision(), on the writer thread: `done` is called there
 * with the result (borrowed for the call). Returns 0, or -EPIPE without a
 * writer, -EAGAIN when the queue is full, or -ENOMEM; `done` is not called
 * then.
 */
int dg_store_provision_async(dg_store *st, int64_t project_id, const char *cert_id,
                             void (*done)(void *arg, const dg_provision_result *res), void *arg);

typedef struct sqlite3 sqlite3;
struct sqlite3_stmt;

/*
 * Queues a job for the writer thread. The writer applies what is queued in
 * group commits: one transaction (BEGIN IMMEDIATE ... COMMIT) holds a batch
 * of jobs, at most a few thousand or about 10 ms of work, and each job runs
 * in a SAVEPOINT of its own, so `run` (called there with the writer's
 * connection) that returns nonzero has what it did rolled back and fails
 * alone. `done` is called on the writer thread with run's result only after
 * the batch's COMMIT is on disk, so whatever it acknowledges survives a
 * crash; when the COMMIT fails, every job of the batch gets its error.
 * Returns 0, -EPIPE without a writer (or once the store closes), -EAGAIN
 * when the queue is full, or -ENOMEM (neither callback is called then).
 */
int dg_store_job(dg_store *st, int (*run)(sqlite3 *db, void *arg), void (*done)(void *arg, int rc),
                 void *arg);

/*
 * Queues a read for the reader thread, which has its own connection: `run`
 * is called there (no transaction is open: each statement reads the last
 * commit), then `done` with its result, on the reader thread too. Reads
 * never wait for the writer's fsync, and a worker loop that submits them
 * never waits for SQLite. The queue has the bound of the write queue.
 * Returns 0, -EPIPE without a reader (a store opened without
 * DG_STORE_WRITER, or closing), -EAGAIN when full, or -ENOMEM (neither
 * callback is called then).
 */
int dg_store_read(dg_store *st, int (*run)(sqlite3 *db, void *arg), void (*done)(void *arg, int rc),
                  void *arg);

/*
 * The statement cache of a connection: returns a prepared statement for
 * `sql` on `db` (the same text gets the same statement again, prepared once
 * per connection), or NULL with the error in sqlite3_errmsg(db). The
 * statement belongs to the connection (closing the store finalizes it):
 * never finalize it; hand it back with dg_store_stmt_done() once stepped.
 * For the thread that owns `db`, as SQLite connections are.
 */
struct sqlite3_stmt *dg_store_stmt(sqlite3 *db, const char *sql);

/* Resets a cached statement and clears its bindings. NULL is a no-op. */
void dg_store_stmt_done(struct sqlite3_stmt *s);

/*
 * Steps a cached statement (dg_store_stmt()) to its end and hands it back.
 * Returns 0 (its last step gave SQLITE_DONE or SQLITE_ROW) or a negative
 * errno.
 */
int dg_store_stmt_run(struct sqlite3_stmt *s);

/*
 * last_seen is coalesced: the writer writes a device's value at once when it
 * has not written one for `interval_ms` (default 60000), else keeps the
 * largest value and writes it when the interval has passed, or at a flush
 * or a close, whichever comes first. For tests.
 */
void dg_store_set_touch_interval(dg_store *st, unsigned interval_ms);

/* As dg_store_job(), run now on the caller's connection (for the CLI). Returns run's result. */
int dg_store_run(dg_store *st, int (*run)(sqlite3 *db, void *arg), void *arg);

/* The caller's connection, for reads on the caller's thread. */
sqlite3 *dg_store_reader(dg_store *st);

/* Maps an SQLite result code to 0 or a negative errno. */
int dg_store_errno(int sqlite_rc);

/* Milliseconds since the Unix epoch. */
int64_t dg_now_ms(void);

#endif
