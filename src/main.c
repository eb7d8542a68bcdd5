/*
 * The devgate command: `devgate serve` runs the gateway; the other
 * subcommands administer its store.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cjson/cJSON.h>
#include <coap3/coap.h>
#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/confdir.h"
#include "devgate/data.h"
#include "devgate/dtls.h"
#include "devgate/payload.h"
#include "devgate/state.h"
#include "devgate/stream.h"
#include "devgate/config.h"
#include "devgate/devcert.h"
#include "devgate/log.h"
#include "devgate/metrics.h"
#include "devgate/registry.h"
#include "devgate/server.h"
#include "devgate/control.h"
#include "devgate/store.h"

#define DEVGATE_VERSION "0.1.0"

static void
usage(FILE *f)
{
	fprintf(f, "usage: devgate serve -c FILE\n"
	           "       devgate devices list -c FILE [--json]\n"
	           "       devgate devices block|unblock -c FILE <project> <device>\n"
	           "       devgate psk add -c FILE <project> <device> [--identity ID]\n"
	           "                       [--key K | --key-hex HEX | --generate]\n"
	           "       devgate psk list -c FILE [<project>] [--json]\n"
	           "       devgate psk remove -c FILE <identity>\n"
	           "       devgate projects list -c FILE [--json]\n"
	           "       devgate state get -c FILE <project> <device> [path]\n"
	           "       devgate state set -c FILE <project> <device> <path> <json-value>\n"
	           "       devgate state delete -c FILE <project> <device> <path>\n"
	           "       devgate stream list -c FILE <project> <device> [--path P] [--since T]\n"
	           "                           [--limit N] [--json]\n"
	           "       devgate logs list -c FILE <project> <device> [--level L] [--since T]\n"
	           "                         [--limit N] [--json]\n"
	           "       devgate check-config -c FILE\n"
	           "       devgate health -c FILE\n"
	           "       devgate --version\n");
}

/* What a subcommand's command line holds. */
typedef struct cli {
	const char *config;
	int json;
	const char *identity;
	const char *key;
	const char *key_hex;
	int generate;
	const char *path;
	const char *since;
	const char *limit;
	const char *level;
	char *pos[4]; /* Positional arguments. */
	int n_pos;
} cli;

/*
 * Parses the options every subcommand shares (-c, --json) and those of
 * `psk add`; `allowed` lists the long options besides -c that this
 * subcommand takes. Positional arguments go to c->pos, at most max_pos.
 * Returns 0, or -EINVAL after printing why and the usage.
 */
static int
parse_cli(int argc, char **argv, const char *allowed, int min_pos, int max_pos, cli *c)
{
	static const struct option opts[] = {
	        {"config", required_argument, NULL, 'c'},   {"json", no_argument, NULL, 'j'},
	        {"identity", required_argument, NULL, 'i'}, {"key", required_argument, NULL, 'k'},
	        {"key-hex", required_argument, NULL, 'x'},  {"generate", no_argument, NULL, 'g'},
	        {"path", required_argument, NULL, 'p'},     {"since", required_argument, NULL, 's'},
	        {"limit", required_argument, NULL, 'l'},    {"level", required_argument, NULL, 'L'},
	        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
	};
	int ch;

	memset(c, 0, sizeof(*c));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		if (ch == 'h') {
			usage(stdout);
			exit(0);
		}
		if (ch == '?' || (ch != 'c' && strchr(allowed, ch) == NULL)) {
			fprintf(stderr, "devgate %s: unknown option\n", argv[0]);
			goto bad;
		}
		switch (ch) {
		case 'c':
			c->config = optarg;
			break;
		case 'j':
			c->json = 1;
			break;
		case 'i':
			c->identity = optarg;
			break;
		case 'k':
			c->key = optarg;
			break;
		case 'x':
			c->key_hex = optarg;
			break;
		case 'g':
			c->generate = 1;
			break;
		case 'p':
			c->path = optarg;
			break;
		case 's':
			c->since = optarg;
			break;
		case 'l':
			c->limit = optarg;
			break;
		case 'L':
			c->level = optarg;
			break;
		}
	}
	for (; optind < argc; optind++) {
		if (c->n_pos == max_pos) {
			fprintf(stderr, "devgate %s: unexpected argument %s\n", argv[0],
			        argv[optind]);
			goto bad;
		}
		c->pos[c->n_pos++] = argv[optind];
	}
	if (c->config == NULL) {
		fprintf(stderr, "devgate %s: -c FILE is required\n", argv[0]);
		goto bad;
	}
	if (c->n_pos < min_pos) {
		fprintf(stderr, "devgate %s: missing arguments\n", argv[0]);
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

static uint64_t
queue_depth(void *arg)
{
	return dg_store_queue_depth(arg);
}

static int
cmd_serve(int argc, char **argv)
{
	dg_metrics *metrics = NULL;
	const char *config = NULL;
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

	cli c;
	if (parse_cli(argc, argv, "", 0, 0, &c) != 0)
		return 2;
	config = c.config;
	if (load_config(config, &cfg) != 0)
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

/* Loads the config and opens its store for an admin command. Returns 0 or prints why. */
static int
open_admin(const char *config, dg_config **cfg, dg_store **store)
{
	char err[512];
	if (load_config(config, cfg) != 0)
		return -EINVAL;
	dg_log_init(DG_LOG_WARN, DG_LOG_TEXT);
	if (dg_store_open((*cfg)->database, 0, store, err, sizeof(err)) != 0) {
		fprintf(stderr, "devgate: %s\n", err);
		dg_config_free(*cfg);
		*cfg = NULL;
		return -EIO;
	}
	return 0;
}

static void
close_admin(dg_config *cfg, dg_store *store)
{
	dg_store_close(store);
	dg_config_free(cfg);
}

/* Prints a JSON array (and frees it); returns 0 or -ENOMEM. */
static int
print_json(cJSON *arr)
{
	char *text = cJSON_Print(arr);
	cJSON_Delete(arr);
	if (text == NULL)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

static int
cmd_devices(int argc, char **argv)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	list_ctx lc = {0};
	cli c;
	int rc = 1;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "block") == 0 || strcmp(argv[1], "unblock") == 0) {
		int block = strcmp(argv[1], "block") == 0;
		if (parse_cli(argc - 1, argv + 1, "", 2, 2, &c) != 0)
			return 2;
		if (open_admin(c.config, &cfg, &store) != 0)
			return 1;
		int r = dg_store_set_blocked(store, c.pos[0], c.pos[1], block);
		if (r == -ENOENT)
			fprintf(stderr, "devgate: no device %s in project %s\n", c.pos[1],
			        c.pos[0]);
		else if (r != 0)
			fprintf(stderr, "devgate: cannot %s: %s\n", argv[1], strerror(-r));
		else
			printf("%s %s/%s\n", block ? "blocked" : "unblocked", c.pos[0], c.pos[1]);
		close_admin(cfg, store);
		return r == 0 ? 0 : 1;
	}
	if (strcmp(argv[1], "list") != 0) {
		fprintf(stderr, "devgate devices: unknown subcommand %s\n", argv[1]);
		usage(stderr);
		return 2;
	}
	if (parse_cli(argc - 1, argv + 1, "j", 0, 0, &c) != 0)
		return 2;
	lc.json = c.json;
	if (open_admin(c.config, &cfg, &store) != 0)
		return 1;
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
		cJSON *arr = lc.arr;
		lc.arr = NULL;
		if (print_json(arr) != 0)
			goto out;
	}
	rc = 0;
out:
	cJSON_Delete(lc.arr);
	close_admin(cfg, store);
	return rc;
}

typedef struct psk_list_ctx {
	const char *project;
	cJSON *arr;
} psk_list_ctx;

static int
print_psk(void *arg, const dg_psk_row *r)
{
	psk_list_ctx *pl = arg;
	char created[32];

	if (pl->project != NULL && strcmp(pl->project, r->slug) != 0)
		return 0;
	iso8601(r->created_at, created, sizeof(created));
	if (pl->arr == NULL) {
		printf("%-32s %-20s %-24s %-6s %s\n", r->identity, r->slug, r->device, r->source,
		       created);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(pl->arr, o);
	cJSON_AddStringToObject(o, "identity", r->identity);
	cJSON_AddStringToObject(o, "project", r->slug);
	cJSON_AddStringToObject(o, "device", r->device);
	cJSON_AddStringToObject(o, "source", r->source);
	cJSON_AddStringToObject(o, "created_at", created);
	return 0;
}

static int
psk_add(const cli *c, dg_store *store)
{
	const char *slug = c->pos[0], *device = c->pos[1];
	uint8_t key[DG_PSK_MAX_KEY];
	size_t key_len = 0;
	char identity[DG_PSK_MAX_IDENTITY + 2];
	const char *id, *sl;
	size_t id_len, sl_len;
	int r;

	if ((c->key != NULL) + (c->key_hex != NULL) + (c->generate != 0) != 1) {
		fprintf(stderr,
		        "devgate psk add: give exactly one of --key, --key-hex, --generate\n");
		return -EINVAL;
	}
	if (c->key != NULL) {
		key_len = strlen(c->key);
		if (key_len == 0 || key_len > DG_PSK_MAX_KEY) {
			fprintf(stderr, "devgate psk add: --key must be 1..%d bytes\n",
			        DG_PSK_MAX_KEY);
			return -EINVAL;
		}
		memcpy(key, c->key, key_len);
	} else if (c->key_hex != NULL) {
		int hr = dg_confdir_key_hex(c->key_hex, key, &key_len);
		if (hr == -ERANGE) {
			fprintf(stderr, "devgate psk add: --key-hex must be 2..%d hex digits\n",
			        2 * DG_PSK_MAX_KEY);
			return -EINVAL;
		}
		if (hr != 0) {
			fprintf(stderr, "devgate psk add: --key-hex must be hex digits\n");
			return -EINVAL;
		}
	} else {
		key_len = 16;
		if (getrandom(key, key_len, 0) != (ssize_t)key_len)
			return -EIO;
	}
	if (c->identity != NULL) {
		snprintf(identity, sizeof(identity), "%s", c->identity);
	} else {
		/* A fresh identity per credential, so rotation never collides. */
		char stamp[32];
		time_t t = time(NULL);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		snprintf(identity, sizeof(identity), "%s-%s@%s", device, stamp, slug);
	}
	if (dg_identity_split(identity, strlen(identity), &id, &id_len, &sl, &sl_len) != 0 ||
	    strlen(slug) != sl_len || memcmp(slug, sl, sl_len) != 0) {
		fprintf(stderr, "devgate psk add: identity must be <psk-id>@%s, at most %d bytes\n",
		        slug, DG_PSK_MAX_IDENTITY);
		return -EINVAL;
	}
	r = dg_store_psk_add(store, slug, device, identity, key, key_len);
	if (r == -ENOENT)
		fprintf(stderr, "devgate psk add: no project %s\n", slug);
	else if (r == -EEXIST)
		fprintf(stderr, "devgate psk add: identity %s exists already\n", identity);
	else if (r != 0)
		fprintf(stderr, "devgate psk add: %s\n", strerror(-r));
	if (r == 0) {
		char hex[2 * DG_PSK_MAX_KEY + 1];
		for (size_t i = 0; i < key_len; i++)
			snprintf(hex + 2 * i, 3, "%02x", key[i]);
		if (c->json) {
			printf("{\"identity\": \"%s\", \"project\": \"%s\", \"device\": "
			       "\"%s\"%s%s%s}\n",
			       identity, slug, device, c->generate ? ", \"key_hex\": \"" : "",
			       c->generate ? hex : "", c->generate ? "\"" : "");
		} else {
			printf("added %s for %s/%s\n", identity, slug, device);
			/* Only a generated key is shown: the admin has no other copy of it. */
			if (c->generate)
				printf("key_hex %s\n", hex);
		}
	}
	explicit_bzero(key, sizeof(key));
	return r;
}

static int
cmd_psk(int argc, char **argv)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	cli c;
	int rc = 1;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "add") == 0) {
		if (parse_cli(argc - 1, argv + 1, "ikxgj", 2, 2, &c) != 0)
			return 2;
	} else if (strcmp(argv[1], "list") == 0) {
		if (parse_cli(argc - 1, argv + 1, "j", 0, 1, &c) != 0)
			return 2;
	} else if (strcmp(argv[1], "remove") == 0) {
		if (parse_cli(argc - 1, argv + 1, "", 1, 1, &c) != 0)
			return 2;
	} else {
		fprintf(stderr, "devgate psk: unknown subcommand %s\n", argv[1]);
		usage(stderr);
		return 2;
	}
	if (open_admin(c.config, &cfg, &store) != 0)
		return 1;
	if (strcmp(argv[1], "add") == 0) {
		rc = psk_add(&c, store) == 0 ? 0 : 1;
	} else if (strcmp(argv[1], "remove") == 0) {
		int r = dg_store_psk_remove(store, c.pos[0]);
		if (r == -ENOENT)
			fprintf(stderr, "devgate psk remove: no credential %s\n", c.pos[0]);
		else if (r == -EPERM)
			fprintf(stderr,
			        "devgate psk remove: %s comes from a psk.json; remove it there\n",
			        c.pos[0]);
		else if (r != 0)
			fprintf(stderr, "devgate psk remove: %s\n", strerror(-r));
		else
			printf("removed %s\n", c.pos[0]);
		rc = r == 0 ? 0 : 1;
	} else {
		psk_list_ctx pl = {.project = c.n_pos > 0 ? c.pos[0] : NULL};
		if (c.json)
			pl.arr = cJSON_CreateArray();
		else
			printf("%-32s %-20s %-24s %-6s %s\n", "IDENTITY", "PROJECT", "DEVICE",
			       "SOURCE", "CREATED_AT");
		if (dg_store_each_psk(store, print_psk, &pl) == 0 &&
		    (pl.arr == NULL || print_json(pl.arr) == 0))
			rc = 0;
		else
			cJSON_Delete(pl.arr);
	}
	close_admin(cfg, store);
	return rc;
}

typedef struct projects_ctx {
	cJSON *arr;
	dg_store *store;
} projects_ctx;

typedef struct ca_ctx {
	int64_t project_id;
	cJSON *list; /* JSON array, or NULL for text. */
} ca_ctx;

static int
print_ca(void *arg, const dg_ca_row *r)
{
	ca_ctx *cc = arg;
	char after[32];
	if (r->project_id != cc->project_id)
		return 0;
	iso8601(r->not_after, after, sizeof(after));
	if (cc->list == NULL) {
		printf("    ca %s  sha256 %s  not_after %s  (%s)\n", r->subject, r->fingerprint,
		       after, r->source);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(cc->list, o);
	cJSON_AddStringToObject(o, "subject", r->subject);
	cJSON_AddStringToObject(o, "fingerprint", r->fingerprint);
	cJSON_AddStringToObject(o, "not_after", after);
	cJSON_AddStringToObject(o, "source", r->source);
	return 0;
}

static int
print_project(void *arg, const dg_project_row *r)
{
	projects_ctx *pc = arg;
	ca_ctx cc = {.project_id = r->id};

	if (pc->arr == NULL) {
		printf("%-20s %-24s %-8s %-15s %lld\n", r->slug, r->name, r->enabled ? "yes" : "no",
		       r->auto_provision ? "yes" : "no", (long long)r->devices);
		return dg_store_each_ca(pc->store, print_ca, &cc);
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(pc->arr, o);
	cJSON_AddStringToObject(o, "slug", r->slug);
	cJSON_AddStringToObject(o, "name", r->name);
	cJSON_AddBoolToObject(o, "enabled", r->enabled);
	cJSON_AddBoolToObject(o, "auto_provision", r->auto_provision);
	cJSON_AddNumberToObject(o, "devices", (double)r->devices);
	cc.list = cJSON_AddArrayToObject(o, "cas");
	return cc.list != NULL ? dg_store_each_ca(pc->store, print_ca, &cc) : -ENOMEM;
}

static int
cmd_projects(int argc, char **argv)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	projects_ctx pc = {0};
	cli c;
	int rc = 1;

	if (argc < 2 || strcmp(argv[1], "list") != 0) {
		fprintf(stderr, "devgate projects: unknown subcommand\n");
		usage(stderr);
		return 2;
	}
	if (parse_cli(argc - 1, argv + 1, "j", 0, 0, &c) != 0)
		return 2;
	if (open_admin(c.config, &cfg, &store) != 0)
		return 1;
	pc.store = store;
	if (c.json)
		pc.arr = cJSON_CreateArray();
	else
		printf("%-20s %-24s %-8s %-15s %s\n", "SLUG", "NAME", "ENABLED", "AUTO_PROVISION",
		       "DEVICES");
	if (dg_store_each_project(store, print_project, &pc) == 0 &&
	    (pc.arr == NULL || print_json(pc.arr) == 0))
		rc = 0;
	else
		cJSON_Delete(pc.arr);
	close_admin(cfg, store);
	return rc;
}

/* Looks up a device for a data command; prints why not. */
static int
find_device(dg_store *store, const char *slug, const char *name, int64_t *id)
{
	int rc = dg_data_device_id(store, slug, name, id);
	if (rc == -ENOENT)
		fprintf(stderr, "devgate: no device %s in project %s\n", name, slug);
	else if (rc != 0)
		fprintf(stderr, "devgate: %s\n", strerror(-rc));
	return rc;
}

static int
cmd_state(int argc, char **argv)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	int64_t id;
	cli c;
	int rc = 1;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	int get = strcmp(argv[1], "get") == 0, set = strcmp(argv[1], "set") == 0,
	    del = strcmp(argv[1], "delete") == 0;
	if (!get && !set && !del) {
		fprintf(stderr, "devgate state: unknown subcommand %s\n", argv[1]);
		usage(stderr);
		return 2;
	}
	if (parse_cli(argc - 1, argv + 1, "j",
	              get   ? 2
	              : set ? 4
	                    : 3,
	              get   ? 3
	              : set ? 4
	                    : 3,
	              &c) != 0)
		return 2;
	if (open_admin(c.config, &cfg, &store) != 0)
		return 1;
	if (find_device(store, c.pos[0], c.pos[1], &id) != 0)
		goto out;
	const char *path = c.n_pos > 2 ? c.pos[2] : "";
	if (dg_state_path_count(path) > 32) {
		fprintf(stderr, "devgate state: a path has at most 32 segments\n");
		goto out;
	}
	if (get) {
		cJSON *doc = NULL;
		dg_path_seg segs[32];
		size_t n = dg_state_path_parse(path, segs, 32);
		if (dg_data_state_get(store, id, &doc) != 0)
			goto out;
		const cJSON *v = dg_state_get(doc, segs, n);
		const size_t cap = 16u << 20;
		uint8_t *text = malloc(cap + 1);
		size_t len = 0;
		/* The same printer as a CoAP GET, so numbers read back exactly. */
		if (text == NULL || (v != NULL && dg_payload_encode(50, v, text, cap, &len) != 0)) {
			fprintf(stderr, "devgate state get: value too large to print\n");
			free(text);
			cJSON_Delete(doc);
			goto out;
		}
		text[len] = '\0';
		printf("%s\n", v != NULL ? (const char *)text : "null");
		free(text);
		cJSON_Delete(doc);
		rc = 0;
		goto out;
	}
	dg_state_change ch = {.device_id = id, .del = del, .record = 1};
	ch.path = strdup(path);
	if (set) {
		char diag[96];
		if (dg_payload_decode(50, (const uint8_t *)c.pos[3], strlen(c.pos[3]), &ch.value,
		                      diag, sizeof(diag)) != 0) {
			fprintf(stderr, "devgate state set: %s is not a JSON value (%s)\n",
			        c.pos[3], diag);
			dg_data_state_change_clear(&ch);
			goto out;
		}
	}
	int r = dg_store_run(store, dg_data_state_apply, &ch);
	dg_data_state_change_clear(&ch);
	if (r != 0) {
		fprintf(stderr, "devgate state: %s\n", strerror(-r));
		goto out;
	}
	rc = 0;
out:
	close_admin(cfg, store);
	return rc;
}

/* Parses --since: ms since the epoch, seconds, or ISO 8601. */
static int64_t
parse_since(const char *s)
{
	if (s == NULL)
		return -1;
	char *end = NULL;
	double v = strtod(s, &end);
	if (end != s && *end == '\0')
		return v < 1e11 ? (int64_t)(v * 1000) : (int64_t)v;
	return dg_stream_parse_iso8601(s);
}

typedef struct rows_ctx {
	cJSON *arr;
} rows_ctx;

static int
print_stream_row(void *arg, int64_t ts, const char *path, const char *value)
{
	rows_ctx *r = arg;
	char when[32];
	iso8601(ts, when, sizeof(when));
	if (r->arr == NULL) {
		printf("%s %-20s %s\n", when, path[0] ? path : "/", value);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(r->arr, o);
	cJSON_AddNumberToObject(o, "ts", (double)ts);
	cJSON_AddStringToObject(o, "path", path);
	cJSON *v = cJSON_Parse(value);
	cJSON_AddItemToObject(o, "value", v != NULL ? v : cJSON_CreateNull());
	return 0;
}

static int
print_log_row(void *arg, int64_t ts, const char *level, const char *module, const char *msg)
{
	rows_ctx *r = arg;
	char when[32];
	iso8601(ts, when, sizeof(when));
	if (r->arr == NULL) {
		printf("%s %-5s %-12s %s\n", when, level, module != NULL ? module : "-",
		       msg != NULL ? msg : "");
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return -ENOMEM;
	cJSON_AddItemToArray(r->arr, o);
	cJSON_AddNumberToObject(o, "ts", (double)ts);
	cJSON_AddStringToObject(o, "level", level);
	if (module != NULL)
		cJSON_AddStringToObject(o, "module", module);
	else
		cJSON_AddNullToObject(o, "module");
	if (msg != NULL)
		cJSON_AddStringToObject(o, "msg", msg);
	else
		cJSON_AddNullToObject(o, "msg");
	return 0;
}

/* `stream list` and `logs list`. */
static int
cmd_list_data(int argc, char **argv, int logs)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	rows_ctx r = {0};
	int64_t id, since, limit = -1;
	cli c;
	int rc = 1;

	if (argc < 2 || strcmp(argv[1], "list") != 0) {
		fprintf(stderr, "devgate %s: unknown subcommand\n", argv[0]);
		usage(stderr);
		return 2;
	}
	if (parse_cli(argc - 1, argv + 1, logs ? "jslL" : "jslp", 2, 2, &c) != 0)
		return 2;
	since = parse_since(c.since);
	if (c.since != NULL && since < 0) {
		fprintf(stderr, "devgate: --since must be ms or s since the epoch, or ISO 8601\n");
		return 2;
	}
	if (c.limit != NULL) {
		char *end = NULL;
		limit = strtoll(c.limit, &end, 10);
		if (end == c.limit || *end != '\0' || limit < 0) {
			fprintf(stderr, "devgate: --limit must be a whole number\n");
			return 2;
		}
	}
	if (open_admin(c.config, &cfg, &store) != 0)
		return 1;
	if (find_device(store, c.pos[0], c.pos[1], &id) != 0)
		goto out;
	if (c.json)
		r.arr = cJSON_CreateArray();
	int q = logs ? dg_data_logs_each(store, id, c.level, since, limit, print_log_row, &r)
	             : dg_data_stream_each(store, id, c.path, since, limit, print_stream_row, &r);
	if (q == 0 && (r.arr == NULL || print_json(r.arr) == 0))
		rc = 0;
	else
		cJSON_Delete(r.arr);
out:
	close_admin(cfg, store);
	return rc;
}

static int
cmd_check_config(int argc, char **argv)
{
	dg_config *cfg = NULL;
	cli c;
	int bad;

	if (parse_cli(argc, argv, "", 0, 0, &c) != 0)
		return 2;
	if (load_config(c.config, &cfg) != 0) {
		printf("error: %s is not valid\n", c.config);
		return 1;
	}
	printf("%s: ok (%zu listen addresses, database %s, projects %s)\n", c.config, cfg->n_listen,
	       cfg->database, cfg->projects_dir);
	bad = dg_confdir_check(cfg->projects_dir, stdout);
	if (bad > 0)
		printf("%d errors\n", bad);
	dg_config_free(cfg);
	return bad > 0 ? 1 : 0;
}

/*
 * Sends a DTLS ClientHello to the daemon's first listen address (a
 * wildcard address is reached on loopback) and waits up to two seconds for
 * the HelloVerifyRequest that every healthy listener answers with
 * statelessly. Returns 0 when it came.
 */
static int
cmd_health(int argc, char **argv)
{
	dg_config *cfg = NULL;
	struct sockaddr_storage to;
	uint8_t hello[13 + 12 + 42], reply[1500];
	cli c;
	int fd = -1, rc = 1;

	if (parse_cli(argc, argv, "", 0, 0, &c) != 0)
		return 2;
	if (load_config(c.config, &cfg) != 0)
		return 1;
	memcpy(&to, &cfg->listen[0].addr, sizeof(to));
	if (to.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&to;
		if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
			s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&to;
		if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
			s6->sin6_addr = in6addr_loopback;
	}
	/* Record header, handshake header, then a minimal ClientHello body. */
	static const uint8_t head[] = {22, 0xfe, 0xfd, 0,  0, 0, 0, 0, 0, 0, 0, 0, 54,
	                               1,  0,    0,    42, 0, 0, 0, 0, 0, 0, 0, 42};
	memcpy(hello, head, sizeof(head));
	uint8_t *b = hello + sizeof(head);
	b[0] = 0xfe;
	b[1] = 0xfd;
	if (getrandom(b + 2, 32, 0) != 32)
		goto out;
	static const uint8_t tail[] = {0, 0, 0, 2, 0xc0, 0xa8, 1, 0};
	memcpy(b + 34, tail, sizeof(tail));
	fd = socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	socklen_t tolen =
	        to.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (sendto(fd, hello, sizeof(hello), 0, (struct sockaddr *)&to, tolen) < 0) {
		fprintf(stderr, "devgate health: %s: %s\n", cfg->listen[0].text, strerror(errno));
		goto out;
	}
	ssize_t n = recv(fd, reply, sizeof(reply), 0);
	dg_dtls_record rec;
	if (n > 0 && dg_dtls_peek(reply, (size_t)n, &rec) == 0 && rec.handshake_type == 3) {
		printf("ok: %s answers\n", cfg->listen[0].text);
		rc = 0;
	} else {
		fprintf(stderr, "devgate health: no answer from %s\n", cfg->listen[0].text);
	}
out:
	if (fd >= 0)
		close(fd);
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
	if (strcmp(argv[1], "psk") == 0)
		return cmd_psk(argc - 1, argv + 1);
	if (strcmp(argv[1], "projects") == 0)
		return cmd_projects(argc - 1, argv + 1);
	if (strcmp(argv[1], "check-config") == 0)
		return cmd_check_config(argc - 1, argv + 1);
	if (strcmp(argv[1], "health") == 0)
		return cmd_health(argc - 1, argv + 1);
	if (strcmp(argv[1], "state") == 0)
		return cmd_state(argc - 1, argv + 1);
	if (strcmp(argv[1], "stream") == 0)
		return cmd_list_data(argc - 1, argv + 1, 0);
	if (strcmp(argv[1], "logs") == 0)
		return cmd_list_data(argc - 1, argv + 1, 1);
	fprintf(stderr, "devgate: unknown command %s\n", argv[1]);
	usage(stderr);
	return 2;
}
