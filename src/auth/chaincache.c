/*
 * The accepted-chain cache: a direct-mapped table of SHA-256 keys.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "devgate/chaincache.h"

typedef struct slot {
	uint8_t key[DG_CHAINCACHE_KEY_LEN];
	dg_chaincache_entry e;
	int used;
} slot;

struct dg_chaincache {
	slot *slots;
	size_t mask;
	uint64_t hits, misses;
};

int
dg_chaincache_new(size_t slots, dg_chaincache **out)
{
	dg_chaincache *c = calloc(1, sizeof(*c));
	size_t n = 1;

	if (c == NULL)
		return -ENOMEM;
	while (n < slots && n < ((size_t)1 << 30))
		n <<= 1;
	/* calloc: a large table is mapped zeroed, its pages resident only once used. */
	c->slots = calloc(n, sizeof(*c->slots));
	if (c->slots == NULL) {
		free(c);
		return -ENOMEM;
	}
	c->mask = n - 1;
	*out = c;
	return 0;
}

void
dg_chaincache_free(dg_chaincache *c)
{
	if (c == NULL)
		return;
	free(c->slots);
	free(c);
}

static void
put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

int
dg_chaincache_key(int64_t project_id, uint64_t trust_hash, const uint8_t *const *certs,
                  const size_t *lens, size_t n, uint8_t key[DG_CHAINCACHE_KEY_LEN])
{
	wc_Sha256 sha;
	uint8_t head[24];
	int rc = -EINVAL;

	if (n == 0 || wc_InitSha256(&sha) != 0)
		return -EINVAL;
	put_be64(head, (uint64_t)project_id);
	put_be64(head + 8, trust_hash);
	put_be64(head + 16, (uint64_t)n);
	if (wc_Sha256Update(&sha, head, sizeof(head)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		uint8_t len[8];
		/* Each length before its bytes: no two chains hash the same bytes. */
		put_be64(len, (uint64_t)lens[i]);
		if (wc_Sha256Update(&sha, len, sizeof(len)) != 0 ||
		    wc_Sha256Update(&sha, certs[i], (word32)lens[i]) != 0)
			goto out;
	}
	if (wc_Sha256Final(&sha, key) != 0)
		goto out;
	rc = 0;
out:
	wc_Sha256Free(&sha);
	return rc;
}

static slot *
slot_of(dg_chaincache *c, const uint8_t *key)
{
	uint64_t h = 0;
	for (int i = 0; i < 8; i++)
		h = h << 8 | key[i];
	return &c->slots[h & c->mask];
}

int
dg_chaincache_get(dg_chaincache *c, const uint8_t key[DG_CHAINCACHE_KEY_LEN], int64_t now_ms,
                  dg_chaincache_entry *out)
{
	if (c == NULL)
		return 0;
	slot *s = slot_of(c, key);
	if (!s->used || memcmp(s->key, key, DG_CHAINCACHE_KEY_LEN) != 0) {
		c->misses++;
		return 0;
	}
	if (now_ms >= s->e.deadline_ms) {
		memset(s, 0, sizeof(*s));
		c->misses++;
		return 0;
	}
	*out = s->e;
	c->hits++;
	return 1;
}

void
dg_chaincache_put(dg_chaincache *c, const uint8_t key[DG_CHAINCACHE_KEY_LEN], int64_t now_ms,
                  const dg_chaincache_entry *e)
{
	if (c == NULL || e->deadline_ms <= now_ms)
		return;
	slot *s = slot_of(c, key);
	memcpy(s->key, key, DG_CHAINCACHE_KEY_LEN);
	s->e = *e;
	s->used = 1;
}

void
dg_chaincache_clear(dg_chaincache *c)
{
	if (c != NULL)
		memset(c->slots, 0, (c->mask + 1) * sizeof(*c->slots));
}

void
dg_chaincache_stats(const dg_chaincache *c, uint64_t *hits, uint64_t *misses)
{
	*hits = c != NULL ? c->hits : 0;
	*misses = c != NULL ? c->misses : 0;
}
