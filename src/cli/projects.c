/*
 * `devgate projects`: lists the projects in the store with their CAs.
 */
#include <errno.h>
#include <stdio.h>

#include "devgate/cli.h"

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
	dg_cli_iso8601(r->not_after, after, sizeof(after));
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
run_list(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	projects_ctx pc = {0};
	int rc = 1;

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	pc.store = store;
	if (c->json)
		pc.arr = cJSON_CreateArray();
	else
		printf("%-20s %-24s %-8s %-15s %s\n", "SLUG", "NAME", "ENABLED", "AUTO_PROVISION",
		       "DEVICES");
	if (dg_store_each_project(store, print_project, &pc) == 0 &&
	    (pc.arr == NULL || dg_cli_print_json(pc.arr) == 0))
		rc = 0;
	else
		cJSON_Delete(pc.arr);
	dg_cli_close(cfg, store);
	return rc;
}

static const dg_cli_cmd cmds[] = {
        {"projects list", "[-c FILE] [--json]",
         "Lists the projects, their settings, device counts and CAs.", DG_CLI_CONFIG | DG_CLI_JSON,
         0, 0, run_list},
};

int
dg_cli_projects(int argc, char **argv)
{
	return dg_cli_group("projects", cmds, sizeof(cmds) / sizeof(cmds[0]), argc, argv);
}
