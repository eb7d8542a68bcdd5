/*
 * Payloads: JSON and CBOR to and from a cJSON tree.
 *
 * JSON goes through cJSON, after a strict pre-scan that cJSON does not do
 * itself: the text must be UTF-8, hold no NUL (raw or as "\u0000", which
 * cJSON would cut a string at), no raw control characters in strings, and
 * nest no deeper than DG_PAYLOAD_MAX_DEPTH; nothing but white space may
 * follow the value. JSON is written here, not by cJSON_PrintUnformatted(),
 * so that every number reads back as the same double (see json_number())
 * and the text goes straight into the caller's buffer.
 *
 * CBOR goes through libcbor: cbor_stream_decode() reads one item header at
 * a time (bounds-checked), and the structure above it (definite and
 * indefinite maps, arrays and text strings, tags, depth) is walked here.
 * Encoding uses libcbor's cbor_encode_*() writers, which refuse to write
 * past the buffer.
 *
 * Numbers are doubles in cJSON: integers beyond +-2^53 are rounded to the
 * nearest double, and NaN and the infinities, which JSON cannot carry, are
 * refused on input and written as null on output.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <cjson/cJSON.h>

#include "devgate/coap.h"
#include "devgate/payload.h"

/* Writes a diagnostic, if the caller gave room for one. */
static void diagf(char *diag, size_t diag_len, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
diagf(char *diag, size_t diag_len, const char *fmt, ...)
{
	va_list ap;

	if (diag == NULL || diag_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(diag, diag_len, fmt, ap);
	va_end(ap);
}

/*
 * Returns the offset of the first byte that does not start a well-formed
 * UTF-8 sequence (overlong forms, surrogates and code points above
 * U+10FFFF are ill-formed), or len when all of s is UTF-8.
 */
static size_t
utf8_check(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint8_t lo = 0x80, hi = 0xbf;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0; /* Overlong. */
			else if (c == 0xed)
				hi = 0x9f; /* Surrogates. */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90; /* Overlong. */
			else if (c == 0xf4)
				hi = 0x8f; /* Above U+10FFFF. */
		} else {
			return i;
		}
		if (len - i <= n)
			return i;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return i;
		for (size_t k = 2; k <= n; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return i;
		i += n + 1;
	}
	return len;
}

/* JSON */

static bool
json_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Checks what cJSON lets through: returns 0, or -EINVAL with a diagnostic
 * for a NUL, a "\u0000" escape, a raw control character, bytes that are
 * not UTF-8, or nesting deeper than DG_PAYLOAD_MAX_DEPTH.
 */
static int
json_prescan(const uint8_t *s, size_t len, char *diag, size_t diag_len)
{
	size_t bad = utf8_check(s, len);
	bool in_string = false;
	unsigned depth = 0;

	if (bad < len) {
		diagf(diag, diag_len, "JSON: invalid UTF-8 at byte %zu", bad);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t c = s[i];

		if (in_string) {
			if (c < 0x20) {
				diagf(diag, diag_len,
				      "JSON: control character in string at byte %zu", i);
				return -EINVAL;
			}
			if (c == '"') {
				in_string = false;
			} else if (c == '\\' && i + 1 < len) {
				if (len - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
					diagf(diag, diag_len, "JSON: \\u0000 at byte %zu", i);
					return -EINVAL;
				}
				i++; /* The escaped character: "\\" and "\"" end nothing. */
			}
			continue;
		}
		if (c == '"') {
			in_string = true;
		} else if (c == '[' || c == '{') {
			if (++depth > DG_PAYLOAD_MAX_DEPTH) {
				diagf(diag, diag_len, "JSON: nested deeper than %d at byte %zu",
				      DG_PAYLOAD_MAX_DEPTH, i);
				return -EINVAL;
			}
		} else if (c == ']' || c == '}') {
			if (depth > 0)
				depth--;
		} else if (c < 0x20 && !json_space(c)) {
			/* cJSON would skip any control character as white space. */
			diagf(diag, diag_len, "JSON: syntax error at byte %zu", i);
			return -EINVAL;
		}
	}
	return 0;
}

/* Returns 1 when every number in the tree is finite (strtod makes 1e999 infinite). */
static int
json_finite(const cJSON *v)
{
	if (cJSON_IsNumber(v))
		return isfinite(v->valuedouble);
	for (const cJSON *c = v->child; c != NULL; c = c->next)
		if (!json_finite(c))
			return 0;
	return 1;
}

static int
json_decode(const uint8_t *data, size_t len, cJSON **out, char *diag, size_t diag_len)
{
	const char *end = NULL;
	char *text;
	cJSON *root;
	size_t pos;
	int rc;

	rc = json_prescan(data, len, diag, diag_len);
	if (rc != 0)
		return rc;
	/* A terminated copy, so that nothing in cJSON can read past the payload. */
	text = malloc(len + 1);
	if (text == NULL) {
		diagf(diag, diag_len, "JSON: out of memory");
		return -ENOMEM;
	}
	memcpy(text, data, len);
	text[len] = '\0';
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	pos = end != NULL && end >= text && end <= text + len ? (size_t)(end - text) : 0;
	if (root == NULL) {
		diagf(diag, diag_len, "JSON: syntax error at byte %zu", pos);
		rc = -EINVAL;
		goto out;
	}
	while (pos < len && json_space(data[pos]))
		pos++;
	if (pos < len) {
		diagf(diag, diag_len, "JSON: text after the value at byte %zu", pos);
		rc = -EINVAL;
		goto out;
	}
	if (!json_finite(root)) {
		diagf(diag, diag_len, "JSON: number out of range");
		rc = -EINVAL;
		goto out;
	}
	*out = root;
	root = NULL;
out:
	cJSON_Delete(root);
	free(text);
	return rc;
}

/* CBOR decoding */

enum tok_kind {
	T_UINT,
	T_NEGINT, /* The value is -1 - u. */
	T_BYTES,
	T_BYTES_INDEF,
	T_TEXT,
	T_TEXT_INDEF,
	T_ARRAY,
	T_ARRAY_INDEF,
	T_MAP,
	T_MAP_INDEF,
	T_TAG,
	T_FLOAT,
	T_UNDEFINED,
	T_NULL,
	T_BOOL,
	T_BREAK,
};

/* One item header, as cbor_stream_decode() reports it through the callbacks. */
typedef struct tok {
	enum tok_kind kind;
	uint64_t u; /* Integer, tag number, count, or boolean. */
	double d;
	const uint8_t *s; /* Definite string bytes, within the payload. */
	size_t len;
} tok;

static void
tok_uint(void *ctx, enum tok_kind kind, uint64_t u)
{
	tok *t = ctx;

	t->kind = kind;
	t->u = u;
}

static void
cb_uint8(void *ctx, uint8_t v)
{
	tok_uint(ctx, T_UINT, v);
}

static void
cb_uint16(void *ctx, uint16_t v)
{
	tok_uint(ctx, T_UINT, v);
}

static void
cb_uint32(void *ctx, uint32_t v)
{
	tok_uint(ctx, T_UINT, v);
}

static void
cb_uint64(void *ctx, uint64_t v)
{
	tok_uint(ctx, T_UINT, v);
}

static void
cb_negint8(void *ctx, uint8_t v)
{
	tok_uint(ctx, T_NEGINT, v);
}

static void
cb_negint16(void *ctx, uint16_t v)
{
	tok_uint(ctx, T_NEGINT, v);
}

static void
cb_negint32(void *ctx, uint32_t v)
{
	tok_uint(ctx, T_NEGINT, v);
}

static void
cb_negint64(void *ctx, uint64_t v)
{
	tok_uint(ctx, T_NEGINT, v);
}

static void
tok_string(void *ctx, enum tok_kind kind, cbor_data s, size_t len)
{
	tok *t = ctx;

	t->kind = kind;
	t->s = s;
	t->len = len;
}

static void
cb_bytes(void *ctx, cbor_data s, size_t len)
{
	tok_string(ctx, T_BYTES, s, len);
}

static void
cb_text(void *ctx, cbor_data s, size_t len)
{
	tok_string(ctx, T_TEXT, s, len);
}

static void
cb_bytes_indef(void *ctx)
{
	tok_uint(ctx, T_BYTES_INDEF, 0);
}

static void
cb_text_indef(void *ctx)
{
	tok_uint(ctx, T_TEXT_INDEF, 0);
}

static void
cb_array(void *ctx, size_t n)
{
	tok_uint(ctx, T_ARRAY, n);
}

static void
cb_array_indef(void *ctx)
{
	tok_uint(ctx, T_ARRAY_INDEF, 0);
}

static void
cb_map(void *ctx, size_t n)
{
	tok_uint(ctx, T_MAP, n);
}

static void
cb_map_indef(void *ctx)
{
	tok_uint(ctx, T_MAP_INDEF, 0);
}

static void
cb_tag(void *ctx, uint64_t v)
{
	tok_uint(ctx, T_TAG, v);
}

static void
cb_float(void *ctx, float v)
{
	tok *t = ctx;

	t->kind = T_FLOAT;
	t->d = v;
}

static void
cb_double(void *ctx, double v)
{
	tok *t = ctx;

	t->kind = T_FLOAT;
	t->d = v;
}

static void
cb_undefined(void *ctx)
{
	tok_uint(ctx, T_UNDEFINED, 0);
}

static void
cb_null(void *ctx)
{
	tok_uint(ctx, T_NULL, 0);
}

static void
cb_bool(void *ctx, bool v)
{
	tok_uint(ctx, T_BOOL, v);
}

static void
cb_break(void *ctx)
{
	tok_uint(ctx, T_BREAK, 0);
}

static const struct cbor_callbacks callbacks = {
        .uint8 = cb_uint8,
        .uint16 = cb_uint16,
        .uint32 = cb_uint32,
        .uint64 = cb_uint64,
        .negint8 = cb_negint8,
        .negint16 = cb_negint16,
        .negint32 = cb_negint32,
        .negint64 = cb_negint64,
        .byte_string = cb_bytes,
        .byte_string_start = cb_bytes_indef,
        .string = cb_text,
        .string_start = cb_text_indef,
        .array_start = cb_array,
        .indef_array_start = cb_array_indef,
        .map_start = cb_map,
        .indef_map_start = cb_map_indef,
        .tag = cb_tag,
        .float2 = cb_float,
        .float4 = cb_float,
        .float8 = cb_double,
        .undefined = cb_undefined,
        .null = cb_null,
        .boolean = cb_bool,
        .indef_break = cb_break,
};

/* The decoder's cursor over the payload. */
typedef struct reader {
	const uint8_t *data;
	size_t len, off;
	char *diag;
	size_t diag_len;
} reader;

/* Reads the next item header into *t; returns 0 or -EINVAL with a diagnostic. */
static int
next_tok(reader *r, tok *t)
{
	struct cbor_decoder_result res;
	size_t at = r->off;

	memset(t, 0, sizeof(*t));
	res = cbor_stream_decode(r->data + at, r->len - at, &callbacks, t);
	if (res.status == CBOR_DECODER_NEDATA) {
		diagf(r->diag, r->diag_len, "CBOR: truncated at byte %zu", at);
		return -EINVAL;
	}
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > r->len - at) {
		diagf(r->diag, r->diag_len,
		      "CBOR: reserved or unassigned initial byte 0x%02x at byte %zu", r->data[at],
		      at);
		return -EINVAL;
	}
	r->off = at + res.read;
	return 0;
}

/* A growing string buffer for indefinite-length text. */
typedef struct strbuf {
	char *s;
	size_t len, cap;
} strbuf;

static int
strbuf_add(strbuf *b, const uint8_t *s, size_t len)
{
	if (b->cap - b->len <= len) {
		size_t cap = b->cap ? b->cap : 64;
		char *p;

		while (cap - b->len <= len)
			cap *= 2;
		p = realloc(b->s, cap);
		if (p == NULL)
			return -ENOMEM;
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, len);
	b->len += len;
	b->s[b->len] = '\0';
	return 0;
}

/* Checks one definite text string (or chunk) at `at`: UTF-8, and no NUL. */
static int
text_check(reader *r, const tok *t, size_t at)
{
	size_t bad = utf8_check(t->s, t->len);

	if (bad < t->len) {
		diagf(r->diag, r->diag_len, "CBOR: invalid UTF-8 in text at byte %zu", at);
		return -EINVAL;
	}
	if (memchr(t->s, '\0', t->len) != NULL) {
		diagf(r->diag, r->diag_len, "CBOR: NUL in text at byte %zu", at);
		return -EINVAL;
	}
	return 0;
}

/*
 * Reads the text string whose header `t` (T_TEXT or T_TEXT_INDEF, at
 * `at`) was just read, chunks included, into a new NUL-terminated string.
 */
static int
read_text(reader *r, const tok *t, size_t at, char **out)
{
	strbuf b = {NULL, 0, 0};
	tok c;
	int rc;

	*out = NULL;
	if (t->kind == T_TEXT) {
		rc = text_check(r, t, at);
		if (rc != 0)
			return rc;
		if (strbuf_add(&b, t->s, t->len) != 0)
			goto nomem;
		*out = b.s;
		return 0;
	}
	if (strbuf_add(&b, (const uint8_t *)"", 0) != 0)
		goto nomem;
	for (;;) {
		size_t chunk_at = r->off;

		rc = next_tok(r, &c);
		if (rc != 0)
			goto fail;
		if (c.kind == T_BREAK)
			break;
		if (c.kind != T_TEXT) {
			diagf(r->diag, r->diag_len,
			      "CBOR: indefinite text holds a non-text chunk at byte %zu", chunk_at);
			rc = -EINVAL;
			goto fail;
		}
		rc = text_check(r, &c, chunk_at);
		if (rc != 0)
			goto fail;
		if (strbuf_add(&b, c.s, c.len) != 0)
			goto nomem;
	}
	*out = b.s;
	return 0;
nomem:
	diagf(r->diag, r->diag_len, "CBOR: out of memory");
	rc = -ENOMEM;
fail:
	free(b.s);
	return rc;
}

/*
 * Accumulates the big-endian magnitude of a bignum: the first 64
 * significant bits exactly, the rest as a count of bytes and a sticky bit,
 * so that the conversion to double rounds once, correctly.
 */
typedef struct bignum {
	uint64_t top;
	unsigned top_bytes;
	size_t extra_bytes;
	bool sticky;
} bignum;

static void
bignum_add(bignum *n, const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (n->top_bytes == 0 && s[i] == 0)
			continue; /* Leading zeros. */
		if (n->top_bytes < 8) {
			n->top = n->top << 8 | s[i];
			n->top_bytes++;
		} else {
			if (n->extra_bytes < SIZE_MAX)
				n->extra_bytes++;
			if (s[i] != 0)
				n->sticky = true;
		}
	}
}

static double
bignum_value(const bignum *n)
{
	uint64_t m = n->top | (n->sticky ? 1 : 0);

	if (n->extra_bytes > 256)
		return HUGE_VAL;
	return ldexp((double)m, (int)(8 * n->extra_bytes));
}

/* The value -1 - u of a CBOR negative integer, rounded once. */
static double
negint_value(uint64_t u)
{
	if (u == UINT64_MAX)
		return -ldexp(1.0, 64);
	return -(double)(u + 1);
}

/* Reads the content of tag 2 or 3 (a byte string) into a number. */
static int
read_bignum(reader *r, uint64_t tag, cJSON **out)
{
	bignum n = {0, 0, 0, false};
	size_t at = r->off;
	double d;
	tok t;
	int rc;

	rc = next_tok(r, &t);
	if (rc != 0)
		return rc;
	if (t.kind == T_BYTES) {
		bignum_add(&n, t.s, t.len);
	} else if (t.kind == T_BYTES_INDEF) {
		for (;;) {
			size_t chunk_at = r->off;

			rc = next_tok(r, &t);
			if (rc != 0)
				return rc;
			if (t.kind == T_BREAK)
				break;
			if (t.kind != T_BYTES) {
				diagf(r->diag, r->diag_len,
				      "CBOR: indefinite byte string holds a bad chunk at byte %zu",
				      chunk_at);
				return -EINVAL;
			}
			bignum_add(&n, t.s, t.len);
		}
	} else {
		diagf(r->diag, r->diag_len, "CBOR: bignum is not a byte string at byte %zu", at);
		return -EINVAL;
	}
	if (n.extra_bytes == 0) {
		/* Within 64 bits: exact, then rounded once. */
		*out = cJSON_CreateNumber(tag == 3 ? negint_value(n.top) : (double)n.top);
		return *out != NULL ? 0 : -ENOMEM;
	}
	d = bignum_value(&n);
	if (!isfinite(d)) {
		diagf(r->diag, r->diag_len, "CBOR: bignum out of range at byte %zu", at);
		return -EINVAL;
	}
	/* Tag 3 holds n for the value -1 - n; beyond 2^64 the 1 is below the precision. */
	*out = cJSON_CreateNumber(tag == 3 ? -1.0 - d : d);
	return *out != NULL ? 0 : -ENOMEM;
}

static int
number_item(reader *r, const tok *t, size_t at, cJSON **out)
{
	double d;

	if (t->kind == T_UINT) {
		d = (double)t->u;
	} else if (t->kind == T_NEGINT) {
		d = negint_value(t->u);
	} else {
		d = t->d;
		if (!isfinite(d)) {
			diagf(r->diag, r->diag_len, "CBOR: NaN or infinity at byte %zu", at);
			return -EINVAL;
		}
	}
	*out = cJSON_CreateNumber(d);
	return *out != NULL ? 0 : -ENOMEM;
}

static int read_item(reader *r, unsigned depth, bool break_ok, cJSON **out);

/* Reads the members of a map whose header `t` was read at `at`, into a new object. */
static int
read_map(reader *r, const tok *t, unsigned depth, cJSON **out)
{
	cJSON *obj = cJSON_CreateObject(), *val = NULL;
	bool indef = t->kind == T_MAP_INDEF;
	char *key = NULL;
	int rc = 0;

	if (obj == NULL)
		return -ENOMEM;
	for (uint64_t i = 0; indef || i < t->u; i++) {
		size_t key_at = r->off;
		tok k;

		rc = next_tok(r, &k);
		if (rc != 0)
			goto out;
		if (indef && k.kind == T_BREAK)
			break;
		if (k.kind != T_TEXT && k.kind != T_TEXT_INDEF) {
			diagf(r->diag, r->diag_len, "CBOR: map key is not text at byte %zu",
			      key_at);
			rc = -EINVAL;
			goto out;
		}
		rc = read_text(r, &k, key_at, &key);
		if (rc != 0)
			goto out;
		rc = read_item(r, depth, false, &val);
		if (rc != 0)
			goto out;
		if (!cJSON_AddItemToObject(obj, key, val)) {
			rc = -ENOMEM;
			goto out;
		}
		val = NULL;
		free(key);
		key = NULL;
	}
out:
	free(key);
	cJSON_Delete(val);
	if (rc != 0) {
		if (rc == -ENOMEM)
			diagf(r->diag, r->diag_len, "CBOR: out of memory");
		cJSON_Delete(obj);
		return rc;
	}
	*out = obj;
	return 0;
}

/* Reads the elements of an array whose header `t` was read, into a new array. */
static int
read_array(reader *r, const tok *t, unsigned depth, cJSON **out)
{
	cJSON *arr = cJSON_CreateArray(), *val = NULL;
	bool indef = t->kind == T_ARRAY_INDEF;
	int rc = 0;

	if (arr == NULL)
		return -ENOMEM;
	for (uint64_t i = 0; indef || i < t->u; i++) {
		rc = read_item(r, depth, indef, &val);
		if (rc == 1) {
			rc = 0; /* The break that ends an indefinite array. */
			break;
		}
		if (rc != 0)
			break;
		if (!cJSON_AddItemToArray(arr, val)) {
			cJSON_Delete(val);
			rc = -ENOMEM;
			break;
		}
	}
	if (rc != 0) {
		if (rc == -ENOMEM)
			diagf(r->diag, r->diag_len, "CBOR: out of memory");
		cJSON_Delete(arr);
		return rc;
	}
	*out = arr;
	return 0;
}

/* Reads the item a tag applies to: text for 0, a number for 1, a byte string for 2 and 3. */
static int
read_tagged(reader *r, const tok *t, size_t at, cJSON **out)
{
	size_t content_at = r->off;
	char *s;
	tok c;
	int rc;

	if (t->u == 2 || t->u == 3)
		return read_bignum(r, t->u, out);
	if (t->u != 0 && t->u != 1) {
		diagf(r->diag, r->diag_len, "CBOR: tag %llu not supported at byte %zu",
		      (unsigned long long)t->u, at);
		return -EINVAL;
	}
	rc = next_tok(r, &c);
	if (rc != 0)
		return rc;
	if (t->u == 0 && (c.kind == T_TEXT || c.kind == T_TEXT_INDEF)) {
		rc = read_text(r, &c, content_at, &s);
		if (rc != 0)
			return rc;
		*out = cJSON_CreateString(s);
		free(s);
		return *out != NULL ? 0 : -ENOMEM;
	}
	if (t->u == 1 && (c.kind == T_UINT || c.kind == T_NEGINT || c.kind == T_FLOAT))
		return number_item(r, &c, content_at, out);
	diagf(r->diag, r->diag_len, "CBOR: tag %llu on the wrong type at byte %zu",
	      (unsigned long long)t->u, at);
	return -EINVAL;
}

/*
 * Reads one data item at `depth` containers deep into *out. Returns 0, 1
 * for a break when break_ok (inside an indefinite array), or a negative
 * errno with a diagnostic.
 */
static int
read_item(reader *r, unsigned depth, bool break_ok, cJSON **out)
{
	size_t at = r->off;
	char *s;
	tok t;
	int rc;

	*out = NULL;
	rc = next_tok(r, &t);
	if (rc != 0)
		return rc;
	switch (t.kind) {
	case T_UINT:
	case T_NEGINT:
	case T_FLOAT:
		rc = number_item(r, &t, at, out);
		break;
	case T_TEXT:
	case T_TEXT_INDEF:
		rc = read_text(r, &t, at, &s);
		if (rc != 0)
			return rc;
		*out = cJSON_CreateString(s);
		free(s);
		rc = *out != NULL ? 0 : -ENOMEM;
		break;
	case T_ARRAY:
	case T_ARRAY_INDEF:
	case T_MAP:
	case T_MAP_INDEF:
		if (depth >= DG_PAYLOAD_MAX_DEPTH) {
			diagf(r->diag, r->diag_len, "CBOR: nested deeper than %d at byte %zu",
			      DG_PAYLOAD_MAX_DEPTH, at);
			return -EINVAL;
		}
		if (t.kind == T_MAP || t.kind == T_MAP_INDEF)
			rc = read_map(r, &t, depth + 1, out);
		else
			rc = read_array(r, &t, depth + 1, out);
		break;
	case T_TAG:
		rc = read_tagged(r, &t, at, out);
		break;
	case T_BOOL:
		*out = cJSON_CreateBool(t.u != 0);
		rc = *out != NULL ? 0 : -ENOMEM;
		break;
	case T_NULL:
		*out = cJSON_CreateNull();
		rc = *out != NULL ? 0 : -ENOMEM;
		break;
	case T_BREAK:
		if (break_ok)
			return 1;
		diagf(r->diag, r->diag_len, "CBOR: unexpected break at byte %zu", at);
		return -EINVAL;
	case T_BYTES:
	case T_BYTES_INDEF:
		diagf(r->diag, r->diag_len, "CBOR: byte strings not supported at byte %zu", at);
		return -EINVAL;
	case T_UNDEFINED:
	default:
		diagf(r->diag, r->diag_len, "CBOR: undefined not supported at byte %zu", at);
		return -EINVAL;
	}
	if (rc == -ENOMEM)
		diagf(r->diag, r->diag_len, "CBOR: out of memory");
	return rc;
}

static int
cbor_decode(const uint8_t *data, size_t len, cJSON **out, char *diag, size_t diag_len)
{
	reader r = {data, len, 0, diag, diag_len};
	cJSON *root = NULL;
	int rc;

	rc = read_item(&r, 0, false, &root);
	if (rc != 0)
		return rc;
	if (r.off != len) {
		diagf(diag, diag_len, "CBOR: trailing bytes after the value at byte %zu", r.off);
		cJSON_Delete(root);
		return -EINVAL;
	}
	*out = root;
	return 0;
}

int
dg_payload_decode(int format, const uint8_t *data, size_t len, cJSON **out, char *diag,
                  size_t diag_len)
{
	const char *name = format == DG_COAP_FMT_JSON ? "JSON" : "CBOR";

	*out = NULL;
	if (diag != NULL && diag_len > 0)
		diag[0] = '\0';
	if (format != DG_COAP_FMT_JSON && format != DG_COAP_FMT_CBOR) {
		diagf(diag, diag_len, "content-format %d not supported", format);
		return -ENOTSUP;
	}
	if (len == 0 || data == NULL) {
		diagf(diag, diag_len, "%s: empty payload", name);
		return -EINVAL;
	}
	if (format == DG_COAP_FMT_JSON)
		return json_decode(data, len, out, diag, diag_len);
	return cbor_decode(data, len, out, diag, diag_len);
}

/* CBOR encoding */

/* A cursor over the output buffer. */
typedef struct writer {
	uint8_t *buf;
	size_t cap, len;
} writer;

/* Accounts for what a cbor_encode_*() call wrote: 0 bytes means it did not fit. */
static int
wrote(writer *w, size_t n)
{
	if (n == 0)
		return -ENOBUFS;
	w->len += n;
	return 0;
}

static int
put_text(writer *w, const char *s)
{
	size_t n = strlen(s);
	int rc;

	rc = wrote(w, cbor_encode_string_start(n, w->buf + w->len, w->cap - w->len));
	if (rc != 0)
		return rc;
	if (w->cap - w->len < n)
		return -ENOBUFS;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	return 0;
}

static int
put_number(writer *w, double d)
{
	uint8_t *p = w->buf + w->len;
	size_t room = w->cap - w->len;

	if (!isfinite(d))
		return wrote(w, cbor_encode_null(p, room));
	/* Integral and within int64: the shortest integer encoding. */
	if (d == trunc(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
		int64_t i = (int64_t)d;

		if (i >= 0)
			return wrote(w, cbor_encode_uint((uint64_t)i, p, room));
		return wrote(w, cbor_encode_negint((uint64_t)(-(i + 1)), p, room));
	}
	return wrote(w, cbor_encode_double(d, p, room));
}

static int
put_item(writer *w, const cJSON *v)
{
	uint8_t *p = w->buf + w->len;
	size_t room = w->cap - w->len, n = 0;
	const cJSON *c;
	int rc;

	switch (v->type & 0xff) {
	case cJSON_False:
		return wrote(w, cbor_encode_bool(false, p, room));
	case cJSON_True:
		return wrote(w, cbor_encode_bool(true, p, room));
	case cJSON_NULL:
		return wrote(w, cbor_encode_null(p, room));
	case cJSON_Number:
		return put_number(w, v->valuedouble);
	case cJSON_String:
		if (v->valuestring == NULL)
			return -EINVAL;
		return put_text(w, v->valuestring);
	case cJSON_Array:
	case cJSON_Object:
		for (c = v->child; c != NULL; c = c->next)
			n++;
		if (cJSON_IsArray(v))
			rc = wrote(w, cbor_encode_array_start(n, p, room));
		else
			rc = wrote(w, cbor_encode_map_start(n, p, room));
		for (c = v->child; rc == 0 && c != NULL; c = c->next) {
			if (cJSON_IsObject(v)) {
				if (c->string == NULL)
					return -EINVAL;
				rc = put_text(w, c->string);
				if (rc != 0)
					break;
			}
			rc = put_item(w, c);
		}
		return rc;
	default:
		return -EINVAL; /* cJSON_Raw and invalid items have no CBOR form. */
	}
}

/* JSON encoding */

static int
put_bytes(writer *w, const void *s, size_t n)
{
	if (w->cap - w->len < n)
		return -ENOBUFS;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	return 0;
}

/* Writes a JSON string, escaped as cJSON escapes it. */
static int
json_string(writer *w, const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	char esc[8];
	int rc = put_bytes(w, "\"", 1);

	while (rc == 0 && *p != '\0') {
		size_t run = 0;

		/* Copy what needs no escape in one go. */
		while (p[run] >= 0x20 && p[run] != '"' && p[run] != '\\')
			run++;
		if (run > 0) {
			rc = put_bytes(w, p, run);
			p += run;
			continue;
		}
		switch (*p) {
		case '"':
			rc = put_bytes(w, "\\\"", 2);
			break;
		case '\\':
			rc = put_bytes(w, "\\\\", 2);
			break;
		case '\b':
			rc = put_bytes(w, "\\b", 2);
			break;
		case '\f':
			rc = put_bytes(w, "\\f", 2);
			break;
		case '\n':
			rc = put_bytes(w, "\\n", 2);
			break;
		case '\r':
			rc = put_bytes(w, "\\r", 2);
			break;
		case '\t':
			rc = put_bytes(w, "\\t", 2);
			break;
		default:
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			rc = put_bytes(w, esc, 6);
			break;
		}
		p++;
	}
	if (rc == 0)
		rc = put_bytes(w, "\"", 1);
	return rc;
}

/*
 * Writes a number so that it reads back as the same double: integers in
 * full, others with the fewest of 15, 16 or 17 significant digits that
 * round-trip. (cJSON 1.7.15 accepts 15 digits when they come within an
 * epsilon, so it prints 2^53 as 9.00719925474099e+15 and the largest
 * double as a number that overflows when read back.) NaN and the
 * infinities, which JSON lacks, are written as null, as cJSON does.
 */
static int
json_number(writer *w, double d)
{
	char num[32];
	int n = 0;

	if (!isfinite(d))
		return put_bytes(w, "null", 4);
	if (d == trunc(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
		n = snprintf(num, sizeof(num), "%lld", (long long)d);
	} else {
		for (int prec = 15; prec <= 17; prec++) {
			n = snprintf(num, sizeof(num), "%.*g", prec, d);
			if (strtod(num, NULL) == d)
				break;
		}
	}
	if (n <= 0 || (size_t)n >= sizeof(num))
		return -EINVAL;
	return put_bytes(w, num, (size_t)n);
}

static int
json_item(writer *w, const cJSON *v)
{
	const cJSON *c;
	int rc;

	switch (v->type & 0xff) {
	case cJSON_False:
		return put_bytes(w, "false", 5);
	case cJSON_True:
		return put_bytes(w, "true", 4);
	case cJSON_NULL:
		return put_bytes(w, "null", 4);
	case cJSON_Number:
		return json_number(w, v->valuedouble);
	case cJSON_String:
		if (v->valuestring == NULL)
			return -EINVAL;
		return json_string(w, v->valuestring);
	case cJSON_Array:
	case cJSON_Object:
		rc = put_bytes(w, cJSON_IsArray(v) ? "[" : "{", 1);
		for (c = v->child; rc == 0 && c != NULL; c = c->next) {
			if (c != v->child)
				rc = put_bytes(w, ",", 1);
			if (rc == 0 && cJSON_IsObject(v)) {
				if (c->string == NULL)
					return -EINVAL;
				rc = json_string(w, c->string);
				if (rc == 0)
					rc = put_bytes(w, ":", 1);
			}
			if (rc == 0)
				rc = json_item(w, c);
		}
		if (rc == 0)
			rc = put_bytes(w, cJSON_IsArray(v) ? "]" : "}", 1);
		return rc;
	default:
		return -EINVAL; /* cJSON_Raw and invalid items are not written. */
	}
}

int
dg_payload_encode(int format, const cJSON *value, uint8_t *out, size_t cap, size_t *out_len)
{
	writer w = {out, cap, 0};
	int rc;

	*out_len = 0;
	if (format != DG_COAP_FMT_JSON && format != DG_COAP_FMT_CBOR)
		return -ENOTSUP;
	if (value == NULL || (out == NULL && cap > 0))
		return -EINVAL;
	if (format == DG_COAP_FMT_JSON)
		rc = json_item(&w, value);
	else
		rc = put_item(&w, value);
	if (rc == 0)
		*out_len = w.len;
	return rc;
}

size_t
dg_payload_utf8_check(const uint8_t *s, size_t len)
{
	return utf8_check(s, len);
}

int
dg_payload_encode_alloc(int format, const cJSON *value, size_t max, uint8_t **out, size_t *out_len)
{
	size_t cap = max < 512 ? max : 512;
	int rc = -ENOBUFS;

	*out = NULL;
	*out_len = 0;
	for (;;) {
		uint8_t *buf = malloc(cap > 0 ? cap : 1);
		if (buf == NULL)
			return -ENOMEM;
		rc = dg_payload_encode(format, value, buf, cap, out_len);
		if (rc == 0) {
			*out = buf;
			return 0;
		}
		free(buf);
		if (rc != -ENOBUFS || cap >= max)
			return rc;
		cap = cap > max / 4 ? max : cap * 4;
	}
}
