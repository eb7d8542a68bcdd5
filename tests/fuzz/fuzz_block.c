/*
 * Fuzz target for Block1 assembly and stream timestamps. The input is a
 * sequence of items, each a 4-byte big-endian word, a 1-byte length and
 * that many payload bytes (fewer when the input ends first), fed in order
 * to one assembler (max_body 4096, preferred blocks of 64 bytes). The low
 * 24 bits of the word are the raw Block1 value; a nonzero top byte sends
 * Size1 = top byte * 32. Whatever comes, the answers must be valid options
 * that follow the request, and a finished body must be whole and within
 * max_body. The whole input, as a C string, also goes through the ISO 8601
 * parser and, as a "t" member, through dg_stream_timestamp().
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devgate/block.h"
#include "devgate/stream.h"

#define MAX_BODY 4096
#define PREF_SZX 2
#define MS_MAX   253402300799999LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_answer(const dg_block_opt *req, const dg_block_opt *ans, dg_block1_status st)
{
	dg_block_opt back;

	if (dg_block_decode(dg_block_encode(ans), &back) != 0 || back.num != ans->num ||
	    back.szx != ans->szx || back.more != ans->more)
		abort();
	if (st == DG_BLOCK1_DONE && (ans->more || ans->num != req->num || ans->szx != req->szx))
		abort();
	if (st == DG_BLOCK1_CONTINUE && (!ans->more || ans->szx > req->szx || ans->szx > PREF_SZX))
		abort();
}

static void
run_blocks(const uint8_t *data, size_t size)
{
	dg_block1 *b = NULL;
	size_t pos = 0;
	volatile size_t total = 0;

	if (dg_block1_new(MAX_BODY, PREF_SZX, &b) != 0)
		return;
	while (size - pos >= 5) {
		uint32_t word = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 |
		                (uint32_t)data[pos + 2] << 8 | data[pos + 3];
		size_t len = data[pos + 4];
		int64_t size1 = (word >> 24) ? (int64_t)(word >> 24) * 32 : -1;
		dg_block_opt opt, ans;
		dg_block1_status st;
		const uint8_t *body;
		size_t body_len;

		pos += 5;
		if (len > size - pos)
			len = size - pos;
		if (dg_block_decode(word & 0xffffffu, &opt) == 0) {
			/* Copied so that a read past the payload is caught. */
			uint8_t *payload = malloc(len ? len : 1);

			if (payload == NULL)
				break;
			memcpy(payload, data + pos, len);
			memset(&ans, 0xa5, sizeof(ans));
			st = dg_block1_add(b, &opt, payload, len, size1, &ans);
			free(payload);
			if (st == DG_BLOCK1_CONTINUE || st == DG_BLOCK1_DONE)
				check_answer(&opt, &ans, st);
			body = dg_block1_body(b, &body_len);
			if (st == DG_BLOCK1_DONE) {
				if (body == NULL || body_len > MAX_BODY)
					abort();
				total = 0;
				for (size_t i = 0; i < body_len; i++)
					total += body[i];
			} else if (body != NULL || body_len != 0) {
				abort();
			}
		}
		pos += len;
	}
	(void)total; /* Read, so that clang sees it used. */
	dg_block1_free(b);
}

static void
run_timestamps(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	cJSON *o;
	int64_t t, u;

	if (s == NULL)
		return;
	memcpy(s, data, size);
	s[size] = '\0';
	t = dg_stream_parse_iso8601(s);
	if (t < -1 || t > MS_MAX)
		abort();
	o = cJSON_CreateObject();
	if (o != NULL && cJSON_AddStringToObject(o, "t", s) != NULL) {
		u = dg_stream_timestamp(o);
		if (u != t)
			abort();
	}
	cJSON_Delete(o);
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run_blocks(data, size);
	run_timestamps(data, size);
	return 0;
}
