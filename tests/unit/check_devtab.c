/*
 * Unit tests of the tables the worker loops share: the device table (one
 * live session per device across workers: claim, replace, release by a
 * stale owner, lookup, threads claiming at once) and the admission limits
 * (sessions, handshakes in all and per source network).
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "devgate/admit.h"
#include "devgate/devtab.h"

START_TEST(test_claim_release)
{
	dg_devtab *t;
	dg_devtab_owner old = {0}, got;

	ck_assert_int_eq(dg_devtab_new(&t), 0);
	ck_assert_int_eq(dg_devtab_lookup(t, 7, &got), -ENOENT);
	ck_assert_int_eq(dg_devtab_claim(t, 7, (dg_devtab_owner){0, 11}, &old), 0);
	/* The same owner again changes nothing. */
	ck_assert_int_eq(dg_devtab_claim(t, 7, (dg_devtab_owner){0, 11}, &old), 0);
	ck_assert_int_eq(dg_devtab_lookup(t, 7, &got), 0);
	ck_assert_uint_eq(got.worker, 0);
	ck_assert_uint_eq(got.session_id, 11);
	/* A new session on another worker replaces it, and names the old one. */
	ck_assert_int_eq(dg_devtab_claim(t, 7, (dg_devtab_owner){1, 5}, &old), 1);
	ck_assert_uint_eq(old.worker, 0);
	ck_assert_uint_eq(old.session_id, 11);
	/* The old session's close does not remove the new one's entry. */
	dg_devtab_release(t, 7, (dg_devtab_owner){0, 11});
	ck_assert_int_eq(dg_devtab_lookup(t, 7, &got), 0);
	ck_assert_uint_eq(got.worker, 1);
	ck_assert_uint_eq(got.session_id, 5);
	/* Same session ID on another worker is another session. */
	dg_devtab_release(t, 7, (dg_devtab_owner){0, 5});
	ck_assert_uint_eq(dg_devtab_count(t), 1);
	dg_devtab_release(t, 7, (dg_devtab_owner){1, 5});
	ck_assert_int_eq(dg_devtab_lookup(t, 7, &got), -ENOENT);
	ck_assert_uint_eq(dg_devtab_count(t), 0);
	/* Entries left at free are freed with the table. */
	ck_assert_int_eq(dg_devtab_claim(t, 8, (dg_devtab_owner){2, 1}, &old), 0);
	dg_devtab_free(t);
	dg_devtab_free(NULL);
}
END_TEST

#define N_THREADS 4
#define N_DEVICES 1000

typedef struct racer {
	dg_devtab *t;
	uint32_t worker;
	int replaced; /* Claims that named an older owner. */
} racer;

static void *
race(void *arg)
{
	racer *r = arg;
	dg_devtab_owner old;
	for (int64_t d = 0; d < N_DEVICES; d++)
		if (dg_devtab_claim(r->t, d, (dg_devtab_owner){r->worker, (uint64_t)d}, &old) == 1)
			r->replaced++;
	return NULL;
}

/* Workers claiming the same devices at once: each device ends with one owner, and every
 * claim but the first of each device named the one it replaced. */
START_TEST(test_claim_threads)
{
	dg_devtab *t;
	pthread_t th[N_THREADS];
	racer r[N_THREADS];
	int replaced = 0;

	ck_assert_int_eq(dg_devtab_new(&t), 0);
	for (uint32_t i = 0; i < N_THREADS; i++) {
		r[i] = (racer){.t = t, .worker = i};
		ck_assert_int_eq(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < N_THREADS; i++) {
		pthread_join(th[i], NULL);
		replaced += r[i].replaced;
	}
	ck_assert_uint_eq(dg_devtab_count(t), N_DEVICES);
	ck_assert_int_eq(replaced, (N_THREADS - 1) * N_DEVICES);
	dg_devtab_free(t);
}
END_TEST

static struct sockaddr_in
v4(const char *ip, uint16_t port)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	inet_pton(AF_INET, ip, &sa.sin_addr);
	return sa;
}

START_TEST(test_admit_handshakes)
{
	dg_admit *a;
	const char *limit = NULL;
	struct sockaddr_in a1 = v4("127.0.0.1", 1000), a2 = v4("127.0.0.1", 2000),
	                   b = v4("127.0.0.2", 1000);

	ck_assert_int_eq(dg_admit_new(&a), 0);
	/* Per source: ports of one address share its count. */
	ck_assert_int_eq(dg_admit_handshake(a, (struct sockaddr *)&a1, 2, 3, &limit), 0);
	ck_assert_int_eq(dg_admit_handshake(a, (struct sockaddr *)&a2, 2, 3, &limit), 0);
	ck_assert_int_eq(dg_admit_handshake(a, (struct sockaddr *)&a1, 2, 3, &limit), -EAGAIN);
	ck_assert_str_eq(limit, "limits.max_handshakes_per_source");
	ck_assert_uint_eq(dg_admit_source(a, (struct sockaddr *)&a2), 2);
	/* In all. */
	ck_assert_int_eq(dg_admit_handshake(a, (struct sockaddr *)&b, 2, 3, &limit), 0);
	ck_assert_int_eq(dg_admit_handshake(a, (struct sockaddr *)&b, 2, 3, &limit), -EAGAIN);
	ck_assert_str_eq(limit, "limits.max_handshakes");
	ck_assert_uint_eq(dg_admit_handshakes(a), 3);
	/* A refused handshake took nothing. */
	ck_assert_uint_eq(dg_admit_source(a, (struct sockaddr *)&b), 1);
	dg_admit_handshake_end(a, (struct sockaddr *)&a1);
	ck_assert_uint_eq(dg_admit_source(a, (struct sockaddr *)&a2), 1);
	ck_assert_int_eq(dg_admit_handshake(a, (struct sockaddr *)&b, 2, 3, &limit), 0);
	dg_admit_handshake_end(a, (struct sockaddr *)&a2);
	dg_admit_handshake_end(a, (struct sockaddr *)&b);
	dg_admit_handshake_end(a, (struct sockaddr *)&b);
	ck_assert_uint_eq(dg_admit_handshakes(a), 0);
	ck_assert_uint_eq(dg_admit_source(a, (struct sockaddr *)&b), 0);
	dg_admit_free(a);
}
END_TEST

START_TEST(test_admit_sessions)
{
	dg_admit *a;

	ck_assert_int_eq(dg_admit_new(&a), 0);
	ck_assert_int_eq(dg_admit_session(a, 2), 1);
	ck_assert_int_eq(dg_admit_session(a, 2), 1);
	ck_assert_int_eq(dg_admit_session(a, 2), 0);
	ck_assert_uint_eq(dg_admit_sessions(a), 2);
	dg_admit_session_end(a);
	ck_assert_int_eq(dg_admit_session(a, 2), 1);
	dg_admit_free(a);
	dg_admit_free(NULL);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("devtab");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_claim_release);
	tcase_add_test(tc, test_claim_threads);
	tcase_add_test(tc, test_admit_handshakes);
	tcase_add_test(tc, test_admit_sessions);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
