/*
 * Unit tests of the DTLS record-header reader used to route datagrams
 * before wolfSSL sees them. Every input is copied into an allocation of
 * its exact size, so an over-read shows under AddressSanitizer.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/dtls.h"

/*
 * A DTLS 1.2 ClientHello as a client's first flight sends it: record
 * header (handshake, record version DTLS 1.0, epoch 0, sequence 0), then
 * the handshake header (type 1, length, message_seq 0, fragment offset 0,
 * fragment length) and the body.
 */
static const uint8_t client_hello[] = {
        /* Record: type, version, epoch, sequence number (6), length. */
        22, 0xfe, 0xff, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0x00, 0x38,
        /* Handshake: type 1, length 44, message_seq 0, offset 0, fragment length 44. */
        1, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2c,
        /* client_version DTLS 1.2, random (32 bytes). */
        0xfe, 0xfd, 0x5f, 0x1e, 0x6b, 0x02, 0xa1, 0x33, 0x48, 0x90, 0x0c, 0x21, 0x7e, 0x55, 0x10,
        0x3b, 0x99, 0xd4, 0x04, 0xe7, 0x28, 0x61, 0xaa, 0x0f, 0xc3, 0x72, 0x8e, 0x17, 0xb0, 0x4d,
        0x36, 0x01, 0x5c, 0xee,
        /* session_id length 0, cookie length 0. */
        0x00, 0x00,
        /* cipher_suites: length 4, PSK-AES128-CCM-8, ECDHE-ECDSA-AES128-CCM-8. */
        0x00, 0x04, 0xc0, 0xa8, 0xc0, 0xae,
        /* compression_methods: length 1, null. */
        0x01, 0x00,
        /* No extensions. */
};

/* Calls dg_dtls_peek on an exact-size copy of buf. */
static int
peek(const uint8_t *buf, size_t len, dg_dtls_record *rec)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	ck_assert_ptr_nonnull(copy);
	if (len > 0)
		memcpy(copy, buf, len);
	rc = dg_dtls_peek(len ? copy : copy + 1, len, rec);
	free(copy);
	return rc;
}

static int
is_ch(const uint8_t *buf, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	ck_assert_ptr_nonnull(copy);
	if (len > 0)
		memcpy(copy, buf, len);
	rc = dg_dtls_is_client_hello(copy, len);
	free(copy);
	return rc;
}

/* Writes a record header with `frag` bytes of zeroed fragment after it; returns the size. */
static size_t
record(uint8_t *buf, uint8_t type, uint16_t version, uint16_t epoch, uint16_t length, size_t frag)
{
	memset(buf, 0, 13 + frag);
	buf[0] = type;
	buf[1] = (uint8_t)(version >> 8);
	buf[2] = (uint8_t)version;
	buf[3] = (uint8_t)(epoch >> 8);
	buf[4] = (uint8_t)epoch;
	buf[10] = 7; /* A sequence number, which the reader ignores. */
	buf[11] = (uint8_t)(length >> 8);
	buf[12] = (uint8_t)length;
	return 13 + frag;
}

START_TEST(test_client_hello)
{
	dg_dtls_record rec;

	memset(&rec, 0xa5, sizeof(rec));
	ck_assert_int_eq(peek(client_hello, sizeof(client_hello), &rec), 0);
	ck_assert_uint_eq(rec.content_type, 22);
	ck_assert_uint_eq(rec.version, 0xfeff);
	ck_assert_uint_eq(rec.epoch, 0);
	ck_assert_uint_eq(rec.length, sizeof(client_hello) - 13);
	ck_assert_int_eq(rec.handshake_type, 1);
	ck_assert_int_eq(is_ch(client_hello, sizeof(client_hello)), 1);
}
END_TEST

START_TEST(test_client_hello_truncated)
{
	/* Every proper prefix: too short or the record length overruns it. */
	dg_dtls_record rec;

	for (size_t n = 0; n < sizeof(client_hello); n++) {
		ck_assert_int_eq(peek(client_hello, n, &rec), -EPROTO);
		ck_assert_int_eq(is_ch(client_hello, n), 0);
	}
}
END_TEST

START_TEST(test_trailing_records)
{
	/* A second record after the first: the reader looks at the first only. */
	uint8_t buf[sizeof(client_hello) + 15];
	dg_dtls_record rec;

	memcpy(buf, client_hello, sizeof(client_hello));
	record(buf + sizeof(client_hello), 21, 0xfefd, 0, 2, 2);
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_uint_eq(rec.length, sizeof(client_hello) - 13);
	ck_assert_int_eq(rec.handshake_type, 1);
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 1);
}
END_TEST

START_TEST(test_too_short)
{
	uint8_t buf[13];
	dg_dtls_record rec;

	record(buf, 22, 0xfefd, 0, 0, 0);
	for (size_t n = 0; n < 13; n++)
		ck_assert_int_eq(peek(buf, n, &rec), -EPROTO);
	/* The bare header with an empty fragment is a record. */
	ck_assert_int_eq(peek(buf, 13, &rec), 0);
	ck_assert_uint_eq(rec.length, 0);
	ck_assert_int_eq(rec.handshake_type, -1);
	ck_assert_int_eq(dg_dtls_peek(NULL, 0, &rec), -EPROTO);
	ck_assert_int_eq(dg_dtls_peek(NULL, 100, &rec), -EPROTO);
	ck_assert_int_eq(dg_dtls_is_client_hello(NULL, 0), 0);
}
END_TEST

START_TEST(test_versions)
{
	static const uint16_t bad[] = {0x0303, 0x0302, 0xfefc, 0xfefe, 0xfe00,
	                               0xfdfd, 0xfffd, 0x0000, 0xffff};
	uint8_t buf[32];
	dg_dtls_record rec;
	size_t n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = record(buf, 23, bad[i], 1, 4, 4);
		ck_assert_msg(peek(buf, n, &rec) == -EPROTO, "version %#x accepted", bad[i]);
	}
	n = record(buf, 23, 0xfefd, 1, 4, 4);
	ck_assert_int_eq(peek(buf, n, &rec), 0);
	ck_assert_uint_eq(rec.version, 0xfefd);
	n = record(buf, 23, 0xfeff, 1, 4, 4);
	ck_assert_int_eq(peek(buf, n, &rec), 0);
	ck_assert_uint_eq(rec.version, 0xfeff);
}
END_TEST

START_TEST(test_content_types)
{
	uint8_t buf[32];
	dg_dtls_record rec;
	size_t n;

	for (int t = 0; t < 256; t++) {
		int known = t == 20 || t == 21 || t == 22 || t == 23 || t == 25;
		n = record(buf, (uint8_t)t, 0xfefd, 1, 4, 4);
		ck_assert_msg(peek(buf, n, &rec) == (known ? 0 : -EPROTO), "content type %d", t);
		if (known)
			ck_assert_uint_eq(rec.content_type, t);
	}
}
END_TEST

START_TEST(test_length)
{
	uint8_t buf[13 + 64];
	dg_dtls_record rec;

	/* The fragment exactly fills the datagram, then one byte short, then far over. */
	record(buf, 23, 0xfefd, 1, 64, 64);
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_uint_eq(rec.length, 64);
	ck_assert_uint_eq(rec.epoch, 1);
	ck_assert_int_eq(peek(buf, sizeof(buf) - 1, &rec), -EPROTO);
	record(buf, 23, 0xfefd, 1, 0xffff, 64);
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), -EPROTO);
	record(buf, 22, 0xfefd, 0, 65, 64);
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), -EPROTO);
	/* Shorter than the datagram is fine (more records may follow). */
	record(buf, 21, 0xfefd, 0, 2, 64);
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_uint_eq(rec.length, 2);
	ck_assert_int_eq(rec.handshake_type, -1);
}
END_TEST

START_TEST(test_epoch_nonzero)
{
	/* An encrypted handshake record (Finished) at epoch 1 has no readable type. */
	uint8_t buf[sizeof(client_hello)];
	dg_dtls_record rec;

	memcpy(buf, client_hello, sizeof(buf));
	buf[4] = 1;
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_uint_eq(rec.epoch, 1);
	ck_assert_int_eq(rec.handshake_type, -1);
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 0);
	buf[3] = 1;
	buf[4] = 0; /* Epoch 256: only the low byte is zero. */
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_uint_eq(rec.epoch, 256);
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 0);
}
END_TEST

START_TEST(test_not_client_hello)
{
	uint8_t buf[sizeof(client_hello)];
	dg_dtls_record rec;

	/* Other handshake types at epoch 0. */
	memcpy(buf, client_hello, sizeof(buf));
	buf[13] = 2; /* ServerHello */
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_int_eq(rec.handshake_type, 2);
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 0);
	buf[13] = 0; /* HelloRequest */
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 0);

	/* Type 1 but not a handshake record. */
	memcpy(buf, client_hello, sizeof(buf));
	buf[0] = 23;
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_int_eq(rec.handshake_type, -1);
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 0);

	/* A handshake fragment shorter than a handshake header. */
	{
		uint8_t small[13 + 11];
		size_t n = record(small, 22, 0xfefd, 0, 11, 11);
		small[13] = 1;
		ck_assert_int_eq(peek(small, n, &rec), 0);
		ck_assert_int_eq(rec.handshake_type, -1);
		ck_assert_int_eq(is_ch(small, n), 0);
	}
	{
		uint8_t hdr[13 + 12];
		size_t n = record(hdr, 22, 0xfefd, 0, 12, 12);
		hdr[13] = 1;
		ck_assert_int_eq(peek(hdr, n, &rec), 0);
		ck_assert_int_eq(rec.handshake_type, 1);
		ck_assert_int_eq(is_ch(hdr, n), 1);
	}
}
END_TEST

START_TEST(test_cid_record)
{
	/*
	 * tls12_cid (25): the CID length is the receiver's, so the reader
	 * does not interpret the length field and reports 0.
	 */
	uint8_t buf[13 + 8 + 40];
	dg_dtls_record rec;

	memset(buf, 0x11, sizeof(buf));
	buf[0] = 25;
	buf[1] = 0xfe;
	buf[2] = 0xfd;
	buf[3] = 0x00;
	buf[4] = 0x01;
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), 0);
	ck_assert_uint_eq(rec.content_type, 25);
	ck_assert_uint_eq(rec.epoch, 1);
	ck_assert_uint_eq(rec.length, 0);
	ck_assert_int_eq(rec.handshake_type, -1);
	ck_assert_int_eq(is_ch(buf, sizeof(buf)), 0);
	/* Still needs a whole header and a DTLS version. */
	ck_assert_int_eq(peek(buf, 12, &rec), -EPROTO);
	buf[2] = 0x03;
	ck_assert_int_eq(peek(buf, sizeof(buf), &rec), -EPROTO);
}
END_TEST

/* Writes a handshake record (epoch 0, sequence `seq`) holding one message fragment. */
static size_t
hs_record(uint8_t *buf, uint8_t msg_type, uint32_t msg_len, uint32_t off, uint32_t frag_len,
          const uint8_t *body, uint64_t seq)
{
	size_t n = record(buf, 22, 0xfefd, 0, (uint16_t)(12 + frag_len), 12 + frag_len);
	for (int i = 0; i < 6; i++)
		buf[5 + i] = (uint8_t)(seq >> (8 * (5 - i)));
	uint8_t *h = buf + 13;
	h[0] = msg_type;
	h[1] = (uint8_t)(msg_len >> 16), h[2] = (uint8_t)(msg_len >> 8), h[3] = (uint8_t)msg_len;
	h[6] = (uint8_t)(off >> 16), h[7] = (uint8_t)(off >> 8), h[8] = (uint8_t)off;
	h[9] = (uint8_t)(frag_len >> 16), h[10] = (uint8_t)(frag_len >> 8),
	h[11] = (uint8_t)frag_len;
	if (body != NULL)
		memcpy(h + 12, body, frag_len);
	return n;
}

START_TEST(test_next_record_walks_datagram)
{
	uint8_t buf[256];
	size_t n = record(buf, 23, 0xfefd, 1, 20, 20);
	n += record(buf + n, 21, 0xfefd, 1, 18, 18);
	n += record(buf + n, 22, 0xfefd, 0, 0, 0);
	dg_dtls_record r;
	size_t off = 0;

	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_uint_eq(r.content_type, 23);
	ck_assert_uint_eq(r.epoch, 1);
	ck_assert_uint_eq(r.seq, 7);
	ck_assert_uint_eq(r.raw_len, 33);
	ck_assert_ptr_eq(r.raw, buf);
	ck_assert_ptr_eq(r.fragment, buf + 13);
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_uint_eq(r.content_type, 21);
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_uint_eq(r.length, 0);
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), -ENOENT);
	ck_assert_uint_eq(off, n);
}
END_TEST

START_TEST(test_next_record_lying_length)
{
	/* A record claiming 1000 bytes and carrying 40, then a good one: framing is lost. */
	uint8_t buf[256];
	size_t n = record(buf, 23, 0xfefd, 1, 1000, 40);
	n += record(buf + n, 23, 0xfefd, 1, 20, 20);
	dg_dtls_record r;
	size_t off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), -EPROTO);
	/* A good record, then trailing bytes shorter than a header. */
	n = record(buf, 23, 0xfefd, 1, 20, 20);
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n + 5, &off, &r), 0);
	ck_assert_int_eq(dg_dtls_next_record(buf, n + 5, &off, &r), -EPROTO);
	/* A CID record cannot be framed without knowing the CID length. */
	n = record(buf, 25, 0xfefd, 1, 20, 20);
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), -EPROTO);
	ck_assert_int_eq(dg_dtls_next_record(NULL, 0, &off, &r), -ENOENT);
}
END_TEST

START_TEST(test_handshake_fragments)
{
	uint8_t buf[256], body[64];
	dg_dtls_record r;
	dg_dtls_handshake hs;
	size_t off = 0;

	memset(body, 0x41, sizeof(body));
	/* The first fragment of a ClientHello, sequence 1000: parsed, but not whole. */
	size_t n = hs_record(buf, 1, 200, 0, 21, body, 1000);
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_uint_eq(r.seq, 1000);
	ck_assert_int_eq(r.handshake_type, 1);
	ck_assert_int_eq(dg_dtls_handshake_header(&r, &hs), 0);
	ck_assert_uint_eq(hs.length, 200);
	ck_assert_uint_eq(hs.fragment_length, 21);
	ck_assert_int_eq(dg_dtls_handshake_whole(&hs), 0);
	/* A whole message. */
	n = hs_record(buf, 1, 30, 0, 30, body, 1);
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_int_eq(dg_dtls_handshake_header(&r, &hs), 0);
	ck_assert_int_eq(dg_dtls_handshake_whole(&hs), 1);
	/* Lying offsets and lengths. */
	n = hs_record(buf, 1, 30, 20, 20, body, 1); /* Past the end of the message. */
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_int_eq(dg_dtls_handshake_header(&r, &hs), -EPROTO);
	n = hs_record(buf, 1, 30, 0, 10, body, 1);
	buf[13 + 11] = 40; /* Fragment length beyond the record. */
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_int_eq(dg_dtls_handshake_header(&r, &hs), -EPROTO);
	n = record(buf, 22, 0xfefd, 0, 11, 11); /* Shorter than a handshake header. */
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_int_eq(dg_dtls_handshake_header(&r, &hs), -EPROTO);
	n = record(buf, 23, 0xfefd, 0, 20, 20); /* Not a handshake record. */
	off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, &r), 0);
	ck_assert_int_eq(dg_dtls_handshake_header(&r, &hs), -EPROTO);
}
END_TEST

/* Reads the handshake header of the single record in buf. */
static void
hs_of(const uint8_t *buf, size_t n, dg_dtls_record *r, dg_dtls_handshake *hs)
{
	size_t off = 0;
	ck_assert_int_eq(dg_dtls_next_record(buf, n, &off, r), 0);
	ck_assert_int_eq(dg_dtls_handshake_header(r, hs), 0);
}

START_TEST(test_psk_identity)
{
	uint8_t buf[256], body[32];
	dg_dtls_record r;
	dg_dtls_handshake hs;
	const uint8_t *id;
	size_t id_len;
	static const char ident[] = "dev1@acme\0junk";
	const size_t n = 2 + sizeof(ident) - 1;
	dg_dtls_cke c;

	body[0] = 0;
	body[1] = sizeof(ident) - 1;
	memcpy(body + 2, ident, sizeof(ident) - 1);
	/* A whole message: the exact bytes, NUL and all. */
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), -EAGAIN);
	hs_of(buf, hs_record(buf, 16, n, 0, n, body, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), 0);
	ck_assert_uint_eq(id_len, 14);
	ck_assert_int_eq(memcmp(id, ident, 14), 0);
	/* Overlapping fragments out of order: complete only when every byte came. */
	memset(&c, 0, sizeof(c));
	hs_of(buf, hs_record(buf, 16, n, 4, n - 4, body + 4, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), -EAGAIN);
	hs_of(buf, hs_record(buf, 16, n, 0, 3, body, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), -EAGAIN);
	hs_of(buf, hs_record(buf, 16, n, 2, 3, body + 2, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), 0);
	ck_assert_uint_eq(id_len, 14);
	ck_assert_int_eq(memcmp(id, ident, 14), 0);
	/* A fragment that disagrees with what came before: refused for good. */
	body[5] = 'X';
	hs_of(buf, hs_record(buf, 16, n, 4, 4, body + 4, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), -EPROTO);
	/* Another message type is ignored; an identity too long is refused. */
	memset(&c, 0, sizeof(c));
	hs_of(buf, hs_record(buf, 1, n, 0, n, body, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), -EAGAIN);
	body[0] = 1;
	hs_of(buf, hs_record(buf, 16, n, 0, n, body, 3), &r, &hs);
	dg_dtls_cke_add(&c, &hs);
	ck_assert_int_eq(dg_dtls_cke_identity(&c, &id, &id_len), -EPROTO);
}
END_TEST

static Suite *
dtls_suite(void)
{
	Suite *s = suite_create("dtls");
	TCase *tc = tcase_create("peek");

	tcase_add_test(tc, test_client_hello);
	tcase_add_test(tc, test_client_hello_truncated);
	tcase_add_test(tc, test_trailing_records);
	tcase_add_test(tc, test_too_short);
	tcase_add_test(tc, test_versions);
	tcase_add_test(tc, test_content_types);
	tcase_add_test(tc, test_length);
	tcase_add_test(tc, test_epoch_nonzero);
	tcase_add_test(tc, test_not_client_hello);
	tcase_add_test(tc, test_cid_record);
	tcase_add_test(tc, test_next_record_walks_datagram);
	tcase_add_test(tc, test_next_record_lying_length);
	tcase_add_test(tc, test_handshake_fragments);
	tcase_add_test(tc, test_psk_identity);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(dtls_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
