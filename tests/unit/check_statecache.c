/*
 * Unit tests of a worker's state-document cache: a miss makes the entry
 * and a ticket, the read's fill is kept only under the ticket it was given
 * (a write or an invalidation in between refuses it), a write replaces the
 * document, a removed entry's old reads are never kept by its successor,
 * documents over the size bound are never kept, and a NULL cache keeps
 * nothing.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/statecache.h"

static dg_statecache *
cache(void)
{
	dg_statecache *c = NULL;
	ck_assert_int_eq(dg_statecache_new(64, &c), 0);
	return c;
}

/* The value of member "v" of the cached document of device 7, or -1 on a miss. */
static int
cached_v(dg_statecache *c)
{
	const cJSON *doc = NULL;
	uint64_t t = 0;
	if (!dg_statecache_get(c, 7, &doc, &t))
		return -1;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "v");
	ck_assert_ptr_nonnull(v);
	return v->valueint;
}

START_TEST(test_miss_fill_hit)
{
	dg_statecache *c = cache();
	const cJSON *doc = (const cJSON *)1;
	uint64_t t = 0, t2 = 0;

	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	ck_assert_ptr_null(doc);
	ck_assert_uint_ne(t, 0);
	/* A second miss before the fill gets the same ticket: both reads are good. */
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t2), 0);
	ck_assert_uint_eq(t, t2);
	ck_assert_int_eq(dg_statecache_fill(c, 7, t, "{\"v\":1}", &doc), 1);
	ck_assert_ptr_nonnull(doc);
	ck_assert_int_eq(cached_v(c), 1);
	/* The second read's fill is not kept over the first. */
	ck_assert_int_eq(dg_statecache_fill(c, 7, t2, "{\"v\":0}", &doc), 0);
	ck_assert_int_eq(cached_v(c), 1);
	/* "" is a device with no document: a hit with NULL. */
	ck_assert_int_eq(dg_statecache_get(c, 8, &doc, &t), 0);
	ck_assert_int_eq(dg_statecache_fill(c, 8, t, "", &doc), 1);
	doc = (const cJSON *)1;
	ck_assert_int_eq(dg_statecache_get(c, 8, &doc, &t), 1);
	ck_assert_ptr_null(doc);
	uint64_t hits, misses;
	dg_statecache_stats(c, &hits, &misses);
	ck_assert_uint_eq(hits, 3);
	ck_assert_uint_eq(misses, 3);
	dg_statecache_free(c);
}
END_TEST

START_TEST(test_read_racing_a_write)
{
	dg_statecache *c = cache();
	const cJSON *doc;
	uint64_t t = 0;

	/* The read was asked for, then a write committed: the read is stale, not kept. */
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	dg_statecache_put(c, 7, "{\"v\":2}");
	ck_assert_int_eq(cached_v(c), 2);
	ck_assert_int_eq(dg_statecache_fill(c, 7, t, "{\"v\":1}", &doc), 0);
	ck_assert_int_eq(cached_v(c), 2);
	/* Writes replace in the order they are acknowledged. */
	dg_statecache_put(c, 7, "{\"v\":3}");
	ck_assert_int_eq(cached_v(c), 3);
	/* A change from elsewhere empties it; a read asked before that is refused. */
	dg_statecache_invalidate(c, 7);
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	uint64_t before = t;
	dg_statecache_invalidate(c, 7);
	ck_assert_int_eq(dg_statecache_fill(c, 7, before, "{\"v\":3}", &doc), 0);
	ck_assert_int_eq(cached_v(c), -1);
	/* A failed write (NULL) empties it too. */
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	ck_assert_int_eq(dg_statecache_fill(c, 7, t, "{\"v\":4}", &doc), 1);
	dg_statecache_put(c, 7, NULL);
	ck_assert_int_eq(cached_v(c), -1);
	dg_statecache_free(c);
}
END_TEST

START_TEST(test_removed_entry)
{
	dg_statecache *c = cache();
	const cJSON *doc;
	uint64_t old = 0, t = 0;

	/* A read of a session that closed is not kept by the next session's entry. */
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &old), 0);
	dg_statecache_remove(c, 7);
	ck_assert_int_eq(dg_statecache_fill(c, 7, old, "{\"v\":1}", &doc), 0);
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	ck_assert_uint_ne(t, old);
	ck_assert_int_eq(dg_statecache_fill(c, 7, old, "{\"v\":1}", &doc), 0);
	ck_assert_int_eq(dg_statecache_fill(c, 7, t, "{\"v\":5}", &doc), 1);
	ck_assert_int_eq(cached_v(c), 5);
	/* A write for a device with no entry makes none. */
	dg_statecache_put(c, 9, "{\"v\":1}");
	ck_assert_int_eq(dg_statecache_get(c, 9, &doc, &t), 0);
	dg_statecache_remove(c, 1234); /* Absent: a no-op. */
	dg_statecache_free(c);
}
END_TEST

START_TEST(test_size_bound)
{
	dg_statecache *c = cache();
	const cJSON *doc;
	uint64_t t = 0;
	char big[128];

	memset(big, 'x', sizeof(big));
	memcpy(big, "{\"v\":\"", 6);
	memcpy(big + sizeof(big) - 3, "\"}", 3);
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	ck_assert_int_eq(dg_statecache_fill(c, 7, t, big, &doc), 0);
	ck_assert_int_eq(cached_v(c), -1);
	/* Not JSON: not kept either. */
	ck_assert_int_eq(dg_statecache_get(c, 7, &doc, &t), 0);
	ck_assert_int_eq(dg_statecache_fill(c, 7, t, "{", &doc), 0);
	dg_statecache_put(c, 7, "{\"v\":1}");
	ck_assert_int_eq(cached_v(c), 1);
	dg_statecache_put(c, 7, big);
	ck_assert_int_eq(cached_v(c), -1);
	dg_statecache_free(c);
}
END_TEST

START_TEST(test_null_cache)
{
	const cJSON *doc;
	uint64_t t = 5, hits, misses;
	ck_assert_int_eq(dg_statecache_get(NULL, 7, &doc, &t), 0);
	ck_assert_uint_eq(t, 0);
	ck_assert_int_eq(dg_statecache_fill(NULL, 7, 1, "{}", &doc), 0);
	dg_statecache_put(NULL, 7, "{}");
	dg_statecache_invalidate(NULL, 7);
	dg_statecache_remove(NULL, 7);
	dg_statecache_stats(NULL, &hits, &misses);
	ck_assert_uint_eq(hits + misses, 0);
	dg_statecache_free(NULL);
}
END_TEST

static Suite *
statecache_suite(void)
{
	Suite *s = suite_create("statecache");
	TCase *tc = tcase_create("statecache");

	tcase_add_test(tc, test_miss_fill_hit);
	tcase_add_test(tc, test_read_racing_a_write);
	tcase_add_test(tc, test_removed_entry);
	tcase_add_test(tc, test_size_bound);
	tcase_add_test(tc, test_null_cache);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(statecache_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
