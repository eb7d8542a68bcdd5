/*
 * Registry snapshots: an open-addressing hash table of PSK credentials
 * keyed by identity, plus the list of project slugs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "devgate/registry.h"

struct dg_registry {
	atomic_int refs;
	dg_psk_cred *creds; /* n_creds entries */
	size_t n_creds, cap_creds;
	uint32_t *slots; /* index+1 into creds, 0 = empty; n_slots is a power of two */
	size_t n_slots;
	char **slugs;
	size_t n_slugs, cap_slugs;
};

static uint64_t
hash_bytes(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

int
dg_slug_valid(const char *slug)
{
	size_t n = strlen(slug);
	if (n == 0 || n > DG_SLUG_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = slug[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
		if (!ok)
			return 0;
	}
	return 1;
}

int
dg_identity_split(const char *identity, size_t len, const char **id, size_t *id_len,
                  const char **slug, size_t *slug_len)
{
	char buf[DG_SLUG_MAX + 1];
	size_t at = len;

	if (len == 0 || len > DG_PSK_MAX_IDENTITY)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)identity[i];
		if (c < 0x20 || c == 0x7f)
			return -EINVAL;
		if (c == '@')
			at = i;
	}
	if (at == len || at == 0 || at + 1 == len || len - at - 1 > DG_SLUG_MAX)
		return -EINVAL;
	memcpy(buf, identity + at + 1, len - at - 1);
	buf[len - at - 1] = '\0';
	if (!dg_slug_valid(buf))
		return -EINVAL;
	*id = identity;
	*id_len = at;
	*slug = identity + at + 1;
	*slug_len = len - at - 1;
	return 0;
}

static int
add_slug(dg_registry *reg, const char *slug)
{
	for (size_t i = 0; i < reg->n_slugs; i++)
		if (strcmp(reg->slugs[i], slug) == 0)
			return 0;
	if (reg->n_slugs == reg->cap_slugs) {
		size_t cap = reg->cap_slugs ? reg->cap_slugs * 2 : 16;
		char **p = realloc(reg->slugs, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		reg->slugs = p;
		reg->cap_slugs = cap;
	}
	reg->slugs[reg->n_slugs] = strdup(slug);
	if (reg->slugs[reg->n_slugs] == NULL)
		return -ENOMEM;
	reg->n_slugs++;
	return 0;
}

static int
add_psk(void *arg, const dg_psk_row *row)
{
	dg_registry *reg = arg;
	dg_psk_cred *c;

	if (row->key_len == 0 || row->key_len > DG_PSK_MAX_KEY)
		return 0; /* The importer never stores such keys; skip rather than fail. */
	if (reg->n_creds == reg->cap_creds) {
		size_t cap = reg->cap_creds ? reg->cap_creds * 2 : 64;
		dg_psk_cred *p = realloc(reg->creds, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		reg->creds = p;
		reg->cap_creds = cap;
	}
	c = &reg->creds[reg->n_creds];
	memset(c, 0, sizeof(*c));
	c->identity = strdup(row->identity);
	c->slug = strdup(row->slug);
	c->device = strdup(row->device);
	if (c->identity == NULL || c->slug == NULL || c->device == NULL) {
		free(c->identity);
		free(c->slug);
		free(c->device);
		return -ENOMEM;
	}
	c->project_id = row->project_id;
	c->device_id = row->device_id;
	memcpy(c->key, row->key, row->key_len);
	c->key_len = row->key_len;
	c->project_enabled = row->project_enabled;
	c->device_blocked = row->device_blocked;
	reg->n_creds++;
	return add_slug(reg, row->slug);
}

static int
index_creds(dg_registry *reg)
{
	size_t n = 16;
	while (n < reg->n_creds * 2)
		n <<= 1;
	reg->slots = calloc(n, sizeof(*reg->slots));
	if (reg->slots == NULL)
		return -ENOMEM;
	reg->n_slots = n;
	for (size_t i = 0; i < reg->n_creds; i++) {
		const char *id = reg->creds[i].identity;
		size_t h = (size_t)hash_bytes(id, strlen(id)) & (n - 1);
		while (reg->slots[h] != 0)
			h = (h + 1) & (n - 1);
		reg->slots[h] = (uint32_t)(i + 1);
	}
	return 0;
}

static int
add_project_slug(void *arg, const dg_device_row *row)
{
	return add_slug(arg, row->project);
}

static void
registry_free(dg_registry *reg)
{
	if (reg == NULL)
		return;
	for (size_t i = 0; i < reg->n_creds; i++) {
		free(reg->creds[i].identity);
		free(reg->creds[i].slug);
		free(reg->creds[i].device);
	}
	/* Keys are secrets: wipe them before the memory goes back. */
	if (reg->creds != NULL)
		explicit_bzero(reg->creds, reg->cap_creds * sizeof(*reg->creds));
	free(reg->creds);
	free(reg->slots);
	for (size_t i = 0; i < reg->n_slugs; i++)
		free(reg->slugs[i]);
	free(reg->slugs);
	free(reg);
}

int
dg_registry_build(dg_store *st, dg_registry **out)
{
	dg_registry *reg = calloc(1, sizeof(*reg));
	int rc;

	if (reg == NULL)
		return -ENOMEM;
	atomic_init(&reg->refs, 1);
	rc = dg_store_each_psk(st, add_psk, reg);
	if (rc == 0)
		rc = dg_store_each_device(st, add_project_slug, reg);
	if (rc == 0)
		rc = index_creds(reg);
	if (rc != 0) {
		registry_free(reg);
		return rc;
	}
	*out = reg;
	return 0;
}

dg_registry *
dg_registry_ref(dg_registry *reg)
{
	atomic_fetch_add(&reg->refs, 1);
	return reg;
}

void
dg_registry_unref(dg_registry *reg)
{
	if (reg != NULL && atomic_fetch_sub(&reg->refs, 1) == 1)
		registry_free(reg);
}

const dg_psk_cred *
dg_registry_find_psk(const dg_registry *reg, const char *identity, size_t len)
{
	size_t mask = reg->n_slots - 1;
	size_t h = (size_t)hash_bytes(identity, len) & mask;

	for (uint32_t s; (s = reg->slots[h]) != 0; h = (h + 1) & mask) {
		const dg_psk_cred *c = &reg->creds[s - 1];
		if (strlen(c->identity) == len && memcmp(c->identity, identity, len) == 0)
			return c;
	}
	return NULL;
}

int
dg_registry_has_project(const dg_registry *reg, const char *slug, size_t len)
{
	for (size_t i = 0; i < reg->n_slugs; i++)
		if (strlen(reg->slugs[i]) == len && memcmp(reg->slugs[i], slug, len) == 0)
			return 1;
	return 0;
}

size_t
dg_registry_psk_count(const dg_registry *reg)
{
	return reg->n_creds;
}
