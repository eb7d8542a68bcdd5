/*
 * Unit tests of Block1: option encode/decode and limits, assembling bodies
 * in order, gaps and out-of-order blocks, restarts, size limits, malformed
 * blocks, and the block-size renegotiation of RFC 7959 section 2.5.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/block.h"

#define BODY_MAX 8192

static dg_block1 *b;
static uint8_t body[BODY_MAX];

static void
setup(void)
{
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 31 + (i >> 8));
	b = NULL;
}

static void
teardown(void)
{
	dg_block1_free(b);
	b = NULL;
}

/* Sends one block of `body` starting at byte `from`. */
static dg_block1_status
add(uint32_t num, int more, int szx, size_t from, size_t len, int64_t size1, dg_block_opt *ans)
{
	dg_block_opt opt = {.num = num, .more = more, .szx = szx};

	return dg_block1_add(b, &opt, body + from, len, size1, ans);
}

#define ASSERT_ANSWER(a, n, m, s)                                                                  \
	do {                                                                                       \
		ck_assert_uint_eq((a).num, (n));                                                   \
		ck_assert_int_eq((a).more, (m));                                                   \
		ck_assert_int_eq((a).szx, (s));                                                    \
	} while (0)

static void
assert_body(size_t from, size_t len)
{
	const uint8_t *p;
	size_t n = 12345;

	p = dg_block1_body(b, &n);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(n, len);
	ck_assert(memcmp(p, body + from, len) == 0);
}

START_TEST(test_opt_round_trip)
{
	static const uint32_t nums[] = {0, 1, 2, 15, 16, 255, 4095, 65535, 0xfffff};
	dg_block_opt in, out;
	uint32_t raw;

	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		for (int more = 0; more <= 1; more++)
			for (int szx = 0; szx <= 6; szx++) {
				in.num = nums[i];
				in.more = more;
				in.szx = szx;
				raw = dg_block_encode(&in);
				ck_assert_uint_le(raw, 0xffffff);
				ck_assert_int_eq(dg_block_decode(raw, &out), 0);
				ck_assert_uint_eq(out.num, in.num);
				ck_assert_int_eq(out.more, in.more);
				ck_assert_int_eq(out.szx, in.szx);
			}
}
END_TEST

START_TEST(test_opt_known_values)
{
	dg_block_opt o = {.num = 0, .more = 1, .szx = 6};

	ck_assert_uint_eq(dg_block_encode(&o), 0x0e);
	o = (dg_block_opt){.num = 1, .more = 0, .szx = 2};
	ck_assert_uint_eq(dg_block_encode(&o), 0x12);
	o = (dg_block_opt){.num = 16, .more = 1, .szx = 2};
	ck_assert_uint_eq(dg_block_encode(&o), 0x10a);

	ck_assert_int_eq(dg_block_decode(0x6a, &o), 0);
	ASSERT_ANSWER(o, 6, 1, 2);
	ck_assert_int_eq(dg_block_decode(0, &o), 0);
	ASSERT_ANSWER(o, 0, 0, 0);
}
END_TEST

START_TEST(test_opt_limits)
{
	dg_block_opt o;

	/* szx 7 is reserved. */
	ck_assert_int_eq(dg_block_decode(0x07, &o), -EINVAL);
	ck_assert_int_eq(dg_block_decode(0x0f, &o), -EINVAL);
	ck_assert_int_eq(dg_block_decode(0xfffff7, &o), -EINVAL);
	/* Block numbers end at 2^20 - 1. */
	ck_assert_int_eq(dg_block_decode(0xfffffe, &o), 0);
	ASSERT_ANSWER(o, 0xfffff, 1, 6);
	ck_assert_int_eq(dg_block_decode((uint32_t)1 << 24, &o), -EINVAL);
	ck_assert_int_eq(dg_block_decode(((uint32_t)1 << 24) | 0x06, &o), -EINVAL);
	ck_assert_int_eq(dg_block_decode(UINT32_MAX, &o), -EINVAL);

	/* The assembler refuses what decode would. */
	ck_assert_int_eq(dg_block1_new(4096, 6, &b), 0);
	ck_assert_int_eq(add(0, 1, 7, 0, 16, -1, &o), DG_BLOCK1_BAD);
	ck_assert_int_eq(add(0x100000, 0, 0, 0, 16, -1, &o), DG_BLOCK1_BAD);
}
END_TEST

/* Sends body[0..total) in blocks of szx, checking each answer. */
static void
send_all(size_t total, int szx)
{
	size_t size = (size_t)1 << (szx + 4), off = 0;
	uint32_t num = 0;
	dg_block_opt ans;

	for (;;) {
		size_t len = total - off < size ? total - off : size;
		int more = off + len < total;
		dg_block1_status st = add(num, more, szx, off, len, -1, &ans);

		if (more) {
			ck_assert_int_eq(st, DG_BLOCK1_CONTINUE);
			ASSERT_ANSWER(ans, num, 1, szx);
			ck_assert_uint_eq(dg_block1_body(b, &len) == NULL, 1);
			ck_assert_uint_eq(len, 0);
		} else {
			ck_assert_int_eq(st, DG_BLOCK1_DONE);
			ASSERT_ANSWER(ans, num, 0, szx);
			return;
		}
		off += size;
		num++;
	}
}

START_TEST(test_assemble_4k_in_64)
{
	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	send_all(4096, 2);
	assert_body(0, 4096);
}
END_TEST

START_TEST(test_assemble_short_last_block)
{
	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	send_all(4000, 2);
	assert_body(0, 4000);
	/* The same assembler takes the next transfer. */
	send_all(3000, 6);
	assert_body(0, 3000);
	send_all(1, 0);
	assert_body(0, 1);
}
END_TEST

START_TEST(test_single_and_empty)
{
	dg_block_opt ans;
	const uint8_t *p;
	size_t n = 99;

	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	ck_assert_ptr_null(dg_block1_body(b, &n));
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(add(0, 0, 2, 0, 0, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 0, 0, 2);
	p = dg_block1_body(b, &n);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(n, 0);
	/* A final block 0 larger than the preferred size is answered in its own size. */
	dg_block1_free(b);
	ck_assert_int_eq(dg_block1_new(65536, 2, &b), 0);
	ck_assert_int_eq(add(0, 0, 6, 0, 1000, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 0, 0, 6);
	assert_body(0, 1000);
}
END_TEST

START_TEST(test_out_of_order)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	/* A transfer must start with block 0. */
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	/* Block 3 before block 2: a gap. */
	ck_assert_int_eq(add(3, 1, 2, 192, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
	/* The transfer is gone: the missing block does not revive it. */
	ck_assert_int_eq(add(2, 1, 2, 128, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
	/* Block 0 starts again. */
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 0, 2, 64, 10, -1, &ans), DG_BLOCK1_DONE);
	assert_body(0, 74);
}
END_TEST

START_TEST(test_duplicate_and_backwards)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(2, 1, 2, 128, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(2, 1, 2, 128, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);

	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 0, 1, 32, 32, -1, &ans), DG_BLOCK1_INCOMPLETE);

	/* After DONE, only a new block 0 starts anything. */
	ck_assert_int_eq(add(0, 0, 2, 0, 64, -1, &ans), DG_BLOCK1_DONE);
	ck_assert_int_eq(add(1, 0, 2, 64, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
}
END_TEST

START_TEST(test_restart_with_block0)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	ck_assert_int_eq(add(0, 1, 2, 1000, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 1064, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(2, 1, 2, 1128, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	/* A new block 0 (another size, too) throws the first 192 bytes away. */
	ck_assert_int_eq(add(0, 1, 3, 0, 128, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 3);
	ck_assert_int_eq(add(1, 1, 3, 128, 128, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(2, 0, 3, 256, 5, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 2, 0, 3);
	assert_body(0, 261);
	/* And after DONE too. */
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_ptr_null(dg_block1_body(b, &(size_t){0}));
	ck_assert_int_eq(add(1, 0, 2, 64, 1, -1, &ans), DG_BLOCK1_DONE);
	assert_body(0, 65);
}
END_TEST

START_TEST(test_too_large_by_data)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(256, 6, &b), 0);
	for (uint32_t i = 0; i < 4; i++)
		ck_assert_int_eq(add(i, 1, 2, i * 64, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(4, 0, 2, 256, 1, -1, &ans), DG_BLOCK1_TOO_LARGE);
	/* Dropped: the next block has nothing to follow. */
	ck_assert_int_eq(add(5, 0, 2, 320, 1, -1, &ans), DG_BLOCK1_INCOMPLETE);

	/* Exactly max_body is fine, with an empty final block too. */
	for (uint32_t i = 0; i < 4; i++)
		ck_assert_int_eq(add(i, 1, 2, i * 64, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(4, 0, 2, 256, 0, -1, &ans), DG_BLOCK1_DONE);
	assert_body(0, 256);
	ck_assert_int_eq(add(0, 0, 6, 0, 256, -1, &ans), DG_BLOCK1_DONE);
	assert_body(0, 256);
	ck_assert_int_eq(add(0, 0, 6, 0, 257, -1, &ans), DG_BLOCK1_TOO_LARGE);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_TOO_LARGE);
}
END_TEST

START_TEST(test_too_large_by_size1)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(4096, 6, &b), 0);
	ck_assert_int_eq(add(0, 1, 2, 0, 64, 4097, &ans), DG_BLOCK1_TOO_LARGE);
	ck_assert_int_eq(add(0, 1, 2, 0, 64, INT64_MAX, &ans), DG_BLOCK1_TOO_LARGE);
	ck_assert_int_eq(add(0, 1, 2, 0, 64, 4096, &ans), DG_BLOCK1_CONTINUE);
	/* Size1 on a later block counts too, and ends the transfer. */
	ck_assert_int_eq(add(1, 1, 2, 64, 64, 5000, &ans), DG_BLOCK1_TOO_LARGE);
	ck_assert_int_eq(add(2, 1, 2, 128, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
	ck_assert_int_eq(add(0, 0, 2, 0, 10, 0, &ans), DG_BLOCK1_DONE);
	assert_body(0, 10);
}
END_TEST

START_TEST(test_bad_block_sizes)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	/* A non-final block must be full. */
	ck_assert_int_eq(add(0, 1, 2, 0, 63, -1, &ans), DG_BLOCK1_BAD);
	ck_assert_int_eq(add(0, 1, 2, 0, 0, -1, &ans), DG_BLOCK1_BAD);
	ck_assert_int_eq(add(0, 1, 2, 0, 65, -1, &ans), DG_BLOCK1_BAD);
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 64, 32, -1, &ans), DG_BLOCK1_BAD);
	/* The transfer is gone after BAD. */
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
	/* A final block may be short, never longer than its size. */
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 0, 2, 64, 65, -1, &ans), DG_BLOCK1_BAD);
	ck_assert_int_eq(add(0, 0, 0, 0, 17, -1, &ans), DG_BLOCK1_BAD);
	ck_assert_int_eq(add(0, 0, 0, 0, 16, -1, &ans), DG_BLOCK1_DONE);
	assert_body(0, 16);
}
END_TEST

/*
 * RFC 7959 section 2.5, as libcoap (the SDK's client) does it: block 0
 * came in 1024 bytes, the server keeps them all and answers szx 2; the
 * client counts the 1024 bytes as 16 blocks of 64 and goes on with num 16.
 */
START_TEST(test_reindex_1024_to_64)
{
	dg_block_opt ans;
	size_t off;
	uint32_t num;

	ck_assert_int_eq(dg_block1_new(65536, 2, &b), 0);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 2);

	/* libcoap: num = bytes_sent / new_size - 1 for the block acknowledged, then num + 1. */
	num = (uint32_t)(1024 >> (ans.szx + 4));
	ck_assert_uint_eq(num, 16);
	for (off = 1024; off + 64 < 4096; off += 64, num++) {
		ck_assert_int_eq(add(num, 1, 2, off, 64, -1, &ans), DG_BLOCK1_CONTINUE);
		ASSERT_ANSWER(ans, num, 1, 2);
	}
	ck_assert_uint_eq(num, 63);
	ck_assert_int_eq(add(num, 0, 2, off, 64, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 63, 0, 2);
	assert_body(0, 4096);
}
END_TEST

/* The same with a body that ends in a short block, from 512 down to 16. */
START_TEST(test_reindex_512_to_16_short_end)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 0, &b), 0);
	ck_assert_int_eq(add(0, 1, 5, 0, 512, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 0);
	ck_assert_int_eq(add(32, 1, 0, 512, 16, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 32, 1, 0);
	ck_assert_int_eq(add(33, 0, 0, 528, 3, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 33, 0, 0);
	assert_body(0, 531);
}
END_TEST

/*
 * A client that reads the answer num 0 szx 2 as "64 bytes taken" and goes
 * on with num 1 at 64 bytes: the server keeps only the first 64 bytes of
 * block 0, and the body still assembles in order.
 */
START_TEST(test_reindex_renumbered_from_answer)
{
	dg_block_opt ans;
	size_t off;
	uint32_t num;

	ck_assert_int_eq(dg_block1_new(65536, 2, &b), 0);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 2);
	for (off = 64, num = 1; off + 64 < 4096; off += 64, num++) {
		ck_assert_int_eq(add(num, 1, 2, off, 64, -1, &ans), DG_BLOCK1_CONTINUE);
		ASSERT_ANSWER(ans, num, 1, 2);
	}
	ck_assert_int_eq(add(num, 0, 2, off, 40, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 63, 0, 2);
	assert_body(0, 4072);
}
END_TEST

/* Renumbering is only for the block right after the smaller answer. */
START_TEST(test_reindex_limits)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 2, &b), 0);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(16, 1, 2, 1024, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);

	/* Neither block 2 nor block 15 at the new size follows block 0. */
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(2, 1, 2, 128, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(15, 1, 2, 960, 64, -1, &ans), DG_BLOCK1_INCOMPLETE);

	/* A client that ignores the smaller size goes on at its own, and is asked again. */
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 6, 1024, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 16, 1, 2);
	ck_assert_int_eq(add(2, 0, 6, 2048, 100, -1, &ans), DG_BLOCK1_DONE);
	ASSERT_ANSWER(ans, 2, 0, 6);
	assert_body(0, 2148);

	/* No smaller answer, no renumbering: block 0 at the preferred size is kept whole. */
	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 2);
	ck_assert_int_eq(add(1, 1, 1, 32, 32, -1, &ans), DG_BLOCK1_INCOMPLETE);
}
END_TEST

/* Block sizes may shrink mid-transfer when the offsets line up, never skip bytes. */
START_TEST(test_size_change)
{
	dg_block_opt ans;

	ck_assert_int_eq(dg_block1_new(65536, 6, &b), 0);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 6);
	ck_assert_int_eq(add(32, 1, 1, 1024, 32, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(33, 1, 1, 1056, 32, -1, &ans), DG_BLOCK1_CONTINUE);
	/* 1088 bytes is not a multiple of 1024: no larger block can follow. */
	ck_assert_int_eq(add(1, 1, 6, 1024, 1024, -1, &ans), DG_BLOCK1_INCOMPLETE);

	ck_assert_int_eq(add(0, 1, 2, 0, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 1, 2, 64, 64, -1, &ans), DG_BLOCK1_CONTINUE);
	ck_assert_int_eq(add(1, 0, 3, 128, 7, -1, &ans), DG_BLOCK1_DONE);
	assert_body(0, 135);
}
END_TEST

START_TEST(test_new_and_free)
{
	dg_block_opt ans;

	dg_block1_free(NULL);
	/* A preferred size out of range is clamped to 16..1024 bytes. */
	ck_assert_int_eq(dg_block1_new(65536, 9, &b), 0);
	ck_assert_int_eq(add(0, 1, 6, 0, 1024, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 6);
	dg_block1_free(b);
	ck_assert_int_eq(dg_block1_new(65536, -1, &b), 0);
	ck_assert_int_eq(add(0, 1, 1, 0, 32, -1, &ans), DG_BLOCK1_CONTINUE);
	ASSERT_ANSWER(ans, 0, 1, 0);
	dg_block1_free(b);
	/* max_body 0 takes empty bodies only. */
	ck_assert_int_eq(dg_block1_new(0, 6, &b), 0);
	ck_assert_int_eq(add(0, 0, 0, 0, 0, -1, &ans), DG_BLOCK1_DONE);
	ck_assert_int_eq(add(0, 0, 0, 0, 1, -1, &ans), DG_BLOCK1_TOO_LARGE);
	ck_assert_int_eq(add(0, 0, 0, 0, 0, 1, &ans), DG_BLOCK1_TOO_LARGE);
}
END_TEST

/* Block2: which block of a representation one answer carries. */
START_TEST(test_block2_slice)
{
	dg_block_opt a;
	size_t off, n;

	/* Fits, no Block2 asked: the whole, not block-wise. */
	ck_assert_int_eq(dg_block2_slice(1000, 1200, -1, &a, &off, &n), 0);
	ck_assert_uint_eq(off, 0);
	ck_assert_uint_eq(n, 1000);
	/* Too large for one message: 1024-byte blocks (never more), the first one. */
	ck_assert_int_eq(dg_block2_slice(5000, 1336, -1, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 0, 1, 6);
	ck_assert_uint_eq(n, 1024);
	/* A record too small for 1024: the largest power of two that fits. */
	ck_assert_int_eq(dg_block2_slice(5000, 1000, -1, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 0, 1, 5);
	ck_assert_uint_eq(n, 512);
	/* The client's size and number: block 4 of 64 bytes, and the short last one. */
	ck_assert_int_eq(dg_block2_slice(300, 1336, 4 << 4 | 2, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 4, 0, 2);
	ck_assert_uint_eq(off, 256);
	ck_assert_uint_eq(n, 44);
	ck_assert_int_eq(dg_block2_slice(300, 1336, 1 << 4 | 2, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 1, 1, 2);
	ck_assert_uint_eq(off, 64);
	ck_assert_uint_eq(n, 64);
	/* Asked even when it fits: block-wise, as asked. */
	ck_assert_int_eq(dg_block2_slice(10, 1336, 6, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 0, 0, 6);
	ck_assert_uint_eq(n, 10);
	/* Larger blocks than fit: smaller ones from the offset asked for (block 1 of 1024 = 2 of
	 * 512). */
	ck_assert_int_eq(dg_block2_slice(3000, 1000, 1 << 4 | 6, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 2, 1, 5);
	ck_assert_uint_eq(off, 1024);
	ck_assert_uint_eq(n, 512);
	/* Past the end, malformed, no room. Block 0 of nothing is the empty block. */
	ck_assert_int_eq(dg_block2_slice(1024, 1336, 1 << 4 | 6, &a, &off, &n), -ERANGE);
	ck_assert_int_eq(dg_block2_slice(100, 1336, 7, &a, &off, &n), -EINVAL);
	ck_assert_int_eq(dg_block2_slice(100, 15, -1, &a, &off, &n), -ENOBUFS);
	ck_assert_int_eq(dg_block2_slice(0, 1336, 2, &a, &off, &n), 1);
	ASSERT_ANSWER(a, 0, 0, 2);
	ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_block2_etag)
{
	uint8_t e1[8], e2[8], e3[8];

	dg_block2_etag((const uint8_t *)"abc", 3, e1);
	dg_block2_etag((const uint8_t *)"abc", 3, e2);
	dg_block2_etag((const uint8_t *)"abd", 3, e3);
	ck_assert_mem_eq(e1, e2, 8);
	ck_assert_int_ne(memcmp(e1, e3, 8), 0);
}
END_TEST

static Suite *
block_suite(void)
{
	Suite *s = suite_create("block");
	TCase *tc = tcase_create("block");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_opt_round_trip);
	tcase_add_test(tc, test_opt_known_values);
	tcase_add_test(tc, test_opt_limits);
	tcase_add_test(tc, test_assemble_4k_in_64);
	tcase_add_test(tc, test_assemble_short_last_block);
	tcase_add_test(tc, test_single_and_empty);
	tcase_add_test(tc, test_out_of_order);
	tcase_add_test(tc, test_duplicate_and_backwards);
	tcase_add_test(tc, test_restart_with_block0);
	tcase_add_test(tc, test_too_large_by_data);
	tcase_add_test(tc, test_too_large_by_size1);
	tcase_add_test(tc, test_bad_block_sizes);
	tcase_add_test(tc, test_reindex_1024_to_64);
	tcase_add_test(tc, test_reindex_512_to_16_short_end);
	tcase_add_test(tc, test_reindex_renumbered_from_answer);
	tcase_add_test(tc, test_reindex_limits);
	tcase_add_test(tc, test_size_change);
	tcase_add_test(tc, test_new_and_free);
	tcase_add_test(tc, test_block2_slice);
	tcase_add_test(tc, test_block2_etag);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(block_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
