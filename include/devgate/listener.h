/*
 * A listener: one worker's UDP socket for one listen address, bound with
 * SO_REUSEPORT beside the other workers' sockets for that address, and
 * the stateless DTLS cookie exchange in front of every new session.
 */
#ifndef DEVGATE_LISTENER_H
#define DEVGATE_LISTENER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/session.h"

typedef struct dg_listener dg_listener;

#define DG_LISTENER_SECRET_LEN 32

/*
 * Asked by the listener inside wolfSSL_accept(), once a ClientHello's
 * cookie is verified and before anything is sent for it: whether a session
 * may exist for `from`, and if so that session, made around `ssl` (whose
 * ownership it then takes) sending from `udp`. Returns NULL to refuse; the
 * listener then keeps `ssl`. It has to be asked then, since wolfSSL goes
 * on to answer the ClientHello within the same call.
 */
typedef dg_session *(*dg_listener_admit_fn)(void *arg, WOLFSSL *ssl, uv_udp_t *udp,
                                             const struct sockaddr *from);

/* What a ClientHello came to. */
typedef enum dg_listen_verdict {
	DG_LISTEN_DROPPED,  /* Not a whole, first ClientHello; *reason says which (metrics). */
	DG_LISTEN_ANSWERED, /* A HelloVerifyRequest went out, or the hello was refused. */
	DG_LISTEN_SESSION,  /* A verified cookie became a session (*out). */
} dg_listen_verdict;

/*
 * Checks that `addr` is free for this process (not held by a socket of
 * another), so that a second daemon cannot quietly share its port through
 * SO_REUSEPORT. Returns 0 or a negative errno (-EADDRINUSE).
 */
int dg_listener_probe(const struct sockaddr *addr);

/*
 * Makes a UDP socket with SO_REUSEPORT (and IPV6_V6ONLY for IPv6), binds
 * it to `addr` and opens it on `loop`. The listening DTLS object comes
 * from `ctx` (borrowed for the listener's life) with `secret` as its
 * cookie secret. `admit` is asked as described above, with `arg`.
 * `owner` is the caller's, for the receive callback (dg_listener_owner).
 * The socket reads datagrams in batches (UV_UDP_RECVMMSG); what the
 * listener sends (HelloVerifyRequests) is queued on `tx` (borrowed, the
 * loop's send batch; NULL sends at once). Returns 0 and sets *out, or a
 * negative errno.
 */
int dg_listener_new(uv_loop_t *loop, const struct sockaddr *addr, WOLFSSL_CTX *ctx,
                    const uint8_t *secret, dg_listener_admit_fn admit, void *arg, void *owner,
                    size_t index, struct dg_udpio *tx, dg_listener **out);

/* The socket's handle: receive with uv_udp_recv_start; its data is the listener. */
uv_udp_t *dg_listener_udp(dg_listener *l);

/* The address the socket is bound to (the port the kernel chose for port 0). */
int dg_listener_sockname(dg_listener *l, struct sockaddr_storage *out);

/* What dg_listener_new() was given as owner and index. */
void *dg_listener_owner(const dg_listener *l);
size_t dg_listener_index(const dg_listener *l);

/* Counts sent datagrams into `m` (borrowed; may be NULL). */
void dg_listener_set_metrics(dg_listener *l, struct dg_metrics *m);

/* A new cookie secret (DG_LISTENER_SECRET_LEN bytes, copied). */
void dg_listener_set_secret(dg_listener *l, const uint8_t *secret);

/*
 * Handles a datagram from an address with no session, or a new
 * ClientHello from a known one. Stateless: only the first record is looked
 * at, and it must be one whole ClientHello (RFC 6347 4.2.1 lets a server
 * refuse to reassemble a fragmented one before the cookie is verified);
 * the listening object is made anew after every datagram that does not
 * become a session, so nothing one peer sends changes how the next is
 * treated. `buf` is borrowed for the call.
 */
dg_listen_verdict dg_listener_hello(dg_listener *l, const uint8_t *buf, size_t len,
                                    const struct sockaddr *from, const char **reason,
                                    dg_session **out);

/* Stops receiving and closes the socket; the listener is freed in its close callback. */
void dg_listener_close(dg_listener *l);

#endif
