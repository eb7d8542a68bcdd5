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
#include <netinet/in.h>
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
	/* An IPv4 or IPv6 address: 28 bytes, where a sockaddr_storage takes 128 in every session. */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
	socklen_t peer_len;
	const uint8_t *rx;          /* Borrowed for one wolfSSL call; NULL when consumed. */
	size_t rx_len;              /* What is left of rx to hand to wolfSSL. */
	void *owner;                /* The session this I/O belongs to, or NULL for a listener. */
	struct dg_metrics *metrics; /* Counts datagrams sent, or NULL. */
	/*
	 * Borrowed: the loop's batch of datagrams to send (udpio.h), flushed
	 * by the loop's owner; NULL sends each datagram at once.
	 */
	struct dg_udpio *tx;
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

/* The DTLS record header's size, and the largest record fragment a peer may send. */
#define DG_DTLS_HEADER_LEN 13
/* 2^14 bytes of plaintext plus the largest expansion (RFC 6347 4.1, RFC 5246 6.2.3). */
#define DG_DTLS_MAX_FRAGMENT (16384 + 2048)
/* The largest plaintext one record carries. */
#define DG_DTLS_MAX_PLAINTEXT 16384

/* One DTLS record of a datagram, as its header says. */
typedef struct dg_dtls_record {
	uint8_t content_type; /* 20 ccs, 21 alert, 22 handshake, 23 data, 25 tls12_cid */
	uint16_t version;     /* 0xfefd for DTLS 1.2, 0xfeff for 1.0 */
	uint16_t epoch;
	uint64_t seq;            /* The 48-bit sequence number. */
	uint16_t length;         /* Of this record's fragment. */
	int handshake_type;      /* First handshake message type when content_type is 22
	                            and epoch is 0, else -1. */
	const uint8_t *raw;      /* The whole record, header included (borrowed). */
	size_t raw_len;          /* DG_DTLS_HEADER_LEN + length. */
	const uint8_t *fragment; /* The record's payload (borrowed). */
} dg_dtls_record;

/*
 * Reads the header of the first DTLS record in `buf`. Returns 0 and fills
 * *rec, or -EPROTO when the datagram is too short, not a DTLS version,
 * carries an unknown content type, or its record length overruns it. A
 * tls12_cid record (25) is reported with length 0, since its header has a
 * Connection ID of a length only the receiver knows.
 */
int dg_dtls_peek(const uint8_t *buf, size_t len, dg_dtls_record *rec);

/*
 * Walks the records of a datagram: reads the record at *off, fills *rec
 * and advances *off past it. Returns 0 for a record, -ENOENT when *off is
 * at the end, or -EPROTO when what is left is not a whole record (a short
 * header, a version that is not DTLS, an unknown or tls12_cid content
 * type, a length field that overruns the datagram); the rest of the
 * datagram cannot be framed and must be dropped.
 */
int dg_dtls_next_record(const uint8_t *buf, size_t len, size_t *off, dg_dtls_record *rec);

/* A handshake message header (RFC 6347 4.2.2) of an epoch-0 record. */
typedef struct dg_dtls_handshake {
	uint8_t msg_type;
	uint32_t length; /* Of the whole message. */
	uint16_t message_seq;
	uint32_t fragment_offset;
	uint32_t fragment_length;
	const uint8_t *body; /* fragment_length bytes (borrowed). */
} dg_dtls_handshake;

/*
 * Reads the first handshake message header of a handshake record.
 * Returns 0, or -EPROTO when the record is not a handshake record or the
 * header does not fit it or its fragment overruns the message or the
 * record.
 */
int dg_dtls_handshake_header(const dg_dtls_record *rec, dg_dtls_handshake *hs);

/*
 * Returns 1 when `hs` is a whole, unfragmented message (offset 0, the
 * fragment is the whole message), else 0.
 */
int dg_dtls_handshake_whole(const dg_dtls_handshake *hs);

/* The longest psk_identity devgate reads (RFC 4279 allows 2^16 - 1; devgate's are shorter). */
#define DG_DTLS_MAX_IDENTITY 128

/*
 * The psk_identity that opens a ClientKeyExchange (PSK and ECDHE-PSK,
 * RFC 4279 and 5489), gathered from its fragments in any order, so that
 * the identity is known as its exact bytes (wolfSSL hands it over as a C
 * string). Zeroed means empty.
 */
typedef struct dg_dtls_cke {
	uint8_t bytes[2 + DG_DTLS_MAX_IDENTITY]; /* The message's first bytes. */
	uint8_t have[(2 + DG_DTLS_MAX_IDENTITY + 7) / 8];
	int conflict; /* Two fragments disagreed about a byte. */
} dg_dtls_cke;

/*
 * Takes in what a ClientKeyExchange fragment `hs` holds of the message's
 * first bytes; other message types are ignored. Overlapping fragments
 * must agree, or the identity is refused.
 */
void dg_dtls_cke_add(dg_dtls_cke *c, const dg_dtls_handshake *hs);

/*
 * Returns 0 and points *id (into `c`) and *id_len at the identity's exact
 * bytes once every byte of it has arrived; -EAGAIN while some are
 * missing; -EPROTO when fragments disagreed or the identity is longer than
 * DG_DTLS_MAX_IDENTITY.
 */
int dg_dtls_cke_identity(const dg_dtls_cke *c, const uint8_t **id, size_t *id_len);

/* Returns 1 when the datagram starts with an epoch-0 ClientHello record. */
int dg_dtls_is_client_hello(const uint8_t *buf, size_t len);

#endif
