/*
 * Device data in the store: LightDB State documents, Stream records and
 * logs. The write functions have the shape dg_store_job() and
 * dg_store_run() take, so the daemon commits them on the writer thread
 * and the CLI on its own connection; reads use the caller's connection.
 */
#ifndef DEVGATE_DATA_H
#define DEVGATE_DATA_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "devgate/store.h"

/* A change to one device's state document. */
typedef struct dg_state_change {
	int64_t device_id;
	int del;      /* 1: delete the path; 0: set it to `value`. */
	char *path;   /* "sensor/temp"; "" is the root. Owned. */
	cJSON *value; /* For a set; owned (consumed by the apply). */
	int record;   /* 1: append to state_changes, for a daemon to notice (the CLI). */
	int changed;  /* Out: 1 when the document changed. */
	/*
	 * When not 0: the largest document (its stored JSON text, in bytes)
	 * a set may leave; a set that would make it larger than that and than
	 * it was fails with -EFBIG and changes nothing.
	 */
	size_t max_bytes;
	/*
	 * Out, once applied: the whole document as stored after the change
	 * (JSON text, "" when there is none), owned; the notifications of the
	 * change are made from it, with no read.
	 */
	char *doc_after;
} dg_state_change;

/*
 * Applies a state change in the current transaction of `db` (a
 * dg_store_job/dg_store_run `run` function: `arg` is a dg_state_change).
 * Returns 0 or a negative errno.
 */
int dg_data_state_apply(sqlite3 *db, void *arg);

/* Frees a change's path, value and doc_after (not the struct). */
void dg_data_state_change_clear(dg_state_change *c);

/*
 * Reads a device's state document. *doc is NULL when the device has none.
 * Returns 0 or a negative errno.
 */
int dg_data_state_get(dg_store *st, int64_t device_id, cJSON **doc);

/* Stream records of one POST, appended in one transaction. */
typedef struct dg_stream_batch {
	int64_t device_id;
	char *path; /* Owned. */
	size_t n;
	int64_t *ts;   /* Owned, n entries. */
	char **values; /* Owned, n JSON texts. */
} dg_stream_batch;

/* A `run` function: appends a dg_stream_batch. */
int dg_data_stream_append(sqlite3 *db, void *arg);

void dg_data_stream_batch_free(dg_stream_batch *b);

/* One log entry of a device. */
typedef struct dg_log_entry {
	int64_t device_id;
	int64_t ts;
	char *level; /* Owned. */
	char *module;
	char *msg;
	char *extra; /* JSON of other members, or NULL. */
} dg_log_entry;

/* A `run` function: appends a dg_log_entry. */
int dg_data_logs_append(sqlite3 *db, void *arg);

void dg_data_log_entry_free(dg_log_entry *e);

/*
 * Calls cb for the newest `limit` stream records of a device (path NULL:
 * all paths; since_ms < 0: no lower bound), oldest first.
 */
int dg_data_stream_each(dg_store *st, int64_t device_id, const char *path, int64_t since_ms,
                        int64_t limit,
                        int (*cb)(void *arg, int64_t ts, const char *path, const char *value),
                        void *arg);

/* As dg_data_stream_each() for logs (level NULL: all levels). */
int dg_data_logs_each(dg_store *st, int64_t device_id, const char *level, int64_t since_ms,
                      int64_t limit,
                      int (*cb)(void *arg, int64_t ts, const char *level, const char *module,
                                const char *msg),
                      void *arg);

/* The highest state_changes id, or 0; -1 on error. */
int64_t dg_data_changes_max(dg_store *st);

/* A read of one device's state document, for dg_store_read(). */
typedef struct dg_state_read {
	int64_t device_id;
	char *doc; /* Out: the stored JSON text, "" when there is none; owned. */
} dg_state_read;

/*
 * A `run` function for dg_store_read() (any connection): reads the state
 * document of r->device_id into r->doc. Returns 0 or a negative errno.
 */
int dg_data_state_read(sqlite3 *db, void *arg);

/*
 * One row of the change feed (the state_changes table). For a state
 * change: the path and the device's document as it is now. For an RPC
 * call: `path` is the call's id, `doc` its JSON text, `ref` its row and
 * `deadline_ms` its deadline (wall clock). For settings and the OTA
 * manifest: the project and the device (0: all of the project's).
 */
typedef struct dg_change_item {
	int kind; /* enum dg_obs_kind. */
	int64_t project_id;
	int64_t device_id;
	int64_t ref;
	int64_t deadline_ms;
	char *path; /* Owned. */
	char *doc;  /* JSON text, "" when none; owned. */
} dg_change_item;

/*
 * Appends a row to the change feed in the current transaction of `db`, for
 * the daemon to notify what observes it: `kind` (enum dg_obs_kind) of
 * `device_id` (0: every device of `project_id`), `ref` what it is about
 * (an RPC call's row). Old rows are pruned. Returns 0 or a negative errno.
 */
int dg_data_change_record(sqlite3 *db, int kind, int64_t project_id, int64_t device_id,
                          int64_t ref);

/* The changes after `after_id`, for dg_data_changes_read(). */
typedef struct dg_changes {
	int64_t after_id; /* In. */
	int64_t last_id;  /* Out: the last id read (after_id when none). */
	dg_change_item *items;
	size_t n;
	void *owner; /* The submitter's, for the completion; not touched here. */
} dg_changes;

/*
 * A `run` function for dg_store_read(): reads up to 1000 changes after
 * c->after_id (those a CLI recorded) and, for each, its device's document
 * as it is now. Returns 0 or a negative errno.
 */
int dg_data_changes_read(sqlite3 *db, void *arg);

/* Frees the items of `c` (not the struct). */
void dg_data_changes_clear(dg_changes *c);

/* Finds a device's id by project slug and name. Returns 0, -ENOENT, or a negative errno. */
int dg_data_device_id(dg_store *st, const char *slug, const char *name, int64_t *id);

#endif
