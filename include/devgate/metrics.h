/*
 * Metrics: counters and gauges the loop updates with relaxed atomic
 * operations (no lock on the hot path), and a Prometheus text endpoint
 * served by libmicrohttpd on its own thread, off the loop.
 */
#ifndef DEVGATE_METRICS_H
#define DEVGATE_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct dg_metrics dg_metrics;

enum dg_metrics_auth { DG_AUTH_PSK = 0, DG_AUTH_CERT = 1, DG_AUTH_NONE = 2 };
enum dg_metrics_dir { DG_DIR_IN = 0, DG_DIR_OUT = 1 };
/* CoAP services, for devgate_coap_requests_total{service}. */
enum dg_metrics_service {
	DG_SVC_CORE = 0, /* /.well-known/core */
	DG_SVC_KEEPALIVE,
	DG_SVC_STATE,
	DG_SVC_STREAM,
	DG_SVC_LOGS,
	DG_SVC_OTHER,
	DG_SVC_SETTINGS, /* ".c" */
	DG_SVC_RPC,      /* ".rpc" */
	DG_SVC_OTA,      /* ".u" */
	DG_SVC_COUNT,
};

/* Creates an empty set of metrics. Returns 0 or -ENOMEM. */
int dg_metrics_new(dg_metrics **out);

/* Stops the HTTP endpoint if it runs and frees everything. NULL is a no-op. */
void dg_metrics_free(dg_metrics *m);

/* devgate_sessions{auth}: +1 when a session is established, -1 when it closes. */
void dg_metrics_sessions_add(dg_metrics *m, int auth, int delta);

/* The most workers devgate_worker_sessions has a gauge for. */
#define DG_METRICS_MAX_WORKERS 64

/* devgate_worker_sessions{worker} is rendered for workers 0..n-1 (none by default). */
void dg_metrics_set_workers(dg_metrics *m, int n);

/* devgate_worker_sessions{worker}: +1 when a session is established on it, -1 when it closes. */
void dg_metrics_worker_sessions_add(dg_metrics *m, int worker, int delta);

/* devgate_handshakes_total{auth,result="ok"|"failed"}. */
void dg_metrics_handshake(dg_metrics *m, int auth, int ok);

/*
 * devgate_handshake_failures_total{reason}: reasons are the short strings
 * the session logs; at most 64 distinct ones are kept, the rest count as
 * "other". Not for the hot path (it compares strings).
 */
void dg_metrics_handshake_failure(dg_metrics *m, const char *reason);

/* devgate_handshake_seconds: a histogram of completed handshakes' durations. */
void dg_metrics_handshake_seconds(dg_metrics *m, double seconds);

/* devgate_coap_requests_total{service,class}: class is the response's class, 2..5. */
void dg_metrics_coap_request(dg_metrics *m, int service, int response_class);

/*
 * devgate_logs_dropped_total: log posts over a session's request rate,
 * answered 2.04 and not stored (a 4.29 would make the SDK log again).
 */
void dg_metrics_log_dropped(dg_metrics *m);

/* devgate_datagrams_total{direction="in"|"out"}. */
void dg_metrics_datagram(dg_metrics *m, int dir);

/*
 * devgate_dropped_datagrams_total{reason}: reason is one of "not_dtls",
 * "no_session", "limit", "stopping", "truncated".
 */
void dg_metrics_dropped(dg_metrics *m, const char *reason);

/* devgate_devices_provisioned_total. */
void dg_metrics_provisioned(dg_metrics *m);

/*
 * devgate_certificate_chain_cache_total{result="hit"|"miss"}: a chain's
 * verdict found in the cache of accepted chains, or verified in full.
 */
void dg_metrics_chain_cache(dg_metrics *m, int hit);

/* devgate_reloads_total{result="ok"|"error"}. */
void dg_metrics_reload(dg_metrics *m, int ok);

/* devgate_store_queue_depth is read when rendering, through this callback. */
void dg_metrics_set_queue_depth_fn(dg_metrics *m, uint64_t (*fn)(void *arg), void *arg);

/*
 * Renders every metric in the Prometheus text exposition format (0.0.4),
 * with HELP and TYPE lines, devgate_build_info{version} 1 included, into a
 * malloc'ed NUL-terminated string. Safe from any thread. Returns NULL on
 * allocation failure.
 */
char *dg_metrics_render(dg_metrics *m, const char *version);

/*
 * Serves GET /metrics on `listen` ("host:port" or "[v6]:port", numeric)
 * with libmicrohttpd's own thread; other paths 404, other methods 405.
 * Returns 0, or a negative errno with a reason in err.
 */
int dg_metrics_http_start(dg_metrics *m, const char *listen, const char *version, char *err,
                          size_t errlen);

/*
 * Stops the HTTP endpoint if it runs, waiting for a scrape in progress to
 * finish; dg_metrics_http_start() may then be called again. Counters are
 * kept. Call from the thread that started it.
 */
void dg_metrics_http_stop(dg_metrics *m);

#endif
