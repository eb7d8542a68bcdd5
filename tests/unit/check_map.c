/*
 * Unit tests of the open-addressing map: put/get/del, replacement,
 * growth, backward-shift deletion in random order, and the key makers.
 */
#include <check.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/map.h"

#define N_MANY 20000

static dg_map *m;

static void
setup(void)
{
	ck_assert_int_eq(dg_map_new(&m), 0);
	ck_assert_ptr_nonnull(m);
}

static void
teardown(void)
{
	dg_map_free(m);
	m = NULL;
}

/*
 * Check records every passing assertion (a write per call in fork mode),
 * so loops that assert millions of times only call into Check on failure.
 */
#define LOOP_PTR_EQ(X, Y, i)                                                                       \
	do {                                                                                       \
		const void *x_ = (X), *y_ = (Y);                                                   \
		if (x_ != y_)                                                                      \
			ck_abort_msg("at %zu: %s is %p, expected %p", (size_t)(i), #X, x_, y_);    \
	} while (0)

/* A value pointer for integer i that is never NULL. */
static void *
val(size_t i)
{
	return (void *)(uintptr_t)(i * 8 + 8);
}

static dg_map_key
key_str(const char *s)
{
	dg_map_key k;

	memset(&k, 0, sizeof(k));
	k.len = (uint8_t)strlen(s);
	memcpy(k.b, s, k.len);
	return k;
}

/* A small deterministic generator, so a failure reproduces. */
static uint64_t
rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

START_TEST(test_put_get_del)
{
	dg_map_key a = key_str("alpha"), b = key_str("beta"), c = key_str("gamma");
	int x = 1, y = 2;
	void *old = &x;

	ck_assert_uint_eq(dg_map_count(m), 0);
	ck_assert_ptr_null(dg_map_get(m, &a));
	ck_assert_int_eq(dg_map_put(m, &a, &x, &old), 0);
	ck_assert_ptr_null(old);
	ck_assert_int_eq(dg_map_put(m, &b, &y, NULL), 0);
	ck_assert_uint_eq(dg_map_count(m), 2);
	ck_assert_ptr_eq(dg_map_get(m, &a), &x);
	ck_assert_ptr_eq(dg_map_get(m, &b), &y);
	ck_assert_ptr_null(dg_map_get(m, &c));

	ck_assert_ptr_null(dg_map_del(m, &c));
	ck_assert_uint_eq(dg_map_count(m), 2);
	ck_assert_ptr_eq(dg_map_del(m, &a), &x);
	ck_assert_uint_eq(dg_map_count(m), 1);
	ck_assert_ptr_null(dg_map_get(m, &a));
	ck_assert_ptr_null(dg_map_del(m, &a));
	ck_assert_ptr_eq(dg_map_get(m, &b), &y);
	ck_assert_ptr_eq(dg_map_del(m, &b), &y);
	ck_assert_uint_eq(dg_map_count(m), 0);
}
END_TEST

START_TEST(test_replace_returns_old)
{
	dg_map_key a = key_str("k");
	int x = 1, y = 2;
	void *old = NULL;

	ck_assert_int_eq(dg_map_put(m, &a, &x, &old), 0);
	ck_assert_ptr_null(old);
	ck_assert_int_eq(dg_map_put(m, &a, &y, &old), 0);
	ck_assert_ptr_eq(old, &x);
	ck_assert_uint_eq(dg_map_count(m), 1);
	ck_assert_ptr_eq(dg_map_get(m, &a), &y);
	/* Replacing without asking for the old value. */
	ck_assert_int_eq(dg_map_put(m, &a, &x, NULL), 0);
	ck_assert_uint_eq(dg_map_count(m), 1);
	ck_assert_ptr_eq(dg_map_get(m, &a), &x);
}
END_TEST

START_TEST(test_keys_differ_by_length)
{
	dg_map_key a, b;
	int x = 1, y = 2;

	/* Same bytes, different lengths: two keys. */
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.len = 3;
	b.len = 4;
	ck_assert_int_eq(dg_map_put(m, &a, &x, NULL), 0);
	ck_assert_int_eq(dg_map_put(m, &b, &y, NULL), 0);
	ck_assert_uint_eq(dg_map_count(m), 2);
	ck_assert_ptr_eq(dg_map_get(m, &a), &x);
	ck_assert_ptr_eq(dg_map_get(m, &b), &y);

	/* A full-length key. */
	memset(a.b, 0xab, sizeof(a.b));
	a.len = DG_MAP_KEY_MAX;
	ck_assert_int_eq(dg_map_put(m, &a, &y, NULL), 0);
	ck_assert_ptr_eq(dg_map_get(m, &a), &y);
}
END_TEST

START_TEST(test_many_with_growth)
{
	dg_map_key k;
	void *old;

	for (size_t i = 0; i < N_MANY; i++) {
		dg_map_key_u64(&k, i);
		ck_assert_int_eq(dg_map_put(m, &k, val(i), &old), 0);
		LOOP_PTR_EQ(old, NULL, i);
		if (dg_map_count(m) != i + 1)
			ck_abort_msg("count %zu after %zu puts", dg_map_count(m), i + 1);
		/* The key just put and an early one stay reachable across each growth. */
		LOOP_PTR_EQ(dg_map_get(m, &k), val(i), i);
		dg_map_key_u64(&k, 0);
		LOOP_PTR_EQ(dg_map_get(m, &k), val(0), i);
	}
	for (size_t i = 0; i < N_MANY; i++) {
		dg_map_key_u64(&k, i);
		LOOP_PTR_EQ(dg_map_get(m, &k), val(i), i);
	}
	for (size_t i = N_MANY; i < N_MANY + 100; i++) {
		dg_map_key_u64(&k, i);
		ck_assert_ptr_null(dg_map_get(m, &k));
	}
}
END_TEST

START_TEST(test_delete_random_order)
{
	enum { N = 3000 };
	size_t order[N];
	unsigned char gone[N];
	uint64_t s = 0x9e3779b97f4a7c15ull;
	dg_map_key k;

	for (size_t i = 0; i < N; i++) {
		dg_map_key_u64(&k, i * 7919);
		ck_assert_int_eq(dg_map_put(m, &k, val(i), NULL), 0);
		order[i] = i;
	}
	/* Fisher-Yates. */
	for (size_t i = N - 1; i > 0; i--) {
		size_t j = (size_t)(rng(&s) % (i + 1));
		size_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	memset(gone, 0, sizeof(gone));
	for (size_t d = 0; d < N; d++) {
		size_t victim = order[d];
		dg_map_key_u64(&k, victim * 7919);
		ck_assert_ptr_eq(dg_map_del(m, &k), val(victim));
		gone[victim] = 1;
		ck_assert_uint_eq(dg_map_count(m), N - d - 1);
		/* Every remaining key must still be found, every deleted one not. */
		for (size_t i = 0; i < N; i++) {
			dg_map_key_u64(&k, i * 7919);
			LOOP_PTR_EQ(dg_map_get(m, &k), gone[i] ? NULL : val(i), i);
		}
	}
}
END_TEST

START_TEST(test_churn)
{
	/* Interleaved puts and deletes on a small key space, checked against a model. */
	enum { N = 512 };
	void *model[N];
	uint64_t s = 12345;
	dg_map_key k;
	size_t count = 0;

	memset(model, 0, sizeof(model));
	for (int round = 0; round < 100000; round++) {
		size_t i = (size_t)(rng(&s) % N);
		dg_map_key_u64(&k, i);
		if (rng(&s) & 1) {
			void *old;
			void *v = val(i + (size_t)round);
			if (dg_map_put(m, &k, v, &old) != 0)
				ck_abort_msg("put failed at round %d", round);
			LOOP_PTR_EQ(old, model[i], round);
			if (model[i] == NULL)
				count++;
			model[i] = v;
		} else {
			LOOP_PTR_EQ(dg_map_del(m, &k), model[i], round);
			if (model[i] != NULL)
				count--;
			model[i] = NULL;
		}
		if (dg_map_count(m) != count)
			ck_abort_msg("round %d: count %zu, expected %zu", round, dg_map_count(m),
			             count);
	}
	for (size_t i = 0; i < N; i++) {
		dg_map_key_u64(&k, i);
		ck_assert_ptr_eq(dg_map_get(m, &k), model[i]);
	}
}
END_TEST

START_TEST(test_addr_keys)
{
	struct sockaddr_in a4, b4;
	struct sockaddr_in6 a6, b6;
	dg_map_key ka, kb, kc, kd;
	int x = 1, y = 2, z = 3, w = 4;

	memset(&a4, 0, sizeof(a4));
	a4.sin_family = AF_INET;
	a4.sin_port = htons(5684);
	ck_assert_int_eq(inet_pton(AF_INET, "192.0.2.1", &a4.sin_addr), 1);
	b4 = a4;
	b4.sin_port = htons(5685);
	memset(&a6, 0, sizeof(a6));
	a6.sin6_family = AF_INET6;
	a6.sin6_port = htons(5684);
	ck_assert_int_eq(inet_pton(AF_INET6, "2001:db8::1", &a6.sin6_addr), 1);
	b6 = a6;
	b6.sin6_port = htons(5685);

	dg_map_key_addr(&ka, (const struct sockaddr *)&a4);
	dg_map_key_addr(&kb, (const struct sockaddr *)&b4);
	dg_map_key_addr(&kc, (const struct sockaddr *)&a6);
	dg_map_key_addr(&kd, (const struct sockaddr *)&b6);
	ck_assert_uint_eq(ka.len, 7);
	ck_assert_uint_eq(kc.len, 19);
	ck_assert_uint_eq(ka.b[0], 4);
	ck_assert_uint_eq(kc.b[0], 6);
	ck_assert_mem_ne(ka.b, kb.b, ka.len);
	ck_assert_mem_ne(kc.b, kd.b, kc.len);

	ck_assert_int_eq(dg_map_put(m, &ka, &x, NULL), 0);
	ck_assert_int_eq(dg_map_put(m, &kb, &y, NULL), 0);
	ck_assert_int_eq(dg_map_put(m, &kc, &z, NULL), 0);
	ck_assert_int_eq(dg_map_put(m, &kd, &w, NULL), 0);
	ck_assert_uint_eq(dg_map_count(m), 4);

	/* A fresh key for an equal address (other padding, other sin_zero) finds the same entry. */
	{
		struct sockaddr_in c4;
		struct sockaddr_in6 c6;
		dg_map_key k;

		memset(&c4, 0x5a, sizeof(c4));
		c4.sin_family = AF_INET;
		c4.sin_port = htons(5684);
		inet_pton(AF_INET, "192.0.2.1", &c4.sin_addr);
		dg_map_key_addr(&k, (const struct sockaddr *)&c4);
		ck_assert_ptr_eq(dg_map_get(m, &k), &x);

		memset(&c6, 0, sizeof(c6));
		c6.sin6_family = AF_INET6;
		c6.sin6_port = htons(5685);
		c6.sin6_flowinfo = htonl(77);
		inet_pton(AF_INET6, "2001:db8::1", &c6.sin6_addr);
		dg_map_key_addr(&k, (const struct sockaddr *)&c6);
		ck_assert_ptr_eq(dg_map_get(m, &k), &w);

		/* Other address, same port: absent. */
		inet_pton(AF_INET6, "2001:db8::2", &c6.sin6_addr);
		dg_map_key_addr(&k, (const struct sockaddr *)&c6);
		ck_assert_ptr_null(dg_map_get(m, &k));
	}
}
END_TEST

START_TEST(test_v4_mapped_differs)
{
	/* 192.0.2.1 and ::ffff:192.0.2.1 are different keys (different families). */
	struct sockaddr_in a4;
	struct sockaddr_in6 a6;
	dg_map_key k4, k6;

	memset(&a4, 0, sizeof(a4));
	a4.sin_family = AF_INET;
	a4.sin_port = htons(1);
	inet_pton(AF_INET, "192.0.2.1", &a4.sin_addr);
	memset(&a6, 0, sizeof(a6));
	a6.sin6_family = AF_INET6;
	a6.sin6_port = htons(1);
	inet_pton(AF_INET6, "::ffff:192.0.2.1", &a6.sin6_addr);
	dg_map_key_addr(&k4, (const struct sockaddr *)&a4);
	dg_map_key_addr(&k6, (const struct sockaddr *)&a6);
	ck_assert_int_eq(dg_map_put(m, &k4, val(4), NULL), 0);
	ck_assert_ptr_null(dg_map_get(m, &k6));
}
END_TEST

START_TEST(test_u64_keys)
{
	dg_map_key a, b, c;

	dg_map_key_u64(&a, 0);
	dg_map_key_u64(&b, UINT64_MAX);
	dg_map_key_u64(&c, 1ull << 32);
	ck_assert_uint_eq(a.len, 9);
	ck_assert_int_eq(dg_map_put(m, &a, val(1), NULL), 0);
	ck_assert_int_eq(dg_map_put(m, &b, val(2), NULL), 0);
	ck_assert_int_eq(dg_map_put(m, &c, val(3), NULL), 0);
	ck_assert_ptr_eq(dg_map_get(m, &a), val(1));
	ck_assert_ptr_eq(dg_map_get(m, &b), val(2));
	ck_assert_ptr_eq(dg_map_get(m, &c), val(3));
	dg_map_key_u64(&c, 1);
	ck_assert_ptr_null(dg_map_get(m, &c));
}
END_TEST

typedef struct each_ctx {
	size_t calls;
	uint64_t sum;
	unsigned char seen[1000];
} each_ctx;

static void
each_fn(void *v, void *arg)
{
	each_ctx *e = arg;
	size_t i = (size_t)((uintptr_t)v / 8 - 1);

	e->calls++;
	e->sum += i;
	if (i < sizeof(e->seen))
		e->seen[i]++;
}

START_TEST(test_each)
{
	each_ctx e;
	dg_map_key k;

	memset(&e, 0, sizeof(e));
	dg_map_each(m, each_fn, &e);
	ck_assert_uint_eq(e.calls, 0);

	for (size_t i = 0; i < 1000; i++) {
		dg_map_key_u64(&k, i);
		ck_assert_int_eq(dg_map_put(m, &k, val(i), NULL), 0);
	}
	for (size_t i = 0; i < 1000; i += 2) {
		dg_map_key_u64(&k, i);
		ck_assert_ptr_eq(dg_map_del(m, &k), val(i));
	}
	dg_map_each(m, each_fn, &e);
	ck_assert_uint_eq(e.calls, 500);
	for (size_t i = 0; i < 1000; i++)
		ck_assert_uint_eq(e.seen[i], i % 2);
	ck_assert_uint_eq(e.sum, 500 * 500); /* 1 + 3 + ... + 999 */
}
END_TEST

START_TEST(test_free_null)
{
	dg_map_free(NULL);
}
END_TEST

static Suite *
map_suite(void)
{
	Suite *s = suite_create("map");
	TCase *tc = tcase_create("map");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_put_get_del);
	tcase_add_test(tc, test_replace_returns_old);
	tcase_add_test(tc, test_keys_differ_by_length);
	tcase_add_test(tc, test_many_with_growth);
	tcase_add_test(tc, test_delete_random_order);
	tcase_add_test(tc, test_churn);
	tcase_add_test(tc, test_addr_keys);
	tcase_add_test(tc, test_v4_mapped_differs);
	tcase_add_test(tc, test_u64_keys);
	tcase_add_test(tc, test_each);
	tcase_add_test(tc, test_free_null);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(map_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
