/*
 * The server: N worker loops (listener sockets with SO_REUSEPORT, peer
 * tables, timer wheels) and what they share: the DTLS context, the
 * registry snapshot, the admission limits and the device table. It
 * broadcasts what the control loop decides (a new snapshot, a new
 * configuration, a state change, stop) to the workers as messages.
 */
#ifndef DEVGATE_SERVER_H
#define DEVGATE_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "devgate/config.h"
#include "devgate/registry.h"
#include "devgate/store.h"

typedef struct dg_server dg_server;
struct dg_metrics;

/*
 * Creates a server whose control side runs on `loop`: makes the DTLS
 * context from the PEM files and `cfg->workers` workers (0: one per
 * online CPU), each binding every listen address of `cfg`. Every worker
 * runs on a thread and loop of its own from dg_server_start(), so that
 * nothing the control side does (reload, registry builds) runs on a
 * worker loop; with DG_SERVER_ONE_LOOP in `flags` and one worker, that
 * worker runs on `loop` itself, without a thread (for fuzz targets that
 * drive it with dg_server_datagram()). `cfg` is borrowed until dg_server_set_config
 * replaces it; `store` is borrowed for the server's life; `reg` is taken
 * over (one reference). Returns 0 and sets *out, or a negative errno with
 * a reason in err (`reg` is then still the caller's).
 */
int dg_server_new(uv_loop_t *loop, unsigned flags, const dg_config *cfg, dg_store *store,
                  dg_registry *reg, const char *cert_pem, const char *key_pem, dg_server **out,
                  char *err, size_t errlen);

/* dg_server_new() flags. */
#define DG_SERVER_ONE_LOOP 1u /* One worker, on the caller's loop. */

/* Counts into `m` (borrowed; may be NULL). Call before dg_server_start(). */
void dg_server_set_metrics(dg_server *srv, struct dg_metrics *m);

/* Starts every worker receiving. Returns 0 or a negative errno. */
int dg_server_start(dg_server *srv);

/* The number of workers. */
size_t dg_server_workers(const dg_server *srv);

/* The configuration in force (borrowed). */
const dg_config *dg_server_config(const dg_server *srv);

/*
 * A new configuration (taken over): limits and log settings follow at
 * once on every worker. Earlier ones are kept until dg_server_free, since
 * a worker may still read one.
 */
void dg_server_set_config(dg_server *srv, dg_config *cfg);

/* The registry snapshot in force (borrowed). */
dg_registry *dg_server_registry(const dg_server *srv);

/*
 * A new snapshot (taken over, one reference), sent to every worker; each
 * closes its sessions whose credentials the snapshot no longer holds.
 */
void dg_server_set_registry(dg_server *srv, dg_registry *reg);

/*
 * The state of `device_id` at `path` changed to `doc` (the whole document
 * after the change, JSON text; copied): the worker that holds its session
 * notifies. Safe from any thread.
 */
void dg_server_state_changed(dg_server *srv, int64_t device_id, const char *path, const char *doc);

/*
 * Resource `kind` (enum dg_obs_kind: settings, the OTA manifest) of
 * `device_id` changed, or of every device of `project_id` when device_id
 * is 0: the sessions that observe it are notified.
 */
void dg_server_resource_changed(dg_server *srv, int kind, int64_t project_id, int64_t device_id);

/*
 * Hands an RPC call to the worker that holds `device_id`'s session (see
 * dg_worker_rpc()). Returns 0, -ENOENT when the device has no session, or
 * -ENOMEM.
 */
int dg_server_rpc(dg_server *srv, int64_t device_id, int64_t row_id, const char *id,
                  const char *call, int64_t deadline_ms);

/*
 * Stops every worker: each answers what the store finished, closes its
 * sessions with close_notify and its handles. Waits for workers on
 * threads of their own; one on the main loop finishes when that loop
 * runs. New datagrams are dropped from now on.
 */
void dg_server_stop(dg_server *srv);

/*
 * Handles one datagram that arrived on listener `listener_index` (the
 * index of its address in the configuration) from `from`, exactly as if
 * worker 0's socket had received it. `data` is borrowed for the call.
 * For fuzz targets that drive a real server without a network: a server
 * with one worker (workers: 1), whose loop is the caller's.
 */
void dg_server_datagram(dg_server *srv, size_t listener_index, const uint8_t *data, size_t len,
                        const struct sockaddr *from);

/* Frees a server whose loops have finished. NULL is a no-op. */
void dg_server_free(dg_server *srv);

#endif
