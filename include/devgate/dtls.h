/*
 * DTLS with wolfSSL: the shared context (suites, server certificate, PSK
 * callback), the custom I/O that feeds wolfSSL the datagram at hand and
 * sends through libuv, and a bounds-checked reader of DTLS record headers
 * used to route datagrams before wolfSSL sees them.
 *
 * wolfSSL never touches a socket.
 */
#ifndef DEVGATE_DTLS_H
#define DEVGATE_DTLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

/* The wolfSSL names of the suites devgate offers, most preferred first. */
#define DG_DTLS_CIPHER_LIST                                                                        \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES128-CCM-8:"           \
	"PSK-AES128-CCM-8:PSK-AES128-CCM:PSK-AES128-GCM-SHA256:PSK-AES128-CBC-SHA256:"             \
	"PSK-CHACHA20-POLY1305:ECDHE-PSK-AES128-CBC-SHA256:ECDHE-PSK-CHACHA20-POLY1305"

/*
 * Per-WOLFSSL I/O state: where to send, and the one datagram wolfSSL may
 * read next. Owned by whoever owns the WOLFSSL object.
 */
typedef struct dg_dtls_io {
	uv_udp_t *udp; /* Borrowed: the socket the peer talks to. */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	const uint8_t *rx; /* Borrowed for one wolfSSL call; NULL when consumed. */
	size_t rx_len;
	void *owner;                /* The session this I/O belongs to, or NULL for a listener. */
	struct dg_metrics *metrics; /* Counts datagrams sent, or NULL. */
	uint64_t tx_datagrams;
	uint64_t tx_errors;
} dg_dtls_io;

/*
 * Makes the shared server context: DTLS 1.2, the suite list above, the
 * certificate chain and key from PEM files, the custom I/O callbacks,
 * `psk_cb` as the PSK server callback, and `verify_cb` as the judge of
 * client certificates (the context itself trusts no CA, so nothing is
 * accepted unless verify_cb accepts it; a certificate suite without a
 * client certificate fails the handshake). Returns 0 and sets *out, or a
 * negative errno with a reason in err.
 */
int dg_dtls_ctx_new(const char *cert_pem, const char *key_pem, wc_psk_server_callback psk_cb,
                    VerifyCallback verify_cb, WOLFSSL_CTX **out, char *err, size_t errlen);

/*
 * Gives a WOLFSSL object that is about to handshake its own, empty
 * certificate store: every CA certificate wolfSSL keeps while it
 * processes the peer's chain (ProcessPeerCerts adds the chain's CAs to
 * SSL_CM(ssl) once the verify callback accepts them) lands there, never
 * in a store shared between sessions. Returns 0 or a negative errno (the
 * object is then unchanged).
 */
int dg_dtls_isolate_verify(WOLFSSL *ssl);

/* Frees the store dg_dtls_isolate_verify() gave `ssl`, once its handshake is over. */
void dg_dtls_end_verify(WOLFSSL *ssl);

/* Points a WOLFSSL object's reads and writes at `io`. */
void dg_dtls_set_io(WOLFSSL *ssl, dg_dtls_io *io);

/* Returns the dg_dtls_io a WOLFSSL object reads and writes through. */
dg_dtls_io *dg_dtls_get_io(WOLFSSL *ssl);

/*
 * Sends a fatal alert as a plaintext epoch-0 record. For a handshake that
 * fails before the server's ChangeCipherSpec, where wolfSSL has no public
 * call to send one and the peer still reads epoch 0 (a wrong PSK, found
 * when the client's Finished does not decrypt). `desc` is the RFC 5246
 * AlertDescription.
 */
void dg_dtls_send_fatal_alert(dg_dtls_io *io, uint8_t desc);

/* What the first record of a datagram says about itself. */
typedef struct dg_dtls_record {
	uint8_t content_type; /* 20 ccs, 21 alert, 22 handshake, 23 data, 25 tls12_cid */
	uint16_t version;     /* 0xfefd for DTLS 1.2, 0xfeff for 1.0 */
	uint16_t epoch;
	uint16_t length;    /* Of this record's fragment. */
	int handshake_type; /* First handshake message type when content_type is 22
	                       and epoch is 0, else -1. */
} dg_dtls_record;

/*
 * Reads the header of the first DTLS record in `buf`. Returns 0 and fills
 * *rec, or -EPROTO when the datagram is too short, not a DTLS version,
 * carries an unknown content type, or its record length overruns it.
 */
int dg_dtls_peek(const uint8_t *buf, size_t len, dg_dtls_record *rec);

/* Returns 1 when the datagram starts with an epoch-0 ClientHello record. */
int dg_dtls_is_client_hello(const uint8_t *buf, size_t len);

#endif
