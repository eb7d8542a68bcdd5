/*
 * Reading the projects directory into the store.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "devgate/confdir.h"
#include "devgate/log.h"
#include "devgate/registry.h"

#define PSK_FILE_MAX    (4u << 20)
#define DEVICE_NAME_MAX 128

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Returns 1 when s is a usable device name: 1..128 printable bytes, no control characters. */
static int
device_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > DEVICE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

void
dg_confdir_psk_free(dg_psk_entry *entries, size_t n)
{
	if (entries == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free((void *)(uintptr_t)entries[i].identity);
		free((void *)(uintptr_t)entries[i].device);
		if (entries[i].key != NULL)
			explicit_bzero((void *)(uintptr_t)entries[i].key, entries[i].key_len);
		free((void *)(uintptr_t)entries[i].key);
	}
	free(entries);
}

/* Parses one element of the psk.json array into *e. */
static int
parse_entry(const cJSON *item, size_t idx, const char *path, const char *slug, dg_psk_entry *e,
            char *err, size_t errlen)
{
	const cJSON *f;
	const char *id = NULL, *dev = NULL, *key = NULL, *key_hex = NULL;
	const char *pid, *pslug;
	size_t pid_len, pslug_len;

	if (!cJSON_IsObject(item)) {
		snprintf(err, errlen, "%s: [%zu]: must be an object", path, idx);
		return -EINVAL;
	}
	cJSON_ArrayForEach(f, item)
	{
		const char **slot = NULL;
		if (strcmp(f->string, "identity") == 0)
			slot = &id;
		else if (strcmp(f->string, "device") == 0)
			slot = &dev;
		else if (strcmp(f->string, "key") == 0)
			slot = &key;
		else if (strcmp(f->string, "key_hex") == 0)
			slot = &key_hex;
		if (slot == NULL) {
			snprintf(err, errlen, "%s: [%zu].%s: unknown key", path, idx, f->string);
			return -EINVAL;
		}
		if (!cJSON_IsString(f)) {
			snprintf(err, errlen, "%s: [%zu].%s: must be a string", path, idx,
			         f->string);
			return -EINVAL;
		}
		*slot = f->valuestring;
	}
	if (id == NULL) {
		snprintf(err, errlen, "%s: [%zu].identity: required", path, idx);
		return -EINVAL;
	}
	if (dg_identity_split(id, strlen(id), &pid, &pid_len, &pslug, &pslug_len) != 0) {
		snprintf(err, errlen,
		         "%s: [%zu].identity: must be <psk-id>@<project-slug>, at most %d bytes",
		         path, idx, DG_PSK_MAX_IDENTITY);
		return -EINVAL;
	}
	if (strlen(slug) != pslug_len || memcmp(slug, pslug, pslug_len) != 0) {
		snprintf(err, errlen,
		         "%s: [%zu].identity: must end in @%s, the project of this directory", path,
		         idx, slug);
		return -EINVAL;
	}
	if (dev == NULL) {
		snprintf(err, errlen, "%s: [%zu].device: required", path, idx);
		return -EINVAL;
	}
	if (!device_name_valid(dev)) {
		snprintf(err, errlen, "%s: [%zu].device: must be 1..%d printable bytes", path, idx,
		         DEVICE_NAME_MAX);
		return -EINVAL;
	}
	if ((key == NULL) == (key_hex == NULL)) {
		snprintf(err, errlen, "%s: [%zu]: exactly one of key and key_hex is required", path,
		         idx);
		return -EINVAL;
	}
	uint8_t buf[DG_PSK_MAX_KEY];
	size_t klen;
	if (key != NULL) {
		klen = strlen(key);
		if (klen == 0 || klen > DG_PSK_MAX_KEY) {
			snprintf(err, errlen, "%s: [%zu].key: must be 1..%d bytes", path, idx,
			         DG_PSK_MAX_KEY);
			return -EINVAL;
		}
		memcpy(buf, key, klen);
	} else {
		size_t hl = strlen(key_hex);
		if (hl == 0 || hl % 2 != 0 || hl / 2 > DG_PSK_MAX_KEY) {
			snprintf(err, errlen, "%s: [%zu].key_hex: must be 2..%d hex digits, even",
			         path, idx, 2 * DG_PSK_MAX_KEY);
			return -EINVAL;
		}
		for (size_t i = 0; i < hl; i += 2) {
			int hi = hexval(key_hex[i]), lo = hexval(key_hex[i + 1]);
			if (hi < 0 || lo < 0) {
				snprintf(err, errlen, "%s: [%zu].key_hex: must be hex digits", path,
				         idx);
				explicit_bzero(buf, sizeof(buf));
				return -EINVAL;
			}
			buf[i / 2] = (uint8_t)(hi << 4 | lo);
		}
		klen = hl / 2;
	}
	e->identity = strdup(id);
	e->device = strdup(dev);
	uint8_t *k = malloc(klen);
	if (k != NULL)
		memcpy(k, buf, klen);
	explicit_bzero(buf, sizeof(buf));
	e->key = k;
	e->key_len = klen;
	if (e->identity == NULL || e->device == NULL || k == NULL)
		return -ENOMEM;
	return 0;
}

int
dg_confdir_parse_psk(const char *path, const char *slug, const char *text, size_t len,
                     dg_psk_entry **entries, size_t *n, char *err, size_t errlen)
{
	cJSON *root = cJSON_ParseWithLength(text, len);
	dg_psk_entry *out = NULL;
	size_t count = 0;
	int rc = 0;

	if (root == NULL) {
		const char *at = cJSON_GetErrorPtr();
		size_t line = 1;
		if (at != NULL && at >= text && at <= text + len)
			for (const char *p = text; p < at; p++)
				line += *p == '\n';
		snprintf(err, errlen, "%s: line %zu: malformed JSON", path, line);
		return -EINVAL;
	}
	if (!cJSON_IsArray(root)) {
		snprintf(err, errlen, "%s: must be an array of credentials", path);
		rc = -EINVAL;
		goto out;
	}
	count = (size_t)cJSON_GetArraySize(root);
	out = calloc(count ? count : 1, sizeof(*out));
	if (out == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	size_t i = 0;
	const cJSON *item;
	cJSON_ArrayForEach(item, root)
	{
		rc = parse_entry(item, i, path, slug, &out[i], err, errlen);
		if (rc != 0)
			goto out;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(out[j].identity, out[i].identity) == 0) {
				snprintf(err, errlen, "%s: [%zu].identity: %s repeats [%zu]", path,
				         i, out[i].identity, j);
				rc = -EINVAL;
				goto out;
			}
		}
		i++;
	}
	*entries = out;
	*n = count;
	out = NULL;
out:
	dg_confdir_psk_free(out, count);
	cJSON_Delete(root);
	return rc;
}

static int
read_small_file(const char *path, char **text, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat sb;
	int rc = 0;

	if (f == NULL)
		return -errno;
	if (fstat(fileno(f), &sb) != 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || (size_t)sb.st_size > PSK_FILE_MAX) {
		rc = S_ISREG(sb.st_mode) ? -EFBIG : -EISDIR;
		goto out;
	}
	*text = malloc((size_t)sb.st_size + 1);
	if (*text == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	*len = fread(*text, 1, (size_t)sb.st_size, f);
	(*text)[*len] = '\0';
out:
	fclose(f);
	return rc;
}

/* Imports one project directory. Returns 0, 1 when a file was rejected, or a negative errno. */
static int
import_project(const char *dir, const char *slug, dg_store *st)
{
	char path[4096], err[512];
	char *text = NULL;
	size_t len = 0, n = 0;
	dg_psk_entry *entries = NULL;
	int rc;

	rc = dg_store_ensure_project(st, slug);
	if (rc != 0)
		return rc;
	snprintf(path, sizeof(path), "%s/%s/psk.json", dir, slug);
	rc = read_small_file(path, &text, &len);
	if (rc == -ENOENT) {
		/* No psk.json: the project has no file credentials. */
		return dg_store_sync_psk(st, slug, NULL, 0);
	}
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "config.rejected", "%s: cannot read: %s", path, strerror(-rc));
		return 1;
	}
	rc = dg_confdir_parse_psk(path, slug, text, len, &entries, &n, err, sizeof(err));
	explicit_bzero(text, len);
	free(text);
	if (rc == -EINVAL) {
		dg_log(DG_LOG_ERROR, "config.rejected",
		       "%s (file skipped; what it gave before stays)", err);
		return 1;
	}
	if (rc != 0)
		return rc;
	rc = dg_store_sync_psk(st, slug, entries, n);
	dg_confdir_psk_free(entries, n);
	return rc;
}

int
dg_confdir_import(const char *dir, dg_store *st, int *n_errors)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int rc = 0;

	*n_errors = 0;
	if (d == NULL) {
		rc = -errno;
		dg_log(DG_LOG_ERROR, "config.rejected", "%s: cannot read: %s", dir,
		       strerror(errno));
		return rc;
	}
	while ((de = readdir(d)) != NULL) {
		char path[4096];
		struct stat sb;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
			continue;
		if (!dg_slug_valid(de->d_name)) {
			dg_log(DG_LOG_ERROR, "config.rejected",
			       "%s: not a valid project slug ([a-z0-9][a-z0-9-]{0,62}); skipped",
			       path);
			(*n_errors)++;
			continue;
		}
		rc = import_project(dir, de->d_name, st);
		if (rc < 0)
			break;
		*n_errors += rc;
		rc = 0;
	}
	closedir(d);
	return rc;
}
