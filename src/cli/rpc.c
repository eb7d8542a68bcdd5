/*
 * `devgate rpc`: calls a method on a device and waits for its answer, and
 * lists the calls made. A call goes through the store: the daemon picks it
 * up within half a second and hands it to the device's session, which
 * notifies the device's ".rpc" observation; the device's ".rpc/status"
 * answers it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "devgate/cli.h"
#include "devgate/coap.h"
#include "devgate/payload.h"
#include "devgate/rpc.h"

/* Exit statuses of `rpc call`, besides 0 (statusCode 0), 1 (failed) and 2 (usage). */
enum {
	EXIT_STATUS = 3,        /* The device answered a statusCode other than 0. */
	EXIT_OFFLINE = 4,       /* The device is not connected. */
	EXIT_NOT_OBSERVING = 5, /* The device does not observe ".rpc". */
	EXIT_TIMEOUT = 6,       /* No answer before --timeout. */
	EXIT_BUSY = 7,          /* The device's queue of calls is full. */
};

/* How long a call may stay pending before the daemon is taken not to be running. */
#define PICKUP_MS 2500
#define POLL_MS   50

/* The names of golioth_rpc_status (the SDK's include/golioth/rpc.h). */
static const char *const status_names[] = {
        "OK",
        "CANCELED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
};

static const char *
status_name(int64_t code)
{
	if (code >= 0 && code < (int64_t)(sizeof(status_names) / sizeof(status_names[0])))
		return status_names[code];
	return "?";
}

static cJSON *
row_json(const dg_rpc_row *r)
{
	char t[32];
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return NULL;
	cJSON_AddNumberToObject(o, "row", (double)r->id);
	cJSON_AddStringToObject(o, "device", r->device);
	cJSON_AddStringToObject(o, "id", r->call_id);
	cJSON_AddStringToObject(o, "method", r->method);
	cJSON *params = cJSON_Parse(r->params);
	cJSON_AddItemToObject(o, "params", params != NULL ? params : cJSON_CreateArray());
	cJSON_AddStringToObject(o, "status", r->status);
	if (r->status_code >= 0) {
		cJSON_AddNumberToObject(o, "statusCode", (double)r->status_code);
		cJSON *detail = r->detail != NULL ? cJSON_Parse(r->detail) : NULL;
		cJSON_AddItemToObject(o, "detail", detail != NULL ? detail : cJSON_CreateNull());
	}
	dg_cli_iso8601(r->created_at, t, sizeof(t));
	cJSON_AddStringToObject(o, "created", t);
	if (r->done_at > 0) {
		dg_cli_iso8601(r->done_at, t, sizeof(t));
		cJSON_AddStringToObject(o, "done", t);
	}
	return o;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* The exit status and a line of text for a call that is no longer waiting. */
static int
outcome(const dg_rpc_row *r, const char **why)
{
	if (strcmp(r->status, "done") == 0) {
		*why = NULL;
		return r->status_code == 0 ? 0 : EXIT_STATUS;
	}
	if (strcmp(r->status, "offline") == 0) {
		*why = "the device is not connected";
		return EXIT_OFFLINE;
	}
	if (strcmp(r->status, "not_observing") == 0) {
		*why = "the device does not observe .rpc";
		return EXIT_NOT_OBSERVING;
	}
	if (strcmp(r->status, "busy") == 0) {
		*why = "the device has too many calls waiting";
		return EXIT_BUSY;
	}
	*why = "no answer before the timeout";
	return EXIT_TIMEOUT;
}

static int
mark(dg_store *store, int64_t row, const char *status)
{
	dg_rpc_mark m = {.row_id = row, .status = status};
	return dg_store_run(store, dg_rpc_mark_apply, &m);
}

/*
 * A method name is what the device's firmware registered: 1 to
 * DG_RPC_METHOD_MAX bytes of UTF-8 without control characters (which no
 * firmware registers and which `rpc list` would print raw). Returns 0 or
 * -EINVAL.
 */
static int
check_method(const char *m)
{
	size_t len = strlen(m);
	if (len == 0 || len > DG_RPC_METHOD_MAX ||
	    dg_payload_utf8_check((const uint8_t *)m, len) != len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)m[i] < 0x20 || m[i] == 0x7f)
			return -EINVAL;
	return 0;
}

/*
 * Params are a JSON array the daemon would take from a device (UTF-8, no
 * NUL, nesting within DG_PAYLOAD_MAX_DEPTH), of at most DG_RPC_PARAMS_MAX
 * bytes, so that every call can be encoded and sent. Returns 0 or -EINVAL.
 */
static int
check_params(const char *params)
{
	char diag[96];
	cJSON *p = NULL;
	size_t len = strlen(params);
	if (len > DG_RPC_PARAMS_MAX || dg_payload_decode(DG_COAP_FMT_JSON, (const uint8_t *)params,
	                                                 len, &p, diag, sizeof(diag)) != 0)
		return -EINVAL;
	int is_array = cJSON_IsArray(p);
	cJSON_Delete(p);
	return is_array ? 0 : -EINVAL;
}

static int
run_call(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_rpc_row row = {0};
	const char *params = c->n_pos > 3 ? c->pos[3] : "[]";
	double timeout_s = 10;
	int64_t dev;
	int rc = 1;

	if (c->timeout != NULL) {
		char *end;
		timeout_s = strtod(c->timeout, &end);
		if (*end != '\0' || !(timeout_s > 0 && timeout_s <= 86400)) {
			fprintf(stderr,
			        "devgate rpc call: --timeout: seconds, over 0, at most 86400\n");
			return 2;
		}
	}
	if (check_method(c->pos[2]) != 0) {
		fprintf(stderr,
		        "devgate rpc call: a method name has 1 to %d bytes of UTF-8, no control"
		        " characters\n",
		        DG_RPC_METHOD_MAX);
		return 2;
	}
	if (check_params(params) != 0) {
		fprintf(stderr,
		        "devgate rpc call: PARAMS must be a JSON array of at most %d bytes of"
		        " UTF-8, e.g. '[1, \"on\"]'\n",
		        DG_RPC_PARAMS_MAX);
		return 2;
	}
	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (dg_cli_find_device(store, c->pos[0], c->pos[1], &dev) != 0)
		goto out;
	dg_rpc_new n = {.device_id = dev,
	                .method = c->pos[2],
	                .params = params,
	                .timeout_ms = (int64_t)(timeout_s * 1000)};
	int r = dg_store_run(store, dg_rpc_create, &n);
	if (r != 0) {
		fprintf(stderr, "devgate rpc call: %s\n", strerror(-r));
		goto out;
	}
	int64_t start = dg_now_ms();
	for (;;) {
		dg_rpc_row_clear(&row);
		if ((r = dg_rpc_get(store, n.row_id, &row)) != 0) {
			fprintf(stderr, "devgate rpc call: %s\n", strerror(-r));
			goto out;
		}
		if (strcmp(row.status, "pending") != 0 && strcmp(row.status, "queued") != 0)
			break;
		int64_t now = dg_now_ms();
		/* Nobody took the call: no daemon is running, so no device is connected. */
		if (strcmp(row.status, "pending") == 0 && now - start >= PICKUP_MS &&
		    mark(store, n.row_id, "offline") == 0)
			continue;
		if (now >= row.deadline && mark(store, n.row_id, "timeout") == 0)
			continue;
		sleep_ms(POLL_MS);
	}
	const char *why;
	rc = outcome(&row, &why);
	if (c->json) {
		if (dg_cli_print_json(row_json(&row)) != 0)
			rc = 1;
	} else if (why != NULL) {
		fprintf(stderr, "devgate rpc call: %s (%s)\n", why, row.status);
	} else {
		printf("statusCode %lld (%s)\n", (long long)row.status_code,
		       status_name(row.status_code));
		printf("detail %s\n", row.detail != NULL ? row.detail : "null");
	}
out:
	dg_rpc_row_clear(&row);
	dg_cli_close(cfg, store);
	return rc;
}

typedef struct list_ctx {
	int json;
	cJSON *arr;
} list_ctx;

static int
print_row(void *arg, const dg_rpc_row *r)
{
	list_ctx *l = arg;
	if (l->json) {
		cJSON *o = row_json(r);
		if (o == NULL)
			return -ENOMEM;
		cJSON_AddItemToArray(l->arr, o);
		return 0;
	}
	char t[32];
	dg_cli_iso8601(r->created_at, t, sizeof(t));
	printf("%s  %-16s %-20s %-13s", t, r->device, r->method, r->status);
	if (r->status_code >= 0)
		printf(" %lld %s %s", (long long)r->status_code, status_name(r->status_code),
		       r->detail != NULL ? r->detail : "");
	printf("  params %s\n", r->params);
	return 0;
}

static int
run_list(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	int64_t limit = 50;
	list_ctx l = {.json = c->json};
	int rc = 1;

	if (c->limit != NULL) {
		char *end;
		limit = strtoll(c->limit, &end, 10);
		if (*end != '\0' || limit <= 0) {
			fprintf(stderr, "devgate rpc list: --limit: a positive integer\n");
			return 2;
		}
	}
	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (l.json && (l.arr = cJSON_CreateArray()) == NULL)
		goto out;
	int r = dg_rpc_list(store, c->pos[0], c->n_devices > 0 ? c->devices[0] : NULL, limit,
	                    print_row, &l);
	if (r != 0) {
		fprintf(stderr, "devgate rpc list: %s\n", strerror(-r));
		goto out;
	}
	if (l.json) {
		rc = dg_cli_print_json(l.arr) == 0 ? 0 : 1;
		l.arr = NULL;
	} else {
		rc = 0;
	}
out:
	cJSON_Delete(l.arr);
	dg_cli_close(cfg, store);
	return rc;
}

static const dg_cli_cmd cmds[] = {
        {"rpc call", "[-c FILE] <project> <device> <method> [PARAMS-JSON-ARRAY] [--timeout S]",
         "call a method on a device and wait for its answer; exit 0 on statusCode 0, 3 on "
         "another statusCode, 4 when the device is not connected, 5 when it does not observe "
         ".rpc, 6 on timeout (default 10 s), 7 when its queue of calls is full",
         DG_CLI_CONFIG | DG_CLI_JSON | DG_CLI_TIMEOUT, 3, 4, run_call},
        {"rpc list", "[-c FILE] <project> [--device D] [--limit N]",
         "list the newest calls (default 50) with their status and answers",
         DG_CLI_CONFIG | DG_CLI_JSON | DG_CLI_DEVICE | DG_CLI_LIMIT, 1, 1, run_list},
};

int
dg_cli_rpc(int argc, char **argv)
{
	return dg_cli_group("rpc", cmds, sizeof(cmds) / sizeof(cmds[0]), argc, argv);
}
