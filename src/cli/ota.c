/*
 * `devgate ota`: artifacts (a package at a version, stored by sha256),
 * releases (a set of artifacts for all of a project's devices or some of
 * them, and their rollback) and the devices' update status. A release
 * created or rolled back here reaches the devices that observe
 * ".u/desired" through the store's change feed within half a second.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devgate/cli.h"
#include "devgate/ota.h"

static int
run_artifact_add(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_ota_add a = {.project = c->pos[0],
	                .package = c->pos[1],
	                .version = c->pos[2],
	                .path = c->pos[3]};
	char err[160];

	if (dg_ota_name_check("package", a.package, DG_OTA_PACKAGE_MAX, err, sizeof(err)) != 0 ||
	    dg_ota_name_check("version", a.version, DG_OTA_VERSION_MAX, err, sizeof(err)) != 0) {
		fprintf(stderr, "devgate ota artifact add: %s\n", err);
		return 2;
	}
	/* Read and hashed before the transaction: the daemon's writes go on meanwhile. */
	int rc = dg_ota_artifact_open(&a);
	if (rc != 0) {
		fprintf(stderr, "devgate ota artifact add: %s\n",
		        a.err[0] != '\0' ? a.err : strerror(-rc));
		return 1;
	}
	if (dg_cli_open(c, &cfg, &store) != 0) {
		dg_ota_artifact_close(&a);
		return 1;
	}
	rc = dg_store_run(store, dg_ota_artifact_add, &a);
	dg_ota_artifact_close(&a);
	if (rc != 0) {
		fprintf(stderr, "devgate ota artifact add: %s\n",
		        a.err[0] != '\0' ? a.err : strerror(-rc));
	} else if (c->json) {
		cJSON *o = cJSON_CreateObject();
		if (o != NULL) {
			cJSON_AddStringToObject(o, "package", a.package);
			cJSON_AddStringToObject(o, "version", a.version);
			cJSON_AddStringToObject(o, "sha256", a.sha256);
			cJSON_AddNumberToObject(o, "size", (double)a.size);
			cJSON_AddStringToObject(o, "bootloader", a.bootloader);
		}
		rc = dg_cli_print_json(o);
	} else {
		printf("%s %lld\n", a.sha256, (long long)a.size);
	}
	dg_cli_close(cfg, store);
	return rc == 0 ? 0 : 1;
}

typedef struct list_ctx {
	int json;
	cJSON *arr;
} list_ctx;

static int
print_artifact(void *arg, const dg_ota_artifact *a)
{
	list_ctx *l = arg;
	char t[32];
	dg_cli_iso8601(a->created_at, t, sizeof(t));
	if (!l->json) {
		printf("%-16s %-16s %s %10lld %-7s %s\n", a->package, a->version, a->sha256,
		       (long long)a->size, a->bootloader[0] != '\0' ? a->bootloader : "-", t);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL || !cJSON_AddItemToArray(l->arr, o))
		return -ENOMEM;
	cJSON_AddStringToObject(o, "package", a->package);
	cJSON_AddStringToObject(o, "version", a->version);
	cJSON_AddStringToObject(o, "sha256", a->sha256);
	cJSON_AddNumberToObject(o, "size", (double)a->size);
	cJSON_AddStringToObject(o, "bootloader", a->bootloader);
	cJSON_AddStringToObject(o, "created", t);
	return 0;
}

/* Splits "a, b" into a JSON array of texts; "" is []. */
static cJSON *
split_list(const char *text)
{
	cJSON *arr = cJSON_CreateArray();
	const char *p = text;
	while (arr != NULL && *p != '\0') {
		const char *end = strstr(p, ", ");
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
		char *item = strndup(p, n);
		if (item == NULL)
			break;
		cJSON_AddItemToArray(arr, cJSON_CreateString(item));
		free(item);
		p += n + (end != NULL ? 2 : 0);
	}
	return arr;
}

static int
print_release(void *arg, const dg_ota_release *r)
{
	list_ctx *l = arg;
	char t[32];
	dg_cli_iso8601(r->created_at, t, sizeof(t));
	if (!l->json) {
		printf("%lld  %s  %-11s %s  -> %s\n", (long long)r->id, t,
		       r->rolled_back ? "rolled-back" : "active", r->artifacts,
		       r->all_devices ? "all devices" : r->devices);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL || !cJSON_AddItemToArray(l->arr, o))
		return -ENOMEM;
	cJSON_AddNumberToObject(o, "id", (double)r->id);
	cJSON_AddStringToObject(o, "created", t);
	cJSON_AddBoolToObject(o, "rolled_back", r->rolled_back);
	cJSON_AddItemToObject(o, "artifacts", split_list(r->artifacts));
	if (r->all_devices)
		cJSON_AddStringToObject(o, "devices", "all");
	else
		cJSON_AddItemToObject(o, "devices", split_list(r->devices));
	return 0;
}

static int
print_status(void *arg, const dg_ota_status *s)
{
	list_ctx *l = arg;
	char t[32];
	dg_cli_iso8601(s->at, t, sizeof(t));
	if (!l->json) {
		printf("%-16s %-16s %-16s %-11s %-29s -> %-16s %s\n", s->device, s->package,
		       s->version != NULL ? s->version : "-", dg_ota_state_name(s->state),
		       dg_ota_reason_name(s->reason), s->target != NULL ? s->target : "-", t);
		return 0;
	}
	cJSON *o = cJSON_CreateObject();
	if (o == NULL || !cJSON_AddItemToArray(l->arr, o))
		return -ENOMEM;
	cJSON_AddStringToObject(o, "device", s->device);
	cJSON_AddStringToObject(o, "package", s->package);
	if (s->version != NULL)
		cJSON_AddStringToObject(o, "version", s->version);
	else
		cJSON_AddNullToObject(o, "version");
	cJSON_AddNumberToObject(o, "state", (double)s->state);
	cJSON_AddStringToObject(o, "state_name", dg_ota_state_name(s->state));
	cJSON_AddNumberToObject(o, "reason", (double)s->reason);
	cJSON_AddStringToObject(o, "reason_name", dg_ota_reason_name(s->reason));
	if (s->target != NULL)
		cJSON_AddStringToObject(o, "target", s->target);
	else
		cJSON_AddNullToObject(o, "target");
	cJSON_AddStringToObject(o, "time", t);
	return 0;
}

/* The walks the list commands make, with one shape. */
typedef int (*walk_fn)(dg_store *st, const char *slug, list_ctx *l);

static int
walk_artifacts(dg_store *st, const char *slug, list_ctx *l)
{
	return dg_ota_artifact_each(st, slug, print_artifact, l);
}

static int
walk_releases(dg_store *st, const char *slug, list_ctx *l)
{
	return dg_ota_release_each(st, slug, print_release, l);
}

static int
walk_status(dg_store *st, const char *slug, list_ctx *l)
{
	return dg_ota_status_each(st, slug, print_status, l);
}

/* Runs a list command: the rows of project pos[0], as text lines or one JSON array. */
static int
run_list(const dg_cli *c, walk_fn walk)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	list_ctx l = {.json = c->json};
	int rc = 1;

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (l.json && (l.arr = cJSON_CreateArray()) == NULL)
		goto out;
	int r = walk(store, c->pos[0], &l);
	if (r != 0) {
		fprintf(stderr, "devgate %s: %s\n", c->cmd->name,
		        r == -ENOENT ? "no such project" : strerror(-r));
		goto out;
	}
	rc = 0;
	if (l.json) {
		rc = dg_cli_print_json(l.arr) == 0 ? 0 : 1;
		l.arr = NULL;
	}
out:
	cJSON_Delete(l.arr);
	dg_cli_close(cfg, store);
	return rc;
}

static int
run_artifact_list(const dg_cli *c)
{
	return run_list(c, walk_artifacts);
}

static int
run_release_list(const dg_cli *c)
{
	return run_list(c, walk_releases);
}

static int
run_status(const dg_cli *c)
{
	return run_list(c, walk_status);
}

static int
run_release_create(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_ota_new_release n = {.project = c->pos[0],
	                        .artifacts = c->artifacts,
	                        .n_artifacts = (size_t)c->n_artifacts,
	                        .devices = c->devices,
	                        .n_devices = (size_t)c->n_devices,
	                        .all_devices = c->all};

	if (c->n_artifacts == 0) {
		fprintf(stderr,
		        "devgate ota release create: --artifact PACKAGE@VERSION is needed\n");
		return 2;
	}
	if (c->all == (c->n_devices > 0)) {
		fprintf(stderr, "devgate ota release create: either --all or --device D...\n");
		return 2;
	}
	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	int rc = dg_store_run(store, dg_ota_release_create, &n);
	if (rc != 0) {
		fprintf(stderr, "devgate ota release create: %s\n",
		        n.err[0] != '\0' ? n.err : strerror(-rc));
	} else if (c->json) {
		cJSON *o = cJSON_CreateObject();
		if (o != NULL)
			cJSON_AddNumberToObject(o, "id", (double)n.id);
		rc = dg_cli_print_json(o);
	} else {
		printf("%lld\n", (long long)n.id);
	}
	dg_cli_close(cfg, store);
	return rc == 0 ? 0 : 1;
}

static int
run_release_rollback(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_ota_rollback r = {.project = c->pos[0]};

	if (c->n_pos > 1) {
		char *end;
		long long id = strtoll(c->pos[1], &end, 10);
		if (*end != '\0' || id <= 0) {
			fprintf(stderr, "devgate ota release rollback: a release id is a positive "
			                "integer\n");
			return 2;
		}
		r.id = id;
	}
	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	int rc = dg_store_run(store, dg_ota_release_rollback, &r);
	if (rc != 0)
		fprintf(stderr, "devgate ota release rollback: %s\n",
		        r.err[0] != '\0' ? r.err : strerror(-rc));
	else
		printf("rolled back release %lld\n", (long long)r.id);
	dg_cli_close(cfg, store);
	return rc == 0 ? 0 : 1;
}

static const dg_cli_cmd artifact_cmds[] = {
        {"ota artifact add", "[-c FILE] <project> <package> <version> <file>",
         "store a file as the artifact package@version (its bytes kept once per sha256); "
         "prints its sha256 and size",
         DG_CLI_CONFIG | DG_CLI_JSON, 4, 4, run_artifact_add},
        {"ota artifact list", "[-c FILE] <project> [--json]", "list the project's artifacts",
         DG_CLI_CONFIG | DG_CLI_JSON, 1, 1, run_artifact_list},
};

static const dg_cli_cmd release_cmds[] = {
        {"ota release create",
         "[-c FILE] <project> --artifact <package>@<version> [--artifact ...] "
         "(--all | --device D [--device ...])",
         "make a release of artifacts for every device or the ones named; prints its id",
         DG_CLI_CONFIG | DG_CLI_JSON | DG_CLI_ARTIFACT | DG_CLI_DEVICE | DG_CLI_ALL, 1, 1,
         run_release_create},
        {"ota release list", "[-c FILE] <project> [--json]",
         "list the project's releases, oldest first", DG_CLI_CONFIG | DG_CLI_JSON, 1, 1,
         run_release_list},
        {"ota release rollback", "[-c FILE] <project> [<release-id>]",
         "withdraw the newest release (or the one given): the one before it is desired again",
         DG_CLI_CONFIG, 1, 2, run_release_rollback},
};

static const dg_cli_cmd status_cmd = {
        "ota status",
        "[-c FILE] <project> [--json]",
        "show each device's last report per package: version, state, reason, target",
        DG_CLI_CONFIG | DG_CLI_JSON,
        1,
        1,
        run_status};

/* A nested group ("ota artifact"): its usage, with the help option, to f. */
static void
subgroup_usage(const char *group, const dg_cli_cmd *cmds, size_t n, FILE *f)
{
	size_t skip = strlen(group) + 1;
	fprintf(f, "usage: devgate %s <subcommand> [options] [<args>]\n\nsubcommands:\n", group);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name + skip, cmds[i].summary);
	fprintf(f,
	        "\noptions:\n  -h, --help           print this help and exit\n\nRun `devgate %s "
	        "<subcommand> --help` for its usage.\n",
	        group);
}

/* Runs a nested group's subcommand, as dg_cli_group() does a group's. */
static int
subgroup(const char *group, const dg_cli_cmd *cmds, size_t n, int argc, char **argv)
{
	size_t skip = strlen(group) + 1;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		subgroup_usage(group, cmds, n, stdout);
		return 0;
	}
	if (argc < 2)
		fprintf(stderr, "devgate %s: missing subcommand\n\n", group);
	else if (argv[1][0] == '-')
		fprintf(stderr, "devgate %s: unknown option %s\n\n", group, argv[1]);
	else
		for (size_t i = 0; i < n; i++)
			if (strcmp(cmds[i].name + skip, argv[1]) == 0)
				return dg_cli_run(&cmds[i], argc - 1, argv + 1);
	if (argc >= 2 && argv[1][0] != '-')
		fprintf(stderr, "devgate %s: unknown subcommand %s\n\n", group, argv[1]);
	subgroup_usage(group, cmds, n, stderr);
	return 2;
}

static void
usage(FILE *f)
{
	fputs("usage: devgate ota <subcommand> [options] [<args>]\n\nsubcommands:\n", f);
	fputs("  artifact   add and list artifacts (artifact add, artifact list)\n", f);
	fputs("  release    create, list and roll back releases (release create, release list, "
	      "release rollback)\n",
	      f);
	fprintf(f, "  status     %s\n", status_cmd.summary);
	fputs("\nRun `devgate ota <subcommand> --help` for its usage.\n", f);
}

int
dg_cli_ota(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "artifact") == 0)
		return subgroup("ota artifact", artifact_cmds,
		                sizeof(artifact_cmds) / sizeof(artifact_cmds[0]), argc - 1,
		                argv + 1);
	if (argc >= 2 && strcmp(argv[1], "release") == 0)
		return subgroup("ota release", release_cmds,
		                sizeof(release_cmds) / sizeof(release_cmds[0]), argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return dg_cli_run(&status_cmd, argc - 1, argv + 1);
	if (argc < 2)
		fprintf(stderr, "devgate ota: missing subcommand\n\n");
	else
		fprintf(stderr, "devgate ota: unknown subcommand %s\n\n", argv[1]);
	usage(stderr);
	return 2;
}
