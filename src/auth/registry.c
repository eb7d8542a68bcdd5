/*
 * Registry snapshots: open-addressing hash indexes over the PSK
 * credentials (by identity), the projects (by slug) and the certificate
 * devices (by project and certificate ID).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/log.h"
#include "devgate/registry.h"

/* An str_index of string keys to positions in an array: slots hold position+1, 0 = empty. */
typedef struct str_index {
	uint32_t *slots;
	size_t n_slots; /* Power of two. */
} str_index;

struct dg_registry {
	atomic_int refs;
	int64_t serial;
	dg_psk_cred *creds;
	size_t n_creds, cap_creds;
	dg_project *projects;
	size_t n_projects, cap_projects;
	dg_cert_device *devices;
	size_t n_devices, cap_devices;
	str_index by_identity, by_slug, by_cert;
};

static uint64_t
hash_bytes(uint64_t h, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull; /* FNV-1a */
	}
	return h;
}

static uint64_t
hash_cert(int64_t project_id, const char *cert_id, size_t len)
{
	uint64_t h =
	        hash_bytes(1469598103934665603ull, (const char *)&project_id, sizeof(project_id));
	return hash_bytes(h, cert_id, len);
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

/* Grows an array of `size`-byte elements to hold one more. */
static int
reserve(void **arr, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 16;
	void *p = realloc(*arr, ncap * size);
	if (p == NULL)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

static int
add_project(void *arg, const dg_project_row *row)
{
	dg_registry *reg = arg;
	if (reserve((void **)&reg->projects, &reg->cap_projects, reg->n_projects,
	            sizeof(*reg->projects)) != 0)
		return -ENOMEM;
	dg_project *p = &reg->projects[reg->n_projects];
	memset(p, 0, sizeof(*p));
	p->id = row->id;
	p->slug = strdup(row->slug);
	p->name = strdup(row->name);
	p->enabled = row->enabled;
	p->auto_provision = row->auto_provision;
	reg->n_projects++;
	return p->slug != NULL && p->name != NULL ? 0 : -ENOMEM;
}

static int
add_psk(void *arg, const dg_psk_row *row)
{
	dg_registry *reg = arg;
	dg_psk_cred *c;

	if (row->key_len == 0 || row->key_len > DG_PSK_MAX_KEY)
		return 0; /* The importer never stores such keys; skip rather than fail. */
	if (reserve((void **)&reg->creds, &reg->cap_creds, reg->n_creds, sizeof(*reg->creds)) != 0)
		return -ENOMEM;
	c = &reg->creds[reg->n_creds];
	memset(c, 0, sizeof(*c));
	c->identity = strdup(row->identity);
	c->slug = strdup(row->slug);
	c->device = strdup(row->device);
	c->project_id = row->project_id;
	c->device_id = row->device_id;
	memcpy(c->key, row->key, row->key_len);
	c->key_len = row->key_len;
	c->project_enabled = row->project_enabled;
	c->device_blocked = row->device_blocked;
	reg->n_creds++;
	return c->identity != NULL && c->slug != NULL && c->device != NULL ? 0 : -ENOMEM;
}

static int
add_cert_device(void *arg, const dg_device_row *row)
{
	dg_registry *reg = arg;
	if (row->certificate_id == NULL)
		return 0;
	if (reserve((void **)&reg->devices, &reg->cap_devices, reg->n_devices,
	            sizeof(*reg->devices)) != 0)
		return -ENOMEM;
	dg_cert_device *d = &reg->devices[reg->n_devices];
	memset(d, 0, sizeof(*d));
	d->project_id = row->project_id;
	d->device_id = row->id;
	d->blocked = row->blocked;
	d->cert_id = strdup(row->certificate_id);
	d->name = strdup(row->name);
	reg->n_devices++;
	return d->cert_id != NULL && d->name != NULL ? 0 : -ENOMEM;
}

/* Collects the CAs and CRLs of one project at a time, in store order. */
typedef struct ca_item {
	dg_ca_cert cert;
	int64_t project_id;
} ca_item;

typedef struct trust_collect {
	dg_registry *reg;
	ca_item *cas;
	size_t n_cas, cap_cas;
	dg_crl_row *crls;
	uint8_t **crl_copies;
	size_t n_crls, cap_crls;
} trust_collect;

static int
collect_ca(void *arg, const dg_ca_row *row)
{
	trust_collect *tc = arg;
	if (reserve((void **)&tc->cas, &tc->cap_cas, tc->n_cas, sizeof(*tc->cas)) != 0)
		return -ENOMEM;
	ca_item *item = &tc->cas[tc->n_cas];
	dg_ca_cert *c = &item->cert;
	memset(item, 0, sizeof(*item));
	item->project_id = row->project_id;
	c->der = malloc(row->der_len);
	if (c->der == NULL)
		return -ENOMEM;
	memcpy(c->der, row->der, row->der_len);
	c->der_len = row->der_len;
	tc->n_cas++;
	return 0;
}

static int
collect_crl(void *arg, const dg_crl_row *row)
{
	trust_collect *tc = arg;
	size_t cap = tc->cap_crls;
	if (reserve((void **)&tc->crls, &tc->cap_crls, tc->n_crls, sizeof(*tc->crls)) != 0)
		return -ENOMEM;
	if (tc->cap_crls != cap || tc->crl_copies == NULL) {
		uint8_t **g = realloc(tc->crl_copies, tc->cap_crls * sizeof(*g));
		if (g == NULL)
			return -ENOMEM;
		tc->crl_copies = g;
	}
	uint8_t *copy = malloc(row->der_len ? row->der_len : 1);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, row->der, row->der_len);
	tc->crl_copies[tc->n_crls] = copy;
	tc->crls[tc->n_crls] = *row;
	tc->crls[tc->n_crls].der = copy;
	/* Owned here (the row's is the statement's): freed with the copies. */
	tc->crls[tc->n_crls].source = strdup(row->source != NULL ? row->source : "?");
	tc->n_crls++;
	return tc->crls[tc->n_crls - 1].source != NULL ? 0 : -ENOMEM;
}

static int
build_trust(dg_registry *reg, dg_store *st)
{
	trust_collect tc = {.reg = reg};
	int rc = dg_store_each_ca(st, collect_ca, &tc);
	if (rc == 0)
		rc = dg_store_each_crl(st, collect_crl, &tc);
	for (size_t i = 0; i < reg->n_projects && rc == 0; i++) {
		dg_project *p = &reg->projects[i];
		const dg_ca_cert *cas[256];
		const uint8_t *crls[64];
		const char *crl_files[64];
		size_t crl_lens[64], n_cas = 0, n_crls = 0;
		int bad = 0;
		for (size_t j = 0; j < tc.n_cas && n_cas < 256; j++)
			if (tc.cas[j].project_id == p->id)
				cas[n_cas++] = &tc.cas[j].cert;
		for (size_t j = 0; j < tc.n_crls && n_crls < 64; j++)
			if (tc.crls[j].project_id == p->id) {
				crls[n_crls] = tc.crls[j].der;
				crl_files[n_crls] = tc.crls[j].source;
				crl_lens[n_crls++] = tc.crls[j].der_len;
			}
		rc = dg_trust_store_new(cas, n_cas, crls, crl_lens, n_crls, &p->trust, &bad);
		p->n_cas = n_cas;
		p->trust_hash = 1469598103934665603ull;
		for (size_t j = 0; j < n_cas; j++)
			p->trust_hash = hash_bytes(p->trust_hash, (const char *)cas[j]->der,
			                           cas[j]->der_len);
		for (size_t j = 0; j < n_crls; j++)
			p->trust_hash =
			        hash_bytes(p->trust_hash, (const char *)crls[j], crl_lens[j]);
		/* Each unusable CRL, with its file and the true reason: it refuses its issuer. */
		dg_crl_status cs;
		int64_t now = dg_now_ms();
		for (size_t j = 0;
		     rc == 0 && bad > 0 && dg_trust_store_crl_status(p->trust, j, now, &cs) == 0;
		     j++) {
			if (cs.problem == NULL)
				continue;
			dg_log(DG_LOG_ERROR, "config.crl",
			       "project %s: %s: CRL %zu (issuer %s): %s; certificates of this "
			       "issuer"
			       " are refused until a usable CRL replaces it",
			       p->slug, cs.file < n_crls ? crl_files[cs.file] : "?", cs.index,
			       cs.issuer, cs.problem);
		}
	}
	for (size_t j = 0; j < tc.n_cas; j++)
		free(tc.cas[j].cert.der);
	free(tc.cas);
	for (size_t j = 0; j < tc.n_crls; j++) {
		free(tc.crl_copies[j]);
		free((void *)(uintptr_t)tc.crls[j].source);
	}
	free(tc.crl_copies);
	free(tc.crls);
	return rc;
}

static int
index_new(str_index *ix, size_t n)
{
	size_t cap = 16;
	while (cap < n * 2)
		cap <<= 1;
	ix->slots = calloc(cap, sizeof(*ix->slots));
	if (ix->slots == NULL)
		return -ENOMEM;
	ix->n_slots = cap;
	return 0;
}

static void
index_put(str_index *ix, uint64_t h, size_t pos)
{
	size_t mask = ix->n_slots - 1, i = (size_t)h & mask;
	while (ix->slots[i] != 0)
		i = (i + 1) & mask;
	ix->slots[i] = (uint32_t)(pos + 1);
}

static int
build_indexes(dg_registry *reg)
{
	const uint64_t basis = 1469598103934665603ull;
	if (index_new(&reg->by_identity, reg->n_creds) != 0 ||
	    index_new(&reg->by_slug, reg->n_projects) != 0 ||
	    index_new(&reg->by_cert, reg->n_devices) != 0)
		return -ENOMEM;
	for (size_t i = 0; i < reg->n_creds; i++) {
		const char *id = reg->creds[i].identity;
		index_put(&reg->by_identity, hash_bytes(basis, id, strlen(id)), i);
	}
	for (size_t i = 0; i < reg->n_projects; i++) {
		const char *slug = reg->projects[i].slug;
		index_put(&reg->by_slug, hash_bytes(basis, slug, strlen(slug)), i);
	}
	for (size_t i = 0; i < reg->n_devices; i++) {
		const dg_cert_device *d = &reg->devices[i];
		index_put(&reg->by_cert, hash_cert(d->project_id, d->cert_id, strlen(d->cert_id)),
		          i);
	}
	return 0;
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
	for (size_t i = 0; i < reg->n_projects; i++) {
		free(reg->projects[i].slug);
		free(reg->projects[i].name);
		dg_trust_store_free(reg->projects[i].trust);
	}
	free(reg->projects);
	for (size_t i = 0; i < reg->n_devices; i++) {
		free(reg->devices[i].cert_id);
		free(reg->devices[i].name);
	}
	free(reg->devices);
	free(reg->by_identity.slots);
	free(reg->by_slug.slots);
	free(reg->by_cert.slots);
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
	reg->serial = dg_store_registry_serial(st);
	rc = dg_store_each_project(st, add_project, reg);
	if (rc == 0)
		rc = dg_store_each_psk(st, add_psk, reg);
	if (rc == 0)
		rc = dg_store_each_device(st, add_cert_device, reg);
	if (rc == 0)
		rc = build_trust(reg, st);
	if (rc == 0)
		rc = build_indexes(reg);
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
	const str_index *ix = &reg->by_identity;
	size_t mask = ix->n_slots - 1;
	size_t h = (size_t)hash_bytes(1469598103934665603ull, identity, len) & mask;

	for (uint32_t s; (s = ix->slots[h]) != 0; h = (h + 1) & mask) {
		const dg_psk_cred *c = &reg->creds[s - 1];
		if (strlen(c->identity) == len && memcmp(c->identity, identity, len) == 0)
			return c;
	}
	return NULL;
}

const dg_project *
dg_registry_find_project(const dg_registry *reg, const char *slug, size_t len)
{
	const str_index *ix = &reg->by_slug;
	size_t mask = ix->n_slots - 1;
	size_t h = (size_t)hash_bytes(1469598103934665603ull, slug, len) & mask;

	for (uint32_t s; (s = ix->slots[h]) != 0; h = (h + 1) & mask) {
		const dg_project *p = &reg->projects[s - 1];
		if (strlen(p->slug) == len && memcmp(p->slug, slug, len) == 0)
			return p;
	}
	return NULL;
}

const dg_cert_device *
dg_registry_find_cert_device(const dg_registry *reg, int64_t project_id, const char *cert_id)
{
	const str_index *ix = &reg->by_cert;
	size_t len = strlen(cert_id);
	size_t mask = ix->n_slots - 1;
	size_t h = (size_t)hash_cert(project_id, cert_id, len) & mask;

	for (uint32_t s; (s = ix->slots[h]) != 0; h = (h + 1) & mask) {
		const dg_cert_device *d = &reg->devices[s - 1];
		if (d->project_id == project_id && strcmp(d->cert_id, cert_id) == 0)
			return d;
	}
	return NULL;
}

int
dg_registry_has_project(const dg_registry *reg, const char *slug, size_t len)
{
	return dg_registry_find_project(reg, slug, len) != NULL;
}

size_t
dg_registry_psk_count(const dg_registry *reg)
{
	return reg->n_creds;
}

int64_t
dg_registry_serial(const dg_registry *reg)
{
	return reg->serial;
}
