/*
 * A worker's cache of state documents (see statecache.h for the rules that
 * keep it coherent with the store).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/map.h"
#include "devgate/statecache.h"

typedef struct entry {
	uint64_t gen; /* Changes with every change of the entry; never reused. */
	int filled;   /* 1: doc is the device's document (NULL: it has none). */
	cJSON *doc;
} entry;

struct dg_statecache {
	dg_map *entries; /* Device ID -> entry. */
	size_t max_doc;
	uint64_t next_gen;
	uint64_t hits, misses;
};

int
dg_statecache_new(size_t max_doc, dg_statecache **out)
{
	dg_statecache *c = calloc(1, sizeof(*c));
	if (c == NULL || dg_map_new(&c->entries) != 0) {
		free(c);
		return -ENOMEM;
	}
	c->max_doc = max_doc;
	*out = c;
	return 0;
}

static void
free_entry(void *v, void *arg)
{
	entry *e = v;
	(void)arg;
	cJSON_Delete(e->doc);
	free(e);
}

void
dg_statecache_free(dg_statecache *c)
{
	if (c == NULL)
		return;
	dg_map_each(c->entries, free_entry, NULL);
	dg_map_free(c->entries);
	free(c);
}

static entry *
find(dg_statecache *c, int64_t device_id)
{
	dg_map_key key;
	dg_map_key_u64(&key, (uint64_t)device_id);
	return dg_map_get(c->entries, &key);
}

/* Empties the entry and gives it a new generation: older reads are not kept. */
static void
empty(dg_statecache *c, entry *e)
{
	cJSON_Delete(e->doc);
	e->doc = NULL;
	e->filled = 0;
	e->gen = ++c->next_gen;
}

/*
 * Makes the entry hold the document of `text`; it stays empty when the
 * text is too large to keep or does not parse. Returns whether it holds it.
 */
static int
hold(dg_statecache *c, entry *e, const char *text)
{
	size_t n = strlen(text);
	if (n > c->max_doc)
		return 0;
	cJSON *doc = NULL;
	if (n > 0) {
		doc = cJSON_ParseWithLength(text, n);
		if (doc == NULL)
			return 0;
	}
	e->doc = doc;
	e->filled = 1;
	return 1;
}

int
dg_statecache_get(dg_statecache *c, int64_t device_id, const cJSON **doc, uint64_t *ticket)
{
	*doc = NULL;
	*ticket = 0;
	if (c == NULL)
		return 0;
	entry *e = find(c, device_id);
	if (e != NULL && e->filled) {
		c->hits++;
		*doc = e->doc;
		return 1;
	}
	c->misses++;
	if (e == NULL) {
		dg_map_key key;
		e = calloc(1, sizeof(*e));
		if (e == NULL)
			return 0;
		e->gen = ++c->next_gen;
		dg_map_key_u64(&key, (uint64_t)device_id);
		if (dg_map_put(c->entries, &key, e, NULL) != 0) {
			free(e);
			return 0;
		}
	}
	*ticket = e->gen;
	return 0;
}

int
dg_statecache_fill(dg_statecache *c, int64_t device_id, uint64_t ticket, const char *text,
                   const cJSON **doc)
{
	*doc = NULL;
	if (c == NULL || ticket == 0 || text == NULL)
		return 0;
	entry *e = find(c, device_id);
	if (e == NULL || e->gen != ticket || e->filled || !hold(c, e, text))
		return 0;
	*doc = e->doc;
	return 1;
}

void
dg_statecache_put(dg_statecache *c, int64_t device_id, const char *text)
{
	if (c == NULL)
		return;
	entry *e = find(c, device_id);
	if (e == NULL)
		return;
	empty(c, e);
	if (text != NULL)
		hold(c, e, text);
}

void
dg_statecache_invalidate(dg_statecache *c, int64_t device_id)
{
	if (c == NULL)
		return;
	entry *e = find(c, device_id);
	if (e != NULL)
		empty(c, e);
}

void
dg_statecache_remove(dg_statecache *c, int64_t device_id)
{
	if (c == NULL)
		return;
	dg_map_key key;
	dg_map_key_u64(&key, (uint64_t)device_id);
	entry *e = dg_map_del(c->entries, &key);
	if (e != NULL)
		free_entry(e, NULL);
}

void
dg_statecache_stats(const dg_statecache *c, uint64_t *hits, uint64_t *misses)
{
	*hits = c != NULL ? c->hits : 0;
	*misses = c != NULL ? c->misses : 0;
}
