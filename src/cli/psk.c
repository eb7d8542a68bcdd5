/*
 * `devgate psk`: adds, lists and removes the PSK credentials kept in the
 * store (source `cli`), beside those the config directory's psk.json
 * files give.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "devgate/cli.h"
#include "devgate/confdir.h"
#include "devgate/registry.h"

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
	dg_cli_iso8601(r->created_at, created, sizeof(created));
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
psk_add(const dg_cli *c, dg_store *store)
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
run_add(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	int rc = psk_add(c, store) == 0 ? 0 : 1;
	dg_cli_close(cfg, store);
	return rc;
}

static int
run_list(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	psk_list_ctx pl = {.project = c->n_pos > 0 ? c->pos[0] : NULL};
	int rc = 1;

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (c->json)
		pl.arr = cJSON_CreateArray();
	else
		printf("%-32s %-20s %-24s %-6s %s\n", "IDENTITY", "PROJECT", "DEVICE", "SOURCE",
		       "CREATED_AT");
	if (dg_store_each_psk(store, print_psk, &pl) == 0 &&
	    (pl.arr == NULL || dg_cli_print_json(pl.arr) == 0))
		rc = 0;
	else
		cJSON_Delete(pl.arr);
	dg_cli_close(cfg, store);
	return rc;
}

static int
run_remove(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	int r = dg_store_psk_remove(store, c->pos[0]);
	if (r == -ENOENT)
		fprintf(stderr, "devgate psk remove: no credential %s\n", c->pos[0]);
	else if (r == -EPERM)
		fprintf(stderr, "devgate psk remove: %s comes from a psk.json; remove it there\n",
		        c->pos[0]);
	else if (r != 0)
		fprintf(stderr, "devgate psk remove: %s\n", strerror(-r));
	else
		printf("removed %s\n", c->pos[0]);
	dg_cli_close(cfg, store);
	return r == 0 ? 0 : 1;
}

static const dg_cli_cmd cmds[] = {
        {"psk add",
         "[-c FILE] <project> <device> [--identity ID] [--key K | --key-hex HEX | --generate] "
         "[--json]",
         "Adds a PSK credential for a device (created if missing).",
         DG_CLI_CONFIG | DG_CLI_IDENTITY | DG_CLI_KEY | DG_CLI_KEY_HEX | DG_CLI_GENERATE |
                 DG_CLI_JSON,
         2, 2, run_add},
        {"psk list", "[-c FILE] [<project>] [--json]",
         "Lists the PSK credentials, of every project or of one.", DG_CLI_CONFIG | DG_CLI_JSON, 0,
         1, run_list},
        {"psk remove", "[-c FILE] <identity>", "Removes a PSK credential that the CLI added.",
         DG_CLI_CONFIG, 1, 1, run_remove},
};

int
dg_cli_psk(int argc, char **argv)
{
	return dg_cli_group("psk", cmds, sizeof(cmds) / sizeof(cmds[0]), argc, argv);
}
