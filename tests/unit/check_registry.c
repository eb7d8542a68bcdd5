/*
 * Unit tests of the registry: slug and identity validation, and snapshots
 * built from a real store in a temporary directory.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "devgate/registry.h"
#include "devgate/store.h"

/* --- dg_slug_valid --- */

START_TEST(test_slug_valid)
{
	static const char *const good[] = {"a",      "acme", "a-1", "0",
	                                   "9lives", "a--b", "a-",  "x0-y1"};
	char s63[64];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(dg_slug_valid(good[i]) == 1, "\"%s\" rejected", good[i]);
	memset(s63, 'a', 63);
	s63[63] = '\0';
	ck_assert_int_eq(dg_slug_valid(s63), 1);
	s63[0] = '7';
	s63[62] = '-';
	ck_assert_int_eq(dg_slug_valid(s63), 1);
}
END_TEST

START_TEST(test_slug_invalid)
{
	static const char *const bad[] = {
	        "",   "-a",  "-",   "A",           "Acme", "acMe", "a_b", "a.b",  "a b",
	        " a", "a/b", "a@b", "caf\xc3\xa9", "a\t",  "\x7f", "..",  "a\xff"};
	char s64[65];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(dg_slug_valid(bad[i]) == 0, "\"%s\" accepted", bad[i]);
	memset(s64, 'a', 64);
	s64[64] = '\0';
	ck_assert_int_eq(dg_slug_valid(s64), 0);
}
END_TEST

/* --- dg_identity_split --- */

static int
split(const char *identity, char *id, char *slug)
{
	const char *pid = NULL, *pslug = NULL;
	size_t id_len = 999, slug_len = 999;
	int rc = dg_identity_split(identity, strlen(identity), &pid, &id_len, &pslug, &slug_len);

	if (rc == 0) {
		/* Both parts point into the identity itself. */
		ck_assert_ptr_eq(pid, identity);
		ck_assert_ptr_eq(pslug, identity + id_len + 1);
		ck_assert_uint_eq(id_len + 1 + slug_len, strlen(identity));
		memcpy(id, pid, id_len);
		id[id_len] = '\0';
		memcpy(slug, pslug, slug_len);
		slug[slug_len] = '\0';
	}
	return rc;
}

START_TEST(test_identity_split_ok)
{
	char id[256], slug[256];

	ck_assert_int_eq(split("dev@acme", id, slug), 0);
	ck_assert_str_eq(id, "dev");
	ck_assert_str_eq(slug, "acme");
	/* At the last '@'. */
	ck_assert_int_eq(split("dev@1@acme", id, slug), 0);
	ck_assert_str_eq(id, "dev@1");
	ck_assert_str_eq(slug, "acme");
	ck_assert_int_eq(split("a@b", id, slug), 0);
	ck_assert_str_eq(id, "a");
	ck_assert_str_eq(slug, "b");
	ck_assert_int_eq(split("@@a", id, slug), 0);
	ck_assert_str_eq(id, "@");
	ck_assert_str_eq(slug, "a");
	/* The id part may hold any printable byte, UTF-8 included. */
	ck_assert_int_eq(split("caf\xc3\xa9 #1/x.y_z@a-1", id, slug), 0);
	ck_assert_str_eq(id, "caf\xc3\xa9 #1/x.y_z");
	ck_assert_str_eq(slug, "a-1");
}
END_TEST

START_TEST(test_identity_split_lengths)
{
	char buf[200], id[256], slug[256];
	const char *pid, *pslug;
	size_t il, sl;

	/* Exactly DG_PSK_MAX_IDENTITY bytes is fine, one more is not. */
	memset(buf, 'x', DG_PSK_MAX_IDENTITY - 5);
	memcpy(buf + DG_PSK_MAX_IDENTITY - 5, "@acme", 6);
	ck_assert_uint_eq(strlen(buf), DG_PSK_MAX_IDENTITY);
	ck_assert_int_eq(split(buf, id, slug), 0);
	ck_assert_str_eq(slug, "acme");
	memset(buf, 'x', DG_PSK_MAX_IDENTITY - 4);
	memcpy(buf + DG_PSK_MAX_IDENTITY - 4, "@acme", 6);
	ck_assert_uint_eq(strlen(buf), DG_PSK_MAX_IDENTITY + 1);
	ck_assert_int_eq(split(buf, id, slug), -EINVAL);

	/* A 63-byte slug is fine, 64 is not. */
	buf[0] = 'd';
	buf[1] = '@';
	memset(buf + 2, 's', 63);
	buf[65] = '\0';
	ck_assert_int_eq(split(buf, id, slug), 0);
	ck_assert_uint_eq(strlen(slug), 63);
	memset(buf + 2, 's', 64);
	buf[66] = '\0';
	ck_assert_int_eq(split(buf, id, slug), -EINVAL);

	/* Only `len` bytes count: a longer string cut short by len. */
	ck_assert_int_eq(dg_identity_split("dev@acmeXYZ", 8, &pid, &il, &pslug, &sl), 0);
	ck_assert_uint_eq(il, 3);
	ck_assert_uint_eq(sl, 4);
	ck_assert_mem_eq(pslug, "acme", 4);
	ck_assert_int_eq(dg_identity_split("dev@acme", 0, &pid, &il, &pslug, &sl), -EINVAL);
}
END_TEST

START_TEST(test_identity_split_errors)
{
	static const char *const bad[] = {
	        "",           "devacme",   "@acme",        "dev@",      "@",          "dev@Acme",
	        "dev@ac_me",  "dev@-acme", "dev@acme.io",  "dev@ac me", "d\tev@acme", "dev\n@acme",
	        "dev@acme\r", "\x1b@acme", "dev\x7f@acme", "dev@acme@",
	};
	char id[256], slug[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(split(bad[i], id, slug) == -EINVAL, "\"%s\" accepted", bad[i]);
}
END_TEST

START_TEST(test_identity_split_nul)
{
	static const char id_nul[] = "de\0v@acme";
	const char *pid = NULL, *pslug = NULL;
	size_t il = 0, sl = 0;

	ck_assert_int_eq(dg_identity_split(id_nul, sizeof(id_nul) - 1, &pid, &il, &pslug, &sl),
	                 -EINVAL);
	/* A NUL in the slug part. */
	ck_assert_int_eq(dg_identity_split("dev@ac\0me", 9, &pid, &il, &pslug, &sl), -EINVAL);
}
END_TEST

/* --- snapshots --- */

static char tmp[1024];
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
	snprintf(base, sizeof(base), "%s/check_registry.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(base));
}

static void
base_teardown(void)
{
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
store_setup(void)
{
	char err[256] = "";
	int rc;

	snprintf(tmp, sizeof(tmp), "%s/t.XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(dbpath, sizeof(dbpath), "%s/db/devgate.db", tmp);
	rc = dg_store_open(dbpath, 0, &st, err, sizeof(err));
	ck_assert_msg(rc == 0, "dg_store_open: %d: %s", rc, err);
}

static void
store_teardown(void)
{
	dg_store_close(st);
	st = NULL;
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
sql(const char *text)
{
	sqlite3 *db;

	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	ck_assert_msg(sqlite3_exec(db, text, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", text,
	              sqlite3_errmsg(db));
	sqlite3_close(db);
}

static const dg_psk_cred *
find(const dg_registry *reg, const char *identity)
{
	return dg_registry_find_psk(reg, identity, strlen(identity));
}

static int
has_project(const dg_registry *reg, const char *slug)
{
	return dg_registry_has_project(reg, slug, strlen(slug));
}

#define E(id, dev, key)                                                                            \
	{                                                                                          \
		(id), (dev), (const uint8_t *)(key), sizeof(key) - 1                               \
	}

START_TEST(test_build_empty)
{
	dg_registry *reg = NULL;

	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_ptr_nonnull(reg);
	ck_assert_uint_eq(dg_registry_psk_count(reg), 0);
	ck_assert_ptr_null(find(reg, "dev@acme"));
	ck_assert_int_eq(has_project(reg, "acme"), 0);
	dg_registry_unref(reg);
	dg_registry_unref(NULL);
}
END_TEST

START_TEST(test_build_find)
{
	dg_psk_entry acme[] = {
	        E("sensor-1@acme", "sensor-1", "key-one"),
	        E("sensor-2@acme", "sensor-2", "\x00\x01\x02\x03\x04\x05\x06\x07"),
	        E("rot@1@acme", "sensor-1", "rotated"),
	};
	dg_psk_entry beta[] = {E("sensor-1@beta", "sensor-1", "beta-key")};
	dg_registry *reg = NULL;
	const dg_psk_cred *c, *c2;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", acme, 3), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "beta", beta, 1), 0);
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_uint_eq(dg_registry_psk_count(reg), 4);

	c = find(reg, "sensor-1@acme");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->identity, "sensor-1@acme");
	ck_assert_str_eq(c->slug, "acme");
	ck_assert_str_eq(c->device, "sensor-1");
	ck_assert_uint_eq(c->key_len, 7);
	ck_assert_mem_eq(c->key, "key-one", 7);
	ck_assert_int_eq(c->project_enabled, 1);
	ck_assert_int_eq(c->device_blocked, 0);
	ck_assert_int_gt(c->device_id, 0);
	ck_assert_int_gt(c->project_id, 0);

	c2 = find(reg, "rot@1@acme");
	ck_assert_ptr_nonnull(c2);
	ck_assert_int_eq(c2->device_id, c->device_id);
	ck_assert_mem_eq(c2->key, "rotated", 7);

	c2 = find(reg, "sensor-2@acme");
	ck_assert_ptr_nonnull(c2);
	ck_assert_uint_eq(c2->key_len, 8);
	ck_assert_mem_eq(c2->key, "\x00\x01\x02\x03\x04\x05\x06\x07", 8);
	ck_assert_int_ne(c2->device_id, c->device_id);

	c2 = find(reg, "sensor-1@beta");
	ck_assert_ptr_nonnull(c2);
	ck_assert_str_eq(c2->slug, "beta");
	ck_assert_int_ne(c2->project_id, c->project_id);
	ck_assert_int_ne(c2->device_id, c->device_id);
	ck_assert_mem_eq(c2->key, "beta-key", 8);

	/* Not found: other case, prefixes, extensions, other project. */
	ck_assert_ptr_null(find(reg, "Sensor-1@acme"));
	ck_assert_ptr_null(find(reg, "sensor-1@acm"));
	ck_assert_ptr_null(find(reg, "sensor-1@acmex"));
	ck_assert_ptr_null(find(reg, "sensor-1@gamma"));
	ck_assert_ptr_null(find(reg, "sensor-3@acme"));
	ck_assert_ptr_null(find(reg, ""));
	/* Lookups by length: "sensor-1@acme" within a longer buffer. */
	ck_assert_ptr_eq(dg_registry_find_psk(reg, "sensor-1@acmeZZ", 13), c);

	ck_assert_int_eq(has_project(reg, "acme"), 1);
	ck_assert_int_eq(has_project(reg, "beta"), 1);
	ck_assert_int_eq(has_project(reg, "gamma"), 0);
	ck_assert_int_eq(has_project(reg, "acm"), 0);
	ck_assert_int_eq(has_project(reg, "acmee"), 0);
	ck_assert_int_eq(dg_registry_has_project(reg, "acmeXYZ", 4), 1);
	dg_registry_unref(reg);
}
END_TEST

START_TEST(test_build_flags)
{
	dg_psk_entry acme[] = {E("a@acme", "a", "k1"), E("b@acme", "b", "k2")};
	dg_psk_entry beta[] = {E("c@beta", "c", "k3")};
	dg_registry *reg = NULL;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", acme, 2), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "beta", beta, 1), 0);
	sql("UPDATE devices SET blocked = 1 WHERE name = 'b';"
	    "UPDATE projects SET enabled = 0 WHERE slug = 'beta'");
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_int_eq(find(reg, "a@acme")->device_blocked, 0);
	ck_assert_int_eq(find(reg, "a@acme")->project_enabled, 1);
	ck_assert_int_eq(find(reg, "b@acme")->device_blocked, 1);
	ck_assert_int_eq(find(reg, "c@beta")->project_enabled, 0);
	/* A disabled project is still known (the refusal says "project disabled"). */
	ck_assert_int_eq(has_project(reg, "beta"), 1);
	dg_registry_unref(reg);
}
END_TEST

START_TEST(test_build_skips_bad_keys)
{
	/* Keys the importer would never store: empty and over 64 bytes. */
	dg_psk_entry acme[] = {E("ok@acme", "a", "k")};
	dg_registry *reg = NULL;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", acme, 1), 0);
	sql("INSERT INTO credentials (device_id, identity, psk, source, created_at)"
	    " SELECT id, 'empty@acme', x'', 'cli', 0 FROM devices WHERE name = 'a';"
	    "INSERT INTO credentials (device_id, identity, psk, source, created_at)"
	    " SELECT id, 'long@acme', randomblob(65), 'cli', 0 FROM devices WHERE name = 'a';"
	    "INSERT INTO credentials (device_id, identity, psk, source, created_at)"
	    " SELECT id, 'max@acme', randomblob(64), 'cli', 0 FROM devices WHERE name = 'a'");
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_uint_eq(dg_registry_psk_count(reg), 2);
	ck_assert_ptr_nonnull(find(reg, "ok@acme"));
	ck_assert_ptr_nonnull(find(reg, "max@acme"));
	ck_assert_uint_eq(find(reg, "max@acme")->key_len, 64);
	ck_assert_ptr_null(find(reg, "empty@acme"));
	ck_assert_ptr_null(find(reg, "long@acme"));
	dg_registry_unref(reg);
}
END_TEST

START_TEST(test_build_many)
{
	enum { N = 1000 };
	static char ids[N][32], devs[N][16], keys[N][16];
	dg_psk_entry *e = calloc(N, sizeof(*e));
	dg_registry *reg = NULL;

	ck_assert_ptr_nonnull(e);
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "dev-%d@acme", i);
		snprintf(devs[i], sizeof(devs[i]), "d%d", i % 97);
		snprintf(keys[i], sizeof(keys[i]), "key%d", i);
		e[i].identity = ids[i];
		e[i].device = devs[i];
		e[i].key = (const uint8_t *)keys[i];
		e[i].key_len = strlen(keys[i]);
	}
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, N), 0);
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_uint_eq(dg_registry_psk_count(reg), N);
	for (int i = 0; i < N; i++) {
		const dg_psk_cred *c = find(reg, ids[i]);
		if (c == NULL || c->key_len != strlen(keys[i]) ||
		    memcmp(c->key, keys[i], c->key_len) != 0 || strcmp(c->device, devs[i]) != 0)
			ck_abort_msg("credential %s not found intact", ids[i]);
	}
	ck_assert_ptr_null(find(reg, "dev-1000@acme"));
	dg_registry_unref(reg);
	free(e);
}
END_TEST

START_TEST(test_snapshot_is_stable)
{
	/* A snapshot does not follow later changes of the store; a new one does. */
	dg_psk_entry one[] = {E("a@acme", "a", "old")};
	dg_psk_entry two[] = {E("a@acme", "a", "new"), E("b@acme", "b", "k")};
	dg_registry *r1 = NULL, *r2 = NULL;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", one, 1), 0);
	ck_assert_int_eq(dg_registry_build(st, &r1), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", two, 2), 0);
	ck_assert_int_eq(dg_registry_build(st, &r2), 0);
	ck_assert_uint_eq(dg_registry_psk_count(r1), 1);
	ck_assert_mem_eq(find(r1, "a@acme")->key, "old", 3);
	ck_assert_ptr_null(find(r1, "b@acme"));
	ck_assert_uint_eq(dg_registry_psk_count(r2), 2);
	ck_assert_mem_eq(find(r2, "a@acme")->key, "new", 3);
	dg_registry_unref(r1);
	dg_registry_unref(r2);
}
END_TEST

START_TEST(test_ref_unref)
{
	dg_psk_entry acme[] = {E("a@acme", "a", "k")};
	dg_registry *reg = NULL, *ref;
	const dg_psk_cred *c;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", acme, 1), 0);
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ref = dg_registry_ref(reg);
	ck_assert_ptr_eq(ref, reg);
	ck_assert_ptr_eq(dg_registry_ref(reg), reg);
	/* Three references; two dropped, the snapshot is still usable (ASan checks). */
	dg_registry_unref(reg);
	dg_registry_unref(reg);
	c = find(ref, "a@acme");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->device, "a");
	ck_assert_uint_eq(dg_registry_psk_count(ref), 1);
	dg_registry_unref(ref);
}
END_TEST

START_TEST(test_project_without_devices)
{
	/*
	 * A project directory with no psk.json (or an empty one) still makes
	 * a project: a handshake naming it is an "unknown PSK identity", not
	 * an "unknown project".
	 */
	dg_registry *reg = NULL;

	ck_assert_int_eq(dg_store_ensure_project(st, "empty"), 0);
	ck_assert_int_eq(dg_registry_build(st, &reg), 0);
	ck_assert_int_eq(has_project(reg, "empty"), 1);
	dg_registry_unref(reg);
}
END_TEST

static Suite *
registry_suite(void)
{
	Suite *s = suite_create("registry");
	TCase *tc;

	tc = tcase_create("validation");
	tcase_add_test(tc, test_slug_valid);
	tcase_add_test(tc, test_slug_invalid);
	tcase_add_test(tc, test_identity_split_ok);
	tcase_add_test(tc, test_identity_split_lengths);
	tcase_add_test(tc, test_identity_split_errors);
	tcase_add_test(tc, test_identity_split_nul);
	suite_add_tcase(s, tc);

	tc = tcase_create("snapshot");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, store_setup, store_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_build_empty);
	tcase_add_test(tc, test_build_find);
	tcase_add_test(tc, test_build_flags);
	tcase_add_test(tc, test_build_skips_bad_keys);
	tcase_add_test(tc, test_build_many);
	tcase_add_test(tc, test_snapshot_is_stable);
	tcase_add_test(tc, test_ref_unref);
	tcase_add_test(tc, test_project_without_devices);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(registry_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
