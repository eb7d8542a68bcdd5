/*
 * Unit tests of the payload codecs: JSON and CBOR (definite and
 * indefinite lengths, written byte by byte) into one cJSON tree and back,
 * exact encodings, round trips, numbers at the edges of a double, and the
 * malformed inputs each decoder must refuse with a short diagnostic.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/payload.h"

#define JSON 50
#define CBOR 60

/* A byte array literal and its length, as two arguments. */
#define B(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

/* Decodes and returns the tree; fails the test if decoding fails. */
static cJSON *
dec(int format, const uint8_t *data, size_t len)
{
	char diag[128] = "";
	cJSON *v = NULL;
	int rc = dg_payload_decode(format, data, len, &v, diag, sizeof(diag));

	ck_assert_msg(rc == 0, "decode failed: %d (%s)", rc, diag);
	ck_assert_ptr_nonnull(v);
	return v;
}

static cJSON *
dec_json(const char *text)
{
	return dec(JSON, (const uint8_t *)text, strlen(text));
}

/* Encodes v as compact JSON into a static buffer. */
static const char *
enc_json(const cJSON *v)
{
	static char buf[4096];
	size_t n = 0;
	int rc = dg_payload_encode(JSON, v, (uint8_t *)buf, sizeof(buf) - 1, &n);

	ck_assert_int_eq(rc, 0);
	buf[n] = '\0';
	return buf;
}

/* Decodes CBOR bytes and checks the JSON they read back as. */
static void
cbor_reads_as(const uint8_t *data, size_t len, const char *json)
{
	cJSON *v = dec(CBOR, data, len);

	ck_assert_str_eq(enc_json(v), json);
	cJSON_Delete(v);
}

/* Checks that `json` encodes to exactly the CBOR bytes exp. */
static void
json_encodes_as(const char *json, const uint8_t *exp, size_t exp_len)
{
	uint8_t buf[512];
	size_t n = 0;
	cJSON *v = dec_json(json);

	ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, sizeof(buf), &n), 0);
	ck_assert_uint_eq(n, exp_len);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(buf[i] == exp[i], "%s: byte %zu is 0x%02x, expected 0x%02x", json, i,
		              buf[i], exp[i]);
	cJSON_Delete(v);
}

/* Decodes CBOR that must be a single number, and returns it. */
static double
cbor_number(const uint8_t *data, size_t len)
{
	cJSON *v = dec(CBOR, data, len);
	double d;

	ck_assert(cJSON_IsNumber(v));
	d = v->valuedouble;
	cJSON_Delete(v);
	return d;
}

/* Checks that decoding fails with -EINVAL and a one-line diagnostic naming the format. */
static void
refused(int format, const uint8_t *data, size_t len, const char *diag_has)
{
	char diag[128] = "";
	cJSON *v = (cJSON *)&diag; /* Must come back NULL. */
	int rc = dg_payload_decode(format, data, len, &v, diag, sizeof(diag));

	ck_assert_msg(rc == -EINVAL, "rc %d for a malformed payload (%s)", rc, diag);
	ck_assert_ptr_null(v);
	ck_assert_msg(strncmp(diag, format == JSON ? "JSON: " : "CBOR: ", 6) == 0, "diag \"%s\"",
	              diag);
	ck_assert_ptr_null(strchr(diag, '\n'));
	if (diag_has != NULL)
		ck_assert_msg(strstr(diag, diag_has) != NULL, "diag \"%s\" lacks \"%s\"", diag,
		              diag_has);
}

static void
json_refused(const char *text, const char *diag_has)
{
	refused(JSON, (const uint8_t *)text, strlen(text), diag_has);
}

START_TEST(test_json_round_trip)
{
	static const char *const texts[] = {
	        "{\"a\":1,\"b\":[true,false,null],\"c\":\"x\"}",
	        "{}",
	        "[]",
	        "\"text\"",
	        "1.5",
	        "-3",
	        "0",
	        "null",
	        "true",
	        "{\"sensor\":{\"temp\":21.5,\"hum\":40,\"tags\":[\"a\",\"b\"]},\"on\":false}",
	        "[[[]],{},[{}]]",
	        "\"quote \\\" backslash \\\\ tab \\t\"",
	        "0.1",
	        "1e+300",
	        "-2.5e-07",
	        "123456789012",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		cJSON *v = dec_json(texts[i]);

		ck_assert_str_eq(enc_json(v), texts[i]);
		cJSON_Delete(v);
	}
}
END_TEST

START_TEST(test_json_numbers)
{
	static const char *const same[] = {
	        "9007199254740992",
	        "9007199254740993", /* Read as 2^53, then written as that. */
	        "0.30000000000000004",
	        "1e+21",
	        "-1.5",
	        "1000000000000000",
	        "1.7976931348623157e+308",
	        "2.2250738585072014e-308",
	};
	static const char *const written[] = {
	        "9007199254740992",
	        "9007199254740992",
	        "0.30000000000000004",
	        "1e+21",
	        "-1.5",
	        "1000000000000000",
	        "1.7976931348623157e+308",
	        "2.2250738585072014e-308",
	};

	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		cJSON *v = dec_json(same[i]), *w;
		const char *out = enc_json(v);

		ck_assert_str_eq(out, written[i]);
		/* What is written reads back as the same double. */
		w = dec_json(out);
		ck_assert(w->valuedouble == v->valuedouble);
		cJSON_Delete(v);
		cJSON_Delete(w);
	}
	/* From CBOR: the largest double, 2^64, and a single-precision 0.1. */
	cbor_reads_as(B(0xFB, 0x7F, 0xEF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF),
	              "1.7976931348623157e+308");
	cbor_reads_as(B(0x1B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF),
	              "1.8446744073709552e+19");
	cbor_reads_as(B(0xFA, 0x3D, 0xCC, 0xCC, 0xCD), "0.10000000149011612");
	/* NaN cannot come from a decoder, but a tree built by hand writes it as null. */
	{
		cJSON *v = cJSON_CreateArray();
		uint8_t buf[8];
		size_t n;

		cJSON_AddItemToArray(v, cJSON_CreateNumber(NAN));
		ck_assert_str_eq(enc_json(v), "[null]");
		ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, sizeof(buf), &n), 0);
		ck_assert_uint_eq(n, 2);
		ck_assert_mem_eq(buf, ((const uint8_t[]){0x81, 0xF6}), 2);
		cJSON_Delete(v);
	}
}
END_TEST

START_TEST(test_json_white_space)
{
	cJSON *v = dec_json(" \t\r\n{ \"a\" : [ 1 , 2 ] }\r\n ");

	ck_assert_str_eq(enc_json(v), "{\"a\":[1,2]}");
	cJSON_Delete(v);
}
END_TEST

START_TEST(test_cbor_definite)
{
	cbor_reads_as(B(0xA2, 0x61, 'a', 0x01, 0x61, 'b', 0x82, 0x01, 0x02),
	              "{\"a\":1,\"b\":[1,2]}");
	cbor_reads_as(B(0xA0), "{}");
	cbor_reads_as(B(0x80), "[]");
	cbor_reads_as(B(0x83, 0x01, 0x82, 0x02, 0x03, 0x82, 0x04, 0x05), "[1,[2,3],[4,5]]");
}
END_TEST

START_TEST(test_cbor_indefinite)
{
	/* What the SDK's Linux build sends. */
	cbor_reads_as(B(0xBF, 0x61, 'a', 0x01, 0xFF), "{\"a\":1}");
	cbor_reads_as(B(0x9F, 0x01, 0x02, 0xFF), "[1,2]");
	cbor_reads_as(B(0xBF, 0xFF), "{}");
	cbor_reads_as(B(0x9F, 0xFF), "[]");
	/* {"temp": 21.5} with the float as a double. */
	cbor_reads_as(
	        B(0xBF, 0x64, 't', 'e', 'm', 'p', 0xFB, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0, 0xFF),
	        "{\"temp\":21.5}");
}
END_TEST

START_TEST(test_cbor_nested_indefinite)
{
	/* {"s": [{"t": 25}, []], "m": {"x": true}}, indefinite but for the last map. */
	cbor_reads_as(B(0xBF, 0x61, 's', 0x9F, 0xBF, 0x61, 't', 0x18, 0x19, 0xFF, 0x9F, 0xFF, 0xFF,
	                0x61, 'm', 0xA1, 0x61, 'x', 0xF5, 0xFF),
	              "{\"s\":[{\"t\":25},[]],\"m\":{\"x\":true}}");
	/* Definite inside indefinite inside definite. */
	cbor_reads_as(B(0x82, 0x9F, 0xA1, 0x61, 'k', 0x9F, 0xFF, 0xFF, 0xF6),
	              "[[{\"k\":[]}],null]");
	/* A batch of stream records: [{"t": 1, "v": 2}, {"t": 3, "v": 4}]. */
	cbor_reads_as(B(0x9F, 0xBF, 0x61, 't', 0x01, 0x61, 'v', 0x02, 0xFF, 0xBF, 0x61, 't', 0x03,
	                0x61, 'v', 0x04, 0xFF, 0xFF),
	              "[{\"t\":1,\"v\":2},{\"t\":3,\"v\":4}]");
}
END_TEST

START_TEST(test_cbor_floats)
{
	/* Half. */
	ck_assert(cbor_number(B(0xF9, 0x3C, 0x00)) == 1.0);
	ck_assert(cbor_number(B(0xF9, 0x3E, 0x00)) == 1.5);
	ck_assert(cbor_number(B(0xF9, 0xC4, 0x00)) == -4.0);
	ck_assert(cbor_number(B(0xF9, 0x7B, 0xFF)) == 65504.0);
	ck_assert(cbor_number(B(0xF9, 0x00, 0x01)) == ldexp(1.0, -24)); /* Subnormal. */
	ck_assert(cbor_number(B(0xF9, 0x80, 0x00)) == 0.0);
	/* Single. */
	ck_assert(cbor_number(B(0xFA, 0x47, 0xC3, 0x50, 0x00)) == 100000.0);
	ck_assert(cbor_number(B(0xFA, 0x3F, 0xC0, 0x00, 0x00)) == 1.5);
	ck_assert(cbor_number(B(0xFA, 0x41, 0xAC, 0x00, 0x00)) == 21.5);
	/* Double. */
	ck_assert(cbor_number(B(0xFB, 0x3F, 0xF1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A)) == 1.1);
	ck_assert(cbor_number(B(0xFB, 0xC0, 0x10, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66)) == -4.1);
	cbor_reads_as(B(0x83, 0xF9, 0x3E, 0x00, 0xFA, 0x41, 0xAC, 0x00, 0x00, 0xFB, 0x3F, 0xF1,
	                0x99, 0x99, 0x99, 0x99, 0x99, 0x9A),
	              "[1.5,21.5,1.1]");
	/* NaN and the infinities have no JSON form. */
	refused(CBOR, B(0xF9, 0x7E, 0x00), "NaN");
	refused(CBOR, B(0xF9, 0x7C, 0x00), "NaN");
	refused(CBOR, B(0xFA, 0xFF, 0x80, 0x00, 0x00), NULL);
	refused(CBOR, B(0xFB, 0x7F, 0xF0, 0, 0, 0, 0, 0, 0), NULL);
}
END_TEST

START_TEST(test_cbor_integers)
{
	ck_assert(cbor_number(B(0x00)) == 0);
	ck_assert(cbor_number(B(0x17)) == 23);
	ck_assert(cbor_number(B(0x18, 0x18)) == 24);
	ck_assert(cbor_number(B(0x19, 0x03, 0xE8)) == 1000);
	ck_assert(cbor_number(B(0x1A, 0x00, 0x0F, 0x42, 0x40)) == 1000000);
	ck_assert(cbor_number(B(0x1B, 0, 0, 0x00, 0xE8, 0xD4, 0xA5, 0x10, 0x00)) == 1e12);
	/* Non-shortest forms are well-formed too. */
	ck_assert(cbor_number(B(0x1B, 0, 0, 0, 0, 0, 0, 0, 0x01)) == 1);
	/* Negative. */
	ck_assert(cbor_number(B(0x20)) == -1);
	ck_assert(cbor_number(B(0x29)) == -10);
	ck_assert(cbor_number(B(0x38, 0x63)) == -100);
	ck_assert(cbor_number(B(0x39, 0x03, 0xE7)) == -1000);
	ck_assert(cbor_number(B(0x3A, 0x7F, 0xFF, 0xFF, 0xFF)) == -2147483648.0);
	ck_assert(cbor_number(B(0x3B, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)) ==
	          -9223372036854775808.0);
	cbor_reads_as(B(0x84, 0x20, 0x38, 0x63, 0x19, 0x03, 0xE8, 0x1A, 0x00, 0x0F, 0x42, 0x40),
	              "[-1,-100,1000,1000000]");
}
END_TEST

START_TEST(test_cbor_big_integers)
{
	/* Beyond 2^53 a double keeps the nearest value: 2^53 + 1 rounds to 2^53. */
	ck_assert(cbor_number(B(0x1B, 0x00, 0x20, 0, 0, 0, 0, 0, 0x01)) == 9007199254740992.0);
	ck_assert(cbor_number(B(0x1B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)) ==
	          18446744073709551616.0);
	ck_assert(cbor_number(B(0x3B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)) ==
	          -18446744073709551616.0);
	/* Bignums (tags 2 and 3). */
	ck_assert(cbor_number(B(0xC2, 0x43, 0x00, 0x00, 0x05)) == 5);
	ck_assert(cbor_number(B(0xC2, 0x49, 0x01, 0, 0, 0, 0, 0, 0, 0, 0)) ==
	          18446744073709551616.0);
	ck_assert(cbor_number(B(0xC3, 0x41, 0x00)) == -1);
	ck_assert(cbor_number(B(0xC3, 0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)) ==
	          -18446744073709551616.0);
	ck_assert(cbor_number(B(0xC2, 0x40)) == 0);
	/* An indefinite-length byte string as the bignum. */
	ck_assert(cbor_number(B(0xC2, 0x5F, 0x41, 0x01, 0x42, 0x00, 0x00, 0xFF)) == 65536);
	/* 2^64 + 2^11 + 1 is above the halfway point between two doubles: it rounds up. */
	ck_assert(cbor_number(B(0xC2, 0x49, 0x01, 0, 0, 0, 0, 0, 0, 0x08, 0x01)) ==
	          18446744073709555712.0);
	/* A bignum no double can hold. */
	{
		uint8_t big[3 + 200];

		big[0] = 0xC2;
		big[1] = 0x58;
		big[2] = 200;
		memset(big + 3, 0xFF, 200);
		refused(CBOR, big, sizeof(big), "out of range");
	}
	refused(CBOR, B(0xC2, 0x01), "bignum");
	refused(CBOR, B(0xC2, 0x5F, 0x01, 0xFF), NULL);

	/* Integral doubles within int64 encode as integers, others as doubles. */
	json_encodes_as("9007199254740992", B(0x1B, 0x00, 0x20, 0, 0, 0, 0, 0, 0));
	json_encodes_as("-9223372036854775808",
	                B(0x3B, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF));
	json_encodes_as("9223372036854775808", B(0xFB, 0x43, 0xE0, 0, 0, 0, 0, 0, 0));
	json_encodes_as("1e300", B(0xFB, 0x7E, 0x37, 0xE4, 0x3C, 0x88, 0x00, 0x75, 0x9C));
}
END_TEST

START_TEST(test_cbor_tags)
{
	/* Epoch time (tag 1) is a number, date/time text (tag 0) a string. */
	cbor_reads_as(B(0xC1, 0x1A, 0x51, 0x4B, 0x67, 0xB0), "1363896240");
	cbor_reads_as(B(0xC1, 0xFB, 0x41, 0xD4, 0x52, 0xD9, 0xEC, 0x20, 0x00, 0x00),
	              "1363896240.5");
	cbor_reads_as(B(0xC0, 0x74, '2', '0', '1', '3', '-', '0', '3', '-', '2', '1', 'T', '2', '0',
	                ':', '0', '4', ':', '0', '0', 'Z'),
	              "\"2013-03-21T20:04:00Z\"");
	refused(CBOR, B(0xC1, 0x61, 'a'), "wrong type");
	refused(CBOR, B(0xC0, 0x01), "wrong type");
	refused(CBOR, B(0xC1, 0xC1, 0x01), "wrong type");
	/* Other tags. */
	refused(CBOR, B(0xD8, 0x20, 0x61, 'a'), "tag 32");
	refused(CBOR, B(0xC4, 0x82, 0x21, 0x19, 0x6A, 0xB3), "tag 4");
	refused(CBOR, B(0xD9, 0xD9, 0xF7, 0x01), "tag 55799");
	refused(CBOR, B(0xC6, 0x01), NULL);
}
END_TEST

START_TEST(test_cbor_simple)
{
	cbor_reads_as(B(0x83, 0xF4, 0xF5, 0xF6), "[false,true,null]");
	cbor_reads_as(B(0xF6), "null");
	refused(CBOR, B(0xF7), "undefined");
	refused(CBOR, B(0xE0), NULL);
	refused(CBOR, B(0xF3), NULL);
	refused(CBOR, B(0xF8, 0x20), NULL);
}
END_TEST

START_TEST(test_cbor_text)
{
	/* UTF-8 passes through: "é€😀". */
	cbor_reads_as(B(0x69, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80),
	              "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"");
	cbor_reads_as(B(0x60), "\"\"");
	/* A control character comes out escaped. */
	cbor_reads_as(B(0x62, 'a', 0x01), "\"a\\u0001\"");
	json_encodes_as("\"\\u00e9\"", B(0x62, 0xC3, 0xA9));
	json_encodes_as("{\"\xC3\xA9\":\"\xE2\x82\xAC\"}",
	                B(0xA1, 0x62, 0xC3, 0xA9, 0x63, 0xE2, 0x82, 0xAC));
	/* Not UTF-8: a stray continuation, an overlong, a surrogate, a truncated sequence. */
	refused(CBOR, B(0x61, 0xFF), "UTF-8");
	refused(CBOR, B(0x62, 0xC0, 0x80), "UTF-8");
	refused(CBOR, B(0x63, 0xED, 0xA0, 0x80), "UTF-8");
	refused(CBOR, B(0x62, 0xE2, 0x82), "UTF-8");
	refused(CBOR, B(0xA1, 0x61, 0x80, 0x01), "UTF-8");
	/* NUL would cut the string short in cJSON. */
	refused(CBOR, B(0x63, 'a', 0x00, 'b'), "NUL");
}
END_TEST

START_TEST(test_cbor_indefinite_text)
{
	cbor_reads_as(B(0x7F, 0x62, 'a', 'b', 0x61, 'c', 0xFF), "\"abc\"");
	cbor_reads_as(B(0x7F, 0xFF), "\"\"");
	cbor_reads_as(B(0x7F, 0x60, 0x61, 'x', 0x60, 0xFF), "\"x\"");
	/* As a map key, in an indefinite map. */
	cbor_reads_as(B(0xBF, 0x7F, 0x61, 'k', 0x61, 'y', 0xFF, 0x01, 0xFF), "{\"ky\":1}");
	/* Chunks must be definite text strings, each UTF-8 by itself. */
	refused(CBOR, B(0x7F, 0x01, 0xFF), "chunk");
	refused(CBOR, B(0x7F, 0x41, 'a', 0xFF), "chunk");
	refused(CBOR, B(0x7F, 0x7F, 0xFF, 0xFF), "chunk");
	refused(CBOR, B(0x7F, 0x61, 0xC3, 0x61, 0xA9, 0xFF), "UTF-8");
	refused(CBOR, B(0x7F, 0x61, 'a'), "truncated");
}
END_TEST

START_TEST(test_json_to_cbor_exact)
{
	json_encodes_as("{\"a\":1}", B(0xA1, 0x61, 'a', 0x01));
	json_encodes_as("[1,-1,true,false,null,\"x\"]",
	                B(0x86, 0x01, 0x20, 0xF5, 0xF4, 0xF6, 0x61, 'x'));
	json_encodes_as("1.5", B(0xFB, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0));
	json_encodes_as("-0.25", B(0xFB, 0xBF, 0xD0, 0, 0, 0, 0, 0, 0));
	json_encodes_as("{\"n\":-1000}", B(0xA1, 0x61, 'n', 0x39, 0x03, 0xE7));
	json_encodes_as("23", B(0x17));
	json_encodes_as("24", B(0x18, 0x18));
	json_encodes_as("255", B(0x18, 0xFF));
	json_encodes_as("256", B(0x19, 0x01, 0x00));
	json_encodes_as("65536", B(0x1A, 0x00, 0x01, 0x00, 0x00));
	json_encodes_as("4294967296", B(0x1B, 0, 0, 0, 0x01, 0, 0, 0, 0));
	json_encodes_as("-24", B(0x37));
	json_encodes_as("-25", B(0x38, 0x18));
	json_encodes_as("2.0", B(0x02));
	json_encodes_as("-0", B(0x00));
	json_encodes_as("{}", B(0xA0));
	json_encodes_as("[]", B(0x80));
	json_encodes_as("\"\"", B(0x60));
	json_encodes_as("{\"a\":{\"b\":[]}}", B(0xA1, 0x61, 'a', 0xA1, 0x61, 'b', 0x80));
	/* A 24-byte string needs a one-byte length. */
	json_encodes_as("\"abcdefghijklmnopqrstuvwx\"",
	                B(0x78, 24, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm',
	                  'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x'));
}
END_TEST

START_TEST(test_round_trips)
{
	static const char *const texts[] = {
	        "{\"a\":1,\"b\":[true,false,null],\"c\":\"x\"}",
	        "[0.1,1e+300,-2.5e-07,1.7976931348623157e+308,4.94065645841247e-324]",
	        "{\"level\":\"info\",\"module\":\"app\",\"msg\":\"hello \\\"world\\\"\"}",
	        "[-1,-4294967296,4294967296,1000000000000000,-9223372036854775808,1."
	        "8446744073709552e+19]",
	        "{\"\xC3\xA9\":{\"\":[[],{}]}}",
	};
	/* Canonical CBOR (definite, shortest) reads back to the same bytes. */
	static const uint8_t cbors[][16] = {
	        {0xA2, 0x61, 'a', 0x01, 0x61, 'b', 0x82, 0xF5, 0xF6},
	        {0x83, 0x20, 0x38, 0xFF, 0x39, 0x01, 0x00},
	        {0xFB, 0x3F, 0xB9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A},
	        {0x1B, 0x00, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
	};
	static const size_t cbor_lens[] = {9, 7, 9, 9};
	uint8_t buf[512];
	size_t n;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		cJSON *v = dec_json(texts[i]), *w;

		/* JSON -> CBOR -> JSON is the identity on compact text. */
		ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, sizeof(buf), &n), 0);
		w = dec(CBOR, buf, n);
		ck_assert_str_eq(enc_json(w), texts[i]);
		ck_assert(cJSON_Compare(v, w, 1));
		cJSON_Delete(v);
		cJSON_Delete(w);
	}
	for (size_t i = 0; i < sizeof(cbors) / sizeof(cbors[0]); i++) {
		cJSON *v = dec(CBOR, cbors[i], cbor_lens[i]);

		ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, sizeof(buf), &n), 0);
		ck_assert_uint_eq(n, cbor_lens[i]);
		ck_assert_mem_eq(buf, cbors[i], n);
		cJSON_Delete(v);
	}
	/* Indefinite lengths come back definite. */
	{
		cJSON *v = dec(CBOR, B(0xBF, 0x61, 'a', 0x9F, 0x01, 0xFF, 0xFF));

		ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, sizeof(buf), &n), 0);
		ck_assert_uint_eq(n, 5);
		ck_assert_mem_eq(buf, ((const uint8_t[]){0xA1, 0x61, 'a', 0x81, 0x01}), 5);
		cJSON_Delete(v);
	}
}
END_TEST

START_TEST(test_cbor_malformed)
{
	/* Truncated. */
	refused(CBOR, B(0xA1, 0x61, 'a'), "truncated");
	refused(CBOR, B(0x19, 0x01), "truncated");
	refused(CBOR, B(0x62, 'a'), "truncated");
	refused(CBOR, B(0xBF, 0x61, 'a', 0x01), "truncated");
	refused(CBOR, B(0x9F), "truncated");
	refused(CBOR, B(0x82, 0x01), "truncated");
	refused(CBOR, B(0xFB, 0x3F, 0xF8), "truncated");
	refused(CBOR, B(0x7B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 'a'), "truncated");
	refused(CBOR, B(0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01), "truncated");
	/* Reserved additional information. */
	refused(CBOR, B(0x1C), "reserved");
	refused(CBOR, B(0x3D), "reserved");
	refused(CBOR, B(0x5E), "reserved");
	refused(CBOR, B(0x7C), "reserved");
	refused(CBOR, B(0x9C), "reserved");
	refused(CBOR, B(0xBD), "reserved");
	refused(CBOR, B(0xDE, 0x01), "reserved");
	refused(CBOR, B(0xFC), "reserved");
	refused(CBOR, B(0x1F), "reserved");
	/* Byte strings. */
	refused(CBOR, B(0x41, 0x00), "byte string");
	refused(CBOR, B(0x5F, 0xFF), "byte string");
	refused(CBOR, B(0xA1, 0x61, 'a', 0x40), "byte string");
	/* Keys that are not text. */
	refused(CBOR, B(0xA1, 0x01, 0x02), "map key is not text");
	refused(CBOR, B(0xBF, 0x01, 0x02, 0xFF), "map key is not text");
	refused(CBOR, B(0xA1, 0x41, 'a', 0x02), "map key is not text");
	refused(CBOR, B(0xA1, 0xC0, 0x61, 'a', 0x02), "map key is not text");
	refused(CBOR, B(0xA1, 0x80, 0x02), "map key is not text");
	/* Breaks where none may be. */
	refused(CBOR, B(0xFF), "break");
	refused(CBOR, B(0x82, 0x01, 0xFF), "break");
	refused(CBOR, B(0xBF, 0x61, 'a', 0xFF), "break");
	refused(CBOR, B(0xA1, 0xFF), "map key is not text");
	/* Trailing bytes. */
	refused(CBOR, B(0x01, 0x02), "after the value");
	refused(CBOR, B(0xA0, 0x00), "after the value");
	refused(CBOR, B(0xBF, 0xFF, 0xFF), "after the value");
}
END_TEST

/* Builds `n` nested arrays (definite or not) around 0, in buf. */
static size_t
nested(uint8_t *buf, unsigned n, int indef)
{
	size_t len = 0;

	for (unsigned i = 0; i < n; i++)
		buf[len++] = indef ? 0x9F : 0x81;
	buf[len++] = 0x00;
	if (indef)
		for (unsigned i = 0; i < n; i++)
			buf[len++] = 0xFF;
	return len;
}

START_TEST(test_depth)
{
	uint8_t buf[256];
	char text[256];
	size_t len;
	cJSON *v;

	for (int indef = 0; indef <= 1; indef++) {
		len = nested(buf, DG_PAYLOAD_MAX_DEPTH, indef);
		v = dec(CBOR, buf, len);
		cJSON_Delete(v);
		len = nested(buf, DG_PAYLOAD_MAX_DEPTH + 1, indef);
		refused(CBOR, buf, len, "deeper");
	}
	/* Maps count too: {"a": {"a": ... 0}}. */
	len = 0;
	for (int i = 0; i < DG_PAYLOAD_MAX_DEPTH + 1; i++) {
		buf[len++] = 0xBF;
		buf[len++] = 0x61;
		buf[len++] = 'a';
	}
	buf[len++] = 0x00;
	for (int i = 0; i < DG_PAYLOAD_MAX_DEPTH + 1; i++)
		buf[len++] = 0xFF;
	refused(CBOR, buf, len, "deeper");
	/* One level less passes; with the outer break left over, it does not. */
	v = dec(CBOR, buf + 3, len - 4);
	cJSON_Delete(v);
	refused(CBOR, buf + 3, len - 3, "after the value");

	/* JSON: 32 levels pass, 33 do not; brackets inside strings do not count. */
	memset(text, '[', DG_PAYLOAD_MAX_DEPTH);
	memset(text + DG_PAYLOAD_MAX_DEPTH, ']', DG_PAYLOAD_MAX_DEPTH);
	text[2 * DG_PAYLOAD_MAX_DEPTH] = '\0';
	v = dec_json(text);
	cJSON_Delete(v);
	memset(text, '[', DG_PAYLOAD_MAX_DEPTH + 1);
	memset(text + DG_PAYLOAD_MAX_DEPTH + 1, ']', DG_PAYLOAD_MAX_DEPTH + 1);
	text[2 * DG_PAYLOAD_MAX_DEPTH + 2] = '\0';
	json_refused(text, "deeper");
	v = dec_json("[\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"]");
	cJSON_Delete(v);
}
END_TEST

START_TEST(test_json_malformed)
{
	json_refused("{\"a\":}", "syntax error at byte 5");
	json_refused("[1,2", "syntax error");
	json_refused("{\"a\":1} x", "after the value at byte 8");
	json_refused("{\"a\":1}{\"b\":2}", "after the value");
	json_refused("1 2", "after the value");
	json_refused("nul", "syntax error");
	json_refused("'a'", "syntax error");
	json_refused("   ", "syntax error");
	json_refused("\"\\u0000\"", "\\u0000");
	json_refused("{\"a\\u0000b\":1}", "\\u0000");
	json_refused("\"\\ud800\"", "syntax error");
	json_refused("\"\\udc00\"", "syntax error");
	json_refused("1e999", "out of range");
	json_refused("[-1e999]", "out of range");
	json_refused("\"\xFF\"", "UTF-8");
	json_refused("\"\xC0\xAF\"", "UTF-8");
	refused(JSON, B('"', 'a', 0x00, 'b', '"'), "control character");
	refused(JSON, B('"', 'a', 0x0A, '"'), "control character");
	refused(JSON, B('1', 0x00), "syntax error");
	refused(JSON, B(0x01, '1'), "syntax error");
	refused(JSON, B('[', '1', 0x0B, ']'), "syntax error");

	/* An escaped backslash followed by "u0000" is text, not a NUL. */
	{
		cJSON *v = dec_json("\"\\\\u0000\"");

		ck_assert_str_eq(v->valuestring, "\\u0000");
		cJSON_Delete(v);
	}
}
END_TEST

START_TEST(test_empty_and_unsupported)
{
	char diag[128];
	uint8_t buf[16];
	size_t n = 99;
	cJSON *v = NULL;

	refused(JSON, (const uint8_t *)"", 0, "empty");
	refused(CBOR, (const uint8_t *)"", 0, "empty");
	ck_assert_int_eq(dg_payload_decode(42, (const uint8_t *)"{}", 2, &v, diag, sizeof(diag)),
	                 -ENOTSUP);
	ck_assert_ptr_null(v);
	ck_assert_int_eq(dg_payload_decode(0, (const uint8_t *)"{}", 2, &v, diag, sizeof(diag)),
	                 -ENOTSUP);
	v = dec_json("{}");
	ck_assert_int_eq(dg_payload_encode(42, v, buf, sizeof(buf), &n), -ENOTSUP);
	ck_assert_int_eq(dg_payload_encode(-1, v, buf, sizeof(buf), &n), -ENOTSUP);
	cJSON_Delete(v);
	/* No room for a diagnostic is fine. */
	ck_assert_int_eq(dg_payload_decode(CBOR, B(0xFF), &v, NULL, 0), -EINVAL);
	ck_assert_int_eq(dg_payload_decode(JSON, B('x'), &v, diag, 0), -EINVAL);
	/* A short diagnostic buffer is truncated, not overrun. */
	memset(diag, 'z', sizeof(diag));
	ck_assert_int_eq(dg_payload_decode(CBOR, B(0xFF), &v, diag, 4), -EINVAL);
	ck_assert_str_eq(diag, "CBO");
	ck_assert_int_eq(diag[4], 'z');
}
END_TEST

START_TEST(test_enobufs)
{
	static const char json[] = "{\"name\":\"abcdef\",\"v\":[1,2,3]}";
	uint8_t buf[64], cbor[64];
	size_t n, cbor_len;
	cJSON *v = dec_json(json);

	/* JSON: the exact length fits (no NUL is written), one less does not. */
	ck_assert_int_eq(dg_payload_encode(JSON, v, buf, strlen(json), &n), 0);
	ck_assert_uint_eq(n, strlen(json));
	ck_assert_mem_eq(buf, json, n);
	ck_assert_int_eq(dg_payload_encode(JSON, v, buf, strlen(json) - 1, &n), -ENOBUFS);
	ck_assert_int_eq(dg_payload_encode(JSON, v, buf, 0, &n), -ENOBUFS);

	/* CBOR: every capacity short of the whole encoding is refused. */
	ck_assert_int_eq(dg_payload_encode(CBOR, v, cbor, sizeof(cbor), &cbor_len), 0);
	for (size_t cap = 0; cap < cbor_len; cap++) {
		memset(buf, 0xEE, sizeof(buf));
		ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, cap, &n), -ENOBUFS);
		for (size_t i = cap; i < sizeof(buf); i++)
			ck_assert_uint_eq(buf[i], 0xEE); /* Nothing written past cap. */
	}
	ck_assert_int_eq(dg_payload_encode(CBOR, v, buf, cbor_len, &n), 0);
	ck_assert_uint_eq(n, cbor_len);
	ck_assert_mem_eq(buf, cbor, n);
	cJSON_Delete(v);
}
END_TEST

/* The allocating encoder grows its buffer up to max, and the UTF-8 check is exact. */
START_TEST(test_encode_alloc_and_utf8)
{
	cJSON *v = cJSON_CreateArray();
	for (int i = 0; i < 3000; i++)
		cJSON_AddItemToArray(v, cJSON_CreateString("abcdef"));
	uint8_t *out = NULL;
	size_t len = 0;
	ck_assert_int_eq(dg_payload_encode_alloc(50, v, 1u << 20, &out, &len), 0);
	ck_assert_uint_eq(len, 3000 * 9 + 1);
	ck_assert_int_eq(out[0], '[');
	free(out);
	ck_assert_int_eq(dg_payload_encode_alloc(60, v, 1000, &out, &len), -ENOBUFS);
	ck_assert_ptr_null(out);
	ck_assert_int_eq(dg_payload_encode_alloc(7, v, 1000, &out, &len), -ENOTSUP);
	cJSON_Delete(v);
	ck_assert_uint_eq(dg_payload_utf8_check((const uint8_t *)"a\xc3\xa9"
	                                                         "b",
	                                        4),
	                  4);
	ck_assert_uint_eq(dg_payload_utf8_check((const uint8_t *)"ab\xff", 3), 2);
	ck_assert_uint_eq(dg_payload_utf8_check((const uint8_t *)"\xed\xa0\x80", 3), 0);
}
END_TEST

START_TEST(test_duplicate_keys_kept)
{
	/* Decoding keeps members as they come; the state tree resolves repeats. */
	cbor_reads_as(B(0xA2, 0x61, 'a', 0x01, 0x61, 'a', 0x02), "{\"a\":1,\"a\":2}");
}
END_TEST

static Suite *
payload_suite(void)
{
	Suite *s = suite_create("payload");
	TCase *tc = tcase_create("payload");

	tcase_add_test(tc, test_json_round_trip);
	tcase_add_test(tc, test_json_numbers);
	tcase_add_test(tc, test_json_white_space);
	tcase_add_test(tc, test_cbor_definite);
	tcase_add_test(tc, test_cbor_indefinite);
	tcase_add_test(tc, test_cbor_nested_indefinite);
	tcase_add_test(tc, test_cbor_floats);
	tcase_add_test(tc, test_cbor_integers);
	tcase_add_test(tc, test_cbor_big_integers);
	tcase_add_test(tc, test_cbor_tags);
	tcase_add_test(tc, test_cbor_simple);
	tcase_add_test(tc, test_cbor_text);
	tcase_add_test(tc, test_cbor_indefinite_text);
	tcase_add_test(tc, test_json_to_cbor_exact);
	tcase_add_test(tc, test_round_trips);
	tcase_add_test(tc, test_cbor_malformed);
	tcase_add_test(tc, test_depth);
	tcase_add_test(tc, test_json_malformed);
	tcase_add_test(tc, test_empty_and_unsupported);
	tcase_add_test(tc, test_enobufs);
	tcase_add_test(tc, test_duplicate_keys_kept);
	tcase_add_test(tc, test_encode_alloc_and_utf8);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(payload_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
