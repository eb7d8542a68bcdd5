/*
 * Batched UDP sends: datagrams queued during one pass of the loop go out
 * in one sendmmsg per socket instead of one sendmsg each.
 *
 * A batch copies what it is given, so the caller may reuse or free its
 * buffer at once. Datagrams keep their order, per socket and across
 * sockets. The owner flushes it before the loop waits for I/O (a
 * uv_prepare_t) and before it closes a socket a queued datagram is for.
 * A datagram the kernel will not take is dropped and counted, like one
 * uv_udp_try_send could not send: DTLS retransmits handshake flights and
 * CoAP retransmits requests.
 *
 * Not thread-safe: one batch per loop.
 */
#ifndef DEVGATE_UDPIO_H
#define DEVGATE_UDPIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The largest datagram a slot holds; a larger one is sent on its own, in order. */
#define DG_UDPIO_SLOT_BYTES 2048u
/* Datagrams per batch; a full batch is flushed before the next is queued. */
#define DG_UDPIO_BATCH 64u

typedef struct dg_udpio dg_udpio;

/* Makes an empty batch. Returns 0 and *out (free with dg_udpio_free), or -ENOMEM. */
int dg_udpio_new(dg_udpio **out);

/* Frees the batch, dropping (not sending) what it still holds; NULL is a no-op. */
void dg_udpio_free(dg_udpio *b);

/*
 * Queues a copy of the datagram data[0..len) for `peer` on socket `fd`.
 * A full batch is flushed first; a datagram larger than a slot is sent at
 * once, after what is queued. Returns 0, or -EINVAL (bad arguments,
 * nothing queued).
 */
int dg_udpio_queue(dg_udpio *b, int fd, const void *data, size_t len, const struct sockaddr *peer,
                   socklen_t peer_len);

/*
 * Sends everything queued: one sendmmsg per run of datagrams for the same
 * socket (more when the kernel takes part of a run). Returns how many
 * datagrams the kernel took; the others are dropped and counted.
 */
size_t dg_udpio_flush(dg_udpio *b);

/* Datagrams queued and not yet flushed. */
size_t dg_udpio_pending(const dg_udpio *b);

/* Counters since the batch was made. */
typedef struct dg_udpio_stats {
	uint64_t sent;    /* Datagrams the kernel took. */
	uint64_t dropped; /* Datagrams it refused (EAGAIN, ENOBUFS, any error). */
	uint64_t calls;   /* sendmmsg and sendto calls made. */
} dg_udpio_stats;

void dg_udpio_get_stats(const dg_udpio *b, dg_udpio_stats *out);

#endif
