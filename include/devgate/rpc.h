/*
 * Remote procedure calls in the store: the CLI makes a call (a row of
 * rpc_calls and a change feed row, in one transaction), the daemon hands it
 * to the device's session and records what became of it, the device's
 * ".rpc/status" answers it.
 */
#ifndef DEVGATE_RPC_H
#define DEVGATE_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "devgate/store.h"

/* The longest method name and call id taken. */
#define DG_RPC_METHOD_MAX 128
#define DG_RPC_ID_LEN     16

/*
 * The longest params (JSON text) the CLI takes, and the longest encoding
 * of a call the daemon sends (in a notification and in its Block2 blocks):
 * 64 KiB of JSON text, re-encoded in CBOR or JSON, stays well below it.
 */
#define DG_RPC_PARAMS_MAX 65536
#define DG_RPC_CALL_MAX   (1u << 20)

/*
 * Reads call `row` for the daemon: its id, its JSON text {"id", "method",
 * "params"} (both malloc'ed) and its deadline (ms since the epoch).
 * Returns 0, -ENOENT when the call is gone or no longer pending, or a
 * negative errno.
 */
int dg_rpc_call_text(sqlite3 *db, int64_t row, char **id, char **json, int64_t *deadline_ms);

/* A device's calls still waiting, for dg_rpc_waiting_read(). */
typedef struct dg_rpc_waiting {
	int64_t device_id; /* In. */
	size_t n;          /* Out: at most DG_RPC_WAITING_MAX. */
	struct {
		int64_t row_id;
		int64_t deadline_ms; /* Wall clock. */
		char *id;            /* Owned. */
		char *call;          /* Its JSON text; owned. */
	} calls[5];
} dg_rpc_waiting;

#define DG_RPC_WAITING_MAX 5

/*
 * A `run` function for dg_store_read() (arg: dg_rpc_waiting): the oldest
 * calls of the device that are pending or queued and not past their
 * deadline (a device that reconnects gets those its old session held).
 * Returns 0 or a negative errno.
 */
int dg_rpc_waiting_read(sqlite3 *db, void *arg);

/* Frees what a dg_rpc_waiting holds (not the struct). */
void dg_rpc_waiting_clear(dg_rpc_waiting *w);

/* What became of a call, for dg_rpc_mark_apply(). */
typedef struct dg_rpc_mark {
	int64_t row_id;
	const char *status; /* "queued", "offline", "not_observing", "busy", "timeout"; static. */
} dg_rpc_mark;

/*
 * A `run` function (arg: dg_rpc_mark): sets the status of a call that is
 * still pending or queued. Returns 0 or a negative errno.
 */
int dg_rpc_mark_apply(sqlite3 *db, void *arg);

/* A device's answer to a call, for dg_rpc_result_apply(). */
typedef struct dg_rpc_result {
	int64_t device_id;
	char *call_id;       /* Owned. */
	int64_t status_code; /* The device's statusCode. */
	char *detail;        /* JSON text, or NULL; owned. */
} dg_rpc_result;

/*
 * A `run` function (arg: dg_rpc_result): records the answer to the call of
 * that device with that id, unless it was answered or timed out already.
 * Returns 0 (an unknown call changes nothing) or a negative errno.
 */
int dg_rpc_result_apply(sqlite3 *db, void *arg);

/* Frees a dg_rpc_result made with malloc. */
void dg_rpc_result_free(void *arg);

/* A new call, for dg_rpc_create(). */
typedef struct dg_rpc_new {
	int64_t project_id; /* 0: the device's. */
	int64_t device_id;
	const char *method;
	const char *params; /* JSON array text. */
	int64_t timeout_ms;
	int64_t row_id;                  /* Out. */
	char call_id[DG_RPC_ID_LEN + 1]; /* Out: random hex. */
} dg_rpc_new;

/*
 * A `run` function (arg: dg_rpc_new): makes the call, pending, with its
 * change feed row for the daemon. Returns 0 or a negative errno.
 */
int dg_rpc_create(sqlite3 *db, void *arg);

/* One call as stored. */
typedef struct dg_rpc_row {
	int64_t id;
	char device[160];
	char call_id[DG_RPC_ID_LEN + 1];
	char method[DG_RPC_METHOD_MAX + 1];
	char status[16];     /* A pending or queued call past its deadline reads "timeout". */
	int64_t status_code; /* -1 until answered. */
	int64_t created_at, deadline, done_at;
	char *params; /* Owned. */
	char *detail; /* Owned; NULL when none. */
} dg_rpc_row;

/* Frees what a row owns. */
void dg_rpc_row_clear(dg_rpc_row *r);

/* Reads call `id` into *out. Returns 0, -ENOENT or a negative errno. */
int dg_rpc_get(dg_store *st, int64_t id, dg_rpc_row *out);

/*
 * Calls cb for the newest `limit` calls of the project (by slug) (of one device when
 * `device` is not NULL), oldest first; a non-zero return from cb stops.
 * Returns 0 or a negative errno.
 */
int dg_rpc_list(dg_store *st, const char *project, const char *device, int64_t limit,
                int (*cb)(void *arg, const dg_rpc_row *r), void *arg);

#endif
