/*
 * The control loop (the main thread): signals (SIGTERM, SIGINT, SIGHUP),
 * reload on changes under projects_dir (inotify, debounced) or of the
 * store's registry serial (the CLI), the poll that tells observers of
 * state the CLI wrote, and systemd's watchdog. Registry builds run here,
 * off every worker loop (when there is more than one), and their result
 * is handed to the server, which broadcasts it.
 */
#ifndef DEVGATE_CONTROL_H
#define DEVGATE_CONTROL_H

#include <uv.h>

#include "devgate/server.h"
#include "devgate/store.h"

typedef struct dg_control dg_control;
struct dg_metrics;

/*
 * Creates the control side on `loop` for `srv` and `store` (both borrowed
 * for its life). Returns 0 and sets *out, or -ENOMEM.
 */
int dg_control_new(uv_loop_t *loop, dg_server *srv, dg_store *store, dg_control **out);

/* Counts reloads into `m` (borrowed; may be NULL). */
void dg_control_set_metrics(dg_control *c, struct dg_metrics *m);

/*
 * Installs the signal handlers, the watches and the polls, and tells
 * systemd the daemon is ready. The caller then runs the loop; it returns
 * once a SIGTERM or SIGINT has stopped the server and closed every handle.
 */
int dg_control_start(dg_control *c);

/* Frees the control side after its loop has finished. NULL is a no-op. */
void dg_control_free(dg_control *c);

#endif
