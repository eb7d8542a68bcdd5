/*
 * CoAP message layer over libcoap's codec (libcoap-3-notls).
 *
 * One dg_coap per session. It parses a datagram's plaintext with
 * coap_pdu_parse(), answers what the message layer answers by itself
 * (pings, resets, duplicates, malformed messages, unknown critical
 * options, proxying), and hands well-formed requests to a handler that
 * fills in a response. The reply's bytes are written into a buffer the
 * caller owns; nothing here touches a socket or a timer.
 */
#ifndef DEVGATE_COAP_H
#define DEVGATE_COAP_H

#include <stddef.h>
#include <stdint.h>

#define DG_COAP_MAX_TOKEN 8
#define DG_COAP_MAX_PATH  16
#define DG_COAP_MAX_QUERY 8
/* EXCHANGE_LIFETIME of RFC 7252 with the default transmission parameters. */
#define DG_COAP_EXCHANGE_LIFETIME_MS 247000u
/* Duplicate-detection entries kept per session. */
#define DG_COAP_DEDUP_SLOTS 8
/* The least body_cap a handler is given. */
#define DG_COAP_MIN_BODY 1280

enum dg_coap_type { DG_COAP_CON = 0, DG_COAP_NON = 1, DG_COAP_ACK = 2, DG_COAP_RST = 3 };

/* Codes as one byte, class << 5 | detail. */
#define DG_COAP_CODE(c, d) ((uint8_t)(((c) << 5) | (d)))
enum dg_coap_code {
	DG_COAP_EMPTY = 0,
	DG_COAP_GET = 1,
	DG_COAP_POST = 2,
	DG_COAP_PUT = 3,
	DG_COAP_DELETE = 4,
	DG_COAP_CREATED = DG_COAP_CODE(2, 1),
	DG_COAP_DELETED = DG_COAP_CODE(2, 2),
	DG_COAP_VALID = DG_COAP_CODE(2, 3),
	DG_COAP_CHANGED = DG_COAP_CODE(2, 4),
	DG_COAP_CONTENT = DG_COAP_CODE(2, 5),
	DG_COAP_CONTINUE = DG_COAP_CODE(2, 31),
	DG_COAP_BAD_REQUEST = DG_COAP_CODE(4, 0),
	DG_COAP_BAD_OPTION = DG_COAP_CODE(4, 2),
	DG_COAP_NOT_FOUND = DG_COAP_CODE(4, 4),
	DG_COAP_METHOD_NOT_ALLOWED = DG_COAP_CODE(4, 5),
	DG_COAP_NOT_ACCEPTABLE = DG_COAP_CODE(4, 6),
	DG_COAP_REQUEST_ENTITY_INCOMPLETE = DG_COAP_CODE(4, 8),
	DG_COAP_REQUEST_TOO_LARGE = DG_COAP_CODE(4, 13),
	DG_COAP_UNSUPPORTED_FORMAT = DG_COAP_CODE(4, 15),
	DG_COAP_TOO_MANY_REQUESTS = DG_COAP_CODE(4, 29),
	DG_COAP_INTERNAL_ERROR = DG_COAP_CODE(5, 0),
	DG_COAP_SERVICE_UNAVAILABLE = DG_COAP_CODE(5, 3),
	DG_COAP_PROXYING_NOT_SUPPORTED = DG_COAP_CODE(5, 5),
};

/* Content formats devgate speaks. */
enum dg_coap_format {
	DG_COAP_FMT_NONE = -1,
	DG_COAP_FMT_TEXT = 0,
	DG_COAP_FMT_LINK = 40,
	DG_COAP_FMT_OCTETS = 42,
	DG_COAP_FMT_JSON = 50,
	DG_COAP_FMT_CBOR = 60,
};

/* A byte string borrowed from the message being handled. */
typedef struct dg_coap_str {
	const uint8_t *s;
	size_t len;
} dg_coap_str;

/*
 * A request as the handler sees it. Every pointer is borrowed from the
 * datagram and valid only until the handler returns.
 */
typedef struct dg_coap_request {
	uint8_t type; /* enum dg_coap_type: CON or NON. */
	uint8_t code; /* 0.01 .. 0.31 */
	uint16_t mid;
	uint8_t token[DG_COAP_MAX_TOKEN];
	size_t token_len;
	dg_coap_str path[DG_COAP_MAX_PATH]; /* Uri-Path segments, in order. */
	size_t n_path;
	dg_coap_str query[DG_COAP_MAX_QUERY]; /* Uri-Query items. */
	size_t n_query;
	int content_format;     /* -1 when absent. */
	int accept;             /* -1 when absent. */
	int64_t observe;        /* -1 when absent, else 0..2^24-1. */
	int64_t block1;         /* -1 when absent, else the raw option value. */
	int64_t block2;         /* -1 when absent, else the raw option value. */
	int64_t size1;          /* -1 when absent. */
	const uint8_t *payload; /* NULL when there is none. */
	size_t payload_len;
} dg_coap_request;

/*
 * The response a handler fills in. The message layer sets type, message
 * ID and token. `body` points at a buffer of `body_cap` bytes owned by
 * the message layer; the handler writes up to body_cap bytes there and
 * sets body_len. body_cap is what fits in one message of the size the
 * caller of dg_coap_input() allows (its `outcap`, less room for the
 * header), and at least DG_COAP_MIN_BODY when outcap is large enough: a
 * handler with more to say answers with Block2. A handler that leaves
 * `code` at 0 gets 5.00.
 */
typedef struct dg_coap_response {
	uint8_t code;
	int content_format; /* -1: no Content-Format option. */
	int64_t max_age;    /* -1: no Max-Age option. */
	int64_t observe;    /* -1: no Observe option. */
	int64_t block1;     /* -1: none; else the raw Block1 value to echo. */
	int64_t block2;     /* -1: none; else the raw Block2 value. */
	int64_t size1;      /* -1: none. */
	uint32_t size2;     /* 0: none; else the whole representation's size (Block2). */
	uint8_t etag[8];    /* The ETag option's value, when etag_len > 0. */
	size_t etag_len;    /* 0..8; 0: no ETag. */
	uint8_t *body;
	size_t body_cap;
	size_t body_len;
	/*
	 * Set by a handler that answers later with dg_coap_reply() (after a
	 * commit): nothing is sent now, and a duplicate of the CON meanwhile
	 * is ignored (the client retransmits until the reply comes).
	 */
	int deferred;
} dg_coap_response;

typedef void (*dg_coap_handler)(void *ctx, const dg_coap_request *req, dg_coap_response *resp);

typedef struct dg_coap dg_coap;

/* Creates the message-layer state of one session. Returns 0 or -ENOMEM. */
int dg_coap_new(dg_coap **out);

/* Frees it; NULL is a no-op. */
void dg_coap_free(dg_coap *c);

/*
 * Handles one CoAP message `msg` of `len` bytes that arrived at `now_ms`
 * (a monotonic clock in milliseconds). Calls `handler` at most once, for a
 * new request. Writes the reply, if any, into `out` (capacity `outcap`,
 * at least 64 bytes) and its length into *outlen; *outlen == 0 means
 * nothing is to be sent. Returns 0, or -ENOBUFS when the reply does not
 * fit (nothing is sent then), or -ENOMEM.
 *
 * What it answers by itself:
 *   - a CON duplicate (same message ID within EXCHANGE_LIFETIME): the
 *     cached reply again, without calling the handler;
 *   - an empty CON (ping): RST; an empty NON: nothing;
 *   - a malformed message: RST for a CON, nothing otherwise;
 *   - an unrecognised critical option: 4.02;
 *   - Proxy-Uri or Proxy-Scheme: 5.05;
 *   - ACK and RST: nothing (later issues match them to notifications);
 *   - a response code arriving in a CON/NON: RST for CON, nothing for NON.
 * A CON request gets a piggybacked ACK; a NON request a NON reply with a
 * fresh message ID.
 */
int dg_coap_input(dg_coap *c, const uint8_t *msg, size_t len, uint64_t now_ms,
                  dg_coap_handler handler, void *ctx, uint8_t *out, size_t outcap, size_t *outlen);

/*
 * Sends the deferred reply to a request (type, mid and token as the
 * request had them): an ACK for a CON (cached for its duplicates), a NON
 * with a fresh message ID for a NON. Writes the bytes into `out`. Returns
 * 0, -ENOBUFS or -EINVAL.
 */
int dg_coap_reply(dg_coap *c, uint8_t req_type, uint16_t mid, const uint8_t *token,
                  size_t token_len, const dg_coap_response *resp, uint64_t now_ms, uint8_t *out,
                  size_t outcap, size_t *outlen);

/* Sets a response's code and a text/plain body (cut to body_cap). */
void dg_coap_set_text(dg_coap_response *resp, uint8_t code, const char *text);

/* Initialises a response: no code, no options, no body. */
void dg_coap_response_init(dg_coap_response *resp);

/*
 * The response code the last dg_coap_input() answered a request with by
 * itself, without calling the handler (4.00, 4.02, 5.05: a refused
 * request, for counting), or 0 (the handler answered, a duplicate got its
 * cached reply, or the message was no request).
 */
uint8_t dg_coap_refused(const dg_coap *c);

/*
 * Frees what duplicate detection keeps past its lifetime at `now_ms`: the
 * reply of a CON after EXCHANGE_LIFETIME, the ID of a NON after
 * NON_LIFETIME. Returns when the next entry it keeps expires, or 0 when it
 * keeps none, so that the caller arms one timer for it. It looks at
 * DG_COAP_DEDUP_SLOTS entries of each kind, whatever else the session holds.
 * dg_coap_input() and dg_coap_reply() may add an entry; call this after
 * them to learn when the first one expires.
 */
uint64_t dg_coap_expire(dg_coap *c, uint64_t now_ms);

/* The bytes of cached replies this message layer holds now (for tests and accounting). */
size_t dg_coap_kept_bytes(const dg_coap *c);

/* Returns a fresh message ID for a message this side originates. */
uint16_t dg_coap_next_mid(dg_coap *c);

/*
 * Encodes one message into out (capacity outcap): header, token, the
 * options the response carries (in option-number order) and the body.
 * Returns 0 and sets *outlen, or -ENOBUFS, or -EINVAL for a token over 8
 * bytes.
 *
 * A NULL `resp` encodes an empty message (code 0.00, no options, no
 * body), e.g. an RST. An option value past what its option can carry
 * (Observe, Block1, Block2 over 2^24-1, Content-Format over 65535, Max-Age
 * and Size1 over 2^32-1) is -EINVAL too; a negative one means "absent".
 * The body may lie inside `out` (it is moved into place first).
 */
int dg_coap_encode(uint8_t type, uint16_t mid, const uint8_t *token, size_t token_len,
                   const dg_coap_response *resp, uint8_t *out, size_t outcap, size_t *outlen);

/* Returns 1 when the request's Uri-Path equals the NULL-terminated list of segments. */
int dg_coap_path_is(const dg_coap_request *req, const char *const *segments);

#endif
