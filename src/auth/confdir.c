/*
 * Reading the projects directory into the store.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devgate/confdir.h"
#include "devgate/log.h"
#include "devgate/registry.h"
#include "devgate/settings.h"

#define PSK_FILE_MAX    (16u << 20)
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

int
dg_confdir_key_hex(const char *hex, uint8_t *key, size_t *len)
{
	size_t hl = strlen(hex);
	if (hl == 0 || hl % 2 != 0 || hl / 2 > DG_PSK_MAX_KEY)
		return -ERANGE;
	for (size_t i = 0; i < hl; i += 2) {
		int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
		if (hi < 0 || lo < 0) {
			explicit_bzero(key, DG_PSK_MAX_KEY);
			return -EINVAL;
		}
		key[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	*len = hl / 2;
	return 0;
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

/*
 * Parses JSON text strictly: nothing but white space may follow the value,
 * and no string may hold an escaped NUL (cJSON would cut the string there
 * silently, so "ab\u0000cd" would read as "ab"). Returns the root or NULL
 * with a reason in err.
 */
static cJSON *
parse_json(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
	const char *end = NULL;
	cJSON *root;

	for (size_t i = 0; i + 6 <= len; i++) {
		if (text[i] == '\\' && text[i + 1] == 'u' && text[i + 2] == '0' &&
		    text[i + 3] == '0' && text[i + 4] == '0' && text[i + 5] == '0') {
			size_t line = 1;
			for (size_t j = 0; j < i; j++)
				line += text[j] == '\n';
			snprintf(err, errlen, "%s: line %zu: \\u0000 (NUL) is not allowed", path,
			         line);
			return NULL;
		}
		if (text[i] == '\\')
			i++; /* Skip the escaped character, so "\\\\u0000" is not taken for one. */
	}
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL) {
		size_t line = 1;
		if (end != NULL && end >= text && end <= text + len)
			for (const char *p = text; p < end; p++)
				line += *p == '\n';
		snprintf(err, errlen, "%s: line %zu: malformed JSON", path, line);
		return NULL;
	}
	for (; end != NULL && end < text + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
			size_t line = 1;
			for (const char *p = text; p < end; p++)
				line += *p == '\n';
			snprintf(err, errlen, "%s: line %zu: text after the JSON value", path,
			         line);
			cJSON_Delete(root);
			return NULL;
		}
	}
	return root;
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
		if (*slot != NULL) {
			snprintf(err, errlen, "%s: [%zu].%s: given twice", path, idx, f->string);
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
		int r = dg_confdir_key_hex(key_hex, buf, &klen);
		if (r == -ERANGE) {
			snprintf(err, errlen, "%s: [%zu].key_hex: must be 2..%d hex digits, even",
			         path, idx, 2 * DG_PSK_MAX_KEY);
			return -EINVAL;
		}
		if (r != 0) {
			snprintf(err, errlen, "%s: [%zu].key_hex: must be hex digits", path, idx);
			return -EINVAL;
		}
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

/* FNV-1a of a C string: the slot of an identity in the repeat check below. */
static uint64_t
str_hash(const char *str)
{
	uint64_t h = 1469598103934665603ull;
	for (; *str != '\0'; str++)
		h = (h ^ (unsigned char)*str) * 1099511628211ull;
	return h;
}

/*
 * Finds an earlier entry with the identity of out[i] in a table of
 * `mask + 1` slots (open addressing, linear probing; a slot holds an entry's
 * index + 1, 0 when empty), or adds out[i]. Returns that entry's index, or
 * -1 when the identity is new. O(1) on average, so a file of 100k
 * credentials is checked in milliseconds, where comparing each entry with
 * every earlier one took minutes.
 */
static long
seen_identity(size_t *slots, size_t mask, const dg_psk_entry *out, size_t i)
{
	for (size_t k = (size_t)str_hash(out[i].identity) & mask;; k = (k + 1) & mask) {
		if (slots[k] == 0) {
			slots[k] = i + 1;
			return -1;
		}
		if (strcmp(out[slots[k] - 1].identity, out[i].identity) == 0)
			return (long)(slots[k] - 1);
	}
}

int
dg_confdir_parse_psk(const char *path, const char *slug, const char *text, size_t len,
                     dg_psk_entry **entries, size_t *n, char *err, size_t errlen)
{
	cJSON *root = parse_json(path, text, len, err, errlen);
	dg_psk_entry *out = NULL;
	size_t count = 0, mask = 1, *slots = NULL;
	int rc = 0;

	if (root == NULL)
		return -EINVAL;
	if (!cJSON_IsArray(root)) {
		snprintf(err, errlen, "%s: must be an array of credentials", path);
		rc = -EINVAL;
		goto out;
	}
	count = (size_t)cJSON_GetArraySize(root);
	/* At least twice as many slots as entries: probes stay short. */
	while (mask < 2 * count)
		mask = mask << 1 | 1;
	out = calloc(count ? count : 1, sizeof(*out));
	slots = calloc(mask + 1, sizeof(*slots));
	if (out == NULL || slots == NULL) {
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
		long j = seen_identity(slots, mask, out, i);
		if (j >= 0) {
			snprintf(err, errlen, "%s: [%zu].identity: %s repeats [%ld]", path, i,
			         out[i].identity, j);
			rc = -EINVAL;
			goto out;
		}
		i++;
	}
	*entries = out;
	*n = count;
	out = NULL;
out:
	free(slots);
	dg_confdir_psk_free(out, count);
	cJSON_Delete(root);
	return rc;
}

int
dg_confdir_read_file(const char *path, size_t max, char **text, size_t *len)
{
	struct stat sb;
	FILE *f = NULL;
	int rc = 0;
	/*
	 * O_NONBLOCK: a FIFO put where a file should be would otherwise block
	 * the open, and with it every later reload and the daemon's stop.
	 */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) != 0)
		rc = -errno;
	else if (!S_ISREG(sb.st_mode) || (size_t)sb.st_size > max)
		rc = S_ISREG(sb.st_mode) ? -EFBIG : S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL;
	else if ((f = fdopen(fd, "rb")) == NULL)
		rc = -errno;
	if (rc != 0) {
		close(fd);
		return rc;
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

/* Logs a file that cannot be used; what it gave before stays in force. */
static void
reject(const char *reason)
{
	dg_log(DG_LOG_ERROR, "config.rejected", "%s (file skipped; what it gave before stays)",
	       reason);
}

int
dg_confdir_parse_project(const char *path, const char *text, size_t len, dg_project_settings *out,
                         char *name, size_t name_cap, char *err, size_t errlen)
{
	cJSON *root = parse_json(path, text, len, err, errlen);
	const cJSON *f;
	int seen_name = 0, seen_enabled = 0, seen_auto = 0, rc = -EINVAL;

	out->name = NULL;
	out->enabled = 1;
	out->auto_provision = 1;
	if (root == NULL)
		return -EINVAL;
	if (!cJSON_IsObject(root)) {
		snprintf(err, errlen, "%s: must be an object", path);
		goto out;
	}
	cJSON_ArrayForEach(f, root)
	{
		int *seen = NULL;
		if (strcmp(f->string, "name") == 0)
			seen = &seen_name;
		else if (strcmp(f->string, "enabled") == 0)
			seen = &seen_enabled;
		else if (strcmp(f->string, "auto_provision") == 0)
			seen = &seen_auto;
		if (seen == NULL) {
			snprintf(err, errlen, "%s: %.64s: unknown key", path, f->string);
			goto out;
		}
		if (*seen) {
			snprintf(err, errlen, "%s: %s: given twice", path, f->string);
			goto out;
		}
		*seen = 1;
		if (seen == &seen_name) {
			if (!cJSON_IsString(f) || !device_name_valid(f->valuestring)) {
				snprintf(err, errlen,
				         "%s: name: must be a string of 1..%d printable bytes",
				         path, DEVICE_NAME_MAX);
				goto out;
			}
			snprintf(name, name_cap, "%s", f->valuestring);
			out->name = name;
		} else if (!cJSON_IsBool(f)) {
			snprintf(err, errlen, "%s: %s: must be true or false", path, f->string);
			goto out;
		} else if (seen == &seen_enabled) {
			out->enabled = cJSON_IsTrue(f);
		} else {
			out->auto_provision = cJSON_IsTrue(f);
		}
	}
	rc = 0;
out:
	cJSON_Delete(root);
	return rc;
}

/* Names of the regular *.pem files of a directory, sorted; NULL-terminated. */
static char **
list_pem(const char *dir, size_t *n)
{
	struct dirent **ents = NULL;
	char **names = NULL;
	int count = scandir(dir, &ents, NULL, alphasort);

	*n = 0;
	if (count < 0)
		return NULL;
	names = calloc((size_t)count + 1, sizeof(*names));
	for (int i = 0; i < count; i++) {
		const char *nm = ents[i]->d_name;
		size_t l = strlen(nm);
		if (names != NULL && nm[0] != '.' && l > 4 && strcmp(nm + l - 4, ".pem") == 0)
			names[(*n)++] = strdup(nm);
		free(ents[i]);
	}
	free(ents);
	return names;
}

static void
free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/*
 * Reads one project's cas/ or crls/ into `files` (one entry per *.pem).
 * A file that cannot be used is logged and marked not ok. Returns the
 * number of such files.
 */
static int
read_trust_dir(const char *dir, const char *slug, const char *sub, dg_trust_file **files,
               size_t *n_files, char ***names_out)
{
	char path[4096], err[5000], src[512];
	size_t n = 0;
	char **names;
	int bad = 0;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, slug, sub);
	names = list_pem(path, &n);
	*files = calloc(n + 1, sizeof(**files));
	*n_files = 0;
	*names_out = names;
	if (names == NULL || *files == NULL)
		return 0;
	for (size_t i = 0; i < n; i++) {
		dg_trust_file *f = &(*files)[(*n_files)++];
		char *text = NULL;
		size_t len = 0;
		snprintf(src, sizeof(src), "%s/%s", sub, names[i]);
		free(names[i]);
		names[i] = strdup(src);
		f->source = names[i];
		snprintf(path, sizeof(path), "%s/%s/%s", dir, slug, src);
		int rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
		if (rc != 0) {
			snprintf(err, sizeof(err), "%s: cannot read: %s", path, strerror(-rc));
		} else if (strcmp(sub, "cas") == 0) {
			dg_ca_cert *cas = NULL;
			size_t n_cas = 0;
			char why[400];
			rc = dg_trust_read_cas(text, len, dg_now_ms(), &cas, &n_cas, why,
			                       sizeof(why));
			if (rc == 0) {
				f->cas = cas;
				f->n_cas = n_cas;
				f->ok = 1;
			} else {
				snprintf(err, sizeof(err), "%s: %s", path, why);
			}
		} else {
			uint8_t *blob = NULL;
			size_t blob_len = 0;
			char why[400];
			rc = dg_trust_read_crls(text, len, &blob, &blob_len, why, sizeof(why));
			if (rc == 0) {
				f->crl = blob;
				f->crl_len = blob_len;
				f->ok = 1;
			} else {
				snprintf(err, sizeof(err), "%s: %s", path, why);
			}
		}
		free(text);
		if (!f->ok) {
			reject(err);
			bad++;
		}
	}
	return bad;
}

static void
free_trust_files(dg_trust_file *files, size_t n, char **names)
{
	for (size_t i = 0; files != NULL && i < n; i++) {
		dg_trust_ca_free((dg_ca_cert *)(uintptr_t)files[i].cas, files[i].n_cas);
		free((void *)(uintptr_t)files[i].crl);
	}
	free(files);
	free_names(names, n);
}

/*
 * Reads settings.json into the store: no file means no project settings;
 * a bad file is logged and what it gave before stays. Returns 0, 1 when
 * the file was rejected, or a negative errno.
 */
static int
import_settings(const char *dir, const char *slug, dg_store *st)
{
	char path[4096], err[5000];
	char *text = NULL;
	size_t len = 0;
	dg_settings l = {0};
	int rc;

	snprintf(path, sizeof(path), "%s/%s/settings.json", dir, slug);
	rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
	if (rc != 0 && rc != -ENOENT) {
		snprintf(err, sizeof(err), "%s: cannot read: %s", path, strerror(-rc));
		reject(err);
		return 1;
	}
	if (rc == 0) {
		rc = dg_settings_parse_file(path, text, len, &l, err, sizeof(err));
		free(text);
		if (rc == -EINVAL) {
			reject(err);
			return 1;
		}
		if (rc != 0)
			return rc;
	}
	rc = dg_settings_sync_slug(st, slug, &l, NULL);
	dg_settings_clear(&l);
	return rc;
}

/* Imports one project directory. Returns 0, the number of files rejected, or a negative errno. */
static int
import_project(const char *dir, const char *slug, dg_store *st)
{
	char path[4096], err[5000], name[DEVICE_NAME_MAX + 1];
	char *text = NULL;
	size_t len = 0, n = 0;
	dg_psk_entry *entries = NULL;
	int rc, bad = 0;

	/* project.json: settings; a bad file keeps the project's current ones. */
	snprintf(path, sizeof(path), "%s/%s/project.json", dir, slug);
	rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
	if (rc == 0 || rc == -ENOENT) {
		dg_project_settings ps = {NULL, 1, 1};
		if (rc == 0)
			rc = dg_confdir_parse_project(path, text, len, &ps, name, sizeof(name), err,
			                              sizeof(err));
		free(text);
		text = NULL;
		if (rc == 0 || rc == -ENOENT)
			rc = dg_store_set_project(st, slug, &ps);
		else if (rc == -EINVAL) {
			reject(err);
			bad++;
			rc = dg_store_ensure_project(st, slug);
		}
	} else {
		snprintf(err, sizeof(err), "%s: cannot read: %s", path, strerror(-rc));
		reject(err);
		bad++;
		rc = dg_store_ensure_project(st, slug);
	}
	if (rc < 0)
		return rc;

	/* cas/ and crls/ */
	dg_trust_file *cas = NULL, *crls = NULL;
	size_t n_cas = 0, n_crls = 0;
	char **ca_names = NULL, **crl_names = NULL;
	bad += read_trust_dir(dir, slug, "cas", &cas, &n_cas, &ca_names);
	bad += read_trust_dir(dir, slug, "crls", &crls, &n_crls, &crl_names);
	rc = dg_store_sync_trust(st, slug, cas, n_cas, crls, n_crls);
	free_trust_files(cas, n_cas, ca_names);
	free_trust_files(crls, n_crls, crl_names);
	if (rc < 0)
		return rc;

	/* settings.json */
	rc = import_settings(dir, slug, st);
	if (rc < 0)
		return rc;
	bad += rc;

	/* psk.json */
	snprintf(path, sizeof(path), "%s/%s/psk.json", dir, slug);
	rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
	if (rc == -ENOENT) {
		/* No psk.json: the project has no file credentials. */
		rc = dg_store_sync_psk(st, slug, NULL, 0);
		return rc < 0 ? rc : bad;
	}
	if (rc != 0) {
		snprintf(err, sizeof(err), "%s: cannot read: %s", path, strerror(-rc));
		reject(err);
		return bad + 1;
	}
	rc = dg_confdir_parse_psk(path, slug, text, len, &entries, &n, err, sizeof(err));
	explicit_bzero(text, len);
	free(text);
	if (rc == -EINVAL) {
		reject(err);
		return bad + 1;
	}
	if (rc != 0)
		return rc;
	rc = dg_store_sync_psk(st, slug, entries, n);
	dg_confdir_psk_free(entries, n);
	return rc < 0 ? rc : bad;
}

int
dg_confdir_import(const char *dir, dg_store *st, int *n_errors)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **present = NULL;
	size_t n_present = 0, cap = 0;
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
		if (n_present == cap) {
			cap = cap ? cap * 2 : 16;
			char **g = realloc(present, cap * sizeof(*g));
			if (g == NULL) {
				rc = -ENOMEM;
				break;
			}
			present = g;
		}
		present[n_present] = strdup(de->d_name);
		if (present[n_present] == NULL) {
			rc = -ENOMEM;
			break;
		}
		n_present++;
	}
	closedir(d);
	/* A project whose directory is gone is disabled; its devices and data stay. */
	if (rc == 0)
		rc = dg_store_disable_missing(st, (const char *const *)present, n_present);
	free_names(present, n_present);
	return rc;
}

/* Reads and judges one file of cas/ or crls/; prints why it is bad. Returns 1 when bad. */
static int
check_trust_file(const char *path, int is_ca, size_t *count, FILE *out)
{
	char *text = NULL, why[400];
	size_t len = 0;
	int rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
	if (rc != 0) {
		fprintf(out, "  error: %s: cannot read: %s\n", path, strerror(-rc));
		return 1;
	}
	if (is_ca) {
		dg_ca_cert *cas = NULL;
		size_t n = 0;
		rc = dg_trust_read_cas(text, len, dg_now_ms(), &cas, &n, why, sizeof(why));
		if (rc == 0)
			*count += n;
		dg_trust_ca_free(cas, n);
	} else {
		uint8_t *blob = NULL;
		size_t blob_len = 0;
		rc = dg_trust_read_crls(text, len, &blob, &blob_len, why, sizeof(why));
		if (rc == 0)
			(*count)++;
		/* Not a skipped file: an expired CRL refuses its issuer's certificates. */
		if (rc == 0 &&
		    dg_trust_crls_expired(blob, blob_len, dg_now_ms(), why, sizeof(why)) > 0)
			rc = -EINVAL;
		free(blob);
	}
	free(text);
	if (rc != 0)
		fprintf(out, "  error: %s: %s\n", path, why);
	return rc != 0;
}

int
dg_confdir_check(const char *dir, FILE *out)
{
	struct dirent **ents = NULL;
	int n = scandir(dir, &ents, NULL, alphasort), bad = 0;

	if (n < 0) {
		fprintf(out, "error: %s: cannot read: %s\n", dir, strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096], err[5000], name[DEVICE_NAME_MAX + 1];
		const char *slug = ents[i]->d_name;
		struct stat sb;
		size_t n_cas = 0, n_crls = 0, n_psk = 0, n_settings = 0;
		int errors = 0;

		snprintf(path, sizeof(path), "%s/%s", dir, slug);
		if (slug[0] == '.' || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
			goto next;
		if (!dg_slug_valid(slug)) {
			fprintf(out,
			        "error: %s: not a valid project slug ([a-z0-9][a-z0-9-]{0,62})\n",
			        path);
			bad++;
			goto next;
		}
		dg_project_settings ps = {NULL, 1, 1};
		char *text = NULL;
		size_t len = 0;
		snprintf(path, sizeof(path), "%s/%s/project.json", dir, slug);
		int rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
		if (rc == 0) {
			if (dg_confdir_parse_project(path, text, len, &ps, name, sizeof(name), err,
			                             sizeof(err)) != 0) {
				fprintf(out, "  error: %s\n", err);
				errors++;
			}
			free(text);
		} else if (rc != -ENOENT) {
			fprintf(out, "  error: %s: cannot read: %s\n", path, strerror(-rc));
			errors++;
		}
		for (int kind = 0; kind < 2; kind++) {
			size_t nf = 0;
			snprintf(path, sizeof(path), "%s/%s/%s", dir, slug,
			         kind == 0 ? "cas" : "crls");
			char **files = list_pem(path, &nf);
			for (size_t j = 0; j < nf; j++) {
				char file[4200];
				snprintf(file, sizeof(file), "%s/%s", path, files[j]);
				errors += check_trust_file(file, kind == 0,
				                           kind == 0 ? &n_cas : &n_crls, out);
			}
			free_names(files, nf);
		}
		snprintf(path, sizeof(path), "%s/%s/settings.json", dir, slug);
		rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
		if (rc == 0) {
			dg_settings l = {0};
			if (dg_settings_parse_file(path, text, len, &l, err, sizeof(err)) != 0) {
				fprintf(out, "  error: %s\n", err);
				errors++;
			}
			n_settings = l.n;
			dg_settings_clear(&l);
			free(text);
		} else if (rc != -ENOENT) {
			fprintf(out, "  error: %s: cannot read: %s\n", path, strerror(-rc));
			errors++;
		}
		snprintf(path, sizeof(path), "%s/%s/psk.json", dir, slug);
		rc = dg_confdir_read_file(path, PSK_FILE_MAX, &text, &len);
		if (rc == 0) {
			dg_psk_entry *entries = NULL;
			if (dg_confdir_parse_psk(path, slug, text, len, &entries, &n_psk, err,
			                         sizeof(err)) != 0) {
				fprintf(out, "  error: %s\n", err);
				errors++;
			}
			dg_confdir_psk_free(entries, n_psk);
			explicit_bzero(text, len);
			free(text);
		} else if (rc != -ENOENT) {
			fprintf(out, "  error: %s: cannot read: %s\n", path, strerror(-rc));
			errors++;
		}
		fprintf(out,
		        "project %s: %s, %s, auto_provision %s, %zu CAs, %zu CRL files, %zu PSK"
		        " credentials, %zu settings%s\n",
		        slug, ps.name != NULL ? ps.name : slug, ps.enabled ? "enabled" : "disabled",
		        ps.auto_provision ? "on" : "off", n_cas, n_crls, n_psk, n_settings,
		        errors ? " (with errors above)" : "");
		bad += errors;
	next:
		free(ents[i]);
	}
	free(ents);
	return bad;
}
