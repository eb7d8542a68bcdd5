/*
 * `devgate settings`: reads and changes a project's settings (its
 * settings.json in the projects directory, and the store with it) and a
 * device's overrides (the store), and shows what each device reported.
 * Every change writes a change feed row, so the daemon notifies the
 * observing devices within a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devgate/cli.h"
#include "devgate/confdir.h"
#include "devgate/coap.h"
#include "devgate/settings.h"

#define FILE_MAX (1u << 20)

/* Checks a NAME argument; prints why it is refused. Returns 0 or -EINVAL. */
static int
check_name(const dg_cli *c, const char *name)
{
	if (dg_settings_name_valid(name))
		return 0;
	fprintf(stderr,
	        "devgate %s: %s: a setting name is 1..%d characters of A-Z, 0-9 and _"
	        " (no lowercase letters)\n",
	        c->cmd->name, name, DG_SETTING_NAME_MAX);
	return -EINVAL;
}

/* The --device of c, NULL when none; -EINVAL (printed) when given twice. */
static int
one_device(const dg_cli *c, const char **device)
{
	*device = c->n_devices > 0 ? c->devices[0] : NULL;
	if (c->n_devices > 1) {
		fprintf(stderr, "devgate %s: --device is given once here\n", c->cmd->name);
		return -EINVAL;
	}
	return 0;
}

/* The ids of c's project and, with --device, device (0 without). Prints why not. */
static int
find_ids(const dg_cli *c, dg_store *store, const char *device, int64_t *pid, int64_t *did)
{
	int rc = dg_settings_project_id(dg_store_reader(store), c->pos[0], pid);
	*did = 0;
	if (rc == -ENOENT) {
		fprintf(stderr, "devgate: no project %s\n", c->pos[0]);
		return rc;
	}
	if (rc == 0 && device != NULL)
		rc = dg_cli_find_device(store, c->pos[0], device, did);
	else if (rc != 0)
		fprintf(stderr, "devgate: %s\n", strerror(-rc));
	return rc;
}

/* Prints one value as JSON text (a float always with a point or an exponent). */
static void
print_value(const dg_setting *s)
{
	char *text = dg_settings_value_text(s);
	fputs(text != NULL ? text : "?", stdout);
	free(text);
}

static int
run_get(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_settings l = {0};
	const char *device;
	const char *name = c->n_pos > 1 ? c->pos[1] : NULL;
	int64_t pid, did, version = 0;
	int rc = 1;

	if (one_device(c, &device) != 0 || (name != NULL && check_name(c, name) != 0))
		return 2;
	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (find_ids(c, store, device, &pid, &did) != 0)
		goto out;
	int r = dg_settings_effective(dg_store_reader(store), pid, did, &l, &version);
	if (r != 0) {
		fprintf(stderr, "devgate settings get: %s\n", strerror(-r));
		goto out;
	}
	if (name != NULL) {
		const dg_setting *s = dg_settings_find(&l, name);
		if (s == NULL) {
			fprintf(stderr, "devgate settings get: no setting %s\n", name);
			goto out;
		}
		if (c->json) {
			printf("{\"name\": \"%s\", \"type\": \"%s\", \"value\": ", s->name,
			       dg_settings_type_name(s->type));
			print_value(s);
			printf(", \"version\": %lld}\n", (long long)version);
		} else {
			print_value(s);
			printf("\n");
		}
		rc = 0;
		goto out;
	}
	if (c->json) {
		uint8_t *body = NULL;
		size_t len = 0;
		if (dg_settings_encode(&l, version, DG_COAP_FMT_JSON, &body, &len) != 0) {
			fprintf(stderr, "devgate settings get: %s\n", strerror(ENOMEM));
			goto out;
		}
		printf("%.*s\n", (int)len, (const char *)body);
		free(body);
		rc = 0;
		goto out;
	}
	char when[32] = "never";
	if (version > 0)
		dg_cli_iso8601(version, when, sizeof(when));
	printf("version %lld (%s)\n", (long long)version, when);
	for (size_t i = 0; i < l.n; i++) {
		printf("%-32s %-6s ", l.v[i].name, dg_settings_type_name(l.v[i].type));
		print_value(&l.v[i]);
		printf("\n");
	}
	rc = 0;
out:
	dg_settings_clear(&l);
	dg_cli_close(cfg, store);
	return rc;
}

/*
 * Replaces `path` with `text` atomically: a temporary file in the same
 * directory, fsync, rename over, fsync of the directory. Returns 0 or a
 * negative errno.
 */
static int
write_atomic(const char *dir, const char *path, const char *text)
{
	char tmp[4200];
	size_t len = strlen(text);
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s/.settings.json.%ld.tmp", dir, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0) {
			rc = -errno;
			break;
		}
		off += (size_t)n;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0) {
		unlink(tmp);
		return rc;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

/*
 * `set` and `delete` of a project setting: settings.json is edited (the
 * other keys keep their order and form), written atomically, and the
 * store made to match it.
 */
static int
change_project(const dg_cli *c, dg_config *cfg, dg_store *store, const char *name,
               const dg_setting *v)
{
	char dir[4096], path[4200], err[5000];
	char *text = NULL, *out_text = NULL;
	size_t len = 0;
	dg_settings l = {0};
	cJSON *root = NULL;
	struct stat sb;
	int rc = 1, changed = 0;

	snprintf(dir, sizeof(dir), "%s/%s", cfg->projects_dir, c->pos[0]);
	snprintf(path, sizeof(path), "%s/settings.json", dir);
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "devgate %s: no project directory %s\n", c->cmd->name, dir);
		return 1;
	}
	int r = dg_confdir_read_file(path, FILE_MAX, &text, &len);
	if (r == -ENOENT) {
		root = cJSON_CreateObject();
	} else if (r != 0) {
		fprintf(stderr, "devgate %s: %s: cannot read: %s\n", c->cmd->name, path,
		        strerror(-r));
		goto out;
	} else if (dg_settings_parse_file(path, text, len, &l, err, sizeof(err)) != 0) {
		fprintf(stderr, "devgate %s: %s (fix the file first)\n", c->cmd->name, err);
		goto out;
	} else {
		root = cJSON_Parse(text);
		dg_settings_clear(&l);
	}
	if (root == NULL) {
		fprintf(stderr, "devgate %s: %s\n", c->cmd->name, strerror(ENOMEM));
		goto out;
	}
	if (v == NULL) {
		if (cJSON_GetObjectItemCaseSensitive(root, name) == NULL) {
			fprintf(stderr, "devgate %s: no setting %s in %s\n", c->cmd->name, name,
			        path);
			goto out;
		}
		cJSON_DeleteItemFromObjectCaseSensitive(root, name);
	} else {
		cJSON *item = dg_settings_to_json(v);
		if (item == NULL)
			goto out;
		if (cJSON_GetObjectItemCaseSensitive(root, name) != NULL)
			cJSON_ReplaceItemInObjectCaseSensitive(root, name, item);
		else
			cJSON_AddItemToObject(root, name, item);
	}
	out_text = cJSON_Print(root);
	if (out_text == NULL)
		goto out;
	/* What the daemon will read back from the file: the store gets the same. */
	if (dg_settings_parse_file(path, out_text, strlen(out_text), &l, err, sizeof(err)) != 0) {
		fprintf(stderr, "devgate %s: %s\n", c->cmd->name, err);
		goto out;
	}
	size_t n = strlen(out_text);
	char *with_nl = realloc(out_text, n + 2);
	if (with_nl == NULL)
		goto out;
	out_text = with_nl;
	memcpy(out_text + n, "\n", 2);
	r = write_atomic(dir, path, out_text);
	if (r != 0) {
		fprintf(stderr, "devgate %s: %s: cannot write: %s\n", c->cmd->name, path,
		        strerror(-r));
		goto out;
	}
	r = dg_store_ensure_project(store, c->pos[0]);
	if (r == 0)
		r = dg_settings_sync_slug(store, c->pos[0], &l, &changed);
	if (r != 0) {
		fprintf(stderr,
		        "devgate %s: %s written; the store: %s (the daemon reads the file"
		        " on its next reload)\n",
		        c->cmd->name, path, strerror(-r));
		goto out;
	}
	rc = 0;
out:
	free(text);
	free(out_text);
	cJSON_Delete(root);
	dg_settings_clear(&l);
	return rc;
}

/* `set` (v the new value) and `delete` (v NULL) of a device's override. */
static int
change_device(const dg_cli *c, dg_store *store, const char *device, const char *name,
              const dg_setting *v)
{
	dg_settings_override o = {.name = name, .del = v == NULL};
	if (find_ids(c, store, device, &o.project_id, &o.device_id) != 0)
		return 1;
	if (v != NULL)
		o.value = *v;
	int r = dg_store_run(store, dg_settings_override_apply, &o);
	if (r == -ENOENT) {
		fprintf(stderr, "devgate %s: device %s has no override %s\n", c->cmd->name, device,
		        name);
		return 1;
	}
	if (r != 0) {
		fprintf(stderr, "devgate %s: %s\n", c->cmd->name,
		        r == -E2BIG ? "too many settings" : strerror(-r));
		return 1;
	}
	return 0;
}

/* `settings set` (value c->pos[2]) and `settings delete`. */
static int
change(const dg_cli *c, int del)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	dg_setting v;
	const char *device, *name = c->pos[1];
	char why[160];
	int type = -1, rc = 1;

	memset(&v, 0, sizeof(v));
	if (one_device(c, &device) != 0 || check_name(c, name) != 0)
		return 2;
	if (c->type != NULL && (type = dg_settings_type_parse(c->type)) < 0) {
		fprintf(stderr, "devgate %s: --type must be int, float, bool or string\n",
		        c->cmd->name);
		return 2;
	}
	if (!del) {
		if (dg_settings_from_text(c->pos[2], type, &v, why, sizeof(why)) != 0) {
			fprintf(stderr, "devgate %s: %s: %s\n", c->cmd->name, c->pos[2], why);
			return 2;
		}
		snprintf(v.name, sizeof(v.name), "%s", name);
	}
	if (dg_cli_open(c, &cfg, &store) != 0)
		goto out;
	if (device != NULL)
		rc = change_device(c, store, device, name, del ? NULL : &v);
	else
		rc = change_project(c, cfg, store, name, del ? NULL : &v);
out:
	free(v.s);
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

/* Prints one device's status; with arr, adds it to arr instead. */
static int
print_status(void *arg, const dg_settings_status_row *r)
{
	cJSON *arr = arg;
	cJSON *errs = r->errors != NULL ? cJSON_Parse(r->errors) : NULL;
	const cJSON *e;

	if (arr != NULL) {
		cJSON *o = cJSON_CreateObject();
		if (o == NULL) {
			cJSON_Delete(errs);
			return -ENOMEM;
		}
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "device", r->device);
		cJSON_AddNumberToObject(o, "current", (double)r->current);
		if (r->applied >= 0) {
			cJSON_AddNumberToObject(o, "applied", (double)r->applied);
			cJSON_AddNumberToObject(o, "reported_at", (double)r->reported_at);
		} else {
			cJSON_AddNullToObject(o, "applied");
			cJSON_AddNullToObject(o, "reported_at");
		}
		cJSON_AddBoolToObject(o, "up_to_date", r->applied == r->current);
		cJSON_AddItemToObject(o, "errors", errs != NULL ? errs : cJSON_CreateArray());
		return 0;
	}
	if (r->applied < 0) {
		printf("%s: never reported (current version %lld)\n", r->device,
		       (long long)r->current);
		return 0;
	}
	char when[32];
	dg_cli_iso8601(r->reported_at, when, sizeof(when));
	printf("%s: applied %lld, %s (current %lld), reported %s\n", r->device,
	       (long long)r->applied, r->applied == r->current ? "up to date" : "behind",
	       (long long)r->current, when);
	cJSON_ArrayForEach(e, errs)
	{
		const cJSON *key = cJSON_GetObjectItemCaseSensitive(e, "setting_key");
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "error_code");
		const cJSON *details = cJSON_GetObjectItemCaseSensitive(e, "details");
		printf("  rejected %s: error_code %d%s%s\n",
		       cJSON_IsString(key) ? key->valuestring : "?",
		       cJSON_IsNumber(code) ? code->valueint : -1,
		       cJSON_IsString(details) ? ": " : "",
		       cJSON_IsString(details) ? details->valuestring : "");
	}
	cJSON_Delete(errs);
	return 0;
}

static int
run_status(const dg_cli *c)
{
	dg_config *cfg = NULL;
	dg_store *store = NULL;
	cJSON *arr = NULL;
	int64_t pid, did;
	int rc = 1;

	if (dg_cli_open(c, &cfg, &store) != 0)
		return 1;
	if (find_ids(c, store, NULL, &pid, &did) != 0)
		goto out;
	if (c->json && (arr = cJSON_CreateArray()) == NULL)
		goto out;
	int r = dg_settings_status_each(dg_store_reader(store), pid, print_status, arr);
	if (r != 0) {
		fprintf(stderr, "devgate settings status: %s\n", strerror(-r));
		goto out;
	}
	if (arr != NULL) {
		r = dg_cli_print_json(arr);
		arr = NULL;
		if (r != 0)
			goto out;
	}
	rc = 0;
out:
	cJSON_Delete(arr);
	dg_cli_close(cfg, store);
	return rc;
}

static const dg_cli_cmd cmds[] = {
        {"settings get", "[-c FILE] <project> [NAME] [--device D] [--json]",
         "Prints the effective settings of a device (its project's merged with its overrides)"
         " or of the project, with their version; with NAME, that setting's value.",
         DG_CLI_CONFIG | DG_CLI_JSON | DG_CLI_DEVICE, 1, 2, run_get},
        {"settings set", "[-c FILE] [--] <project> NAME VALUE [--device D] [--type T]",
         "Sets a setting: without --device in the project's settings.json (and the store),"
         " with it as an override of that device. VALUE's type is inferred (true/false a"
         " bool, an integer an int, a number with '.', 'e' or 'E' a float, else a string)"
         " unless --type says.",
         DG_CLI_CONFIG | DG_CLI_DEVICE | DG_CLI_TYPE, 3, 3, run_set},
        {"settings delete", "[-c FILE] <project> NAME [--device D]",
         "Deletes a setting from the project's settings.json, or a device's override.",
         DG_CLI_CONFIG | DG_CLI_DEVICE, 2, 2, run_delete},
        {"settings status", "[-c FILE] <project> [--json]",
         "Shows per device the settings version it applied, whether that is the current"
         " one, and the keys it rejected with their error codes.",
         DG_CLI_CONFIG | DG_CLI_JSON, 1, 1, run_status},
};

int
dg_cli_settings(int argc, char **argv)
{
	return dg_cli_group("settings", cmds, sizeof(cmds) / sizeof(cmds[0]), argc, argv);
}
