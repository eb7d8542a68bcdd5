/*
 * The server: creates the workers and what they share, and tells them
 * what the control loop decided.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/dtls.h"
#include "devgate/listener.h"
#include "devgate/log.h"
#include "devgate/metrics.h"
#include "devgate/server.h"
#include "devgate/session.h"
#include "devgate/worker.h"

struct dg_server {
	uv_loop_t *loop;
	const dg_config *cfg;
	dg_config **owned; /* Configurations given by dg_server_set_config, kept to the end. */
	size_t n_owned;
	dg_store *store;
	dg_registry *reg;
	dg_worker_shared sh;
	dg_worker *workers[DG_CONFIG_MAX_WORKERS];
	int stopped;
};

/* `workers` in the configuration: 0 is one per online CPU. */
static size_t
worker_count(const dg_config *cfg)
{
	size_t n = cfg->workers;
	if (n == 0)
		n = uv_available_parallelism();
	if (n < 1)
		n = 1;
	if (n > DG_CONFIG_MAX_WORKERS)
		n = DG_CONFIG_MAX_WORKERS;
	return n;
}

int
dg_server_new(uv_loop_t *loop, unsigned flags, const dg_config *cfg, dg_store *store,
              dg_registry *reg, const char *cert_pem, const char *key_pem, dg_server **out,
              char *err, size_t errlen)
{
	dg_server *srv = calloc(1, sizeof(*srv));
	size_t n = worker_count(cfg);
	int rc;

	if (srv == NULL)
		return -ENOMEM;
	srv->loop = loop;
	srv->cfg = cfg;
	srv->store = store;
	srv->sh.store = store;
	srv->sh.workers = srv->workers;
	if (getrandom(srv->sh.psk_secret, sizeof(srv->sh.psk_secret), 0) !=
	    (ssize_t)sizeof(srv->sh.psk_secret)) {
		snprintf(err, errlen, "cannot read random bytes for the PSK secret");
		rc = -EIO;
		goto fail;
	}
	if (dg_admit_new(&srv->sh.admit) != 0 || dg_devtab_new(&srv->sh.devices) != 0) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	/*
	 * One context for every worker: wolfSSL lets threads make objects from
	 * a context that is no longer changed (its reference count is under a
	 * mutex in a build without SINGLE_THREADED), and each session's
	 * certificates go to a store of its own (dg_dtls_isolate_verify).
	 */
	rc = dg_dtls_ctx_new(cert_pem, key_pem, dg_session_psk_lookup, dg_session_verify_cert,
	                     &srv->sh.ctx, err, errlen);
	if (rc != 0)
		goto fail;
	/*
	 * SO_REUSEPORT lets any socket of this user with the option share a
	 * port: make sure no other process holds one first, so that a second
	 * daemon fails to start instead of taking half the traffic.
	 */
	for (size_t i = 0; i < cfg->n_listen; i++) {
		rc = dg_listener_probe((const struct sockaddr *)&cfg->listen[i].addr);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s: %s", cfg->listen[i].text,
			         uv_strerror(rc));
			goto fail;
		}
	}
	for (size_t k = 0; k < n; k++) {
		/* The others bind where the first did: the same port when the config says 0. */
		const struct sockaddr_storage *addrs =
		        k == 0 ? NULL : dg_worker_bound(srv->workers[0], 0);
		rc = dg_worker_new(&srv->sh, k,
		                   n == 1 && (flags & DG_SERVER_ONE_LOOP) ? loop : NULL, cfg, addrs,
		                   reg, &srv->workers[k], err, errlen);
		if (rc != 0)
			goto fail;
		srv->sh.n_workers = k + 1;
	}
	srv->reg = reg;
	*out = srv;
	return 0;
fail:
	dg_server_free(srv);
	return rc;
}

void
dg_server_set_metrics(dg_server *srv, struct dg_metrics *m)
{
	srv->sh.metrics = m;
	if (m != NULL)
		dg_metrics_set_workers(m, (int)srv->sh.n_workers);
}

int
dg_server_start(dg_server *srv)
{
	for (size_t k = 0; k < srv->sh.n_workers; k++) {
		int rc = dg_worker_start(srv->workers[k]);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < srv->cfg->n_listen; i++)
		dg_log(DG_LOG_INFO, "server.listening",
		       "udp %s, DTLS 1.2, %zu PSK credentials, %zu workers",
		       srv->cfg->listen[i].text, dg_registry_psk_count(srv->reg),
		       srv->sh.n_workers);
	return 0;
}

size_t
dg_server_workers(const dg_server *srv)
{
	return srv->sh.n_workers;
}

const dg_config *
dg_server_config(const dg_server *srv)
{
	return srv->cfg;
}

void
dg_server_set_config(dg_server *srv, dg_config *cfg)
{
	dg_config **v = realloc(srv->owned, (srv->n_owned + 1) * sizeof(*v));
	if (v == NULL) {
		dg_log(DG_LOG_ERROR, "reload.failed",
		       "out of memory; keeping the running configuration");
		dg_config_free(cfg);
		return;
	}
	srv->owned = v;
	srv->owned[srv->n_owned++] = cfg;
	srv->cfg = cfg;
	for (size_t k = 0; k < srv->sh.n_workers; k++)
		if (dg_worker_set_config(srv->workers[k], cfg) != 0)
			dg_log(DG_LOG_ERROR, "reload.failed", "worker %zu keeps its configuration",
			       k);
}

dg_registry *
dg_server_registry(const dg_server *srv)
{
	return srv->reg;
}

void
dg_server_set_registry(dg_server *srv, dg_registry *reg)
{
	dg_registry_unref(srv->reg);
	srv->reg = reg;
	for (size_t k = 0; k < srv->sh.n_workers; k++)
		if (dg_worker_set_registry(srv->workers[k], reg) != 0)
			dg_log(DG_LOG_ERROR, "reload.failed", "worker %zu keeps its registry", k);
}

void
dg_server_state_changed(dg_server *srv, int64_t device_id, const char *path, const char *doc)
{
	dg_worker_route_state(&srv->sh, device_id, path, doc);
}

void
dg_server_resource_changed(dg_server *srv, int kind, int64_t project_id, int64_t device_id)
{
	dg_devtab_owner o;
	if (device_id > 0) {
		if (dg_devtab_lookup(srv->sh.devices, device_id, &o) == 0 &&
		    o.worker < srv->sh.n_workers)
			dg_worker_resource_changed(srv->workers[o.worker], kind, project_id,
			                           device_id);
		return;
	}
	for (size_t k = 0; k < srv->sh.n_workers; k++)
		dg_worker_resource_changed(srv->workers[k], kind, project_id, 0);
}

int
dg_server_rpc(dg_server *srv, int64_t device_id, int64_t row_id, const char *id, const char *call,
              int64_t deadline_ms)
{
	dg_devtab_owner o;
	if (dg_devtab_lookup(srv->sh.devices, device_id, &o) != 0 || o.worker >= srv->sh.n_workers)
		return -ENOENT;
	return dg_worker_rpc(srv->workers[o.worker], device_id, row_id, id, call, deadline_ms);
}

void
dg_server_stop(dg_server *srv)
{
	if (srv->stopped)
		return;
	srv->stopped = 1;
	for (size_t k = 0; k < srv->sh.n_workers; k++)
		dg_worker_stop(srv->workers[k]);
	for (size_t k = 0; k < srv->sh.n_workers; k++)
		dg_worker_join(srv->workers[k]);
}

void
dg_server_datagram(dg_server *srv, size_t listener_index, const uint8_t *data, size_t len,
                   const struct sockaddr *from)
{
	if (srv->sh.n_workers > 0)
		dg_worker_datagram(srv->workers[0], listener_index, data, len, from);
}

void
dg_server_free(dg_server *srv)
{
	if (srv == NULL)
		return;
	for (size_t k = 0; k < srv->sh.n_workers; k++) {
		dg_worker_join(srv->workers[k]);
		dg_worker_free(srv->workers[k]);
	}
	if (srv->sh.ctx != NULL)
		wolfSSL_CTX_free(srv->sh.ctx);
	dg_admit_free(srv->sh.admit);
	dg_devtab_free(srv->sh.devices);
	explicit_bzero(srv->sh.psk_secret, sizeof(srv->sh.psk_secret));
	for (size_t i = 0; i < srv->n_owned; i++)
		dg_config_free(srv->owned[i]);
	free(srv->owned);
	dg_registry_unref(srv->reg);
	free(srv);
}
