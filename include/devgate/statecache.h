/*
 * A worker's cache of state documents: the parsed LightDB State document
 * of each device whose session is on this worker and that has read its
 * state, so that a state GET is answered on the loop, with no other thread.
 *
 * It is kept coherent with the store by these rules:
 * - An entry is made by a GET that found none (a miss) and removed when the
 *   device's session closes; it holds a document only once a read filled
 *   it or a write replaced it.
 * - Every write of the device that this worker submitted replaces the
 *   document with the one the writer stored (its `doc_after`), before the
 *   write is acknowledged. The writer commits in queue order and this
 *   worker takes its completions in that order, so the last one wins.
 * - A change this worker cannot order with its own writes (the CLI's,
 *   polled and routed here; a write another worker made for this device)
 *   empties the entry: the next GET reads the store again.
 * - A read fills the entry only if nothing changed it since the read was
 *   asked for: every change gives the entry a new generation, taken from a
 *   counter of the whole cache (so a new entry for the same device never
 *   takes an old read's generation), and a fill names the generation it
 *   was asked under. A read that raced a write is answered but not kept.
 * - Documents larger than the cache's max_doc bytes of JSON text are never
 *   kept: those GETs read the store each time.
 * So a GET sees every write of its own device acknowledged before it, and
 * a CLI change once the control loop has polled it (at most 250 ms later,
 * when the observers are notified of it).
 *
 * One cache per loop; not thread-safe.
 */
#ifndef DEVGATE_STATECACHE_H
#define DEVGATE_STATECACHE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* The largest document (JSON text, bytes) a worker's cache keeps. */
#define DG_STATECACHE_MAX_DOC 8192

typedef struct dg_statecache dg_statecache;

/* Makes an empty cache that keeps documents of up to max_doc bytes. Returns 0 or -ENOMEM. */
int dg_statecache_new(size_t max_doc, dg_statecache **out);

/* Frees the cache and every document in it; NULL is a no-op. */
void dg_statecache_free(dg_statecache *c);

/*
 * Looks up the document of `device_id`. Returns 1 and sets *doc (borrowed
 * until the next call that changes the cache; NULL when the device has no
 * document) when the entry holds one. Returns 0 on a miss, having made the
 * entry if there was none, and sets *ticket to what the fill of the read
 * that follows names (0 when nothing can be kept: no memory). c may be
 * NULL (always a miss, ticket 0).
 */
int dg_statecache_get(dg_statecache *c, int64_t device_id, const cJSON **doc, uint64_t *ticket);

/*
 * A read asked for with `ticket` found `text` (the stored JSON text, ""
 * when there is none). Keeps it when the entry is still there and nothing
 * changed it since the ticket was given; returns 1 and sets *doc (borrowed
 * as above) when it did, else 0. c may be NULL (0).
 */
int dg_statecache_fill(dg_statecache *c, int64_t device_id, uint64_t ticket, const char *text,
                       const cJSON **doc);

/*
 * A write this worker submitted for `device_id` committed, leaving `text`
 * (JSON text, "" when none). Replaces the entry's document when there is
 * an entry. c may be NULL (no-op).
 */
void dg_statecache_put(dg_statecache *c, int64_t device_id, const char *text);

/*
 * The device's document changed in a way this worker cannot order (or a
 * write failed): the entry, if any, holds no document until a read fills
 * it again. c may be NULL (no-op).
 */
void dg_statecache_invalidate(dg_statecache *c, int64_t device_id);

/* The device's session closed: its entry goes. c may be NULL (no-op). */
void dg_statecache_remove(dg_statecache *c, int64_t device_id);

/* GETs answered from the cache, and GETs that read the store. */
void dg_statecache_stats(const dg_statecache *c, uint64_t *hits, uint64_t *misses);

#endif
