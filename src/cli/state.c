/*
 * `devgate state`: reads, sets and deletes values in a device's LightDB
 * State document, as the device's own requests do; the daemon notifies
 * observers of a change within a second.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/cli.h"
#include "devgate/data.h"
#include "devgate/payload.h"
#include "devgate/state.h"

#define MAX_SEGS 32

/*
 * Opens the store and finds the device that c names, and checks the path
 * (c->pos[2], or the whole document). Returns 0, or -1 after printing why
 * with everything closed.
 */
static int
open_device(const dg_cli *c, dg_config **cfg, dg_store **store, int64_t *id, const char **path)
{
	if (dg_cli_open(c, cfg, store) != 0)
		return -1;
	*path = c->n_pos > 2 ? c->pos[2] : "";
	if (dg_cli_find_device(*store, c->pos[0], c->pos[1], id) != 0)
		goto bad;
	if (dg_state_path_count(*path) > MAX_SEGS) {
		fprintf(stderr, "devgate state: a path has at most %d segments\n", MAX_SEGS);
		goto bad;
	}
	return 0;
bad:
	dg_cli_close(*cfg, *store);
	*cfg = NULL;
	*store = NULL;
	return -1;
}

static int
run_get(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	cJSON *doc = NULL;
	uint8_t *text = NULL;
	dg_path_seg segs[MAX_SEGS];
	const size_t cap = 16u << 20;
	const char *path;
	size_t len = 0;
	int64_t id;
	int rc = 1;

	if (open_device(c, &cfg, &store, &id, &path) != 0)
		return 1;
	size_t n = dg_state_path_parse(path, segs, MAX_SEGS);
	if (dg_data_state_get(store, id, &doc) != 0)
		goto out;
	const cJSON *v = dg_state_get(doc, segs, n);
	text = malloc(cap + 1);
	/* The same printer as a CoAP GET, so numbers read back exactly. */
	if (text == NULL || (v != NULL && dg_payload_encode(50, v, text, cap, &len) != 0)) {
		fprintf(stderr, "devgate state get: value too large to print\n");
		goto out;
	}
	text[len] = '\0';
	printf("%s\n", v != NULL ? (const char *)text : "null");
	rc = 0;
out:
	free(text);
	cJSON_Delete(doc);
	dg_cli_close(cfg, store);
	return rc;
}

/* `state set` (value is c->pos[3]) and `state delete`. */
static int
change(const dg_cli *c, int del)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	const char *path;
	int64_t id;
	int rc = 1;

	if (open_device(c, &cfg, &store, &id, &path) != 0)
		return 1;
	/* The daemon's own limit: the CLI may not make a document the device could not. */
	dg_state_change ch = {
	        .device_id = id, .del = del, .record = 1, .max_bytes = cfg->limits.max_state_bytes};
	ch.path = strdup(path);
	if (ch.path == NULL) {
		fprintf(stderr, "devgate state: %s\n", strerror(ENOMEM));
		goto out;
	}
	if (!del) {
		char diag[96];
		if (dg_payload_decode(50, (const uint8_t *)c->pos[3], strlen(c->pos[3]), &ch.value,
		                      diag, sizeof(diag)) != 0) {
			fprintf(stderr, "devgate state set: %s is not a JSON value (%s)\n",
			        c->pos[3], diag);
			goto out;
		}
	}
	int r = dg_store_run(store, dg_data_state_apply, &ch);
	if (r == -EFBIG) {
		fprintf(stderr,
		        "devgate state set: the document would be over limits.max_state_bytes (%zu)"
		        "; nothing changed\n",
		        (size_t)cfg->limits.max_state_bytes);
		goto out;
	}
	if (r != 0) {
		fprintf(stderr, "devgate state: %s\n", strerror(-r));
		goto out;
	}
	rc = 0;
out:
	dg_data_state_change_clear(&ch);
	dg_cli_close(cfg, store);
	return rc;
}

static int
run_set(const dg_cli *c)
{
	return change(c, 0);
}

static int
run_delete(const dg_cli *c)
{
	return change(c, 1);
}

static const dg_cli_cmd cmds[] = {
        {"state get", "[-c FILE] <project> <device> [path]",
         "Prints the value at a path of a device's state (null when unset).",
         DG_CLI_CONFIG | DG_CLI_JSON, 2, 3, run_get},
        {"state set", "[-c FILE] [--] <project> <device> <path> <json-value>",
         "Sets the value at a path of a device's state (an object merges).",
         DG_CLI_CONFIG | DG_CLI_JSON, 4, 4, run_set},
        {"state delete", "[-c FILE] <project> <device> <path>",
         "Deletes the value at a path of a device's state.", DG_CLI_CONFIG | DG_CLI_JSON, 3, 3,
         run_delete},
};

int
dg_cli_state(int argc, char **argv)
{
	return dg_cli_group("state", cmds, sizeof(cmds) / sizeof(cmds[0]), argc, argv);
}
