/*
 * `devgate serve`: loads the config, imports the config directory into
 * the store, and runs the gateway until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <libgen.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include <coap3/coap.h>
#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/cli.h"
#include "devgate/confdir.h"
#include "devgate/control.h"
#include "devgate/devcert.h"
#include "devgate/log.h"
#include "devgate/metrics.h"
#include "devgate/registry.h"
#include "devgate/server.h"

/* Returns the directory part of `path` in a static-free way (into buf). */
static const char *
dir_of(const char *path, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", path);
	return dirname(buf);
}

static uint64_t
queue_depth(void *arg)
{
	return dg_store_queue_depth(arg);
}

static int
run_serve(const dg_cli *c)
{
	dg_metrics *metrics = NULL;
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_registry *reg = NULL;
	dg_server *srv = NULL;
	dg_control *ctl = NULL;
	dg_devcert_paths dev;
	uv_loop_t loop;
	char err[512], dbdir[4096];
	const char *cert, *key;
	int rc, n_errors = 0, loop_ready = 0;

	if (dg_cli_load_config(c, &cfg) != 0)
		return 1;
	dg_log_init(cfg->log_level, cfg->log_format);
	/*
	 * glibc gives the top of a heap back to the kernel as soon as 128 KB
	 * or so are free there, and the next allocations fault fresh zeroed
	 * pages in again. A daemon whose sessions come and go in waves (a
	 * burst of handshakes frees their transient state, then every
	 * session's first requests allocate) paid a page fault per few
	 * requests for it at 100,000 sessions (clear_page_erms 9-14% of the
	 * server's CPU). Keeping up to 4 MB free at the top of each heap
	 * (the main one, each worker's and the store threads') ends that at
	 * a few MB of RSS; more bought no more rate and ~190 MB of RSS.
	 */
	mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
	coap_startup();
	coap_set_log_level(LOG_EMERG);
	wolfSSL_Init();

	rc = dg_store_open(cfg->database, DG_STORE_WRITER, &store, err, sizeof(err));
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "store.error", "%s", err);
		goto out;
	}
	dg_store_set_max_queue(store, cfg->limits.max_write_queue);
	cert = cfg->server_cert;
	key = cfg->server_key;
	if (cert == NULL) {
		char certdir[4200];
		snprintf(certdir, sizeof(certdir), "%s/dev-certs",
		         dir_of(cfg->database, dbdir, sizeof(dbdir)));
		rc = dg_devcert_ensure(certdir, &dev, err, sizeof(err));
		if (rc != 0) {
			dg_log(DG_LOG_ERROR, "devcert.error", "%s", err);
			goto out;
		}
		dg_log(DG_LOG_INFO, "devcert",
		       "%s development certificate; devices should trust %s",
		       dev.created ? "created a" : "using the", dev.ca_cert);
		cert = dev.server_cert;
		key = dev.server_key;
	}
	rc = dg_confdir_import(cfg->projects_dir, store, &n_errors);
	if (rc != 0 && rc != -ENOENT) {
		dg_log(DG_LOG_ERROR, "config.error", "%s: cannot import into %s: %s",
		       cfg->projects_dir, cfg->database, strerror(-rc));
		goto out;
	}
	if (rc == -ENOENT)
		dg_log(DG_LOG_WARN, "config.projects", "%s does not exist: no projects yet",
		       cfg->projects_dir);
	rc = dg_registry_build(store, &reg);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "registry.error", "%s: cannot build the registry: %s",
		       cfg->database, strerror(-rc));
		goto out;
	}
	rc = uv_loop_init(&loop);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "server.error", "cannot start the event loop: %s",
		       uv_strerror(rc));
		goto out;
	}
	loop_ready = 1;
	rc = dg_server_new(&loop, 0, cfg, store, reg, cert, key, &srv, err, sizeof(err));
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "server.error", "%s", err);
		goto out;
	}
	reg = NULL; /* The server's now. */
	rc = dg_metrics_new(&metrics);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "metrics.error", "cannot start: %s", strerror(-rc));
		goto out;
	}
	dg_metrics_set_queue_depth_fn(metrics, queue_depth, store);
	if (cfg->metrics_enabled) {
		rc = dg_metrics_http_start(metrics, cfg->metrics_listen.text, DEVGATE_VERSION, err,
		                           sizeof(err));
		if (rc != 0) {
			dg_log(DG_LOG_ERROR, "metrics.error", "%s", err);
			goto out;
		}
		dg_log(DG_LOG_INFO, "metrics.listening", "http://%s/metrics",
		       cfg->metrics_listen.text);
	}
	dg_server_set_metrics(srv, metrics);
	rc = dg_control_new(&loop, srv, store, &ctl);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "server.error", "cannot start: %s", strerror(-rc));
		goto out;
	}
	dg_control_set_metrics(ctl, metrics);
	rc = dg_server_start(srv);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "server.error", "cannot start: %s", uv_strerror(rc));
		goto out;
	}
	dg_control_start(ctl);
	uv_run(&loop, UV_RUN_DEFAULT);
	rc = dg_store_flush(store);
	dg_log(DG_LOG_INFO, "server.stopped", "store flushed%s", rc == 0 ? "" : " with errors");
	rc = 0;
out:
	dg_control_free(ctl);
	dg_server_free(srv);
	dg_metrics_free(metrics);
	if (loop_ready) {
		uv_run(&loop, UV_RUN_DEFAULT);
		uv_loop_close(&loop);
	}
	dg_registry_unref(reg);
	dg_store_close(store);
	dg_config_free(cfg);
	wolfSSL_Cleanup();
	coap_cleanup();
	return rc == 0 ? 0 : 1;
}

static const dg_cli_cmd serve_cmd = {
        "serve", "[-c FILE]", "Runs the gateway until SIGTERM or SIGINT.", DG_CLI_CONFIG, 0,
        0,       run_serve};

int
dg_cli_serve(int argc, char **argv)
{
	return dg_cli_run(&serve_cmd, argc, argv);
}
