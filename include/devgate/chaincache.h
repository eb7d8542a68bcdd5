/*
 * A cache of accepted certificate chains: the verdict of a device's chain
 * (leaf and the intermediates it sent), kept by the SHA-256 of the chain,
 * the project and the project's trust hash, so that a device that
 * reconnects with the chain it used before is not verified again (one
 * ECDSA verify and three certificate parses less per handshake).
 *
 * It can never let in a chain that a full verification would refuse now:
 * - only accepted chains are kept, never refusals;
 * - the key holds the project's trust hash, which changes with any CA or
 *   CRL of the project (a reload that adds a CRL entry, removes a CA or
 *   changes a CRL makes every old entry unreachable);
 * - an entry is used only before its deadline: the earliest notAfter of
 *   the leaf and the intermediates used, and the earliest nextUpdate of
 *   the project's CRLs (a CRL that expires must start refusing at once);
 *   validity never starts again once it has started (notBefore is behind).
 * What only the registry knows (device blocked, project disabled, the
 * subject rules) is not cached: the caller judges it on every handshake.
 *
 * Fixed size, direct-mapped by the key: a newer chain replaces an older one
 * in its slot. One cache per loop; not thread-safe.
 */
#ifndef DEVGATE_CHAINCACHE_H
#define DEVGATE_CHAINCACHE_H

#include <stddef.h>
#include <stdint.h>

#define DG_CHAINCACHE_KEY_LEN 32
/* Slots of the cache servers make: 48 bytes each, 3 MiB, touched only as used. */
#define DG_CHAINCACHE_SLOTS 65536u

typedef struct dg_chaincache dg_chaincache;

/* What an accepted chain's verdict keeps. */
typedef struct dg_chaincache_entry {
	int64_t not_after_ms; /* Earliest notAfter of the leaf and intermediates used. */
	int64_t deadline_ms;  /* Not used at or after this (wall clock ms). */
} dg_chaincache_entry;

/*
 * Makes an empty cache of `slots` entries (rounded up to a power of two,
 * at least 1). Returns 0 and *out (free with dg_chaincache_free), or
 * -ENOMEM.
 */
int dg_chaincache_new(size_t slots, dg_chaincache **out);

/* Frees the cache; NULL is a no-op. */
void dg_chaincache_free(dg_chaincache *c);

/*
 * Computes the key of a chain: SHA-256 over the project id, its trust
 * hash, and each certificate's length and DER, in the order given (the
 * order the device sent). Returns 0, or -EINVAL when n is 0.
 */
int dg_chaincache_key(int64_t project_id, uint64_t trust_hash, const uint8_t *const *certs,
                      const size_t *lens, size_t n, uint8_t key[DG_CHAINCACHE_KEY_LEN]);

/*
 * Looks a key up at wall-clock time `now_ms`. Returns 1 and fills *out when
 * an accepted verdict is kept for it and now_ms is before its deadline;
 * returns 0 otherwise (an entry past its deadline is dropped). c may be
 * NULL (always 0).
 */
int dg_chaincache_get(dg_chaincache *c, const uint8_t key[DG_CHAINCACHE_KEY_LEN], int64_t now_ms,
                      dg_chaincache_entry *out);

/*
 * Keeps an accepted verdict under `key`, replacing whatever held its slot.
 * A deadline at or before now_ms keeps nothing. c may be NULL (no-op).
 */
void dg_chaincache_put(dg_chaincache *c, const uint8_t key[DG_CHAINCACHE_KEY_LEN], int64_t now_ms,
                       const dg_chaincache_entry *e);

/* Drops every entry. */
void dg_chaincache_clear(dg_chaincache *c);

/* Lookups that found an entry, and lookups that did not. */
void dg_chaincache_stats(const dg_chaincache *c, uint64_t *hits, uint64_t *misses);

#endif
