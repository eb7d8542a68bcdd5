/*
 * Admission limits shared by every worker loop: the number of sessions
 * (limits.max_sessions), of half-open handshakes (limits.max_handshakes)
 * and of half-open handshakes per source network
 * (limits.max_handshakes_per_source). One source with many ports spreads
 * over the workers, so its count is kept here, not per worker. The totals
 * are atomics; the per-source counts sit in a map under a mutex, touched
 * once per verified ClientHello and once per handshake's end.
 */
#ifndef DEVGATE_ADMIT_H
#define DEVGATE_ADMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct dg_admit dg_admit;

/* Creates counters at zero. Returns 0 or -ENOMEM. */
int dg_admit_new(dg_admit **out);

/* Frees the counters. NULL is a no-op. */
void dg_admit_free(dg_admit *a);

/* Sessions that exist now (in handshake or established), on every worker. */
size_t dg_admit_sessions(const dg_admit *a);

/* Counts a new session in if fewer than `max` exist; returns 1 when it did, else 0. */
int dg_admit_session(dg_admit *a, uint32_t max);

/* A session that dg_admit_session() counted has gone. */
void dg_admit_session_end(dg_admit *a);

/*
 * Takes a handshake slot for a handshake from `from`. Returns 0 when it
 * did; -EAGAIN with *limit set to "limits.max_handshakes_per_source" when
 * that source holds `per_source` already, or to "limits.max_handshakes"
 * when `max` are under way (a caller that can close a stalled handshake
 * may then ask again); -ENOMEM.
 */
int dg_admit_handshake(dg_admit *a, const struct sockaddr *from, uint32_t per_source, uint32_t max,
                       const char **limit);

/* A handshake that took a slot from `from` ended (established or closed). */
void dg_admit_handshake_end(dg_admit *a, const struct sockaddr *from);

/* Half-open handshakes now, on every worker. */
size_t dg_admit_handshakes(const dg_admit *a);

/* Half-open handshakes from the network of `from` now. */
size_t dg_admit_source(dg_admit *a, const struct sockaddr *from);

#endif
