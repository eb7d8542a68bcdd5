/*
 * Unit tests of log.c: the settings change (SIGHUP runs dg_log_init again)
 * while other threads (the store's writer, the metrics thread) log. Every
 * line must come out whole, in one of the two formats, at a level the
 * settings of the moment let through. Built with -fsanitize=thread, this
 * test also shows that the settings are read and written without a data
 * race.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devgate/log.h"

#define THREADS 4
#define LINES   2000
#define INITS   2000

static char path[256];

static void *
logger(void *arg)
{
	long id = (long)arg;
	for (int i = 0; i < LINES; i++) {
		if (i % 2 == 0)
			dg_log(DG_LOG_WARN, "test.line", "thread %ld line %d", id, i);
		else
			dg_log(DG_LOG_DEBUG, "test.debug", "thread %ld line %d", id, i);
	}
	return NULL;
}

/* Sends stderr to a fresh file; returns the fd stderr had. */
static int
capture(void)
{
	int saved = dup(2);
	snprintf(path, sizeof(path), "%s/check_log.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ge(saved, 0);
	fflush(stderr);
	ck_assert_int_eq(dup2(fd, 2), 2);
	close(fd);
	return saved;
}

static void
restore(int saved)
{
	fflush(stderr);
	ck_assert_int_eq(dup2(saved, 2), 2);
	close(saved);
}

START_TEST(test_reinit_while_threads_log)
{
	pthread_t th[THREADS];
	int saved = capture();
	unsetenv("JOURNAL_STREAM");
	dg_log_init(DG_LOG_INFO, DG_LOG_TEXT);
	for (long i = 0; i < THREADS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, logger, (void *)i), 0);
	for (int i = 0; i < INITS; i++)
		dg_log_init(i % 3 == 0 ? DG_LOG_DEBUG : DG_LOG_WARN,
		            i % 2 == 0 ? DG_LOG_JSON : DG_LOG_TEXT);
	for (int i = 0; i < THREADS; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	dg_log_init(DG_LOG_INFO, DG_LOG_TEXT);
	restore(saved);

	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	char line[4096];
	int warn = 0, n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strlen(line);
		n++;
		ck_assert_msg(len > 0 && line[len - 1] == '\n', "a line cut short: %s", line);
		int json = line[0] == '{';
		if (json)
			ck_assert_msg(line[len - 2] == '}' &&
			                      strstr(line, "\"event\":\"test.") != NULL,
			              "a torn JSON line: %s", line);
		else
			ck_assert_msg(strstr(line, " level=") != NULL &&
			                      strstr(line, " event=test.") != NULL,
			              "a torn text line: %s", line);
		if (strstr(line, "test.line") != NULL)
			warn++;
	}
	fclose(f);
	unlink(path);
	/* Warnings pass at every setting used: each of them is there, once. */
	ck_assert_int_eq(warn, THREADS * LINES / 2);
	ck_assert_int_le(n, THREADS * LINES);
}
END_TEST

START_TEST(test_settings_apply)
{
	int saved = capture();
	unsetenv("JOURNAL_STREAM");
	dg_log_init(DG_LOG_WARN, DG_LOG_JSON);
	ck_assert(!dg_log_enabled(DG_LOG_INFO));
	ck_assert(dg_log_enabled(DG_LOG_WARN));
	dg_log(DG_LOG_INFO, "test.hidden", "not written");
	dg_log(DG_LOG_WARN, "test.json", "x=%d", 1);
	dg_log_init(DG_LOG_DEBUG, DG_LOG_TEXT);
	ck_assert(dg_log_enabled(DG_LOG_DEBUG));
	dg_log(DG_LOG_DEBUG, "test.text", "y");
	restore(saved);

	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	char a[1024] = "", b[1024] = "", c[1024] = "";
	ck_assert_ptr_nonnull(fgets(a, sizeof(a), f));
	ck_assert_ptr_nonnull(fgets(b, sizeof(b), f));
	ck_assert_ptr_null(fgets(c, sizeof(c), f));
	fclose(f);
	unlink(path);
	ck_assert_msg(strncmp(a, "{\"ts\":\"", 7) == 0 && strstr(a, "\"event\":\"test.json\""),
	              "%s", a);
	ck_assert_msg(strstr(b, " level=debug event=test.text msg=y") != NULL, "%s", b);
}
END_TEST

static Suite *
log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("reinit");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_reinit_while_threads_log);
	tcase_add_test(tc, test_settings_apply);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(log_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
