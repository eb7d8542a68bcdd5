/*
 * Block-wise transfers (RFC 7959): Block1 option values and the assembler
 * of one request body; see block.h.
 *
 * Size renegotiation (RFC 7959 section 2.5): when block 0 arrives larger
 * than the server's preferred size, the server keeps all of it and answers
 * with its preferred szx. The client then counts what it has already sent
 * in the smaller size, so its next block number is larger than one: after
 * 1024 bytes of block 0 and an answer of szx 2 (64 bytes), it continues with
 * num 16 szx 2 (libcoap: num = bytes_sent / new_size - 1, then num + 1).
 * A client that instead restarts its numbering from the answer (num 1 at the
 * new size, offset 64) is also accepted: the server then keeps only the first
 * new_size bytes of that block. Both are checked by offset, so nothing is
 * ever assembled out of order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/block.h"

#define NUM_MAX 0xfffffu /* 2^20 - 1: the largest number three bytes carry. */
#define SZX_MAX 6        /* 7 is reserved (BERT over TCP, RFC 8323). */
#define CAP_MIN 256

struct dg_block1 {
	uint8_t *buf;
	size_t len; /* Bytes received so far in this transfer. */
	size_t cap;
	size_t max_body;
	int pref_szx;
	int active; /* Block 0 seen and the final block not yet. */
	int done;   /* The body is complete; buf[0..len) is it. */
	/*
	 * After an answer with a smaller block size than the request's: the
	 * offset at which a client that renumbered from the answer continues
	 * (0: none). Valid for the next block only.
	 */
	size_t renumbered_at;
};

int
dg_block_decode(uint32_t raw, dg_block_opt *out)
{
	if (raw > 0xffffffu || (raw & 7u) == 7u)
		return -EINVAL;
	out->num = raw >> 4;
	out->more = (raw >> 3) & 1u;
	out->szx = (int)(raw & 7u);
	return 0;
}

uint32_t
dg_block_encode(const dg_block_opt *b)
{
	return ((b->num & NUM_MAX) << 4) | (b->more ? 8u : 0u) | ((uint32_t)b->szx & 7u);
}

int
dg_block1_new(size_t max_body, int pref_szx, dg_block1 **out)
{
	dg_block1 *b = calloc(1, sizeof(*b));

	*out = NULL;
	if (b == NULL)
		return -ENOMEM;
	if (pref_szx < 0)
		pref_szx = 0;
	if (pref_szx > SZX_MAX)
		pref_szx = SZX_MAX;
	b->max_body = max_body;
	b->pref_szx = pref_szx;
	*out = b;
	return 0;
}

void
dg_block1_free(dg_block1 *b)
{
	if (b == NULL)
		return;
	free(b->buf);
	free(b);
}

/* Forgets the transfer (the buffer is kept for the next one). */
static void
reset(dg_block1 *b)
{
	b->len = 0;
	b->active = 0;
	b->done = 0;
	b->renumbered_at = 0;
}

/* Makes room for `need` bytes in all (need <= max_body); returns 0 or -ENOMEM. */
static int
reserve(dg_block1 *b, size_t need)
{
	size_t cap = b->cap ? b->cap : CAP_MIN;
	uint8_t *p;

	if (need <= b->cap)
		return 0;
	while (cap < need)
		cap = cap > b->max_body / 2 ? need : cap * 2;
	if (cap > b->max_body)
		cap = b->max_body;
	p = realloc(b->buf, cap);
	if (p == NULL)
		return -ENOMEM;
	b->buf = p;
	b->cap = cap;
	return 0;
}

/* Ends the transfer with an error status. */
static dg_block1_status
fail(dg_block1 *b, dg_block1_status st)
{
	reset(b);
	return st;
}

dg_block1_status
dg_block1_add(dg_block1 *b, const dg_block_opt *opt, const uint8_t *data, size_t len, int64_t size1,
              dg_block_opt *answer)
{
	size_t size, offset, renumbered_at;

	if (opt->szx < 0 || opt->szx > SZX_MAX || opt->num > NUM_MAX || (data == NULL && len > 0))
		return fail(b, DG_BLOCK1_BAD);
	size = (size_t)1 << (opt->szx + 4);
	offset = (size_t)opt->num << (opt->szx + 4);
	if (size1 >= 0 && (uint64_t)size1 > b->max_body)
		return fail(b, DG_BLOCK1_TOO_LARGE);

	renumbered_at = b->renumbered_at;
	b->renumbered_at = 0;
	if (opt->num == 0) {
		/* Block 0 starts the transfer, or starts it again. */
		reset(b);
		b->active = 1;
	} else if (!b->active || (offset != b->len && offset != renumbered_at)) {
		return fail(b, DG_BLOCK1_INCOMPLETE);
	} else if (offset != b->len) {
		/* The client renumbered from our answer: keep what it counts as sent. */
		b->len = offset;
	}

	if (opt->more ? len != size : len > size)
		return fail(b, DG_BLOCK1_BAD);
	if (len > b->max_body - b->len)
		return fail(b, DG_BLOCK1_TOO_LARGE);
	if (len > 0) {
		/* No status says "out of memory"; the body cannot be taken. */
		if (reserve(b, b->len + len) != 0)
			return fail(b, DG_BLOCK1_TOO_LARGE);
		memcpy(b->buf + b->len, data, len);
		b->len += len;
	}

	if (!opt->more) {
		b->active = 0;
		b->done = 1;
		answer->num = opt->num;
		answer->more = 0;
		answer->szx = opt->szx;
		return DG_BLOCK1_DONE;
	}
	answer->more = 1;
	if (opt->szx > b->pref_szx) {
		/* Ask for smaller blocks; the answer numbers this block's start in that size. */
		answer->szx = b->pref_szx;
		answer->num = (uint32_t)(offset >> (b->pref_szx + 4));
		b->renumbered_at = offset + ((size_t)1 << (b->pref_szx + 4));
	} else {
		answer->szx = opt->szx;
		answer->num = opt->num;
	}
	return DG_BLOCK1_CONTINUE;
}

size_t
dg_block1_max_body(const dg_block1 *b)
{
	return b->max_body;
}

const uint8_t *
dg_block1_body(const dg_block1 *b, size_t *len)
{
	static const uint8_t empty[1];

	if (!b->done) {
		*len = 0;
		return NULL;
	}
	*len = b->len;
	return b->buf != NULL ? b->buf : empty;
}

int
dg_block2_slice(size_t len, size_t cap, int64_t req_block2, dg_block_opt *answer, size_t *offset,
                size_t *chunk)
{
	dg_block_opt want = {.num = 0, .more = 0, .szx = SZX_MAX};
	int szx = SZX_MAX;
	size_t at, size;

	if (cap < 16)
		return -ENOBUFS;
	while (szx > 0 && ((size_t)16 << szx) > cap)
		szx--;
	if (req_block2 < 0 && len <= cap) {
		*offset = 0;
		*chunk = len;
		return 0;
	}
	if (req_block2 >= 0 && dg_block_decode((uint32_t)req_block2, &want) != 0)
		return -EINVAL;
	at = (size_t)want.num << (want.szx + 4);
	if (want.szx < szx)
		szx = want.szx;
	size = (size_t)16 << szx;
	/* Block 0 of an empty representation is the empty block. */
	if (at > 0 && at >= len)
		return -ERANGE;
	/* A smaller block than asked for starts where the client asked (a multiple of it). */
	answer->num = (uint32_t)(at >> (szx + 4));
	answer->szx = szx;
	*offset = at;
	*chunk = len - at < size ? len - at : size;
	answer->more = at + *chunk < len;
	return 1;
}

void
dg_block2_etag(const uint8_t *data, size_t len, uint8_t etag[8])
{
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */

	for (size_t i = 0; i < len; i++)
		h = (h ^ data[i]) * 0x100000001b3u;
	for (int i = 0; i < 8; i++)
		etag[i] = (uint8_t)(h >> (56 - 8 * i));
}
