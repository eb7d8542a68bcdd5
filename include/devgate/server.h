/*
 * The server: one libuv loop, its UDP sockets, the peer and device
 * tables, the timer wheel, signals, and the stateless cookie exchange in
 * front of every session.
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

/*
 * Creates a server on `loop`: makes the DTLS context from the PEM files,
 * binds every listen address of `cfg` and installs its signal handlers.
 * `cfg` and `store` are borrowed for the server's life; `reg` is taken
 * over (one reference). Returns 0 and sets *out, or a negative errno with
 * a reason in err.
 */
int dg_server_new(uv_loop_t *loop, const dg_config *cfg, dg_store *store, dg_registry *reg,
                  const char *cert_pem, const char *key_pem, dg_server **out, char *err,
                  size_t errlen);

/*
 * Starts receiving. The caller then runs the loop; it returns once a
 * SIGTERM or SIGINT has closed every session and handle.
 */
int dg_server_start(dg_server *srv);

/* Counts into `m` (borrowed; may be NULL). Call before dg_server_start(). */
void dg_server_set_metrics(dg_server *srv, struct dg_metrics *m);

/*
 * Handles one datagram that arrived on listener `listener_index` (the
 * index of its address in the configuration) from `from`, exactly as if
 * the socket had received it. `data` is borrowed for the call. Used by the
 * socket's receive callback, and by fuzz targets that drive a real server
 * without a network.
 */
void dg_server_datagram(dg_server *srv, size_t listener_index, const uint8_t *data, size_t len,
                        const struct sockaddr *from);

/* Frees a server whose loop has finished. NULL is a no-op. */
void dg_server_free(dg_server *srv);

#endif
