/*
 * Rendering a device's resource (its settings, its OTA manifest) into the
 * representation a GET or a notification carries. A render runs on the
 * store's reader thread, with that thread's connection; the message layer
 * cuts what it makes into Block2 blocks.
 */
#ifndef DEVGATE_RENDER_H
#define DEVGATE_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/*
 * What an observation (RFC 7641) watches: a LightDB State path, the
 * device's settings (".c"), its RPC calls (".rpc") or its OTA manifest
 * (".u/desired"). The numbers are also the `kind` of the store's change
 * feed (sql/004_feed_rpc.sql).
 */
enum dg_obs_kind {
	DG_OBS_STATE = 0,
	DG_OBS_SETTINGS = 1,
	DG_OBS_RPC = 2,
	DG_OBS_OTA = 3,
	DG_OBS_KINDS
};

struct dg_render;

/* Makes r->body and r->len from the store. Returns 0 or a negative errno. */
typedef int (*dg_render_fn)(sqlite3 *db, struct dg_render *r);

typedef struct dg_render {
	int kind;           /* In: enum dg_obs_kind. */
	int64_t project_id; /* In. */
	int64_t device_id;  /* In. */
	int format;         /* In: DG_COAP_FMT_JSON or DG_COAP_FMT_CBOR, as the device asked. */
	dg_render_fn fn;    /* In: the kind's renderer. */
	uint8_t *body;      /* Out: the whole representation, malloc'ed. */
	size_t len;         /* Out. */
} dg_render;

/*
 * A `run` function for dg_store_read(): calls r->fn with `arg` as the
 * dg_render. Returns what it returns; -ENOSYS when the kind has none.
 */
int dg_render_run(sqlite3 *db, void *arg);

/* Frees a dg_render made with malloc and its body. */
void dg_render_free(void *arg);

#endif
