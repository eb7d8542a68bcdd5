/*
 * Block-wise transfers (RFC 7959), Block1: assembling a request body that
 * arrives in blocks, one assembler per transfer; Block2: choosing the
 * block of a representation that one answer carries.
 */
#ifndef DEVGATE_BLOCK_H
#define DEVGATE_BLOCK_H

#include <stddef.h>
#include <stdint.h>

/* The fields of a Block1/Block2 option value. */
typedef struct dg_block_opt {
	uint32_t num; /* Block number. */
	int more;     /* The M bit. */
	int szx;      /* 0..6; size = 1 << (szx + 4). */
} dg_block_opt;

/* Decodes a raw option value; returns -EINVAL for szx 7 or a number over 2^20-1. */
int dg_block_decode(uint32_t raw, dg_block_opt *out);

/* Encodes the fields into a raw option value. */
uint32_t dg_block_encode(const dg_block_opt *b);

typedef struct dg_block1 dg_block1;

/* What dg_block1_add() tells the caller to answer. */
typedef enum dg_block1_status {
	DG_BLOCK1_CONTINUE = 0, /* Answer 2.31 Continue echoing the (possibly smaller) block. */
	DG_BLOCK1_DONE,         /* The body is complete: dg_block1_body(). */
	DG_BLOCK1_INCOMPLETE,   /* Gap, out of order or size change not allowed: 4.08. */
	DG_BLOCK1_TOO_LARGE,    /* Over max_body: 4.13 with Size1 = max_body. */
	DG_BLOCK1_BAD,          /* Malformed (a non-final block of the wrong size): 4.00. */
} dg_block1_status;

/*
 * Starts an assembler for bodies of at most `max_body` bytes; the server
 * prefers blocks of at most `pref_szx` (a client offering larger ones is
 * answered with this size, and its later block numbers follow the smaller
 * size, as RFC 7959 section 2.5 lets it). Returns 0 or -ENOMEM.
 */
int dg_block1_new(size_t max_body, int pref_szx, dg_block1 **out);
void dg_block1_free(dg_block1 *b);

/*
 * Adds one block's payload. `opt` is the request's Block1; *answer is set
 * to the Block1 to echo in the reply (for CONTINUE and DONE). The first
 * block must be number 0; each next one must follow the last byte received.
 * Size1, when the client sent it (size1 >= 0), over max_body is TOO_LARGE at
 * once.
 */
dg_block1_status dg_block1_add(dg_block1 *b, const dg_block_opt *opt, const uint8_t *data,
                               size_t len, int64_t size1, dg_block_opt *answer);

/*
 * The largest body this transfer takes: the limit it was started with,
 * whatever a reload changed since (the Size1 to answer with TOO_LARGE).
 */
size_t dg_block1_max_body(const dg_block1 *b);

/* The assembled body (borrowed) and its length, after DONE. */
const uint8_t *dg_block1_body(const dg_block1 *b, size_t *len);

/*
 * Chooses the Block2 block of a representation of `len` bytes that one
 * answer carries when at most `cap` body bytes fit in it. `req_block2` is
 * the request's raw Block2 option, or -1 when it has none. The block size
 * is the client's (when it asked) or the largest that fits, never over
 * 1024 bytes or `cap`; a client asking for blocks larger than fit gets
 * smaller ones, numbered at the offset it asked for (RFC 7959 section
 * 2.4). Sets *answer (the Block2 to send), *offset and *chunk (the bytes
 * of the representation to send). Returns 1 when the answer is block-wise,
 * 0 when the whole representation fits and no Block2 was asked for
 * (*offset 0, *chunk len), -EINVAL for a malformed option, -ERANGE for a
 * block past the end, -ENOBUFS when `cap` is under 16 bytes.
 */
int dg_block2_slice(size_t len, size_t cap, int64_t req_block2, dg_block_opt *answer,
                    size_t *offset, size_t *chunk);

/* An 8-byte entity tag for a representation (FNV-1a over its bytes). */
void dg_block2_etag(const uint8_t *data, size_t len, uint8_t etag[8]);

#endif
