/*
 * Open-addressing hash map; see map.h.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/map.h"

typedef struct slot {
	dg_map_key key;
	void *value; /* NULL: empty. */
} slot;

_Static_assert(sizeof(slot) == 32, "a slot is half a cache line");

/* The cache line; slot arrays are aligned to it. */
#define LINE 64

struct dg_map {
	slot *slots;
	size_t cap; /* Power of two. */
	size_t count;
	uint64_t seed;
};

static uint64_t
hash_key(const dg_map *m, const dg_map_key *k)
{
	uint64_t h = 1469598103934665603ull ^ m->seed;
	for (size_t i = 0; i < k->len; i++) {
		h ^= k->b[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static int
key_eq(const dg_map_key *a, const dg_map_key *b)
{
	return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

/* A zeroed array of cap slots on a cache-line boundary, or NULL. */
static slot *
alloc_slots(size_t cap)
{
	size_t size = cap * sizeof(slot);
	slot *p;

	if (size / sizeof(slot) != cap)
		return NULL;
	/* cap is a power of two of at least 64: size is a multiple of LINE. */
	p = aligned_alloc(LINE, size);
	if (p != NULL)
		memset(p, 0, size);
	return p;
}

int
dg_map_new(dg_map **out)
{
	dg_map *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->cap = 64;
	m->slots = alloc_slots(m->cap);
	if (m->slots == NULL) {
		free(m);
		return -ENOMEM;
	}
	/* A per-map seed keeps peers from choosing colliding addresses ahead of time. */
	m->seed = (uint64_t)(uintptr_t)m * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)m->slots;
	*out = m;
	return 0;
}

void
dg_map_free(dg_map *m)
{
	if (m == NULL)
		return;
	free(m->slots);
	free(m);
}

static size_t
find(const dg_map *m, const dg_map_key *k)
{
	size_t mask = m->cap - 1;
	size_t i = (size_t)hash_key(m, k) & mask;
	while (m->slots[i].value != NULL && !key_eq(&m->slots[i].key, k))
		i = (i + 1) & mask;
	return i;
}

void *
dg_map_get(const dg_map *m, const dg_map_key *k)
{
	return m->slots[find(m, k)].value;
}

static int
grow(dg_map *m)
{
	slot *old = m->slots;
	size_t old_cap = m->cap;
	slot *ns = alloc_slots(old_cap * 2);
	if (ns == NULL)
		return -ENOMEM;
	m->slots = ns;
	m->cap = old_cap * 2;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].value != NULL)
			m->slots[find(m, &old[i].key)] = old[i];
	free(old);
	return 0;
}

int
dg_map_put(dg_map *m, const dg_map_key *k, void *v, void **old)
{
	size_t i;

	if (old != NULL)
		*old = NULL;
	if ((m->count + 1) * 4 > m->cap * 3) {
		int rc = grow(m);
		if (rc != 0)
			return rc;
	}
	i = find(m, k);
	if (m->slots[i].value != NULL) {
		if (old != NULL)
			*old = m->slots[i].value;
	} else {
		m->slots[i].key = *k;
		m->count++;
	}
	m->slots[i].value = v;
	return 0;
}

void *
dg_map_del(dg_map *m, const dg_map_key *k)
{
	size_t mask = m->cap - 1;
	size_t i = find(m, k);
	void *v = m->slots[i].value;

	if (v == NULL)
		return NULL;
	m->slots[i].value = NULL;
	m->count--;
	/* Backward-shift: move later members of the probe run into the hole. */
	for (size_t j = (i + 1) & mask; m->slots[j].value != NULL; j = (j + 1) & mask) {
		size_t home = (size_t)hash_key(m, &m->slots[j].key) & mask;
		/* Move j to i when its home is not cyclically within (i, j]. */
		int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!in_range) {
			m->slots[i] = m->slots[j];
			m->slots[j].value = NULL;
			i = j;
		}
	}
	return v;
}

size_t
dg_map_count(const dg_map *m)
{
	return m->count;
}

void
dg_map_each(const dg_map *m, void (*fn)(void *v, void *arg), void *arg)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].value != NULL)
			fn(m->slots[i].value, arg);
}

void
dg_map_key_addr(dg_map_key *k, const struct sockaddr *sa)
{
	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		k->b[0] = 6;
		memcpy(k->b + 1, &s6->sin6_port, 2);
		memcpy(k->b + 3, &s6->sin6_addr, 16);
		k->len = 19;
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		k->b[0] = 4;
		memcpy(k->b + 1, &s4->sin_port, 2);
		memcpy(k->b + 3, &s4->sin_addr, 4);
		k->len = 7;
	}
}

void
dg_map_key_source(dg_map_key *k, const struct sockaddr *sa)
{
	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		k->b[0] = 's';
		memcpy(k->b + 1, &s6->sin6_addr, 8);
		k->len = 9;
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		k->b[0] = 'S';
		memcpy(k->b + 1, &s4->sin_addr, 4);
		k->len = 5;
	}
}

void
dg_map_key_u64(dg_map_key *k, uint64_t id)
{
	memset(k, 0, sizeof(*k));
	k->b[0] = 'i';
	memcpy(k->b + 1, &id, 8);
	k->len = 9;
}
