/*
 * A worker: one thread with its own uv loop (or the main loop, for a
 * single worker), its own socket per listen address, its peer table, its
 * timer wheel, its completions from the store's writer and its inbox of
 * messages from other threads. A session lives on one worker and is
 * touched by no other thread: what another thread wants done to it
 * (close it, notify its observers, check it against a new registry)
 * arrives as a message and is done by the worker itself.
 */
#ifndef DEVGATE_WORKER_H
#define DEVGATE_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "devgate/admit.h"
#include "devgate/config.h"
#include "devgate/devtab.h"
#include "devgate/registry.h"
#include "devgate/session.h"
#include "devgate/store.h"

typedef struct dg_worker dg_worker;

/* What the workers share; owned by the server, borrowed by each worker. */
typedef struct dg_worker_shared {
	dg_store *store;
	WOLFSSL_CTX *ctx;           /* Shared: wolfSSL_new() on it from any thread. */
	struct dg_metrics *metrics; /* Or NULL. */
	dg_admit *admit;
	dg_devtab *devices;
	dg_worker **workers; /* All of them, by index. */
	size_t n_workers;
	_Atomic uint64_t next_session_id; /* The last session ID given, on any worker. */
	/*
	 * Per worker, published on its every tick: when its oldest stalled
	 * handshake was made (the loop's clock), 0 for none. Another worker
	 * that finds every handshake slot taken takes it (swaps in 0) to ask
	 * that worker to let it give way.
	 */
	_Atomic uint64_t stalled_ms[DG_CONFIG_MAX_WORKERS];
	/* Random for the server's life: refused PSK identities get keys made from it. */
	uint8_t psk_secret[DG_SESSION_PSK_SECRET_LEN];
} dg_worker_shared;

/*
 * Creates worker `index`: binds a socket for every listen address of
 * `cfg` (addrs[i], the address the first worker bound, so that a port 0
 * is the same port for all), on its own loop when `loop` is NULL (run by
 * dg_worker_start() on a thread of its own) or on `loop`. `cfg` is
 * borrowed until a newer one is given; `reg` gets a reference of the
 * worker's. Returns 0 and sets *out, or a negative errno with a reason in
 * err.
 */
int dg_worker_new(dg_worker_shared *sh, size_t index, uv_loop_t *loop, const dg_config *cfg,
                  const struct sockaddr_storage *addrs, dg_registry *reg, dg_worker **out,
                  char *err, size_t errlen);

/* Where listener `i` is bound (valid after dg_worker_new). */
const struct sockaddr_storage *dg_worker_bound(const dg_worker *w, size_t i);

/* Starts receiving: on its own thread, or on the shared loop. Returns 0 or a negative errno. */
int dg_worker_start(dg_worker *w);

/* The worker's index: what a DTLS Connection ID will carry to route a record. */
size_t dg_worker_index(const dg_worker *w);

/*
 * Handles one datagram that arrived on listener `listener_index`, as if
 * its socket had received it. The worker's own thread only (or the main
 * loop's, for a worker on it). `data` is borrowed for the call.
 */
void dg_worker_datagram(dg_worker *w, size_t listener_index, const uint8_t *data, size_t len,
                        const struct sockaddr *from);

/*
 * Messages, from any thread; each is handled on the worker's loop, in the
 * order sent. They return 0 or -ENOMEM (the message is then lost).
 */

/* Hands a datagram to worker `w` (copied): a record that reached the wrong worker. */
int dg_worker_hand_datagram(dg_worker *w, size_t listener_index, const uint8_t *data, size_t len,
                            const struct sockaddr *from);

/* A new registry snapshot (a reference is taken): swap it in and revalidate every session. */
int dg_worker_set_registry(dg_worker *w, dg_registry *reg);

/* A new configuration, borrowed until the next one (the server keeps every one it made). */
int dg_worker_set_config(dg_worker *w, const dg_config *cfg);

/* Close session `session_id` if it is still there, with close_notify. `reason` is copied. */
int dg_worker_close_session(dg_worker *w, uint64_t session_id, const char *reason);

/*
 * The state of `device_id` at `path` changed to `doc` (JSON text of the
 * whole document after the change, or NULL; copied): its session here
 * notifies its observers.
 */
int dg_worker_state_changed(dg_worker *w, int64_t device_id, const char *path, const char *doc);

/*
 * Resource `kind` (enum dg_obs_kind) of `device_id` changed, or of every
 * device of `project_id` when device_id is 0: the sessions here that
 * observe it are notified.
 */
int dg_worker_resource_changed(dg_worker *w, int kind, int64_t project_id, int64_t device_id);

/*
 * An RPC call (`id` and its JSON text `call`, copied; `row_id` its row,
 * `deadline_ms` on the wall clock) for `device_id`: its session here
 * queues it, and the store is told what became of it (queued, offline,
 * not_observing, busy, timeout).
 */
int dg_worker_rpc(dg_worker *w, int64_t device_id, int64_t row_id, const char *id, const char *call,
                  int64_t deadline_ms);

/*
 * Stop: answer what the store finished, wait for what it has queued
 * (limits.shutdown_timeout_s), close every session with close_notify and
 * every handle. The worker's loop then ends.
 */
int dg_worker_stop(dg_worker *w);

/*
 * The one way to tell a device's session that its state changed, from any
 * thread: finds the worker that holds it (the device table) and sends it
 * a message; does nothing when it has no session.
 */
void dg_worker_route_state(dg_worker_shared *sh, int64_t device_id, const char *path,
                           const char *doc);

/* Waits for a worker on its own thread to end; a no-op for one on the main loop. */
void dg_worker_join(dg_worker *w);

/* Frees a worker whose loop has ended (after dg_worker_join). NULL is a no-op. */
void dg_worker_free(dg_worker *w);

#endif
