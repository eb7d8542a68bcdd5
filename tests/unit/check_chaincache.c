/*
 * Unit tests of the accepted-chain cache: a key covers the project, its
 * trust hash, every certificate's bytes and the boundaries between them;
 * an entry is found before its deadline and never at or after it; a slot
 * shared by two keys holds the newer and never answers for the older; a
 * NULL cache keeps nothing.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/chaincache.h"

static const uint8_t A[] = {0x30, 0x03, 0x01, 0x02, 0x03};
static const uint8_t B[] = {0x30, 0x02, 0x04, 0x05};

static void
key2(int64_t project, uint64_t trust, const uint8_t *x, size_t xl, const uint8_t *y, size_t yl,
     uint8_t *key)
{
	const uint8_t *certs[2] = {x, y};
	size_t lens[2] = {xl, yl};
	ck_assert_int_eq(dg_chaincache_key(project, trust, certs, lens, y != NULL ? 2 : 1, key), 0);
}

START_TEST(test_key_covers_everything)
{
	uint8_t k[8][DG_CHAINCACHE_KEY_LEN];
	/* The same chain, then each thing the key must tell apart. */
	key2(1, 7, A, sizeof(A), B, sizeof(B), k[0]);
	key2(1, 7, A, sizeof(A), B, sizeof(B), k[1]);
	ck_assert_mem_eq(k[0], k[1], DG_CHAINCACHE_KEY_LEN);
	key2(2, 7, A, sizeof(A), B, sizeof(B), k[2]); /* another project */
	key2(1, 8, A, sizeof(A), B, sizeof(B), k[3]); /* its trust changed */
	key2(1, 7, A, sizeof(A), NULL, 0, k[4]);      /* the leaf alone */
	key2(1, 7, B, sizeof(B), A, sizeof(A), k[5]); /* another order */
	key2(1, 7, A, sizeof(A) - 1, A + 4, 1, k[6]); /* same bytes, cut elsewhere */
	uint8_t c[sizeof(A)];
	memcpy(c, A, sizeof(A));
	c[4] ^= 1;
	key2(1, 7, c, sizeof(c), B, sizeof(B), k[7]); /* one bit of the leaf */
	for (int i = 2; i < 8; i++)
		ck_assert_msg(memcmp(k[0], k[i], DG_CHAINCACHE_KEY_LEN) != 0, "key %d collides", i);
	const uint8_t *none[1] = {A};
	size_t nl[1] = {sizeof(A)};
	ck_assert_int_eq(dg_chaincache_key(1, 7, none, nl, 0, k[0]), -EINVAL);
}
END_TEST

START_TEST(test_deadline)
{
	dg_chaincache *c;
	uint8_t k[DG_CHAINCACHE_KEY_LEN];
	dg_chaincache_entry e = {.not_after_ms = 5000, .deadline_ms = 4000}, got;
	uint64_t hits, misses;

	ck_assert_int_eq(dg_chaincache_new(16, &c), 0);
	key2(1, 7, A, sizeof(A), NULL, 0, k);
	ck_assert_int_eq(dg_chaincache_get(c, k, 1000, &got), 0);
	dg_chaincache_put(c, k, 1000, &e);
	ck_assert_int_eq(dg_chaincache_get(c, k, 1000, &got), 1);
	ck_assert_int_eq(got.not_after_ms, 5000);
	ck_assert_int_eq(dg_chaincache_get(c, k, 3999, &got), 1);
	/* At its deadline it is gone, and stays gone when the clock steps back. */
	ck_assert_int_eq(dg_chaincache_get(c, k, 4000, &got), 0);
	ck_assert_int_eq(dg_chaincache_get(c, k, 1000, &got), 0);
	/* A verdict already past its deadline is not kept. */
	dg_chaincache_put(c, k, 4000, &e);
	ck_assert_int_eq(dg_chaincache_get(c, k, 1000, &got), 0);
	dg_chaincache_stats(c, &hits, &misses);
	ck_assert_uint_eq(hits, 2);
	ck_assert_uint_eq(misses, 4);
	/* Cleared: nothing answers. */
	dg_chaincache_put(c, k, 1000, &e);
	dg_chaincache_clear(c);
	ck_assert_int_eq(dg_chaincache_get(c, k, 1000, &got), 0);
	dg_chaincache_free(c);
}
END_TEST

START_TEST(test_shared_slot)
{
	dg_chaincache *c;
	uint8_t k1[DG_CHAINCACHE_KEY_LEN], k2[DG_CHAINCACHE_KEY_LEN];
	dg_chaincache_entry e1 = {.not_after_ms = 1, .deadline_ms = 9000},
	                    e2 = {.not_after_ms = 2, .deadline_ms = 9000}, got;

	/* One slot: every key shares it. */
	ck_assert_int_eq(dg_chaincache_new(1, &c), 0);
	key2(1, 7, A, sizeof(A), NULL, 0, k1);
	key2(1, 7, B, sizeof(B), NULL, 0, k2);
	dg_chaincache_put(c, k1, 0, &e1);
	ck_assert_int_eq(dg_chaincache_get(c, k2, 0, &got), 0);
	dg_chaincache_put(c, k2, 0, &e2);
	ck_assert_int_eq(dg_chaincache_get(c, k1, 0, &got), 0);
	ck_assert_int_eq(dg_chaincache_get(c, k2, 0, &got), 1);
	ck_assert_int_eq(got.not_after_ms, 2);
	dg_chaincache_free(c);
}
END_TEST

START_TEST(test_null_cache)
{
	uint8_t k[DG_CHAINCACHE_KEY_LEN];
	dg_chaincache_entry e = {.not_after_ms = 1, .deadline_ms = 9000}, got;
	uint64_t hits = 1, misses = 1;

	key2(1, 7, A, sizeof(A), NULL, 0, k);
	dg_chaincache_put(NULL, k, 0, &e);
	ck_assert_int_eq(dg_chaincache_get(NULL, k, 0, &got), 0);
	dg_chaincache_stats(NULL, &hits, &misses);
	ck_assert_uint_eq(hits + misses, 0);
	dg_chaincache_free(NULL);
}
END_TEST

static Suite *
chaincache_suite(void)
{
	Suite *s = suite_create("chaincache");
	TCase *tc = tcase_create("chaincache");

	tcase_add_test(tc, test_key_covers_everything);
	tcase_add_test(tc, test_deadline);
	tcase_add_test(tc, test_shared_slot);
	tcase_add_test(tc, test_null_cache);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(chaincache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
