/*
 * Unit tests of the CoAP message layer: requests built by hand, replies
 * checked byte for byte.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <coap3/coap.h>

#include "devgate/coap.h"

#define T0 1000000u

/* What the test handler saw and what it answers. */
typedef struct hctx {
	int calls;
	dg_coap_request req;
	char path[DG_COAP_MAX_PATH][64];
	char query[DG_COAP_MAX_QUERY][64];
	char payload[256];
	size_t body_cap;
	int is_well_known; /* dg_coap_path_is(req, ".well-known/core"). */
	/* The answer. */
	uint8_t code;
	int content_format;
	const char *body;
	size_t body_len; /* Used when body is NULL: that many 'x'. */
} hctx;

static void
copy_str(char *dst, size_t cap, dg_coap_str s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	memcpy(dst, s.s, n);
	dst[n] = '\0';
}

static void
handler(void *ctx, const dg_coap_request *req, dg_coap_response *resp)
{
	hctx *h = ctx;
	size_t i;

	h->calls++;
	h->req = *req;
	for (i = 0; i < req->n_path; i++)
		copy_str(h->path[i], sizeof(h->path[i]), req->path[i]);
	for (i = 0; i < req->n_query; i++)
		copy_str(h->query[i], sizeof(h->query[i]), req->query[i]);
	if (req->payload != NULL) {
		dg_coap_str p = {req->payload, req->payload_len};
		copy_str(h->payload, sizeof(h->payload), p);
	}
	h->body_cap = resp->body_cap;
	h->is_well_known = dg_coap_path_is(req, (const char *[]){".well-known", "core", NULL});
	resp->code = h->code;
	resp->content_format = h->content_format;
	if (h->body != NULL) {
		resp->body_len = strlen(h->body);
		memcpy(resp->body, h->body, resp->body_len);
	} else if (h->body_len > 0) {
		resp->body_len = h->body_len;
		memset(resp->body, 'x', h->body_len);
	}
}

static dg_coap *c;
static hctx h;
static uint8_t out[2048];
static size_t outlen;

static void
setup(void)
{
	ck_assert_int_eq(dg_coap_new(&c), 0);
	memset(&h, 0, sizeof(h));
	h.code = DG_COAP_CONTENT;
	h.content_format = -1;
	memset(out, 0xee, sizeof(out));
	outlen = 12345;
}

static void
teardown(void)
{
	dg_coap_free(c);
	c = NULL;
}

/* Feeds one message at `now` and returns the reply's length. */
static size_t
feed(const uint8_t *m, size_t n, uint64_t now)
{
	ck_assert_int_eq(dg_coap_input(c, m, n, now, handler, &h, out, sizeof(out), &outlen), 0);
	return outlen;
}

#define FEED(now, ...)                                                                             \
	({                                                                                         \
		static const uint8_t m_[] = {__VA_ARGS__};                                         \
		feed(m_, sizeof(m_), (now));                                                       \
	})

#define ASSERT_OUT(...)                                                                            \
	do {                                                                                       \
		static const uint8_t e_[] = {__VA_ARGS__};                                         \
		ck_assert_uint_eq(outlen, sizeof(e_));                                             \
		ck_assert_mem_eq(out, e_, sizeof(e_));                                             \
	} while (0)

START_TEST(con_get_gets_piggybacked_ack)
{
	h.content_format = DG_COAP_FMT_JSON;
	h.body = "{}";
	/* CON GET, MID 0x1234, token a1 a2 a3 a4, Uri-Path "a". */
	FEED(T0, 0x44, 0x01, 0x12, 0x34, 0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 'a');
	ASSERT_OUT(0x64, 0x45, 0x12, 0x34, 0xa1, 0xa2, 0xa3, 0xa4, 0xc1, 50, 0xff, '{', '}');
	ck_assert_int_eq(h.calls, 1);
	ck_assert_uint_eq(h.req.type, DG_COAP_CON);
	ck_assert_uint_eq(h.req.code, DG_COAP_GET);
	ck_assert_uint_eq(h.req.mid, 0x1234);
	ck_assert_uint_eq(h.req.token_len, 4);
	ck_assert_uint_eq(h.req.n_path, 1);
	ck_assert_str_eq(h.path[0], "a");
	ck_assert_ptr_null(h.req.payload);
	ck_assert_uint_ge(h.body_cap, DG_COAP_MIN_BODY);
}
END_TEST

START_TEST(non_gets_non_with_fresh_mid)
{
	uint16_t mid1, mid2;

	FEED(T0, 0x51, 0x01, 0x00, 0x07, 0x5a, 0xb1, 'a');
	ck_assert_uint_eq(outlen, 5);
	ck_assert_uint_eq(out[0], 0x51);
	ck_assert_uint_eq(out[1], DG_COAP_CONTENT);
	ck_assert_uint_eq(out[4], 0x5a);
	mid1 = (uint16_t)(out[2] << 8 | out[3]);
	FEED(T0, 0x51, 0x01, 0x00, 0x08, 0x5b, 0xb1, 'a');
	ck_assert_uint_eq(outlen, 5);
	mid2 = (uint16_t)(out[2] << 8 | out[3]);
	ck_assert_uint_eq(mid2, (uint16_t)(mid1 + 1));
	ck_assert_int_eq(h.calls, 2);
	ck_assert_uint_eq(h.req.type, DG_COAP_NON);
	ck_assert_uint_eq(dg_coap_next_mid(c), (uint16_t)(mid2 + 1));
}
END_TEST

START_TEST(token_lengths_echoed)
{
	/* No token: keepalive-like CON DELETE without path. */
	FEED(T0, 0x40, 0x04, 0x00, 0x01);
	ASSERT_OUT(0x60, 0x45, 0x00, 0x01);
	ck_assert_uint_eq(h.req.token_len, 0);
	ck_assert_uint_eq(h.req.n_path, 0);
	ck_assert_uint_eq(h.req.code, DG_COAP_DELETE);
	/* Eight bytes. */
	FEED(T0, 0x48, 0x01, 0x00, 0x02, 1, 2, 3, 4, 5, 6, 7, 8);
	ASSERT_OUT(0x68, 0x45, 0x00, 0x02, 1, 2, 3, 4, 5, 6, 7, 8);
	ck_assert_uint_eq(h.req.token_len, 8);
	ck_assert_mem_eq(h.req.token, ((uint8_t[]){1, 2, 3, 4, 5, 6, 7, 8}), 8);
}
END_TEST

START_TEST(duplicate_con_gets_cached_reply)
{
	uint8_t first[64];
	size_t first_len;

	h.body = "one";
	FEED(T0, 0x42, 0x02, 0x22, 0x22, 0x01, 0x02, 0xb1, 'x', 0xff, 'p');
	first_len = outlen;
	memcpy(first, out, outlen);
	ck_assert_uint_gt(first_len, 0);
	h.body = "two"; /* A second handler call would show. */
	FEED(T0 + 2000, 0x42, 0x02, 0x22, 0x22, 0x01, 0x02, 0xb1, 'x', 0xff, 'p');
	ck_assert_uint_eq(outlen, first_len);
	ck_assert_mem_eq(out, first, first_len);
	FEED(T0 + DG_COAP_EXCHANGE_LIFETIME_MS - 1, 0x42, 0x02, 0x22, 0x22, 0x01, 0x02, 0xb1, 'x',
	     0xff, 'p');
	ck_assert_mem_eq(out, first, first_len);
	ck_assert_int_eq(h.calls, 1);
}
END_TEST

START_TEST(same_mid_after_lifetime_is_new)
{
	FEED(T0, 0x40, 0x01, 0x33, 0x33, 0xb1, 'x');
	FEED(T0 + DG_COAP_EXCHANGE_LIFETIME_MS, 0x40, 0x01, 0x33, 0x33, 0xb1, 'x');
	ck_assert_int_eq(h.calls, 2);
	ASSERT_OUT(0x60, 0x45, 0x33, 0x33);
}
END_TEST

START_TEST(dedup_ring_evicts_oldest)
{
	uint8_t m[] = {0x40, 0x01, 0x00, 0x00};
	int i;

	for (i = 0; i <= DG_COAP_DEDUP_SLOTS; i++) {
		m[3] = (uint8_t)i;
		feed(m, sizeof(m), T0);
	}
	ck_assert_int_eq(h.calls, DG_COAP_DEDUP_SLOTS + 1);
	/* MID 0 fell out of the ring; MID DEDUP_SLOTS is still there. */
	m[3] = 0;
	feed(m, sizeof(m), T0);
	ck_assert_int_eq(h.calls, DG_COAP_DEDUP_SLOTS + 2);
	m[3] = DG_COAP_DEDUP_SLOTS;
	feed(m, sizeof(m), T0);
	ck_assert_int_eq(h.calls, DG_COAP_DEDUP_SLOTS + 2);
}
END_TEST

/*
 * When the ring wraps, a slot whose buffer fits the new reply keeps that
 * buffer: a duplicate then gets the new reply's bytes, not the old ones,
 * and a reply too long for the buffer gets one of its own.
 */
START_TEST(dedup_reused_slot_replays_its_own_reply)
{
	uint8_t m[] = {0x40, 0x01, 0x00, 0x00, 0xb1, 'x'};
	uint8_t sent[sizeof(out)];
	size_t sent_len;
	int i;

	h.body = "aaaa";
	for (i = 0; i < DG_COAP_DEDUP_SLOTS; i++) {
		m[3] = (uint8_t)i;
		feed(m, sizeof(m), T0);
	}
	size_t kept = dg_coap_kept_bytes(c);
	ck_assert_uint_gt(kept, 0);
	h.body = "bbbb";
	m[3] = DG_COAP_DEDUP_SLOTS;
	feed(m, sizeof(m), T0);
	ck_assert_uint_eq(dg_coap_kept_bytes(c), kept);
	memcpy(sent, out, outlen);
	sent_len = outlen;
	ck_assert_mem_eq(out + outlen - 4, "bbbb", 4);
	h.body = "cccc";
	feed(m, sizeof(m), T0);
	ck_assert_int_eq(h.calls, DG_COAP_DEDUP_SLOTS + 1);
	ck_assert_uint_eq(outlen, sent_len);
	ck_assert_mem_eq(out, sent, sent_len);

	h.body = "a body far longer than the four bytes of the replies before it, "
	         "longer than what a reused buffer may hold beyond its reply";
	m[3] = DG_COAP_DEDUP_SLOTS + 1;
	feed(m, sizeof(m), T0);
	ck_assert_uint_gt(dg_coap_kept_bytes(c), kept);
	memcpy(sent, out, outlen);
	sent_len = outlen;
	h.body = "dddd";
	feed(m, sizeof(m), T0);
	ck_assert_int_eq(h.calls, DG_COAP_DEDUP_SLOTS + 2);
	ck_assert_uint_eq(outlen, sent_len);
	ck_assert_mem_eq(out, sent, sent_len);
}
END_TEST

/* A cached reply is freed once EXCHANGE_LIFETIME has passed, and no sooner. */
START_TEST(dedup_reply_freed_after_lifetime)
{
	ck_assert_uint_eq(dg_coap_expire(c, T0), 0); /* Nothing kept: no timer. */
	h.body = "kept for its duplicates";
	FEED(T0, 0x42, 0x02, 0x22, 0x22, 0x01, 0x02, 0xb1, 'x', 0xff, 'p');
	size_t first_len = outlen;
	ck_assert_uint_eq(dg_coap_kept_bytes(c), first_len);
	FEED(T0 + 1000, 0x50, 0x02, 0x44, 0x44, 0xb1, 'x');
	/* The NON's ID goes first, after NON_LIFETIME (145 s), then the CON's reply. */
	ck_assert_uint_eq(dg_coap_expire(c, T0 + 1), T0 + 1000 + 145000);
	ck_assert_uint_eq(dg_coap_expire(c, T0 + 1000 + 145000), T0 + DG_COAP_EXCHANGE_LIFETIME_MS);
	ck_assert_uint_eq(dg_coap_expire(c, T0 + DG_COAP_EXCHANGE_LIFETIME_MS - 1),
	                  T0 + DG_COAP_EXCHANGE_LIFETIME_MS);
	ck_assert_uint_eq(dg_coap_kept_bytes(c), first_len);
	ck_assert_uint_eq(dg_coap_expire(c, T0 + DG_COAP_EXCHANGE_LIFETIME_MS), 0);
	ck_assert_uint_eq(dg_coap_kept_bytes(c), 0);
	/* The same message ID is a new request now. */
	h.body = "new";
	FEED(T0 + DG_COAP_EXCHANGE_LIFETIME_MS, 0x42, 0x02, 0x22, 0x22, 0x01, 0x02, 0xb1, 'x', 0xff,
	     'p');
	ck_assert_int_eq(h.calls, 3);
	ck_assert_uint_gt(dg_coap_kept_bytes(c), 0);
}
END_TEST

START_TEST(duplicate_non_dropped)
{
	FEED(T0, 0x50, 0x02, 0x44, 0x44, 0xb1, 'x');
	ck_assert_uint_gt(outlen, 0);
	FEED(T0 + 1000, 0x50, 0x02, 0x44, 0x44, 0xb1, 'x');
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(h.calls, 1);
}
END_TEST

START_TEST(ping_gets_rst)
{
	FEED(T0, 0x40, 0x00, 0xbe, 0xef);
	ASSERT_OUT(0x70, 0x00, 0xbe, 0xef);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

START_TEST(empty_non_gets_nothing)
{
	FEED(T0, 0x50, 0x00, 0xbe, 0xef);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

START_TEST(ack_and_rst_get_nothing)
{
	FEED(T0, 0x60, 0x00, 0x00, 0x01);
	ck_assert_uint_eq(outlen, 0);
	FEED(T0, 0x70, 0x00, 0x00, 0x02);
	ck_assert_uint_eq(outlen, 0);
	FEED(T0, 0x61, 0x45, 0x00, 0x03, 0x01, 0xff, 'x');
	ck_assert_uint_eq(outlen, 0);
	/* An ACK carrying a request code is no request either. */
	FEED(T0, 0x60, 0x01, 0x00, 0x04, 0xb1, 'x');
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

/* Malformed messages, as CON (first byte 0x4N); each gets RST as CON, nothing as NON. */
static const struct {
	const char *name;
	uint8_t m[16];
	size_t len;
} malformed[] = {
        {"token cut short", {0x44, 0x01, 0x12, 0x34, 0xa1, 0xa2}, 6},
        {"token length 9", {0x49, 0x01, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 13},
        {"token length 15", {0x4f, 0x01, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 13},
        {"option delta 15", {0x40, 0x01, 0x12, 0x34, 0xf1, 0x00}, 6},
        {"option length 15", {0x40, 0x01, 0x12, 0x34, 0x1f, 0x00}, 6},
        {"option cut short", {0x40, 0x01, 0x12, 0x34, 0xb5, 'a'}, 6},
        {"extended delta cut short", {0x40, 0x01, 0x12, 0x34, 0xe0, 0x01}, 6},
        {"payload marker, no payload", {0x40, 0x01, 0x12, 0x34, 0xb1, 'a', 0xff}, 7},
        {"option number past 65535", {0x40, 0x01, 0x12, 0x34, 0xe0, 0xff, 0xff}, 7},
        {"empty with token", {0x41, 0x00, 0x12, 0x34, 0x01}, 5},
        {"empty with payload", {0x40, 0x00, 0x12, 0x34, 0xff, 0x01}, 6},
        /* libcoap 4.3.1 rejects known options of a bad length at parse time. */
        {"Content-Format of 3 bytes", {0x40, 0x02, 0x12, 0x34, 0xc3, 1, 2, 3}, 8},
        {"Observe of 4 bytes", {0x40, 0x01, 0x12, 0x34, 0x64, 1, 2, 3, 4}, 9},
        {"empty Uri-Host", {0x40, 0x01, 0x12, 0x34, 0x30}, 5},
        {"response code 2.05", {0x40, 0x45, 0x12, 0x34}, 4},
        {"response code 4.04", {0x41, 0x84, 0x12, 0x34, 0x01}, 5},
        {"reserved class 1", {0x40, 0x21, 0x12, 0x34}, 4},
        {"reserved class 7", {0x40, 0xe1, 0x12, 0x34}, 4},
};

START_TEST(malformed_con_gets_rst)
{
	ck_assert_int_eq(dg_coap_input(c, malformed[_i].m, malformed[_i].len, T0, handler, &h, out,
	                               sizeof(out), &outlen),
	                 0);
	ck_assert_msg(outlen == 4, "%s: outlen %zu", malformed[_i].name, outlen);
	ASSERT_OUT(0x70, 0x00, 0x12, 0x34);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

START_TEST(malformed_non_gets_nothing)
{
	uint8_t m[16];

	memcpy(m, malformed[_i].m, sizeof(m));
	m[0] = (uint8_t)((m[0] & 0xcf) | 0x10);
	ck_assert_int_eq(
	        dg_coap_input(c, m, malformed[_i].len, T0, handler, &h, out, sizeof(out), &outlen),
	        0);
	ck_assert_msg(outlen == 0, "%s: outlen %zu", malformed[_i].name, outlen);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

START_TEST(short_or_foreign_headers_dropped)
{
	FEED(T0, 0x40, 0x01, 0x12);
	ck_assert_uint_eq(outlen, 0);
	FEED(T0, 0x40);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(dg_coap_input(c, out, 0, T0, handler, &h, out, sizeof(out), &outlen), 0);
	ck_assert_uint_eq(outlen, 0);
	/* Version 2 and 0. */
	FEED(T0, 0x80, 0x01, 0x12, 0x34);
	ck_assert_uint_eq(outlen, 0);
	FEED(T0, 0x00, 0x01, 0x12, 0x34);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

START_TEST(unknown_critical_option_gets_4_02)
{
	static const char diag[] = "unknown option 9";

	/* Option 9 (empty), then Uri-Path "a". */
	FEED(T0, 0x41, 0x01, 0x00, 0x09, 0x77, 0x90, 0x21, 'a');
	ck_assert_int_eq(h.calls, 0);
	ck_assert_uint_eq(outlen, 6 + sizeof(diag) - 1);
	ck_assert_mem_eq(out, ((uint8_t[]){0x61, DG_COAP_BAD_OPTION, 0x00, 0x09, 0x77, 0xff}), 6);
	ck_assert_mem_eq(out + 6, diag, sizeof(diag) - 1);

	/* Past the known set, with an extended delta: 2001. */
	FEED(T0, 0x40, 0x01, 0x00, 0x0a, 0xe0, 0x06, 0xc4);
	ck_assert_uint_eq(out[1], DG_COAP_BAD_OPTION);
	/* In a NON: a NON 4.02. */
	FEED(T0, 0x50, 0x01, 0x00, 0x0b, 0x91, 0x00);
	ck_assert_uint_eq(out[0] & 0x30, 0x10);
	ck_assert_uint_eq(out[1], DG_COAP_BAD_OPTION);
	ck_assert_int_eq(h.calls, 0);
	/* The refusal is reported, for counting; a handled request reports none. */
	ck_assert_uint_eq(dg_coap_refused(c), DG_COAP_BAD_OPTION);
	FEED(T0, 0x40, 0x01, 0x00, 0x0c, 0xb1, 'a');
	ck_assert_int_eq(h.calls, 1);
	ck_assert_uint_eq(dg_coap_refused(c), 0);
}
END_TEST

START_TEST(unknown_elective_option_ignored)
{
	/* Uri-Path "a", then option 2000 (delta 1989 = 269 + 1720). */
	FEED(T0, 0x40, 0x01, 0x00, 0x01, 0xb1, 'a', 0xe1, 0x06, 0xb8, 'z');
	ck_assert_int_eq(h.calls, 1);
	ck_assert_uint_eq(out[1], DG_COAP_CONTENT);
	ck_assert_str_eq(h.path[0], "a");
}
END_TEST

START_TEST(uri_host_and_port_accepted)
{
	/* Uri-Host "h", Uri-Port 5684, Uri-Path "d". */
	FEED(T0, 0x40, 0x01, 0x00, 0x01, 0x31, 'h', 0x42, 0x16, 0x34, 0x41, 'd');
	ck_assert_int_eq(h.calls, 1);
	ck_assert_uint_eq(h.req.n_path, 1);
	ck_assert_str_eq(h.path[0], "d");
	ASSERT_OUT(0x60, 0x45, 0x00, 0x01);
	/* Twice the same critical, non-repeatable option: 4.02. */
	FEED(T0, 0x40, 0x01, 0x00, 0x02, 0x31, 'h', 0x01, 'i');
	ck_assert_uint_eq(out[1], DG_COAP_BAD_OPTION);
	ck_assert_int_eq(h.calls, 1);
}
END_TEST

START_TEST(proxy_options_get_5_05)
{
	/* Proxy-Uri (35 = 13 + 22) "coap://x". */
	FEED(T0, 0x40, 0x01, 0x00, 0x01, 0xd8, 22, 'c', 'o', 'a', 'p', ':', '/', '/', 'x');
	ck_assert_uint_eq(out[0], 0x60);
	ck_assert_uint_eq(out[1], DG_COAP_PROXYING_NOT_SUPPORTED);
	/* Proxy-Scheme (39) "coap". */
	FEED(T0, 0x40, 0x01, 0x00, 0x02, 0xd4, 26, 'c', 'o', 'a', 'p');
	ck_assert_uint_eq(out[1], DG_COAP_PROXYING_NOT_SUPPORTED);
	ck_assert_int_eq(h.calls, 0);
}
END_TEST

START_TEST(path_and_query_parsed)
{
	/* /.well-known/core?rt=a&x */
	FEED(T0, 0x40, 0x01, 0x00, 0x01, 0xbb, '.', 'w', 'e', 'l', 'l', '-', 'k', 'n', 'o', 'w',
	     'n', 0x04, 'c', 'o', 'r', 'e', 0x44, 'r', 't', '=', 'a', 0x01, 'x');
	ck_assert_int_eq(h.calls, 1);
	ck_assert_uint_eq(h.req.n_path, 2);
	ck_assert_str_eq(h.path[0], ".well-known");
	ck_assert_str_eq(h.path[1], "core");
	ck_assert_uint_eq(h.req.n_query, 2);
	ck_assert_str_eq(h.query[0], "rt=a");
	ck_assert_str_eq(h.query[1], "x");
	ck_assert_int_eq(h.is_well_known, 1);

	/* Empty segments are kept: ".s", "", "b". */
	FEED(T0, 0x40, 0x02, 0x00, 0x02, 0xb2, '.', 's', 0x00, 0x01, 'b');
	ck_assert_uint_eq(h.req.n_path, 3);
	ck_assert_uint_eq(h.req.path[1].len, 0);
	ck_assert_str_eq(h.path[2], "b");
	ck_assert_int_eq(h.is_well_known, 0);
}
END_TEST

static dg_coap_request
path_request(size_t n, const char *const *segs)
{
	dg_coap_request r;
	size_t i;

	memset(&r, 0, sizeof(r));
	for (i = 0; i < n; i++) {
		r.path[i].s = (const uint8_t *)segs[i];
		r.path[i].len = strlen(segs[i]);
	}
	r.n_path = n;
	return r;
}

START_TEST(path_is_compares_exactly)
{
	static const char *const wk[] = {".well-known", "core", NULL};
	static const char *const empty[] = {NULL};
	dg_coap_request r = path_request(2, wk);

	ck_assert_int_eq(dg_coap_path_is(&r, wk), 1);
	ck_assert_int_eq(dg_coap_path_is(&r, (const char *[]){".well-known", NULL}), 0);
	ck_assert_int_eq(dg_coap_path_is(&r, (const char *[]){".well-known", "core", "x", NULL}),
	                 0);
	ck_assert_int_eq(dg_coap_path_is(&r, (const char *[]){".well-known", "Core", NULL}), 0);
	ck_assert_int_eq(dg_coap_path_is(&r, (const char *[]){".well-known", "cor", NULL}), 0);
	ck_assert_int_eq(dg_coap_path_is(&r, empty), 0);
	r = path_request(0, wk);
	ck_assert_int_eq(dg_coap_path_is(&r, empty), 1);
	ck_assert_int_eq(dg_coap_path_is(&r, NULL), 1);
	r = path_request(2, (const char *[]){".s", ""});
	ck_assert_int_eq(dg_coap_path_is(&r, (const char *[]){".s", "", NULL}), 1);
	ck_assert_int_eq(dg_coap_path_is(&r, (const char *[]){".s", NULL}), 0);
}
END_TEST

START_TEST(too_many_segments_get_4_00)
{
	uint8_t m[64] = {0x40, 0x01, 0x00, 0x01, 0xb1, 'a'};
	size_t n = 6;
	int i;

	for (i = 1; i <= DG_COAP_MAX_PATH; i++) {
		m[n++] = 0x01;
		m[n++] = 'a';
	}
	/* DG_COAP_MAX_PATH + 1 segments. */
	feed(m, n, T0);
	ck_assert_uint_eq(out[1], DG_COAP_BAD_REQUEST);
	ck_assert_int_eq(h.calls, 0);
	/* Exactly DG_COAP_MAX_PATH. */
	m[3] = 2;
	feed(m, n - 2, T0);
	ck_assert_uint_eq(out[1], DG_COAP_CONTENT);
	ck_assert_uint_eq(h.req.n_path, DG_COAP_MAX_PATH);

	n = 4;
	m[3] = 3;
	m[n++] = 0xd1; /* Uri-Query: delta 13 + 2, length 1. */
	m[n++] = 2;
	m[n++] = 'q';
	for (i = 1; i <= DG_COAP_MAX_QUERY; i++) {
		m[n++] = 0x01;
		m[n++] = 'q';
	}
	feed(m, n, T0);
	ck_assert_uint_eq(out[1], DG_COAP_BAD_REQUEST);
	m[3] = 4;
	feed(m, n - 2, T0);
	ck_assert_uint_eq(out[1], DG_COAP_CONTENT);
	ck_assert_uint_eq(h.req.n_query, DG_COAP_MAX_QUERY);
}
END_TEST

START_TEST(request_options_decoded)
{
	/*
	 * POST with Observe 0 (empty), Uri-Path "s", Content-Format 60,
	 * Accept 50, Block2 0x16, Block1 0x2e, Size1 2048, payload "hi".
	 */
	FEED(T0, 0x40, 0x02, 0x00, 0x01, 0x60, 0x51, 's', 0x11, 60, 0x51, 50, 0x61, 0x16, 0x41,
	     0x2e, 0xd2, 20, 0x08, 0x00, 0xff, 'h', 'i');
	ck_assert_int_eq(h.calls, 1);
	ck_assert_int_eq(h.req.observe, 0);
	ck_assert_int_eq(h.req.content_format, 60);
	ck_assert_int_eq(h.req.accept, 50);
	ck_assert_int_eq(h.req.block2, 0x16);
	ck_assert_int_eq(h.req.block1, 0x2e);
	ck_assert_int_eq(h.req.size1, 2048);
	ck_assert_uint_eq(h.req.payload_len, 2);
	ck_assert_str_eq(h.payload, "hi");

	/* None of them: all -1. Observe 1 with 3 bytes: 0x010000. */
	FEED(T0, 0x40, 0x01, 0x00, 0x02);
	ck_assert_int_eq(h.req.observe, -1);
	ck_assert_int_eq(h.req.content_format, -1);
	ck_assert_int_eq(h.req.accept, -1);
	ck_assert_int_eq(h.req.block1, -1);
	ck_assert_int_eq(h.req.block2, -1);
	ck_assert_int_eq(h.req.size1, -1);
	FEED(T0, 0x40, 0x01, 0x00, 0x03, 0x63, 0x01, 0x00, 0x00);
	ck_assert_int_eq(h.req.observe, 0x10000);

	/* A repeated elective option: the first counts. */
	FEED(T0, 0x40, 0x02, 0x00, 0x04, 0xc1, 50, 0x01, 60);
	ck_assert_int_eq(h.calls, 4);
	ck_assert_int_eq(h.req.content_format, 50);
	/* A repeated critical one: 4.02. */
	FEED(T0, 0x40, 0x01, 0x00, 0x05, 0xd1, 4, 50, 0x01, 60);
	ck_assert_uint_eq(out[1], DG_COAP_BAD_OPTION);
	ck_assert_int_eq(h.calls, 4);
}
END_TEST

START_TEST(other_methods_reach_handler)
{
	/* FETCH (0.05) and 0.31. */
	FEED(T0, 0x40, 0x05, 0x00, 0x01);
	ck_assert_uint_eq(h.req.code, 5);
	FEED(T0, 0x40, 0x1f, 0x00, 0x02);
	ck_assert_uint_eq(h.req.code, 31);
	ck_assert_int_eq(h.calls, 2);
}
END_TEST

START_TEST(handler_without_code_gets_5_00)
{
	h.code = 0;
	h.body = "ignored";
	FEED(T0, 0x40, 0x01, 0x00, 0x01);
	ASSERT_OUT(0x60, DG_COAP_INTERNAL_ERROR, 0x00, 0x01);
	/* A request code as the answer is no better. */
	h.code = DG_COAP_GET;
	FEED(T0, 0x40, 0x01, 0x00, 0x02);
	ASSERT_OUT(0x60, DG_COAP_INTERNAL_ERROR, 0x00, 0x02);
	/* Neither is an option value out of range. */
	h.code = DG_COAP_CONTENT;
	h.content_format = 70000;
	FEED(T0, 0x40, 0x01, 0x00, 0x03);
	ASSERT_OUT(0x60, DG_COAP_INTERNAL_ERROR, 0x00, 0x03);
}
END_TEST

START_TEST(reply_too_large)
{
	static const uint8_t m[] = {0x40, 0x01, 0x00, 0x01};
	uint8_t small[64];
	size_t n = 99;

	h.body_len = 100;
	ck_assert_int_eq(dg_coap_input(c, m, sizeof(m), T0, handler, &h, small, sizeof(small), &n),
	                 -ENOBUFS);
	ck_assert_uint_eq(n, 0);
	ck_assert_uint_ge(h.body_cap, DG_COAP_MIN_BODY);
	/* Nothing was cached: the retransmission asks the handler again. */
	h.body_len = 10;
	ck_assert_int_eq(dg_coap_input(c, m, sizeof(m), T0, handler, &h, small, sizeof(small), &n),
	                 0);
	ck_assert_uint_eq(n, 4 + 1 + 10);
	ck_assert_int_eq(h.calls, 2);
	/* A big body fits a big buffer. */
	h.body_len = DG_COAP_MIN_BODY;
	FEED(T0, 0x40, 0x01, 0x00, 0x02);
	ck_assert_uint_eq(outlen, 4 + 1 + DG_COAP_MIN_BODY);
	ck_assert_uint_eq(out[4], 0xff);
	ck_assert_uint_eq(out[5], 'x');
	ck_assert_uint_eq(out[outlen - 1], 'x');
}
END_TEST

static dg_coap_response
full_response(void)
{
	static uint8_t body[] = {'o', 'k'};
	dg_coap_response r = {
	        .code = DG_COAP_CONTENT,
	        .content_format = DG_COAP_FMT_CBOR,
	        .max_age = 0,
	        .observe = 5,
	        .block1 = 0x0e,
	        .block2 = 0x1a,
	        .size1 = 1024,
	        .body = body,
	        .body_cap = sizeof(body),
	        .body_len = sizeof(body),
	};
	return r;
}

START_TEST(encode_all_options)
{
	static const uint8_t tok[] = {0xaa, 0xbb};
	dg_coap_response r = full_response();

	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 0x0102, tok, 2, &r, out, sizeof(out), &outlen),
	                 0);
	ASSERT_OUT(0x62, 0x45, 0x01, 0x02, 0xaa, 0xbb,
	           /* Observe 5 */ 0x61, 0x05,
	           /* Content-Format 60 */ 0x61, 60,
	           /* Max-Age 0 */ 0x20,
	           /* Block2 */ 0x91, 0x1a,
	           /* Block1 */ 0x41, 0x0e,
	           /* Size1 1024 (delta 33) */ 0xd2, 20, 0x04, 0x00,
	           /* body */ 0xff, 'o', 'k');

	/* Largest values, no body: no payload marker. */
	r.observe = 0xffffff;
	r.content_format = 0xffff;
	r.max_age = 0xffffffff;
	r.block2 = 0xffffff;
	r.block1 = 0x10000;
	r.size1 = 0xffffffff;
	r.body_len = 0;
	ck_assert_int_eq(
	        dg_coap_encode(DG_COAP_CON, 0xfffe, NULL, 0, &r, out, sizeof(out), &outlen), 0);
	ASSERT_OUT(0x40, 0x45, 0xff, 0xfe, 0x63, 0xff, 0xff, 0xff, 0x62, 0xff, 0xff, 0x24, 0xff,
	           0xff, 0xff, 0xff, 0x93, 0xff, 0xff, 0xff, 0x43, 0x01, 0x00, 0x00, 0xd4, 20, 0xff,
	           0xff, 0xff, 0xff);

	/* No options at all; NULL response is an empty message. */
	ck_assert_int_eq(dg_coap_encode(DG_COAP_RST, 7, NULL, 0, NULL, out, sizeof(out), &outlen),
	                 0);
	ASSERT_OUT(0x70, 0x00, 0x00, 0x07);
}
END_TEST

START_TEST(encode_errors)
{
	static const uint8_t tok[9] = {0};
	dg_coap_response r = full_response();
	size_t need;

	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 1, tok, 9, &r, out, sizeof(out), &outlen),
	                 -EINVAL);
	ck_assert_int_eq(dg_coap_encode(4, 1, tok, 0, &r, out, sizeof(out), &outlen), -EINVAL);
	r.observe = 0x1000000;
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 1, tok, 0, &r, out, sizeof(out), &outlen),
	                 -EINVAL);
	r = full_response();
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 1, tok, 8, &r, out, sizeof(out), &outlen), 0);
	need = outlen;
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 1, tok, 8, &r, out, need - 1, &outlen),
	                 -ENOBUFS);
	ck_assert_uint_eq(outlen, 0);
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 1, tok, 8, &r, out, 3, &outlen), -ENOBUFS);
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 1, tok, 8, &r, out, need, &outlen), 0);
	ck_assert_uint_eq(outlen, need);
}
END_TEST

START_TEST(encode_round_trips_through_libcoap)
{
	static const uint8_t tok[] = {1, 2, 3, 4, 5, 6, 7, 8};
	dg_coap_response r = full_response();
	coap_opt_iterator_t oi;
	coap_opt_t *opt;
	coap_pdu_t *pdu;
	coap_bin_const_t t;
	const uint8_t *data;
	size_t len;

	r.max_age = 60;
	ck_assert_int_eq(dg_coap_encode(DG_COAP_NON, 0xabcd, tok, 8, &r, out, sizeof(out), &outlen),
	                 0);
	pdu = coap_pdu_init(0, 0, 0, outlen);
	ck_assert_ptr_nonnull(pdu);
	ck_assert_int_eq(coap_pdu_parse(COAP_PROTO_UDP, out, outlen, pdu), 1);
	ck_assert_int_eq(coap_pdu_get_type(pdu), COAP_MESSAGE_NON);
	ck_assert_int_eq(coap_pdu_get_code(pdu), COAP_RESPONSE_CODE(205));
	ck_assert_int_eq(coap_pdu_get_mid(pdu), 0xabcd);
	t = coap_pdu_get_token(pdu);
	ck_assert_uint_eq(t.length, 8);
	ck_assert_mem_eq(t.s, tok, 8);
	opt = coap_check_option(pdu, COAP_OPTION_OBSERVE, &oi);
	ck_assert_ptr_nonnull(opt);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 5);
	opt = coap_check_option(pdu, COAP_OPTION_CONTENT_FORMAT, &oi);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 60);
	opt = coap_check_option(pdu, COAP_OPTION_MAXAGE, &oi);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 60);
	opt = coap_check_option(pdu, COAP_OPTION_BLOCK2, &oi);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 0x1a);
	opt = coap_check_option(pdu, COAP_OPTION_BLOCK1, &oi);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 0x0e);
	opt = coap_check_option(pdu, COAP_OPTION_SIZE1, &oi);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 1024);
	ck_assert_int_eq(coap_get_data(pdu, &len, &data), 1);
	ck_assert_uint_eq(len, 2);
	ck_assert_mem_eq(data, "ok", 2);
	coap_delete_pdu(pdu);
}
END_TEST

START_TEST(new_and_free)
{
	dg_coap *a, *b;

	dg_coap_free(NULL);
	ck_assert_int_eq(dg_coap_new(&a), 0);
	ck_assert_int_eq(dg_coap_new(&b), 0);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	dg_coap_free(a);
	dg_coap_free(b);
}
END_TEST

/* ETag and Size2, for Block2 answers: in option order, read back by libcoap. */
START_TEST(encode_etag_and_size2)
{
	static const uint8_t tok[] = {7};
	dg_coap_response r = full_response();
	coap_opt_iterator_t oi;
	coap_opt_t *opt;
	coap_pdu_t *pdu;

	memcpy(r.etag, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	r.etag_len = 8;
	r.size2 = 5000;
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 9, tok, 1, &r, out, sizeof(out), &outlen), 0);
	/* ETag (4) is the first option, right after the token. */
	ck_assert_uint_eq(out[5], 0x48);
	ck_assert_mem_eq(out + 6, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	pdu = coap_pdu_init(0, 0, 0, outlen);
	ck_assert_ptr_nonnull(pdu);
	ck_assert_int_eq(coap_pdu_parse(COAP_PROTO_UDP, out, outlen, pdu), 1);
	opt = coap_check_option(pdu, COAP_OPTION_ETAG, &oi);
	ck_assert_ptr_nonnull(opt);
	ck_assert_uint_eq(coap_opt_length(opt), 8);
	opt = coap_check_option(pdu, COAP_OPTION_SIZE2, &oi);
	ck_assert_ptr_nonnull(opt);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 5000);
	opt = coap_check_option(pdu, COAP_OPTION_SIZE1, &oi);
	ck_assert_uint_eq(coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt)), 1024);
	coap_delete_pdu(pdu);
	/* An ETag over 8 bytes cannot be encoded. */
	r.etag_len = 9;
	ck_assert_int_eq(dg_coap_encode(DG_COAP_ACK, 9, tok, 1, &r, out, sizeof(out), &outlen),
	                 -EINVAL);
}
END_TEST

static Suite *
coap_suite(void)
{
	Suite *s = suite_create("coap");
	TCase *tc = tcase_create("message layer");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, con_get_gets_piggybacked_ack);
	tcase_add_test(tc, non_gets_non_with_fresh_mid);
	tcase_add_test(tc, token_lengths_echoed);
	tcase_add_test(tc, duplicate_con_gets_cached_reply);
	tcase_add_test(tc, same_mid_after_lifetime_is_new);
	tcase_add_test(tc, dedup_ring_evicts_oldest);
	tcase_add_test(tc, dedup_reused_slot_replays_its_own_reply);
	tcase_add_test(tc, duplicate_non_dropped);
	tcase_add_test(tc, dedup_reply_freed_after_lifetime);
	tcase_add_test(tc, ping_gets_rst);
	tcase_add_test(tc, empty_non_gets_nothing);
	tcase_add_test(tc, ack_and_rst_get_nothing);
	tcase_add_loop_test(tc, malformed_con_gets_rst, 0,
	                    (int)(sizeof(malformed) / sizeof(malformed[0])));
	tcase_add_loop_test(tc, malformed_non_gets_nothing, 0,
	                    (int)(sizeof(malformed) / sizeof(malformed[0])));
	tcase_add_test(tc, short_or_foreign_headers_dropped);
	tcase_add_test(tc, unknown_critical_option_gets_4_02);
	tcase_add_test(tc, unknown_elective_option_ignored);
	tcase_add_test(tc, uri_host_and_port_accepted);
	tcase_add_test(tc, proxy_options_get_5_05);
	tcase_add_test(tc, path_and_query_parsed);
	tcase_add_test(tc, path_is_compares_exactly);
	tcase_add_test(tc, too_many_segments_get_4_00);
	tcase_add_test(tc, request_options_decoded);
	tcase_add_test(tc, other_methods_reach_handler);
	tcase_add_test(tc, handler_without_code_gets_5_00);
	tcase_add_test(tc, reply_too_large);
	tcase_add_test(tc, encode_all_options);
	tcase_add_test(tc, encode_errors);
	tcase_add_test(tc, encode_round_trips_through_libcoap);
	tcase_add_test(tc, encode_etag_and_size2);
	tcase_add_test(tc, new_and_free);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(coap_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
