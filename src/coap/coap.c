/*
 * The CoAP message layer of one session.
 *
 * libcoap is only the codec here: coap_pdu_parse() checks a datagram's
 * structure and its option iterator walks the options. Replies are
 * encoded by hand into the caller's buffer, since libcoap 4.3.1 has no
 * public way to get at a PDU's wire bytes.
 *
 * Duplicate detection keeps two small rings per session: the last
 * DG_COAP_DEDUP_SLOTS confirmable requests with the bytes of their
 * piggybacked replies, and the message IDs of the last non-confirmable
 * requests. An entry lives for its lifetime (EXCHANGE_LIFETIME for a CON,
 * NON_LIFETIME for a NON) and no longer: dg_coap_expire() frees what has
 * passed it, so an idle session keeps no reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coap3/coap.h>

#include "devgate/coap.h"

/* NON_LIFETIME of RFC 7252 with the default transmission parameters. */
#define NON_LIFETIME_MS 145000u

/*
 * Bytes kept in front of the response body when it is written straight
 * into the caller's buffer: header, token, every response option at its
 * largest (an 8-byte ETag and Size2 included), and the payload marker fit
 * in 4 + 8 + 40 + 1 = 53.
 */
#define HEAD_ROOM 64

#define VERSION        1
#define PAYLOAD_MARKER 0xff

enum {
	OPT_IF_MATCH = 1,
	OPT_URI_HOST = 3,
	OPT_ETAG = 4,
	OPT_IF_NONE_MATCH = 5,
	OPT_OBSERVE = 6,
	OPT_URI_PORT = 7,
	OPT_LOCATION_PATH = 8,
	OPT_URI_PATH = 11,
	OPT_CONTENT_FORMAT = 12,
	OPT_MAX_AGE = 14,
	OPT_URI_QUERY = 15,
	OPT_ACCEPT = 17,
	OPT_LOCATION_QUERY = 20,
	OPT_BLOCK2 = 23,
	OPT_BLOCK1 = 27,
	OPT_SIZE2 = 28,
	OPT_PROXY_URI = 35,
	OPT_PROXY_SCHEME = 39,
	OPT_SIZE1 = 60,
	OPT_NO_RESPONSE = 258,
};

/* The most bytes a reused reply buffer may hold beyond the reply it keeps. */
#define REUSE_SLACK 64

typedef struct con_entry {
	uint8_t *reply; /* The piggybacked reply as sent, malloc'ed (cap bytes); or NULL. */
	uint64_t at_ms;
	uint16_t len;
	uint16_t cap; /* What reply holds: a slot taken over keeps its buffer if the reply fits. */
	uint16_t mid;
	uint8_t used;
} con_entry;

typedef struct non_entry {
	uint64_t at_ms;
	uint16_t mid;
	uint8_t used;
} non_entry;

struct dg_coap {
	con_entry con[DG_COAP_DEDUP_SLOTS];
	non_entry non[DG_COAP_DEDUP_SLOTS];
	unsigned con_next; /* The ring slot the next CON entry takes. */
	unsigned non_next;
	uint16_t next_mid;
	uint8_t *scratch; /* Body buffer for callers with a small `out`. */
	uint8_t refused;  /* What the last input's request was refused with here, or 0. */
};

/* What option parsing decided the message layer answers by itself. */
typedef struct verdict {
	uint8_t code; /* 0: hand the request to the handler. */
	char diag[32];
} verdict;

int
dg_coap_new(dg_coap **out)
{
	struct timespec ts;
	dg_coap *c;
	uint32_t seed;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	/* Keep libcoap quiet about whatever a peer sends. */
	coap_set_log_level(LOG_EMERG);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	seed = (uint32_t)((uintptr_t)c >> 4) ^ (uint32_t)ts.tv_nsec ^
	       ((uint32_t)ts.tv_sec * 2654435761u);
	seed ^= seed >> 16;
	seed *= 0x7feb352du;
	seed ^= seed >> 15;
	c->next_mid = (uint16_t)seed;
	*out = c;
	return 0;
}

void
dg_coap_free(dg_coap *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < DG_COAP_DEDUP_SLOTS; i++)
		free(c->con[i].reply);
	free(c->scratch);
	free(c);
}

uint8_t
dg_coap_refused(const dg_coap *c)
{
	return c->refused;
}

uint16_t
dg_coap_next_mid(dg_coap *c)
{
	return c->next_mid++;
}

/* Frees a CON entry's reply and marks it unused. */
static void
con_forget(con_entry *e)
{
	free(e->reply);
	e->reply = NULL;
	e->len = 0;
	e->cap = 0;
	e->used = 0;
}

static int
expired(uint64_t at_ms, uint64_t now_ms, uint64_t lifetime_ms)
{
	return now_ms >= at_ms && now_ms - at_ms >= lifetime_ms;
}

/* The earlier of `next` and `at`, where 0 is "none". */
static uint64_t
earliest(uint64_t next, uint64_t at)
{
	return next == 0 || at < next ? at : next;
}

uint64_t
dg_coap_expire(dg_coap *c, uint64_t now_ms)
{
	uint64_t next = 0;
	size_t i;

	for (i = 0; i < DG_COAP_DEDUP_SLOTS; i++) {
		con_entry *e = &c->con[i];
		non_entry *n = &c->non[i];
		if (e->used && expired(e->at_ms, now_ms, DG_COAP_EXCHANGE_LIFETIME_MS))
			con_forget(e);
		else if (e->used)
			next = earliest(next, e->at_ms + DG_COAP_EXCHANGE_LIFETIME_MS);
		if (n->used && expired(n->at_ms, now_ms, NON_LIFETIME_MS))
			n->used = 0;
		else if (n->used)
			next = earliest(next, n->at_ms + NON_LIFETIME_MS);
	}
	/* A clock that went back makes no deadline in the past. */
	return next != 0 && next <= now_ms ? now_ms + 1 : next;
}

size_t
dg_coap_kept_bytes(const dg_coap *c)
{
	size_t n = 0, i;

	for (i = 0; i < DG_COAP_DEDUP_SLOTS; i++)
		if (c->con[i].reply != NULL)
			n += c->con[i].cap;
	return n;
}

static con_entry *
con_find(dg_coap *c, uint16_t mid)
{
	size_t i;

	for (i = 0; i < DG_COAP_DEDUP_SLOTS; i++)
		if (c->con[i].used && c->con[i].mid == mid)
			return &c->con[i];
	return NULL;
}

/*
 * Remembers the reply to CON `mid`. A failed allocation only costs the
 * entry: the reply is still sent.
 */
static void
con_remember(dg_coap *c, uint16_t mid, uint64_t now_ms, const uint8_t *reply, size_t len)
{
	con_entry *e;
	uint8_t *p;

	e = con_find(c, mid);
	if (e == NULL) {
		e = &c->con[c->con_next];
		c->con_next = (c->con_next + 1) % DG_COAP_DEDUP_SLOTS;
	}
	/*
	 * The slot's buffer is reused when the reply fits it and wastes
	 * little of it: a device polling one resource sends same-sized
	 * replies, and each of them costs no malloc and free then.
	 */
	if (len == 0 || len > UINT16_MAX || e->reply == NULL || e->cap < len ||
	    e->cap - len > REUSE_SLACK)
		con_forget(e);
	if (len > UINT16_MAX)
		return;
	if (len > 0 && e->reply == NULL) {
		p = malloc(len);
		if (p == NULL) {
			e->used = 0;
			return;
		}
		e->reply = p;
		e->cap = (uint16_t)len;
	}
	if (len > 0)
		memmove(e->reply, reply, len);
	e->len = (uint16_t)len;
	e->mid = mid;
	e->at_ms = now_ms;
	e->used = 1;
}

static non_entry *
non_find(dg_coap *c, uint16_t mid)
{
	size_t i;

	for (i = 0; i < DG_COAP_DEDUP_SLOTS; i++)
		if (c->non[i].used && c->non[i].mid == mid)
			return &c->non[i];
	return NULL;
}

static void
non_remember(dg_coap *c, uint16_t mid, uint64_t now_ms)
{
	non_entry *e;

	e = non_find(c, mid);
	if (e == NULL) {
		e = &c->non[c->non_next];
		c->non_next = (c->non_next + 1) % DG_COAP_DEDUP_SLOTS;
	}
	e->mid = mid;
	e->at_ms = now_ms;
	e->used = 1;
}

/* Appends one option after option number `*last`; returns 0 or -ENOBUFS. */
static int
put_option(uint8_t *buf, size_t cap, size_t *pos, unsigned *last, unsigned number,
           const uint8_t *val, size_t len)
{
	uint8_t ext[4];
	size_t n_ext = 0;
	unsigned delta = number - *last;
	unsigned dn, ln;

	if (delta < 13) {
		dn = delta;
	} else if (delta < 269) {
		dn = 13;
		ext[n_ext++] = (uint8_t)(delta - 13);
	} else {
		dn = 14;
		ext[n_ext++] = (uint8_t)((delta - 269) >> 8);
		ext[n_ext++] = (uint8_t)(delta - 269);
	}
	if (len < 13) {
		ln = (unsigned)len;
	} else if (len < 269) {
		ln = 13;
		ext[n_ext++] = (uint8_t)(len - 13);
	} else {
		ln = 14;
		ext[n_ext++] = (uint8_t)((len - 269) >> 8);
		ext[n_ext++] = (uint8_t)(len - 269);
	}
	if (cap - *pos < 1 + n_ext || cap - *pos - 1 - n_ext < len)
		return -ENOBUFS;
	buf[(*pos)++] = (uint8_t)(dn << 4 | ln);
	memcpy(buf + *pos, ext, n_ext);
	*pos += n_ext;
	if (len > 0)
		memcpy(buf + *pos, val, len);
	*pos += len;
	*last = number;
	return 0;
}

/* Appends a uint option, or nothing when `value` is negative. */
static int
put_uint(uint8_t *buf, size_t cap, size_t *pos, unsigned *last, unsigned number, int64_t value)
{
	uint8_t v[4];
	unsigned n;

	if (value < 0)
		return 0;
	n = coap_encode_var_safe(v, sizeof(v), (unsigned)value);
	return put_option(buf, cap, pos, last, number, v, n);
}

static int
uint_in_range(int64_t value, int64_t max)
{
	return value < 0 || value <= max;
}

int
dg_coap_encode(uint8_t type, uint16_t mid, const uint8_t *token, size_t token_len,
               const dg_coap_response *resp, uint8_t *out, size_t outcap, size_t *outlen)
{
	uint8_t head[HEAD_ROOM];
	size_t pos = 0;
	size_t body_len = 0;
	unsigned last = 0;
	int rc;

	*outlen = 0;
	if (type > DG_COAP_RST || token_len > DG_COAP_MAX_TOKEN || (token_len > 0 && token == NULL))
		return -EINVAL;
	if (resp != NULL) {
		if (!uint_in_range(resp->observe, 0xffffff) ||
		    !uint_in_range(resp->content_format, 0xffff) ||
		    !uint_in_range(resp->max_age, 0xffffffff) ||
		    !uint_in_range(resp->block2, 0xffffff) ||
		    !uint_in_range(resp->block1, 0xffffff) ||
		    !uint_in_range(resp->size1, 0xffffffff) || resp->etag_len > sizeof(resp->etag))
			return -EINVAL;
		body_len = resp->body_len;
		if (body_len > 0 && resp->body == NULL)
			return -EINVAL;
	}

	head[pos++] = (uint8_t)(VERSION << 6 | type << 4 | token_len);
	head[pos++] = resp != NULL ? resp->code : DG_COAP_EMPTY;
	head[pos++] = (uint8_t)(mid >> 8);
	head[pos++] = (uint8_t)mid;
	if (token_len > 0)
		memcpy(head + pos, token, token_len);
	pos += token_len;
	if (resp != NULL) {
		/* The ranges checked above make these fit in `head`. */
		if ((resp->etag_len > 0 &&
		     (rc = put_option(head, sizeof(head), &pos, &last, OPT_ETAG, resp->etag,
		                      resp->etag_len))) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_OBSERVE, resp->observe)) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_CONTENT_FORMAT,
		                   resp->content_format)) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_MAX_AGE, resp->max_age)) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_BLOCK2, resp->block2)) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_BLOCK1, resp->block1)) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_SIZE2,
		                   resp->size2 > 0 ? (int64_t)resp->size2 : -1)) ||
		    (rc = put_uint(head, sizeof(head), &pos, &last, OPT_SIZE1, resp->size1)))
			return rc;
	}

	if (outcap < pos || (body_len > 0 && (outcap - pos < 1 || outcap - pos - 1 < body_len)))
		return -ENOBUFS;
	/* The body may already lie inside `out`: move it before the header lands. */
	if (body_len > 0) {
		memmove(out + pos + 1, resp->body, body_len);
		out[pos] = PAYLOAD_MARKER;
	}
	memcpy(out, head, pos);
	*outlen = pos + (body_len > 0 ? 1 + body_len : 0);
	return 0;
}

int
dg_coap_path_is(const dg_coap_request *req, const char *const *segments)
{
	size_t i, len;

	for (i = 0; segments != NULL && segments[i] != NULL; i++) {
		if (i >= req->n_path)
			return 0;
		len = strlen(segments[i]);
		if (req->path[i].len != len ||
		    (len > 0 && memcmp(req->path[i].s, segments[i], len)))
			return 0;
	}
	return i == req->n_path;
}

/* An empty message: the RST that rejects a CON, or an empty ACK. */
static int
put_empty(uint8_t type, uint16_t mid, uint8_t *out, size_t outcap, size_t *outlen)
{
	return dg_coap_encode(type, mid, NULL, 0, NULL, out, outcap, outlen);
}

/* Rejects a message: RST for a CON, silence for anything else. */
static int
reject(uint8_t type, uint16_t mid, uint8_t *out, size_t outcap, size_t *outlen)
{
	*outlen = 0;
	if (type != DG_COAP_CON)
		return 0;
	return put_empty(DG_COAP_RST, mid, out, outcap, outlen);
}

/* Notes what to answer instead; the first problem found is the one reported. */
static void
set_verdict(verdict *v, uint8_t code, const char *what, unsigned number)
{
	if (v->code != 0)
		return;
	v->code = code;
	snprintf(v->diag, sizeof(v->diag), "%s %u", what, number);
}

/* Decodes a uint option of at most `max_len` bytes; returns -1 when longer. */
static int64_t
opt_uint(const coap_opt_t *opt, uint32_t max_len)
{
	uint32_t len = coap_opt_length(opt);

	if (len > max_len || len > sizeof(unsigned))
		return -1;
	return coap_decode_var_bytes(coap_opt_value(opt), len);
}

/* Whether `number` is an option devgate knows; unknown critical ones get 4.02. */
static int
known_option(unsigned number)
{
	switch (number) {
	case OPT_IF_MATCH:
	case OPT_URI_HOST:
	case OPT_ETAG:
	case OPT_IF_NONE_MATCH:
	case OPT_OBSERVE:
	case OPT_URI_PORT:
	case OPT_LOCATION_PATH:
	case OPT_URI_PATH:
	case OPT_CONTENT_FORMAT:
	case OPT_MAX_AGE:
	case OPT_URI_QUERY:
	case OPT_ACCEPT:
	case OPT_LOCATION_QUERY:
	case OPT_BLOCK2:
	case OPT_BLOCK1:
	case OPT_SIZE2:
	case OPT_PROXY_URI:
	case OPT_PROXY_SCHEME:
	case OPT_SIZE1:
	case OPT_NO_RESPONSE:
		return 1;
	default:
		return 0;
	}
}

/*
 * Reads a uint option that may occur once. A repeated critical option is
 * treated as unrecognised (RFC 7252, 5.4.5): 4.02; a repeated elective
 * one is ignored after its first occurrence.
 */
static void
read_uint(const coap_opt_t *opt, unsigned number, uint32_t max_len, int64_t max, int64_t *field,
          int seen, verdict *v)
{
	int64_t value;

	if (seen) {
		if (number & 1)
			set_verdict(v, DG_COAP_BAD_OPTION, "repeated option", number);
		return;
	}
	value = opt_uint(opt, max_len);
	if (value < 0 || value > max) {
		set_verdict(v, DG_COAP_BAD_REQUEST, "bad value of option", number);
		return;
	}
	*field = value;
}

static void
read_options(coap_pdu_t *pdu, dg_coap_request *req, verdict *v)
{
	coap_opt_iterator_t oi;
	coap_opt_t *opt;
	uint64_t seen = 0;
	int64_t value;
	unsigned number;
	int once;

	if (coap_option_iterator_init(pdu, &oi, COAP_OPT_ALL) == NULL)
		return; /* No options. */
	while ((opt = coap_option_next(&oi)) != NULL) {
		number = oi.number;
		once = number < 64 && (seen & (1ull << number)) != 0;
		if (number < 64)
			seen |= 1ull << number;
		switch (number) {
		case OPT_URI_PATH:
			if (req->n_path == DG_COAP_MAX_PATH) {
				set_verdict(v, DG_COAP_BAD_REQUEST, "too many options", number);
				break;
			}
			req->path[req->n_path].s = coap_opt_value(opt);
			req->path[req->n_path++].len = coap_opt_length(opt);
			break;
		case OPT_URI_QUERY:
			if (req->n_query == DG_COAP_MAX_QUERY) {
				set_verdict(v, DG_COAP_BAD_REQUEST, "too many options", number);
				break;
			}
			req->query[req->n_query].s = coap_opt_value(opt);
			req->query[req->n_query++].len = coap_opt_length(opt);
			break;
		case OPT_CONTENT_FORMAT:
			value = req->content_format;
			read_uint(opt, number, 2, 0xffff, &value, once, v);
			req->content_format = (int)value;
			break;
		case OPT_ACCEPT:
			value = req->accept;
			read_uint(opt, number, 2, 0xffff, &value, once, v);
			req->accept = (int)value;
			break;
		case OPT_OBSERVE:
			read_uint(opt, number, 3, 0xffffff, &req->observe, once, v);
			break;
		case OPT_BLOCK1:
			read_uint(opt, number, 3, 0xffffff, &req->block1, once, v);
			break;
		case OPT_BLOCK2:
			read_uint(opt, number, 3, 0xffffff, &req->block2, once, v);
			break;
		case OPT_SIZE1:
			read_uint(opt, number, 4, 0xffffffff, &req->size1, once, v);
			break;
		case OPT_URI_HOST:
		case OPT_URI_PORT:
		case OPT_IF_NONE_MATCH:
			/* Accepted and ignored, but only once. */
			if (once)
				set_verdict(v, DG_COAP_BAD_OPTION, "repeated option", number);
			break;
		case OPT_PROXY_URI:
		case OPT_PROXY_SCHEME:
			set_verdict(v, DG_COAP_PROXYING_NOT_SUPPORTED, "no proxying for option",
			            number);
			break;
		default:
			if (!known_option(number) && (number & 1))
				set_verdict(v, DG_COAP_BAD_OPTION, "unknown option", number);
			/* Known options without meaning to a request, and elective ones: ignored.
			 */
			break;
		}
	}
}

/* Where the handler writes its body: into `out` when it is large enough. */
static int
body_buffer(dg_coap *c, uint8_t *out, size_t outcap, uint8_t **body, size_t *cap)
{
	/*
	 * A caller whose messages are smaller than HEAD_ROOM + MIN_BODY (one
	 * DTLS record to its peer) gets what fits in one, so that a handler
	 * never writes a body that cannot be sent; below 256 bytes of body,
	 * the scratch buffer.
	 */
	if (outcap >= HEAD_ROOM + 256) {
		*body = out + HEAD_ROOM;
		*cap = outcap - HEAD_ROOM;
		return 0;
	}
	if (c->scratch == NULL) {
		c->scratch = malloc(DG_COAP_MIN_BODY);
		if (c->scratch == NULL)
			return -ENOMEM;
	}
	*body = c->scratch;
	*cap = DG_COAP_MIN_BODY;
	return 0;
}

void
dg_coap_response_init(dg_coap_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	resp->content_format = -1;
	resp->max_age = -1;
	resp->observe = -1;
	resp->block1 = -1;
	resp->block2 = -1;
	resp->size1 = -1;
}

void
dg_coap_set_text(dg_coap_response *resp, uint8_t code, const char *text)
{
	size_t n = strlen(text);
	if (n > resp->body_cap)
		n = resp->body_cap;
	memcpy(resp->body, text, n);
	resp->body_len = n;
	resp->code = code;
	resp->content_format = DG_COAP_FMT_TEXT;
}

int
dg_coap_reply(dg_coap *c, uint8_t req_type, uint16_t mid, const uint8_t *token, size_t token_len,
              const dg_coap_response *resp, uint64_t now_ms, uint8_t *out, size_t outcap,
              size_t *outlen)
{
	int rc;
	if (req_type == DG_COAP_CON) {
		rc = dg_coap_encode(DG_COAP_ACK, mid, token, token_len, resp, out, outcap, outlen);
		if (rc == 0)
			con_remember(c, mid, now_ms, out, *outlen);
		return rc;
	}
	return dg_coap_encode(DG_COAP_NON, dg_coap_next_mid(c), token, token_len, resp, out, outcap,
	                      outlen);
}

static void
init_response(dg_coap_response *resp)
{
	memset(resp, 0, sizeof(*resp));
	resp->content_format = -1;
	resp->max_age = -1;
	resp->observe = -1;
	resp->block1 = -1;
	resp->block2 = -1;
	resp->size1 = -1;
}

int
dg_coap_input(dg_coap *c, const uint8_t *msg, size_t len, uint64_t now_ms, dg_coap_handler handler,
              void *ctx, uint8_t *out, size_t outcap, size_t *outlen)
{
	dg_coap_request req;
	dg_coap_response resp;
	coap_pdu_t *pdu = NULL;
	con_entry *ce;
	non_entry *ne;
	verdict v;
	uint8_t type, tkl, code, reply_type;
	uint16_t mid, reply_mid;
	size_t payload_len;
	const uint8_t *payload;
	int rc = 0;

	*outlen = 0;
	c->refused = 0;
	/* The fixed header, read before libcoap sees anything. */
	if (len < 4 || msg[0] >> 6 != VERSION)
		return 0;
	type = (msg[0] >> 4) & 0x3;
	tkl = msg[0] & 0xf;
	code = msg[1];
	mid = (uint16_t)(msg[2] << 8 | msg[3]);

	if (type == DG_COAP_ACK || type == DG_COAP_RST)
		return 0;
	if (type == DG_COAP_CON && (ce = con_find(c, mid)) != NULL &&
	    !expired(ce->at_ms, now_ms, DG_COAP_EXCHANGE_LIFETIME_MS)) {
		if (ce->len == 0)
			return 0; /* Its reply is deferred and not ready yet. */
		if (ce->len > outcap)
			return -ENOBUFS;
		memcpy(out, ce->reply, ce->len);
		*outlen = ce->len;
		return 0;
	}
	if (type == DG_COAP_NON && (ne = non_find(c, mid)) != NULL &&
	    !expired(ne->at_ms, now_ms, NON_LIFETIME_MS))
		return 0;
	if (code == DG_COAP_EMPTY && tkl == 0 && len == 4)
		return reject(type, mid, out, outcap, outlen); /* A ping, or a NON keepalive. */
	if (tkl > DG_COAP_MAX_TOKEN || code == DG_COAP_EMPTY || code >> 5 != 0)
		return reject(type, mid, out, outcap, outlen);

	pdu = coap_pdu_init(0, 0, 0, len);
	if (pdu == NULL)
		return -ENOMEM;
	if (!coap_pdu_parse(COAP_PROTO_UDP, msg, len, pdu)) {
		rc = reject(type, mid, out, outcap, outlen);
		goto out;
	}

	memset(&req, 0, sizeof(req));
	req.type = type;
	req.code = code;
	req.mid = mid;
	memcpy(req.token, msg + 4, tkl);
	req.token_len = tkl;
	req.content_format = -1;
	req.accept = -1;
	req.observe = -1;
	req.block1 = -1;
	req.block2 = -1;
	req.size1 = -1;
	if (coap_get_data(pdu, &payload_len, &payload) && payload_len > 0) {
		req.payload = payload;
		req.payload_len = payload_len;
	}
	memset(&v, 0, sizeof(v));
	read_options(pdu, &req, &v);

	init_response(&resp);
	if (v.code != 0) {
		c->refused = v.code;
		resp.code = v.code;
		resp.body = (uint8_t *)v.diag;
		resp.body_len = strlen(v.diag);
	} else {
		rc = body_buffer(c, out, outcap, &resp.body, &resp.body_cap);
		if (rc != 0)
			goto out;
		if (handler != NULL)
			handler(ctx, &req, &resp);
		if (resp.deferred) {
			/* Remember the exchange, so that a duplicate is not handled twice. */
			if (type == DG_COAP_CON)
				con_remember(c, mid, now_ms, NULL, 0);
			else
				non_remember(c, mid, now_ms);
			goto out;
		}
		if (resp.code >> 5 < 2 || resp.code >> 5 > 5 || resp.body_len > resp.body_cap) {
			init_response(&resp);
			resp.code = DG_COAP_INTERNAL_ERROR;
		}
	}

	if (type == DG_COAP_CON) {
		reply_type = DG_COAP_ACK;
		reply_mid = mid;
	} else {
		reply_type = DG_COAP_NON;
		reply_mid = dg_coap_next_mid(c);
	}
	rc = dg_coap_encode(reply_type, reply_mid, req.token, req.token_len, &resp, out, outcap,
	                    outlen);
	if (rc == -EINVAL) {
		/* The handler asked for option values that cannot be encoded. */
		init_response(&resp);
		resp.code = DG_COAP_INTERNAL_ERROR;
		rc = dg_coap_encode(reply_type, reply_mid, req.token, req.token_len, &resp, out,
		                    outcap, outlen);
	}
	if (rc != 0)
		goto out;
	if (type == DG_COAP_CON)
		con_remember(c, mid, now_ms, out, *outlen);
	else
		non_remember(c, mid, now_ms);
out:
	coap_delete_pdu(pdu);
	return rc;
}
