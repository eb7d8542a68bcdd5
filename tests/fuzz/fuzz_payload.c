/*
 * Fuzz target for the payload decoders: the bytes are decoded as JSON and
 * as CBOR. A failure must leave no tree and a one-line diagnostic naming
 * the format. A success must encode in both formats, each encoding must
 * decode again, and that second tree must encode to the same bytes. The
 * tree also goes through the state tree's set, get and delete.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/payload.h"
#include "devgate/state.h"

#define JSON 50
#define CBOR 60

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encodes v in `format` into a new buffer, growing it until it fits. */
static uint8_t *
encode(int format, const cJSON *v, size_t *len)
{
	size_t cap = 256;

	for (;;) {
		uint8_t *buf = malloc(cap);
		int rc;

		if (buf == NULL)
			abort();
		rc = dg_payload_encode(format, v, buf, cap, len);
		if (rc == 0)
			return buf;
		free(buf);
		if (rc != -ENOBUFS || cap > (64u << 20))
			abort();
		cap *= 4;
	}
}

/* Encodes a decoded tree in `format`, decodes that, and checks the re-encoding is the same. */
static void
round_trip(int format, const cJSON *v)
{
	char diag[128];
	size_t len, len2;
	uint8_t *enc = encode(format, v, &len), *enc2;
	cJSON *w = NULL;

	if (dg_payload_decode(format, enc, len, &w, diag, sizeof(diag)) != 0 || w == NULL)
		abort();
	enc2 = encode(format, w, &len2);
	if (len2 != len || memcmp(enc, enc2, len) != 0)
		abort();
	free(enc);
	free(enc2);
	cJSON_Delete(w);
}

/* Stores v in a state document under a fixed path and checks it reads back as set. */
static void
through_state(const cJSON *v)
{
	static const dg_path_seg path[2] = {{"a", 1}, {"b", 1}};
	cJSON *doc = NULL, *copy = cJSON_Duplicate(v, 1);
	const cJSON *got;
	int had;

	if (copy == NULL)
		abort();
	if (dg_state_set(&doc, path, 2, copy) != 0)
		abort();
	got = dg_state_get(doc, path, 2);
	if (got == NULL)
		abort();
	/* It reads back as set, but for an object, which loses repeated keys. */
	if (!cJSON_IsObject(v)) {
		size_t len, len2;
		uint8_t *a = encode(CBOR, v, &len), *b = encode(CBOR, got, &len2);

		if (len != len2 || memcmp(a, b, len) != 0)
			abort();
		free(a);
		free(b);
	} else {
		/* Merging an object twice is the same as once. */
		size_t len, len2;
		uint8_t *a = encode(CBOR, got, &len), *b;

		copy = cJSON_Duplicate(v, 1);
		if (copy == NULL || dg_state_set(&doc, path, 2, copy) != 0)
			abort();
		b = encode(CBOR, dg_state_get(doc, path, 2), &len2);
		if (len != len2 || memcmp(a, b, len) != 0)
			abort();
		free(a);
		free(b);
	}
	copy = cJSON_Duplicate(v, 1);
	if (copy == NULL || dg_state_set(&doc, NULL, 0, copy) != 0)
		abort();
	if (dg_state_delete(&doc, path, 1) < 0)
		abort();
	had = doc != NULL;
	if (dg_state_delete(&doc, NULL, 0) != had || doc != NULL)
		abort();
	cJSON_Delete(doc);
}

static void
one(int format, const uint8_t *data, size_t size)
{
	char diag[128];
	cJSON *v = NULL;
	int rc = dg_payload_decode(format, data, size, &v, diag, sizeof(diag));

	if (rc != 0) {
		if (rc != -EINVAL || v != NULL ||
		    strncmp(diag, format == JSON ? "JSON: " : "CBOR: ", 6) != 0 ||
		    strchr(diag, '\n') != NULL)
			abort();
		return;
	}
	if (v == NULL)
		abort();
	round_trip(JSON, v);
	round_trip(CBOR, v);
	through_state(v);
	cJSON_Delete(v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(JSON, data, size);
	one(CBOR, data, size);
	return 0;
}
