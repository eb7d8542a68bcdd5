/*
 * `devgate devices`: lists the devices of every project, and blocks or
 * unblocks one.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devgate/cli.h"

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

	dg_cli_iso8601(d->created_at, created, sizeof(created));
	if (d->last_seen >= 0)
		dg_cli_iso8601(d->last_seen, seen, sizeof(seen));
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
run_list(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	list_ctx lc = {.json = c->json};
	int rc = 1;

	if (dg_cli_open(c, &cfg, &store) != 0)
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
		if (dg_cli_print_json(arr) != 0)
			goto out;
	}
	rc = 0;
out:
	cJSON_Delete(lc.arr);
	dg_cli_close(cfg, store);
	return rc;
}

/* `devices block` and `devices unblock`. */
static int
set_blocked(const dg_cli *c, int block)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	const char *verb = block ? "block" : "unblock";

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	int r = dg_store_set_blocked(store, c->pos[0], c->pos[1], block);
	if (r == -ENOENT)
		fprintf(stderr, "devgate: no device %s in project %s\n", c->pos[1], c->pos[0]);
	else if (r != 0)
		fprintf(stderr, "devgate: cannot %s: %s\n", verb, strerror(-r));
	else
		printf("%s %s/%s\n", block ? "blocked" : "unblocked", c->pos[0], c->pos[1]);
	dg_cli_close(cfg, store);
	return r == 0 ? 0 : 1;
}

static int
run_block(const dg_cli *c)
{
	return set_blocked(c, 1);
}

static int
run_unblock(const dg_cli *c)
{
	return set_blocked(c, 0);
}

static const dg_cli_cmd cmds[] = {
        {"devices list", "[-c FILE] [--json]", "Lists the devices of every project.",
         DG_CLI_CONFIG | DG_CLI_JSON, 0, 0, run_list},
        {"devices block", "[-c FILE] <project> <device>",
         "Blocks a device: its sessions end and its handshakes fail.", DG_CLI_CONFIG, 2, 2,
         run_block},
        {"devices unblock", "[-c FILE] <project> <device>", "Lets a blocked device in again.",
         DG_CLI_CONFIG, 2, 2, run_unblock},
};

int
dg_cli_devices(int argc, char **argv)
{
	return dg_cli_group("devices", cmds, sizeof(cmds) / sizeof(cmds[0]), argc, argv);
}
