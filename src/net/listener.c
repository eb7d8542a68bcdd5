/*
 * A worker's socket for one listen address and the stateless cookie
 * exchange: a ClientHello becomes a session only once it carries a valid
 * cookie, so nothing is allocated for a spoofed source.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devgate/dtls.h"
#include "devgate/listener.h"
#include "devgate/log.h"

/* The receive buffer each listening socket asks for (capped by net.core.rmem_max). */
#define RCVBUF_BYTES (4 << 20)

struct dg_listener {
	uv_udp_t udp;
	WOLFSSL_CTX *ctx;
	WOLFSSL *ssl;  /* The listening object: answers ClientHellos statelessly. */
	dg_dtls_io io; /* Its I/O: the datagram at hand and its sender. */
	uint8_t secret[DG_LISTENER_SECRET_LEN];
	dg_listener_admit_fn admit;
	void *admit_arg;
	void *owner;
	size_t index;
	dg_session *handed; /* Set by the ClientHello callback on a verified cookie. */
	const struct sockaddr *from;
};

static socklen_t
addr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

int
dg_listener_probe(const struct sockaddr *addr)
{
	int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int one = 1, rc = 0;

	if (fd < 0)
		return -errno;
	if (addr->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, addr, addr_len(addr)) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* The ClientHello carried a valid cookie: the peer owns its address. */
static int
ch_good(WOLFSSL *ssl, void *arg)
{
	dg_listener *l = arg;
	dg_session *s = l->admit(l->admit_arg, ssl, &l->udp, l->from);
	if (s == NULL) {
		/* The listener keeps its object; point it back at the listener's I/O. */
		dg_dtls_set_io(ssl, &l->io);
		return -1;
	}
	/* The session took the object; the listener gets a fresh one after accept returns. */
	l->handed = s;
	return 0;
}

/* A fresh listening object. Returns 0 or a negative errno. */
static int
new_ssl(dg_listener *l)
{
	if (l->ssl != NULL)
		wolfSSL_free(l->ssl);
	l->ssl = wolfSSL_new(l->ctx);
	if (l->ssl == NULL)
		return -ENOMEM;
	dg_dtls_set_io(l->ssl, &l->io);
	wolfSSL_dtls_set_using_nonblock(l->ssl, 1);
	/* Unlike most of wolfSSL, this one returns 0 on success. */
	if (wolfSSL_DTLS_SetCookieSecret(l->ssl, l->secret, DG_LISTENER_SECRET_LEN) != 0)
		return -EIO;
	if (wolfDTLS_SetChGoodCb(l->ssl, ch_good, l) != WOLFSSL_SUCCESS)
		return -EIO;
	return 0;
}

int
dg_listener_new(uv_loop_t *loop, const struct sockaddr *addr, WOLFSSL_CTX *ctx,
                const uint8_t *secret, dg_listener_admit_fn admit, void *arg, void *owner,
                size_t index, struct dg_udpio *tx, dg_listener **out)
{
	dg_listener *l = calloc(1, sizeof(*l));
	int fd = -1, one = 1, rc;

	if (l == NULL)
		return -ENOMEM;
	l->ctx = ctx;
	l->admit = admit;
	l->admit_arg = arg;
	l->owner = owner;
	l->index = index;
	memcpy(l->secret, secret, DG_LISTENER_SECRET_LEN);
	/*
	 * libuv 1.44 has no flag for SO_REUSEPORT on UDP: the socket is made
	 * here, the option set before bind, and the socket handed to libuv.
	 */
	fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    (addr->sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
	    bind(fd, addr, addr_len(addr)) != 0) {
		rc = -errno;
		goto out;
	}
	/*
	 * A fleet that reconnects, or many sessions' requests at once, arrive
	 * faster than one loop pass reads them: the default receive buffer
	 * (about 200 datagrams) drops the rest. Ask for more: beyond
	 * net.core.rmem_max with CAP_NET_ADMIN, else up to it; less is no error.
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &(int){RCVBUF_BYTES}, sizeof(int)) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &(int){RCVBUF_BYTES}, sizeof(int));
	rc = new_ssl(l);
	if (rc != 0)
		goto out;
	rc = uv_udp_init_ex(loop, &l->udp, AF_UNSPEC | UV_UDP_RECVMMSG);
	if (rc != 0)
		goto out;
	rc = uv_udp_open(&l->udp, fd);
	if (rc != 0) {
		/* The handle exists: it is closed, and the listener freed, asynchronously. */
		close(fd);
		dg_listener_close(l);
		return rc;
	}
	l->udp.data = l;
	l->io.udp = &l->udp;
	l->io.tx = tx;
	*out = l;
	return 0;
out:
	if (fd >= 0)
		close(fd);
	if (l->ssl != NULL)
		wolfSSL_free(l->ssl);
	explicit_bzero(l->secret, sizeof(l->secret));
	free(l);
	return rc;
}

uv_udp_t *
dg_listener_udp(dg_listener *l)
{
	return &l->udp;
}

int
dg_listener_sockname(dg_listener *l, struct sockaddr_storage *out)
{
	int len = sizeof(*out);
	return uv_udp_getsockname(&l->udp, (struct sockaddr *)out, &len);
}

void *
dg_listener_owner(const dg_listener *l)
{
	return l->owner;
}

size_t
dg_listener_index(const dg_listener *l)
{
	return l->index;
}

void
dg_listener_set_metrics(dg_listener *l, struct dg_metrics *m)
{
	l->io.metrics = m;
}

void
dg_listener_set_secret(dg_listener *l, const uint8_t *secret)
{
	memcpy(l->secret, secret, DG_LISTENER_SECRET_LEN);
	if (l->ssl != NULL)
		wolfSSL_DTLS_SetCookieSecret(l->ssl, l->secret, DG_LISTENER_SECRET_LEN);
}

dg_listen_verdict
dg_listener_hello(dg_listener *l, const uint8_t *buf, size_t len, const struct sockaddr *from,
                  const char **reason, dg_session **out)
{
	dg_dtls_record rec;
	dg_dtls_handshake hs;
	size_t off = 0;
	socklen_t alen = addr_len(from);

	if (dg_dtls_next_record(buf, len, &off, &rec) != 0) {
		*reason = "not_dtls";
		return DG_LISTEN_DROPPED;
	}
	if (rec.epoch != 0 || rec.handshake_type != 1 || dg_dtls_handshake_header(&rec, &hs) != 0) {
		*reason = "no_session";
		return DG_LISTEN_DROPPED;
	}
	if (!dg_dtls_handshake_whole(&hs)) {
		*reason = "fragmented_hello";
		return DG_LISTEN_DROPPED;
	}
	if (l->ssl == NULL && new_ssl(l) != 0)
		return DG_LISTEN_ANSWERED;
	memcpy(&l->io.peer, from, alen);
	l->io.peer_len = alen;
	l->io.rx = rec.raw;
	l->io.rx_len = rec.raw_len;
	l->from = from;
	/* The cookie is bound to this exact address. */
	wolfSSL_dtls_set_peer(l->ssl, (void *)(uintptr_t)from, alen);
	wolfSSL_accept(l->ssl);
	l->io.rx = NULL;
	l->io.rx_len = 0;
	l->from = NULL;
	dg_session *s = l->handed;
	l->handed = NULL;
	if (s != NULL)
		l->ssl = NULL; /* The session's now. */
	/* A HelloVerifyRequest was sent, the hello refused, or a session made: start clean. */
	if (new_ssl(l) != 0)
		dg_log(DG_LOG_ERROR, "listener.error", "cannot make a listening DTLS object");
	if (s == NULL)
		return DG_LISTEN_ANSWERED;
	*out = s;
	return DG_LISTEN_SESSION;
}

static void
close_cb(uv_handle_t *h)
{
	dg_listener *l = dg_container_of((uv_udp_t *)(void *)h, dg_listener, udp);
	if (l->ssl != NULL)
		wolfSSL_free(l->ssl);
	explicit_bzero(l->secret, sizeof(l->secret));
	free(l);
}

void
dg_listener_close(dg_listener *l)
{
	if (l == NULL || uv_is_closing((uv_handle_t *)&l->udp))
		return;
	uv_udp_recv_stop(&l->udp);
	uv_close((uv_handle_t *)&l->udp, close_cb);
}
