/*
 * Unit tests of the projects directory: psk.json parsing with its exact
 * error messages, and imports of a directory tree into a real store.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "devgate/confdir.h"
#include "devgate/registry.h"
#include "devgate/store.h"

#define P    "projects/acme/psk.json"
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* --- dg_confdir_parse_psk --- */

static dg_psk_entry *entries;
static size_t n_entries;
static char err[512];

static int
parse(const char *text)
{
	entries = NULL;
	n_entries = 0;
	memset(err, 0, sizeof(err));
	return dg_confdir_parse_psk(P, "acme", text, strlen(text), &entries, &n_entries, err,
	                            sizeof(err));
}

static void
parse_teardown(void)
{
	dg_confdir_psk_free(entries, n_entries);
	entries = NULL;
	n_entries = 0;
}

START_TEST(test_parse_good)
{
	static const char text[] =
	        "[\n"
	        "  {\"identity\": \"sensor-1@acme\", \"device\": \"sensor-1\",\n"
	        "   \"key\": \"secret-one\"},\n"
	        "  {\"key_hex\": \"00ff10AbcD\", \"device\": \"Sensor 2 (hall)\",\n"
	        "   \"identity\": \"id@with@ats@acme\"},\n"
	        "  {\"identity\": \"s3@acme\", \"device\": \"sensor-1\","
	        " \"key\": \"caf\\u00e9\\n\"}\n"
	        "]\n";

	ck_assert_int_eq(parse(text), 0);
	ck_assert_str_eq(err, "");
	ck_assert_uint_eq(n_entries, 3);
	ck_assert_str_eq(entries[0].identity, "sensor-1@acme");
	ck_assert_str_eq(entries[0].device, "sensor-1");
	ck_assert_uint_eq(entries[0].key_len, 10);
	ck_assert_mem_eq(entries[0].key, "secret-one", 10);
	ck_assert_str_eq(entries[1].identity, "id@with@ats@acme");
	ck_assert_str_eq(entries[1].device, "Sensor 2 (hall)");
	ck_assert_uint_eq(entries[1].key_len, 5);
	ck_assert_mem_eq(entries[1].key, "\x00\xff\x10\xab\xcd", 5);
	/* JSON escapes are decoded: é is two UTF-8 bytes, \n one. */
	ck_assert_uint_eq(entries[2].key_len, 6);
	ck_assert_mem_eq(entries[2].key, "caf\xc3\xa9\n", 6);
}
END_TEST

START_TEST(test_parse_empty_array)
{
	ck_assert_int_eq(parse(" [ ] "), 0);
	ck_assert_uint_eq(n_entries, 0);
}
END_TEST

START_TEST(test_parse_key_limits)
{
	char text[512];
	char key[65], hex[129];

	/* 64 bytes of key, and 128 hex digits, are the most. */
	memset(key, 'k', 64);
	key[64] = '\0';
	for (int i = 0; i < 64; i++)
		snprintf(hex + 2 * i, 3, "%02x", i);
	snprintf(text, sizeof(text),
	         "[{\"identity\":\"a@acme\",\"device\":\"d\",\"key\":\"%s\"},"
	         "{\"identity\":\"b@acme\",\"device\":\"d\",\"key_hex\":\"%s\"},"
	         "{\"identity\":\"c@acme\",\"device\":\"d\",\"key\":\"x\"},"
	         "{\"identity\":\"d@acme\",\"device\":\"d\",\"key_hex\":\"7F\"}]",
	         key, hex);
	ck_assert_msg(parse(text) == 0, "%s", err);
	ck_assert_uint_eq(n_entries, 4);
	ck_assert_uint_eq(entries[0].key_len, 64);
	ck_assert_mem_eq(entries[0].key, key, 64);
	ck_assert_uint_eq(entries[1].key_len, 64);
	for (int i = 0; i < 64; i++)
		ck_assert_uint_eq(entries[1].key[i], i);
	ck_assert_uint_eq(entries[2].key_len, 1);
	ck_assert_uint_eq(entries[3].key_len, 1);
	ck_assert_uint_eq(entries[3].key[0], 0x7f);
}
END_TEST

START_TEST(test_parse_device_limits)
{
	char text[512], dev[129];

	memset(dev, 'd', 128);
	dev[128] = '\0';
	snprintf(text, sizeof(text), "[{\"identity\":\"a@acme\",\"device\":\"%s\",\"key\":\"k\"}]",
	         dev);
	ck_assert_msg(parse(text) == 0, "%s", err);
	ck_assert_str_eq(entries[0].device, dev);
}
END_TEST

START_TEST(test_parse_not_terminated)
{
	/* The text is read by length: no NUL needed, bytes after `len` ignored. */
	static const char text[] = "[{\"identity\":\"a@acme\",\"device\":\"d\",\"key\":\"k\"}]XXXX";
	char *copy = malloc(sizeof(text) - 5);

	ck_assert_ptr_nonnull(copy);
	memcpy(copy, text, sizeof(text) - 5);
	ck_assert_int_eq(dg_confdir_parse_psk(P, "acme", copy, sizeof(text) - 5, &entries,
	                                      &n_entries, err, sizeof(err)),
	                 0);
	ck_assert_uint_eq(n_entries, 1);
	free(copy);
}
END_TEST

/* One bad psk.json and the exact message it must give. */
typedef struct bad_case {
	const char *text;
	const char *msg;
} bad_case;

#define ENTRY(rest) "{\"identity\":\"a@acme\",\"device\":\"d\"," rest "}"
#define GOOD        ENTRY("\"key\":\"k\"")
#define GOOD_B      "{\"identity\":\"b@acme\",\"device\":\"d\",\"key\":\"k\"}"
#define NO_KEY      "{\"identity\":\"a@acme\",\"device\":\"d\"}"

static const bad_case bad[] = {
        /* Malformed JSON names the line. */
        {"[\n  {\"identity\": \"a@acme\",\n   \"device\" \"d\"}\n]", P ": line 3: malformed JSON"},
        {"", P ": line 1: malformed JSON"},
        {"[", P ": line 1: malformed JSON"},
        {"\n\n\n[1,]", P ": line 4: malformed JSON"},
        {"[" GOOD ",\n" GOOD ",\n{\"identity\": 'a@acme'}]", P ": line 3: malformed JSON"},
        /* Not an array. */
        {"{}", P ": must be an array of credentials"},
        {"{\"identity\":\"a@acme\",\"device\":\"d\",\"key\":\"k\"}",
         P ": must be an array of credentials"},
        {"\"x\"", P ": must be an array of credentials"},
        {"null", P ": must be an array of credentials"},
        {"42", P ": must be an array of credentials"},
        /* An element that is not an object. */
        {"[1]", P ": [0]: must be an object"},
        {"[" GOOD ",[]]", P ": [1]: must be an object"},
        {"[" GOOD "," GOOD_B ",\"a@acme\"]", P ": [2]: must be an object"},
        {"[null]", P ": [0]: must be an object"},
        /* Unknown keys. */
        {"[" ENTRY("\"key\":\"k\",\"secret\":\"x\"") "]", P ": [0].secret: unknown key"},
        {"[" ENTRY("\"Key\":\"k\"") "]", P ": [0].Key: unknown key"},
        {"[" GOOD "," ENTRY("\"key\":\"k\",\"\":\"x\"") "]", P ": [1].: unknown key"},
        /* Values that are not strings. */
        {"[{\"identity\":5}]", P ": [0].identity: must be a string"},
        {"[{\"identity\":\"a@acme\",\"device\":[\"d\"]}]", P ": [0].device: must be a string"},
        {"[" ENTRY("\"key\":null") "]", P ": [0].key: must be a string"},
        {"[" ENTRY("\"key_hex\":true") "]", P ": [0].key_hex: must be a string"},
        {"[" ENTRY("\"key_hex\":1234") "]", P ": [0].key_hex: must be a string"},
        {"[" ENTRY("\"key\":{}") "]", P ": [0].key: must be a string"},
        /* Identity. */
        {"[{\"device\":\"d\",\"key\":\"k\"}]", P ": [0].identity: required"},
        {"[{}]", P ": [0].identity: required"},
        {"[{\"identity\":\"nope\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must be <psk-id>@<project-slug>, at most 128 bytes"},
        {"[{\"identity\":\"\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must be <psk-id>@<project-slug>, at most 128 bytes"},
        {"[{\"identity\":\"@acme\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must be <psk-id>@<project-slug>, at most 128 bytes"},
        {"[{\"identity\":\"a@Acme\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must be <psk-id>@<project-slug>, at most 128 bytes"},
        {"[{\"identity\":\"a\\tb@acme\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must be <psk-id>@<project-slug>, at most 128 bytes"},
        {"[{\"identity\":\"a@beta\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must end in @acme, the project of this directory"},
        {"[" GOOD ",{\"identity\":\"a@acme-2\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [1].identity: must end in @acme, the project of this directory"},
        {"[{\"identity\":\"acme@acm\",\"device\":\"d\",\"key\":\"k\"}]",
         P ": [0].identity: must end in @acme, the project of this directory"},
        /* Device. */
        {"[{\"identity\":\"a@acme\",\"key\":\"k\"}]", P ": [0].device: required"},
        {"[{\"identity\":\"a@acme\",\"device\":\"\",\"key\":\"k\"}]",
         P ": [0].device: must be 1..128 printable bytes"},
        {"[{\"identity\":\"a@acme\",\"device\":\"a\\nb\",\"key\":\"k\"}]",
         P ": [0].device: must be 1..128 printable bytes"},
        {"[{\"identity\":\"a@acme\",\"device\":\"a\\u007fb\",\"key\":\"k\"}]",
         P ": [0].device: must be 1..128 printable bytes"},
        /* Key and key_hex: exactly one. */
        {"[" ENTRY("\"key\":\"k\",\"key_hex\":\"00\"") "]",
         P ": [0]: exactly one of key and key_hex is required"},
        {"[" NO_KEY "]", P ": [0]: exactly one of key and key_hex is required"},
        {"[" GOOD "," GOOD_B "," NO_KEY "]", P ": [2]: exactly one of key and key_hex is required"},
        /* Key. */
        {"[" ENTRY("\"key\":\"\"") "]", P ": [0].key: must be 1..64 bytes"},
        /* Key_hex. */
        {"[" ENTRY("\"key_hex\":\"\"") "]", P ": [0].key_hex: must be 2..128 hex digits, even"},
        {"[" ENTRY("\"key_hex\":\"0\"") "]", P ": [0].key_hex: must be 2..128 hex digits, even"},
        {"[" ENTRY("\"key_hex\":\"abc\"") "]", P ": [0].key_hex: must be 2..128 hex digits, even"},
        {"[" ENTRY("\"key_hex\":\"zz\"") "]", P ": [0].key_hex: must be hex digits"},
        {"[" ENTRY("\"key_hex\":\"0g\"") "]", P ": [0].key_hex: must be hex digits"},
        {"[" ENTRY("\"key_hex\":\"00 1\"") "]", P ": [0].key_hex: must be hex digits"},
        {"[" ENTRY("\"key_hex\":\"0x10\"") "]", P ": [0].key_hex: must be hex digits"},
        /* Duplicate identity. */
        {"[" GOOD "," GOOD "]", P ": [1].identity: a@acme repeats [0]"},
        {"[" GOOD "," GOOD_B "," GOOD "]", P ": [2].identity: a@acme repeats [0]"},
        {"[" GOOD_B "," GOOD "," ENTRY("\"key_hex\":\"00\"") "]",
         P ": [2].identity: a@acme repeats [1]"},
};

START_TEST(test_parse_errors)
{
	const bad_case *b = &bad[_i];
	dg_psk_entry *sentinel = (dg_psk_entry *)&entries;

	entries = sentinel;
	n_entries = 12345;
	memset(err, 0, sizeof(err));
	ck_assert_msg(dg_confdir_parse_psk(P, "acme", b->text, strlen(b->text), &entries,
	                                   &n_entries, err, sizeof(err)) == -EINVAL,
	              "accepted: %s", b->text);
	ck_assert_str_eq(err, b->msg);
	/* Nothing handed out. */
	ck_assert_ptr_eq(entries, sentinel);
	ck_assert_uint_eq(n_entries, 12345);
	entries = NULL;
	n_entries = 0;
}
END_TEST

/* The text of a psk.json of `n` credentials d<i>@acme, with d<i> repeated at `dup` (if < n). */
static char *
many_entries(size_t n, size_t dup, size_t repeat)
{
	size_t cap = n * 64 + 16, off = 0;
	char *t = malloc(cap);
	ck_assert_ptr_nonnull(t);
	off += (size_t)snprintf(t + off, cap - off, "[");
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(t + off, cap - off,
		                        "%s{\"identity\":\"d%zu@acme\",\"device\":\"d%zu\",\"key\":\"k\"}",
		                        i ? "," : "", i == dup ? repeat : i, i);
	snprintf(t + off, cap - off, "]");
	return t;
}

START_TEST(test_parse_100k)
{
	/* 100k credentials: checked for repeats in linear time, not in n^2/2 comparisons. */
	char *t = many_entries(100000, SIZE_MAX, 0);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	ck_assert_int_eq(parse(t), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ck_assert_uint_eq(n_entries, 100000);
	ck_assert_str_eq(entries[99999].identity, "d99999@acme");
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	ck_assert_msg(secs < 3.0, "100k credentials parsed in %.2f s", secs);
	dg_confdir_psk_free(entries, n_entries);
	entries = NULL;
	free(t);

	/* A repeat in the last entry, of one in the middle, is still found and named. */
	t = many_entries(100000, 99999, 4242);
	ck_assert_int_eq(parse(t), -EINVAL);
	ck_assert_str_eq(err, P ": [99999].identity: d4242@acme repeats [4242]");
	free(t);
}
END_TEST

START_TEST(test_parse_long_values)
{
	/* Over-long key, key_hex, identity and device, built at run time. */
	char text[1024], long_key[66], long_hex[131], long_id[140], long_dev[130];

	memset(long_key, 'k', 65);
	long_key[65] = '\0';
	memset(long_hex, 'a', 130);
	long_hex[130] = '\0';
	memset(long_id, 'i', 124);
	memcpy(long_id + 124, "@acme", 6); /* 129 bytes */
	memset(long_dev, 'd', 129);
	long_dev[129] = '\0';

	snprintf(text, sizeof(text), "[{\"identity\":\"a@acme\",\"device\":\"d\",\"key\":\"%s\"}]",
	         long_key);
	ck_assert_int_eq(parse(text), -EINVAL);
	ck_assert_str_eq(err, P ": [0].key: must be 1..64 bytes");

	snprintf(text, sizeof(text),
	         "[{\"identity\":\"a@acme\",\"device\":\"d\",\"key_hex\":\"%s\"}]", long_hex);
	ck_assert_int_eq(parse(text), -EINVAL);
	ck_assert_str_eq(err, P ": [0].key_hex: must be 2..128 hex digits, even");

	snprintf(text, sizeof(text), "[{\"identity\":\"%s\",\"device\":\"d\",\"key\":\"k\"}]",
	         long_id);
	ck_assert_int_eq(parse(text), -EINVAL);
	ck_assert_str_eq(err,
	                 P ": [0].identity: must be <psk-id>@<project-slug>, at most 128 bytes");
	/* One byte shorter is fine. */
	snprintf(text, sizeof(text), "[{\"identity\":\"%s\",\"device\":\"d\",\"key\":\"k\"}]",
	         long_id + 1);
	ck_assert_msg(parse(text) == 0, "%s", err);
	parse_teardown();

	snprintf(text, sizeof(text), "[{\"identity\":\"a@acme\",\"device\":\"%s\",\"key\":\"k\"}]",
	         long_dev);
	ck_assert_int_eq(parse(text), -EINVAL);
	ck_assert_str_eq(err, P ": [0].device: must be 1..128 printable bytes");
}
END_TEST

START_TEST(test_parse_small_err_buffer)
{
	/* A short error buffer gets a truncated, terminated message and nothing past it. */
	char small[16];
	static const char text[] = "[{\"identity\":\"a@beta\",\"device\":\"d\",\"key\":\"k\"}]";

	memset(small, 'Z', sizeof(small));
	ck_assert_int_eq(dg_confdir_parse_psk(P, "acme", text, strlen(text), &entries, &n_entries,
	                                      small, 10),
	                 -EINVAL);
	ck_assert_uint_eq(strlen(small), 9);
	ck_assert_mem_eq(small, P, 9);
	for (size_t i = 10; i < sizeof(small); i++)
		ck_assert_int_eq(small[i], 'Z');
}
END_TEST

START_TEST(test_parse_embedded_nul)
{
	/*
	 * A \u0000 escape decodes to a NUL byte that the C strings cut at: the
	 * key would silently become "ab". Such files must be rejected.
	 */
	ck_assert_int_eq(parse("[" ENTRY("\"key\":\"ab\\u0000cdefgh\"") "]"), -EINVAL);
	ck_assert_int_eq(
	        parse("[{\"identity\":\"a@acme\\u0000x\",\"device\":\"d\",\"key\":\"k\"}]"),
	        -EINVAL);
	ck_assert_int_eq(
	        parse("[{\"identity\":\"a@acme\",\"device\":\"d\\u0000x\",\"key\":\"k\"}]"),
	        -EINVAL);
}
END_TEST

START_TEST(test_parse_trailing_and_repeated)
{
	/* Text after the array, and a key given twice in one object. */
	ck_assert_int_eq(parse("[" GOOD "] [{\"identity\":\"b@acme\"}]"), -EINVAL);
	ck_assert_int_eq(parse("[" ENTRY("\"key\":\"k\",\"key\":\"other\"") "]"), -EINVAL);
}
END_TEST

/* --- dg_confdir_import --- */

static char tmp[1024];
static char projects[2048];
static char dbpath[2048];
static dg_store *st;

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/*
 * Each TCase gets a base directory from an unchecked fixture, which runs
 * in the runner's process: a test that fails exits its forked process
 * without its teardown, and the base directory is removed all the same.
 * Each test works in a directory of its own under it.
 */
static char base[512];

static void
base_setup(void)
{
	snprintf(base, sizeof(base), "%s/check_confdir.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(base));
}

static void
base_teardown(void)
{
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
import_setup(void)
{
	char e[256] = "";
	int rc;

	snprintf(tmp, sizeof(tmp), "%s/t.XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(projects, sizeof(projects), "%s/projects", tmp);
	snprintf(dbpath, sizeof(dbpath), "%s/db/devgate.db", tmp);
	ck_assert_int_eq(mkdir(projects, 0755), 0);
	rc = dg_store_open(dbpath, 0, &st, e, sizeof(e));
	ck_assert_msg(rc == 0, "dg_store_open: %d: %s", rc, e);
}

static void
import_teardown(void)
{
	dg_store_close(st);
	st = NULL;
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes projects/<rel> a directory. */
static void
mk(const char *rel)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", projects, rel);
	ck_assert_msg(mkdir(path, 0755) == 0, "mkdir %s", path);
}

/* Writes projects/<rel> with `text`. */
static void
put(const char *rel, const char *text)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", projects, rel);
	f = fopen(path, "w");
	ck_assert_msg(f != NULL, "fopen %s", path);
	ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
	ck_assert_int_eq(fclose(f), 0);
}

static void
rm(const char *rel)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", projects, rel);
	ck_assert_int_eq(remove(path), 0);
}

/* The credentials the store holds, as "identity=key" lines in identity order. */
typedef struct dump {
	char text[4096];
	size_t len;
} dump;

static int
dump_cb(void *arg, const dg_psk_row *row)
{
	dump *d = arg;
	int n = snprintf(d->text + d->len, sizeof(d->text) - d->len, "%s=%s/%.*s\n", row->identity,
	                 row->device, (int)row->key_len, (const char *)row->key);

	ck_assert_int_gt(n, 0);
	d->len += (size_t)n;
	ck_assert_uint_lt(d->len, sizeof(d->text));
	return 0;
}

static const char *
creds(void)
{
	static dump d;

	memset(&d, 0, sizeof(d));
	ck_assert_int_eq(dg_store_each_psk(st, dump_cb, &d), 0);
	return d.text;
}

/* The slugs of the projects table, comma-separated, in order. */
static const char *
project_slugs(void)
{
	static char out[1024];
	sqlite3 *db;
	sqlite3_stmt *s;
	size_t len = 0;

	out[0] = '\0';
	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(
	        sqlite3_prepare_v2(db, "SELECT slug FROM projects ORDER BY slug", -1, &s, NULL),
	        SQLITE_OK);
	while (sqlite3_step(s) == SQLITE_ROW)
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%s", len ? "," : "",
		                        (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
	return out;
}

/* Runs the import with stderr captured into `log`; returns its result. */
static int
import(int *n_errors, char *log, size_t logcap)
{
	char path[4096];
	int saved, fd, rc;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/stderr.log", tmp);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(fd, 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	*n_errors = -1;
	rc = dg_confdir_import(projects, st, n_errors);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	n = read(fd, log, logcap - 1);
	close(fd);
	log[n > 0 ? n : 0] = '\0';
	return rc;
}

#define ACME_PSK                                                                                   \
	"[{\"identity\":\"s1@acme\",\"device\":\"sensor-1\",\"key\":\"acme-one\"},"                \
	" {\"identity\":\"s2@acme\",\"device\":\"sensor-2\",\"key_hex\":\"414243\"}]"
#define GAMMA_PSK "[{\"identity\":\"g1@gamma\",\"device\":\"g\",\"key\":\"gamma-key\"}]"

START_TEST(test_import_tree)
{
	char log[8192];
	int n_errors;

	mk("acme");
	put("acme/psk.json", ACME_PSK);
	mk("Bad_Slug");
	put("Bad_Slug/psk.json", "[]");
	mk("beta"); /* No psk.json: a project without file credentials. */
	mk("gamma");
	put("gamma/psk.json", GAMMA_PSK);
	mk(".hidden");
	put("README", "not a project");
	put("also-not-a-dir", "[]");

	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_msg(n_errors == 1, "n_errors %d, log:\n%s", n_errors, log);
	ck_assert_str_eq(project_slugs(), "acme,beta,gamma");
	ck_assert_str_eq(creds(), "g1@gamma=g/gamma-key\n"
	                          "s1@acme=sensor-1/acme-one\n"
	                          "s2@acme=sensor-2/ABC\n");
	/* The rejected directory is named with its path. */
	ck_assert_ptr_nonnull(strstr(log, "Bad_Slug: not a valid project slug"));
	ck_assert_ptr_null(strstr(log, "hidden"));
}
END_TEST

START_TEST(test_import_broken_keeps_old)
{
	char log[8192], want[4096];
	int n_errors;

	mk("acme");
	put("acme/psk.json", ACME_PSK);
	mk("gamma");
	put("gamma/psk.json", GAMMA_PSK);
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 0);

	/* gamma's file breaks, acme's loses a credential: acme follows, gamma keeps what it had. */
	put("gamma/psk.json", "[{\"identity\":\"g1@gamma\",\n \"device\": \"g\",,]");
	put("acme/psk.json",
	    "[{\"identity\":\"s2@acme\",\"device\":\"sensor-2\",\"key\":\"new\"}]");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_msg(n_errors == 1, "n_errors %d, log:\n%s", n_errors, log);
	ck_assert_str_eq(creds(), "g1@gamma=g/gamma-key\n"
	                          "s2@acme=sensor-2/new\n");
	snprintf(want, sizeof(want), "%s/gamma/psk.json: line 2: malformed JSON", projects);
	ck_assert_msg(strstr(log, want) != NULL, "log lacks \"%s\":\n%s", want, log);

	/* A semantic error is just as harmless. */
	put("gamma/psk.json", "[{\"identity\":\"g1@acme\",\"device\":\"g\",\"key\":\"k\"}]");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 1);
	ck_assert_str_eq(creds(), "g1@gamma=g/gamma-key\n"
	                          "s2@acme=sensor-2/new\n");
	snprintf(want, sizeof(want), "%s/gamma/psk.json: [0].identity: must end in @gamma",
	         projects);
	ck_assert_msg(strstr(log, want) != NULL, "log lacks \"%s\":\n%s", want, log);

	/* psk.json that is a directory: an error, credentials kept. */
	rm("gamma/psk.json");
	mk("gamma/psk.json");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 1);
	ck_assert_str_eq(creds(), "g1@gamma=g/gamma-key\n"
	                          "s2@acme=sensor-2/new\n");

	/* Two broken projects and a bad slug count three. */
	rm("gamma/psk.json");
	put("gamma/psk.json", "{}");
	put("acme/psk.json", "[1]");
	mk("-bad");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 3);
	ck_assert_str_eq(creds(), "g1@gamma=g/gamma-key\n"
	                          "s2@acme=sensor-2/new\n");

	/* Fixed again: the new contents apply. */
	put("gamma/psk.json", "[]");
	put("acme/psk.json", ACME_PSK);
	rm("-bad");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 0);
	ck_assert_str_eq(creds(), "s1@acme=sensor-1/acme-one\n"
	                          "s2@acme=sensor-2/ABC\n");
}
END_TEST

START_TEST(test_import_removed_file)
{
	/* A psk.json that is removed (not broken) takes its credentials with it. */
	char log[8192];
	int n_errors;

	mk("acme");
	put("acme/psk.json", ACME_PSK);
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_str_ne(creds(), "");
	rm("acme/psk.json");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 0);
	ck_assert_str_eq(creds(), "");
	ck_assert_str_eq(project_slugs(), "acme");
}
END_TEST

START_TEST(test_import_registry)
{
	/* What the import stored is what a snapshot serves. */
	char log[8192];
	int n_errors;
	dg_registry *reg = NULL;
	const dg_psk_cred *c;

	mk("acme");
	put("acme/psk.json", ACME_PSK);
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_uint_eq(dg_registry_psk_count(reg), 2);
	c = dg_registry_find_psk(reg, "s2@acme", 7);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->key_len, 3);
	ck_assert_mem_eq(c->key, "ABC", 3);
	ck_assert_str_eq(c->device, "sensor-2");
	dg_registry_unref(reg);
}
END_TEST

START_TEST(test_import_missing_dir)
{
	char log[8192];
	int n_errors;

	rm("");
	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), -ENOENT);
	ck_assert_int_eq(n_errors, 0);
	ck_assert_ptr_nonnull(strstr(log, projects));
}
END_TEST

START_TEST(test_import_empty_dir)
{
	char log[8192];
	int n_errors;

	ck_assert_int_eq(import(&n_errors, log, sizeof(log)), 0);
	ck_assert_int_eq(n_errors, 0);
	ck_assert_str_eq(project_slugs(), "");
}
END_TEST

static Suite *
confdir_suite(void)
{
	Suite *s = suite_create("confdir");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_checked_fixture(tc, NULL, parse_teardown);
	tcase_add_test(tc, test_parse_good);
	tcase_add_test(tc, test_parse_empty_array);
	tcase_add_test(tc, test_parse_key_limits);
	tcase_add_test(tc, test_parse_device_limits);
	tcase_add_test(tc, test_parse_not_terminated);
	tcase_add_loop_test(tc, test_parse_errors, 0, N(bad));
	tcase_add_test(tc, test_parse_long_values);
	tcase_add_test(tc, test_parse_100k);
	tcase_add_test(tc, test_parse_small_err_buffer);
	tcase_add_test(tc, test_parse_embedded_nul);
	tcase_add_test(tc, test_parse_trailing_and_repeated);
	suite_add_tcase(s, tc);

	tc = tcase_create("import");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, import_setup, import_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_import_tree);
	tcase_add_test(tc, test_import_broken_keeps_old);
	tcase_add_test(tc, test_import_removed_file);
	tcase_add_test(tc, test_import_registry);
	tcase_add_test(tc, test_import_missing_dir);
	tcase_add_test(tc, test_import_empty_dir);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(confdir_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
