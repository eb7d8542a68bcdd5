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

static int
io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	dg_dtls_io *io = ctx;
	(void)ssl;
	if (io->rx == NULL)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	/* A datagram larger than the buffer is truncated; DTLS then drops it. */
	size_t n = io->rx_len < (size_t)sz ? io->rx_len : (size_t)sz;
	memcpy(buf, io->rx, n);
	io->rx = NULL;
	io->rx_len = 0;
	return (int)n;
}

static int
io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	dg_dtls_io *io = ctx;
	uv_buf_t b = uv_buf_init(buf, (unsigned)sz);
	(void)ssl;
	int rc = uv_udp_try_send(io->udp, &b, 1, (const struct sockaddr *)&io->peer);
	/*
	 * A datagram the kernel will not take now is lost like any other;
	 * DTLS retransmits handshake flights and CoAP retransmits requests.
	 */
	if (rc < 0) {
		io->tx_errors++;
	} else {
		io->tx_datagrams++;
		if (io->metrics != NULL)
			dg_metrics_datagram(io->metrics, DG_DIR_OUT);
	}
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
	wolfSSL_CTX_set_psk_server_callback(ctx, psk_cb);
	/* P-256 for ECDHE, the curve the device suites are defined on. */
	if (wolfSSL_CTX_UseSupportedCurve(ctx, WOLFSSL_ECC_SECP256R1) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "wolfSSL lacks P-256");
		goto out;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_EXCEPT_PSK,
	                       verify_cb);
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

int
dg_dtls_peek(const uint8_t *buf, size_t len, dg_dtls_record *rec)
{
	const size_t hdr = 13;

	if (buf == NULL || len < hdr)
		return -EPROTO;
	rec->content_type = buf[0];
	rec->version = (uint16_t)(buf[1] << 8 | buf[2]);
	rec->epoch = (uint16_t)(buf[3] << 8 | buf[4]);
	rec->handshake_type = -1;
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
		return 0;
	default:
		return -EPROTO;
	}
	rec->length = (uint16_t)(buf[11] << 8 | buf[12]);
	if (rec->length > len - hdr)
		return -EPROTO;
	if (rec->content_type == 22 && rec->epoch == 0 && rec->length >= 12)
		rec->handshake_type = buf[hdr];
	return 0;
}

int
dg_dtls_is_client_hello(const uint8_t *buf, size_t len)
{
	dg_dtls_record rec;
	return dg_dtls_peek(buf, len, &rec) == 0 && rec.handshake_type == 1;
}
