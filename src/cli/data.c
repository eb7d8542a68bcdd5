/*
 * `devgate stream list` and `devgate logs list`: a device's LightDB
 * Stream records and log lines, oldest first, filtered by time and path
 * or level.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "devgate/cli.h"
#include "devgate/data.h"
#include "devgate/stream.h"

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
	dg_cli_iso8601(ts, when, sizeof(when));
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
	dg_cli_iso8601(ts, when, sizeof(when));
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
list_data(const dg_cli *c, int logs)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	rows_ctx r = {0};
	int64_t id, since, limit = -1;
	int rc = 1;

	since = parse_since(c->since);
	if (c->since != NULL && since < 0) {
		fprintf(stderr,
		        "devgate %s: --since must be ms or s since the epoch, or ISO 8601\n\n",
		        c->cmd->name);
		dg_cli_usage(c->cmd, stderr);
		return 2;
	}
	if (c->limit != NULL) {
		char *end = NULL;
		limit = strtoll(c->limit, &end, 10);
		if (end == c->limit || *end != '\0' || limit < 0) {
			fprintf(stderr, "devgate %s: --limit must be a whole number\n\n",
			        c->cmd->name);
			dg_cli_usage(c->cmd, stderr);
			return 2;
		}
	}
	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (dg_cli_find_device(store, c->pos[0], c->pos[1], &id) != 0)
		goto out;
	if (c->json)
		r.arr = cJSON_CreateArray();
	int q = logs ? dg_data_logs_each(store, id, c->level, since, limit, print_log_row, &r)
	             : dg_data_stream_each(store, id, c->path, since, limit, print_stream_row, &r);
	if (q == 0 && (r.arr == NULL || dg_cli_print_json(r.arr) == 0))
		rc = 0;
	else
		cJSON_Delete(r.arr);
out:
	dg_cli_close(cfg, store);
	return rc;
}

static int
run_stream(const dg_cli *c)
{
	return list_data(c, 0);
}

static int
run_logs(const dg_cli *c)
{
	return list_data(c, 1);
}

static const dg_cli_cmd stream_cmds[] = {
        {"stream list", "[-c FILE] <project> <device> [--path P] [--since T] [--limit N] [--json]",
         "Lists a device's LightDB Stream records, oldest first.",
         DG_CLI_CONFIG | DG_CLI_JSON | DG_CLI_PATH | DG_CLI_SINCE | DG_CLI_LIMIT, 2, 2, run_stream},
};

static const dg_cli_cmd logs_cmds[] = {
        {"logs list", "[-c FILE] <project> <device> [--level L] [--since T] [--limit N] [--json]",
         "Lists a device's log lines, oldest first.",
         DG_CLI_CONFIG | DG_CLI_JSON | DG_CLI_LEVEL | DG_CLI_SINCE | DG_CLI_LIMIT, 2, 2, run_logs},
};

int
dg_cli_stream(int argc, char **argv)
{
	return dg_cli_group("stream", stream_cmds, sizeof(stream_cmds) / sizeof(stream_cmds[0]),
	                    argc, argv);
}

int
dg_cli_logs(int argc, char **argv)
{
	return dg_cli_group("logs", logs_cmds, sizeof(logs_cmds) / sizeof(logs_cmds[0]), argc,
	                    argv);
}
