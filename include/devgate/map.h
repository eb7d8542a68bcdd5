/*
 * A hash map from short byte keys (up to DG_MAP_KEY_MAX bytes) to
 * pointers: open addressing with linear probing and backward-shift
 * deletion, so lookups, inserts and removals are O(1) on average and no
 * tombstones accumulate. The peer table uses it keyed by address (and by
 * DTLS Connection ID), the device table keyed by device ID.
 */
#ifndef DEVGATE_MAP_H
#define DEVGATE_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * 23 makes a key 24 bytes and a slot (key and value) 32: two slots to a
 * 64-byte cache line, so a lookup in a table far larger than the cache
 * (the peer table at 100,000 sessions) misses once, not twice. The longest
 * key in use is 19 bytes (an IPv6 address and port).
 */
#define DG_MAP_KEY_MAX 23

typedef struct dg_map_key {
	uint8_t len;
	uint8_t b[DG_MAP_KEY_MAX];
} dg_map_key;

typedef struct dg_map dg_map;

/* Creates an empty map. Returns 0 or -ENOMEM. */
int dg_map_new(dg_map **out);

/* Frees the map (not the values). NULL is a no-op. */
void dg_map_free(dg_map *m);

/* Returns the value stored under `k`, or NULL. */
void *dg_map_get(const dg_map *m, const dg_map_key *k);

/*
 * Stores `v` (not NULL) under `k`, replacing what was there; the old value
 * is returned through *old when old is not NULL. Returns 0 or -ENOMEM.
 */
int dg_map_put(dg_map *m, const dg_map_key *k, void *v, void **old);

/* Removes `k` if present and returns its value, or NULL. */
void *dg_map_del(dg_map *m, const dg_map_key *k);

/* Returns the number of entries. */
size_t dg_map_count(const dg_map *m);

/*
 * Calls fn for every value. fn must not change the map; collect first and
 * change afterwards.
 */
void dg_map_each(const dg_map *m, void (*fn)(void *v, void *arg), void *arg);

/* Makes the key of a socket address: family, port and address bytes only. */
void dg_map_key_addr(dg_map_key *k, const struct sockaddr *sa);

/*
 * Makes the key of the network a socket address belongs to, for limits per
 * source: the IPv4 address (/32) or the IPv6 /64 prefix; no port.
 */
void dg_map_key_source(dg_map_key *k, const struct sockaddr *sa);

/* Makes the key of a 64-bit ID. */
void dg_map_key_u64(dg_map_key *k, uint64_t id);

#endif
