/*
 * The devgate command: `devgate serve` runs the gateway; the other
 * subcommands administer its store.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>
#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/confdir.h"
#include "devgate/config.h"
#include "devgate/devcert.h"
#include "devgate/log.h"
#include "devgate/registry.h"
#include "devgate/server.h"
#include "devgate/store.h"

#define DEVGATE_VERSION "0.1.0"

static void
usage(FILE *f)
{
	fprintf(f, "usage: devgate serve -c FILE\n"
	           "       devgate devices list -c FILE [--json]\n"
	           "       devgate --version\n");
}

/* Parses "-c FILE" and "--json" from argv; returns 0, or -EINVAL after printing usage. */
static int
parse_common(int argc, char **argv, const char **config, int *json)
{
	static const struct option opts[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"json", no_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			*config = optarg;
			break;
		case 'j':
			if (json == NULL)
				goto bad;
			*json = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			goto bad;
		}
	}
	if (*config == NULL || optind != argc) {
		fprintf(stderr, "devgate: -c FILE is required\n");
		goto bad;
	}
	return 0;
bad:
	usage(stderr);
	return -EINVAL;
}

static int
load_config(const char *path, dg_config **cfg)
{
	char err[512];
	int rc = dg_config_load(path, cfg, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "devgate: %s\n", err);
	return rc;
}

/* Returns the directory part of `path` in a static-free way (into buf). */
static const char *
dir_of(const char *path, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", path);
	return dirname(buf);
}

static int
cmd_serve(int argc, char **argv)
{
	const char *config = NULL;
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_registry *reg = NULL;
	dg_server *srv = NULL;
	dg_devcert_paths dev;
	uv_loop_t loop;
	char err[512], dbdir[4096];
	const char *cert, *key;
	int rc, n_errors = 0, loop_ready = 0;

	if (parse_common(argc, argv, &config, NULL) != 0)
		return 2;
	if (load_config(config, &cfg) != 0)
		return 1;
	dg_log_init(cfg->log_level, cfg->log_format);
	coap_startup();
	coap_set_log_level(LOG_EMERG);
	wolfSSL_Init();

	rc = dg_store_open(cfg->database, DG_STORE_WRITER, &store, err, sizeof(err));
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "store.error", "%s", err);
		goto out;
	}
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
	if (rc != 0 && rc != -ENOENT)
		goto out;
	if (rc == -ENOENT)
		dg_log(DG_LOG_WARN, "config.projects", "%s does not exist: no projects yet",
		       cfg->projects_dir);
	rc = dg_registry_build(store, &reg);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "registry.error", "cannot build: %s", strerror(-rc));
		goto out;
	}
	rc = uv_loop_init(&loop);
	if (rc != 0)
		goto out;
	loop_ready = 1;
	rc = dg_server_new(&loop, cfg, store, reg, cert, key, &srv, err, sizeof(err));
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "server.error", "%s", err);
		goto out;
	}
	reg = NULL; /* The server's now. */
	rc = dg_server_start(srv);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "server.error", "cannot start: %s", uv_strerror(rc));
		goto out;
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	rc = dg_store_flush(store);
	dg_log(DG_LOG_INFO, "server.stopped", "store flushed%s", rc == 0 ? "" : " with errors");
	rc = 0;
out:
	dg_server_free(srv);
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

static void
iso8601(int64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

typedef struct list_ctx {
	int json;
	cJSON *arr;
	size_t n;
} list_ctx;

static int
print_device(void *arg, const dg_device_row *d)
{
	list_ctx *lc = arg;
	char created[32], seen[32] = "-";
	const char *auth = d->certificate_id != NULL ? "cert" : "psk";

	iso8601(d->created_at, created, sizeof(created));
	if (d->last_seen >= 0)
		iso8601(d->last_seen, seen, sizeof(seen));
	lc->n++;
	if (!lc->json) {
		printf("%-20s %-24s %-24s %-5s %-21s %s\n", d->project, d->name,
		       d->certificate_id != NULL ? d->certificate_id : "-", auth, created, seen);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(lc->arr, o);
	cJSON_AddStringToObject(o, "project", d->project);
	cJSON_AddStringToObject(o, "name", d->name);
	if (d->certificate_id != NULL)
		cJSON_AddStringToObject(o, "certificate_id", d->certificate_id);
	else
		cJSON_AddNullToObject(o, "certificate_id");
	cJSON_AddStringToObject(o, "auth", auth);
	cJSON_AddBoolToObject(o, "blocked", d->blocked);
	cJSON_AddStringToObject(o, "created_at", created);
	if (d->last_seen >= 0)
		cJSON_AddStringToObject(o, "last_seen", seen);
	else
		cJSON_AddNullToObject(o, "last_seen");
	return 0;
}

static int
cmd_devices(int argc, char **argv)
{
	const char *config = NULL;
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	list_ctx lc = {0};
	char err[512];
	int rc = 1;

	if (argc < 2 || strcmp(argv[1], "list") != 0) {
		fprintf(stderr, "devgate devices: unknown subcommand\n");
		usage(stderr);
		return 2;
	}
	if (parse_common(argc - 1, argv + 1, &config, &lc.json) != 0)
		return 2;
	if (load_config(config, &cfg) != 0)
		return 1;
	dg_log_init(DG_LOG_WARN, DG_LOG_TEXT);
	if (dg_store_open(cfg->database, 0, &store, err, sizeof(err)) != 0) {
		fprintf(stderr, "devgate: %s\n", err);
		goto out;
	}
	if (lc.json) {
		lc.arr = cJSON_CreateArray();
		if (lc.arr == NULL)
			goto out;
	} else {
		printf("%-20s %-24s %-24s %-5s %-21s %s\n", "PROJECT", "NAME", "CERTIFICATE_ID",
		       "AUTH", "CREATED_AT", "LAST_SEEN");
	}
	if (dg_store_each_device(store, print_device, &lc) != 0)
		goto out;
	if (lc.json) {
		char *text = cJSON_Print(lc.arr);
		if (text == NULL)
			goto out;
		printf("%s\n", text);
		free(text);
	}
	rc = 0;
out:
	cJSON_Delete(lc.arr);
	dg_store_close(store);
	dg_config_free(cfg);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("devgate %s (wolfSSL %s, libuv %s)\n", DEVGATE_VERSION,
		       wolfSSL_lib_version(), uv_version_string());
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "serve") == 0)
		return cmd_serve(argc - 1, argv + 1);
	if (strcmp(argv[1], "devices") == 0)
		return cmd_devices(argc - 1, argv + 1);
	fprintf(stderr, "devgate: unknown command %s\n", argv[1]);
	usage(stderr);
	return 2;
}
