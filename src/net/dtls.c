/*
 * wolfSSL context and custom I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include "devgate/dtls.h"
#include "devgate/metrics.h"
#include "devgate/udpio.h"

static int
io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	dg_dtls_io *io = ctx;
	(void)ssl;
	if (io->rx == NULL || io->rx_len == 0 || sz <= 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	/*
	 * The caller hands over one whole record at a time. wolfSSL reads at
	 * most about one MTU per call; a larger record is handed over in
	 * pieces, which wolfSSL joins because the record header asks for
	 * them. Once the record is consumed, reads want more, so nothing of a
	 * later datagram is ever joined to it.
	 */
	size_t n = io->rx_len < (size_t)sz ? io->rx_len : (size_t)sz;
	memcpy(buf, io->rx, n);
	io->rx += n;
	io->rx_len -= n;
	if (io->rx_len == 0)
		io->rx = NULL;
	return (int)n;
}

static int
io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	dg_dtls_io *io = ctx;
	uv_os_fd_t fd;
	int rc;
	(void)ssl;
	if (io->tx != NULL && uv_fileno((const uv_handle_t *)io->udp, &fd) == 0) {
		/* Queued with the loop's other sends; they go out in one sendmmsg. */
		rc = dg_udpio_queue(io->tx, fd, buf, (size_t)sz, (const struct sockaddr *)&io->peer,
		                    io->peer_len);
	} else {
		uv_buf_t b = uv_buf_init(buf, (unsigned)sz);
		rc = uv_udp_try_send(io->udp, &b, 1, (const struct sockaddr *)&io->peer);
	}
	/*
	 * A datagram the kernel will not take now is lost like any other;
	 * DTLS retransmits handshake flights and CoAP retransmits requests.
	 */
	if (rc >= 0 && io->metrics != NULL)
		dg_metrics_datagram(io->metrics, DG_DIR_OUT);
	return sz;
}

void
dg_dtls_send_fatal_alert(dg_dtls_io *io, uint8_t desc)
{
	/*
	 * Type 21 (alert), DTLS 1.2, epoch 0, a sequence number above any the
	 * handshake used so the peer's replay window accepts it, length 2.
	 */
	uint8_t rec[15] = {21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 2, desc};
	io_send(NULL, (char *)rec, (int)sizeof(rec), io);
}

void
dg_dtls_set_io(WOLFSSL *ssl, dg_dtls_io *io)
{
	wolfSSL_SetIOReadCtx(ssl, io);
	wolfSSL_SetIOWriteCtx(ssl, io);
}

dg_dtls_io *
dg_dtls_get_io(WOLFSSL *ssl)
{
	return wolfSSL_GetIOReadCtx(ssl);
}

/* Returns 0 when `path` can be opened for reading, else -errno (for the error line). */
static int
readable(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -errno;
	fclose(f);
	return 0;
}

int
dg_dtls_ctx_new(const char *cert_pem, const char *key_pem, wc_psk_server_callback psk_cb,
                VerifyCallback verify_cb, WOLFSSL_CTX **out, char *err, size_t errlen)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfDTLSv1_2_server_method());
	WOLFSSL_X509_STORE *store;
	int rc = -EINVAL;

	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create the DTLS context");
		return -ENOMEM;
	}
	/*
	 * The context gets a store of its own (empty, and kept empty: every
	 * handshake verifies into a throw-away store, see
	 * dg_dtls_isolate_verify), so that a session's store can be dropped
	 * by pointing the session back at the context's.
	 */
	store = wolfSSL_X509_STORE_new();
	if (store == NULL) {
		snprintf(err, errlen, "cannot create the DTLS context's certificate store");
		rc = -ENOMEM;
		goto out;
	}
	wolfSSL_CTX_set_cert_store(ctx, store);
	if (wolfSSL_CTX_get_cert_store(ctx) != store) {
		wolfSSL_X509_STORE_free(store);
		snprintf(err, errlen, "cannot set the DTLS context's certificate store");
		goto out;
	}
	if (wolfSSL_CTX_set_cipher_list(ctx, DG_DTLS_CIPHER_LIST) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "wolfSSL lacks a required cipher suite (%s)",
		         DG_DTLS_CIPHER_LIST);
		goto out;
	}
	if ((rc = readable(cert_pem)) != 0 || (rc = readable(key_pem)) != 0) {
		snprintf(err, errlen, "%s: cannot read: %s",
		         readable(cert_pem) != 0 ? cert_pem : key_pem, strerror(-rc));
		goto out;
	}
	rc = -EINVAL;
	if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert_pem) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "%s: not a usable PEM certificate chain", cert_pem);
		goto out;
	}
	if (wolfSSL_CTX_use_PrivateKey_file(ctx, key_pem, WOLFSSL_FILETYPE_PEM) !=
	    WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "%s: not a usable PEM private key", key_pem);
		goto out;
	}
	if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "%s: does not match the certificate in %s", key_pem,
		         cert_pem);
		goto out;
	}
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
	/*
	 * A flight goes out in as few datagrams as fit the MTU (wolfSSL
	 * flushes before a message would overflow WOLFSSL_MAX_MTU, 1400
	 * bytes): ServerHello and ServerHelloDone of a PSK handshake in one,
	 * not one datagram (one sendmsg) per message. Measured: sends were a
	 * quarter of the server's CPU in a PSK handshake.
	 */
	if (wolfSSL_CTX_set_group_messages(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot group DTLS handshake messages");
		goto out;
	}
	wolfSSL_CTX_set_psk_server_callback(ctx, psk_cb);
	/* P-256 for ECDHE, the curve the device suites are defined on. */
	if (wolfSSL_CTX_UseSupportedCurve(ctx, WOLFSSL_ECC_SECP256R1) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "wolfSSL lacks P-256");
		goto out;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_EXCEPT_PSK,
	                       verify_cb);
	/*
	 * No session resumption: a resumed session carries no device
	 * identity through our callbacks, so every client does a full
	 * handshake. No session cache, no session IDs, no tickets.
	 */
	wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
#ifdef HAVE_SESSION_TICKET
	/* scripts/deps.sh builds wolfSSL without tickets; another build may have them. */
	if (wolfSSL_CTX_NoTicketTLSv12(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot turn off TLS 1.2 session tickets");
		goto out;
	}
#endif
	*out = ctx;
	ctx = NULL;
	rc = 0;
out:
	if (ctx != NULL)
		wolfSSL_CTX_free(ctx);
	return rc;
}

int
dg_dtls_isolate_verify(WOLFSSL *ssl)
{
	WOLFSSL_X509_STORE *store = wolfSSL_X509_STORE_new();

	if (store == NULL)
		return -ENOMEM;
	/* set0: the WOLFSSL owns the store and frees it with itself. */
	if (wolfSSL_set0_verify_cert_store(ssl, store) != WOLFSSL_SUCCESS) {
		wolfSSL_X509_STORE_free(store);
		return -EIO;
	}
	return 0;
}

void
dg_dtls_end_verify(WOLFSSL *ssl)
{
	WOLFSSL_CTX *ctx = wolfSSL_get_SSL_CTX(ssl);
	WOLFSSL_X509_STORE *shared = ctx != NULL ? wolfSSL_CTX_get_cert_store(ctx) : NULL;

	/*
	 * Given the context's own store, wolfSSL frees the session's and
	 * points the session back at the context's (ssl.c,
	 * wolfSSL_set0_verify_cert_store). No certificate is processed after
	 * the handshake (DTLS 1.2, no renegotiation).
	 */
	if (shared != NULL)
		wolfSSL_set0_verify_cert_store(ssl, shared);
}

/* Reads a record header at buf[0..len); the caller checks len >= DG_DTLS_HEADER_LEN. */
static int
read_header(const uint8_t *buf, size_t len, dg_dtls_record *rec)
{
	rec->content_type = buf[0];
	rec->version = (uint16_t)(buf[1] << 8 | buf[2]);
	rec->epoch = (uint16_t)(buf[3] << 8 | buf[4]);
	rec->seq = 0;
	for (int i = 5; i < 11; i++)
		rec->seq = rec->seq << 8 | buf[i];
	rec->handshake_type = -1;
	rec->raw = buf;
	rec->fragment = buf + DG_DTLS_HEADER_LEN;
	if (buf[1] != 0xfe || (rec->version != 0xfefd && rec->version != 0xfeff))
		return -EPROTO;
	switch (rec->content_type) {
	case 20:
	case 21:
	case 22:
	case 23:
		break;
	case 25:
		/* tls12_cid: the header holds a CID of a length only the receiver knows. */
		rec->length = 0;
		rec->raw_len = len;
		return -EAGAIN;
	default:
		return -EPROTO;
	}
	rec->length = (uint16_t)(buf[11] << 8 | buf[12]);
	if (rec->length > len - DG_DTLS_HEADER_LEN)
		return -EPROTO;
	rec->raw_len = DG_DTLS_HEADER_LEN + (size_t)rec->length;
	if (rec->content_type == 22 && rec->epoch == 0 && rec->length >= 12)
		rec->handshake_type = buf[DG_DTLS_HEADER_LEN];
	return 0;
}

int
dg_dtls_peek(const uint8_t *buf, size_t len, dg_dtls_record *rec)
{
	if (buf == NULL || len < DG_DTLS_HEADER_LEN)
		return -EPROTO;
	int rc = read_header(buf, len, rec);
	return rc == -EAGAIN ? 0 : rc;
}

int
dg_dtls_next_record(const uint8_t *buf, size_t len, size_t *off, dg_dtls_record *rec)
{
	if (buf == NULL || *off >= len)
		return -ENOENT;
	if (len - *off < DG_DTLS_HEADER_LEN)
		return -EPROTO;
	int rc = read_header(buf + *off, len - *off, rec);
	if (rc != 0)
		return -EPROTO;
	*off += rec->raw_len;
	return 0;
}

static uint32_t
be24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

int
dg_dtls_handshake_header(const dg_dtls_record *rec, dg_dtls_handshake *hs)
{
	const size_t hdr = 12;

	if (rec->content_type != 22 || rec->length < hdr)
		return -EPROTO;
	const uint8_t *p = rec->fragment;
	hs->msg_type = p[0];
	hs->length = be24(p + 1);
	hs->message_seq = (uint16_t)(p[4] << 8 | p[5]);
	hs->fragment_offset = be24(p + 6);
	hs->fragment_length = be24(p + 9);
	hs->body = p + hdr;
	if (hs->fragment_length > rec->length - hdr || hs->fragment_offset > hs->length ||
	    hs->fragment_length > hs->length - hs->fragment_offset)
		return -EPROTO;
	return 0;
}

int
dg_dtls_handshake_whole(const dg_dtls_handshake *hs)
{
	return hs->fragment_offset == 0 && hs->fragment_length == hs->length;
}

void
dg_dtls_cke_add(dg_dtls_cke *c, const dg_dtls_handshake *hs)
{
	size_t lim = hs->length < sizeof(c->bytes) ? hs->length : sizeof(c->bytes);

	if (hs->msg_type != 16 || hs->fragment_offset >= lim)
		return;
	size_t end = (size_t)hs->fragment_offset + hs->fragment_length;
	if (end > lim)
		end = lim;
	for (size_t i = hs->fragment_offset; i < end; i++) {
		uint8_t b = hs->body[i - hs->fragment_offset];
		uint8_t bit = (uint8_t)(1u << (i % 8));
		if ((c->have[i / 8] & bit) && c->bytes[i] != b)
			c->conflict = 1;
		c->bytes[i] = b;
		c->have[i / 8] |= bit;
	}
}

static int
cke_has(const dg_dtls_cke *c, size_t i)
{
	return (c->have[i / 8] >> (i % 8)) & 1;
}

int
dg_dtls_cke_identity(const dg_dtls_cke *c, const uint8_t **id, size_t *id_len)
{
	if (c->conflict)
		return -EPROTO;
	if (!cke_has(c, 0) || !cke_has(c, 1))
		return -EAGAIN;
	size_t n = (size_t)c->bytes[0] << 8 | c->bytes[1];
	if (n > DG_DTLS_MAX_IDENTITY)
		return -EPROTO;
	for (size_t i = 2; i < 2 + n; i++)
		if (!cke_has(c, i))
			return -EAGAIN;
	*id = c->bytes + 2;
	*id_len = n;
	return 0;
}

int
dg_dtls_is_client_hello(const uint8_t *buf, size_t len)
{
	dg_dtls_record rec;
	return dg_dtls_peek(buf, len, &rec) == 0 && rec.handshake_type == 1;
}
