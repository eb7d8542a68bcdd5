/*
 * Unit tests of the store: open and migrations, the psk.json sync, the
 * device walk and the write queue, project settings, trust files, the
 * CLI's edits with the registry serial, and certificate provisioning. Each test works in its own
 * temporary directory; the database is also read and written with plain sqlite3 on the same path,
 * as the CLI would.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <glob.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "devgate/data.h"
#include "devgate/store.h"

static char tmp[1024];
static char dbpath[PATH_MAX];
static char err[512];

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
	snprintf(base, sizeof(base), "%s/check_store.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(base));
}

static void
base_teardown(void)
{
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
setup(void)
{
	snprintf(tmp, sizeof(tmp), "%s/t.XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(dbpath, sizeof(dbpath), "%s/var/lib/devgate/devgate.db", tmp);
	err[0] = '\0';
}

static void
teardown(void)
{
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Opens the store at dbpath or fails the test with its reason. */
static dg_store *
open_store(int flags)
{
	dg_store *st = NULL;
	int rc = dg_store_open(dbpath, flags, &st, err, sizeof(err));

	ck_assert_msg(rc == 0, "dg_store_open: %d: %s", rc, err);
	ck_assert_ptr_nonnull(st);
	return st;
}

/* Runs one statement on a separate plain connection; returns the first column of the first row. */
static long long
sql1(const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	long long v = -1;
	int rc;

	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK, "%s: %s", sql,
	              sqlite3_errmsg(db));
	rc = sqlite3_step(s);
	ck_assert_msg(rc == SQLITE_ROW || rc == SQLITE_DONE, "%s: %s", sql, sqlite3_errmsg(db));
	if (rc == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static int
count_migrations(void)
{
	glob_t g;
	int n;

	/* The tests run from the top of the tree, as make and scripts/run-tests.sh do. */
	if (glob("sql/*.sql", 0, NULL, &g) != 0)
		return 0;
	n = (int)g.gl_pathc;
	globfree(&g);
	return n;
}

/* What dg_store_each_psk() and dg_store_each_device() report, copied out. */
typedef struct psk_copy {
	int64_t project_id, device_id;
	char slug[64], device[130], identity[130];
	uint8_t key[64];
	size_t key_len;
	int project_enabled, device_blocked;
} psk_copy;

typedef struct dev_copy {
	int64_t id;
	char project[64], name[160], cert[130];
	int has_cert;
	int blocked;
	int64_t created_at, last_seen;
} dev_copy;

typedef struct walk {
	psk_copy psk[32];
	dev_copy dev[32];
	size_t n;
	size_t stop_after; /* 0: never stop. */
} walk;

static void
copy_str(char *dst, size_t cap, const char *s)
{
	ck_assert_ptr_nonnull(s);
	ck_assert_uint_lt(strlen(s), cap);
	memcpy(dst, s, strlen(s) + 1);
}

static int
psk_cb(void *arg, const dg_psk_row *row)
{
	walk *w = arg;
	psk_copy *c;

	ck_assert_uint_lt(w->n, 32);
	c = &w->psk[w->n++];
	c->project_id = row->project_id;
	c->device_id = row->device_id;
	copy_str(c->slug, sizeof(c->slug), row->slug);
	copy_str(c->device, sizeof(c->device), row->device);
	copy_str(c->identity, sizeof(c->identity), row->identity);
	ck_assert_uint_le(row->key_len, sizeof(c->key));
	memcpy(c->key, row->key, row->key_len);
	c->key_len = row->key_len;
	c->project_enabled = row->project_enabled;
	c->device_blocked = row->device_blocked;
	return w->stop_after != 0 && w->n == w->stop_after ? 77 : 0;
}

static int
dev_cb(void *arg, const dg_device_row *row)
{
	walk *w = arg;
	dev_copy *d;

	ck_assert_uint_lt(w->n, 32);
	d = &w->dev[w->n++];
	d->id = row->id;
	copy_str(d->project, sizeof(d->project), row->project);
	copy_str(d->name, sizeof(d->name), row->name);
	d->has_cert = row->certificate_id != NULL;
	if (d->has_cert)
		copy_str(d->cert, sizeof(d->cert), row->certificate_id);
	else
		d->cert[0] = '\0';
	d->blocked = row->blocked;
	d->created_at = row->created_at;
	d->last_seen = row->last_seen;
	return w->stop_after != 0 && w->n == w->stop_after ? -ECANCELED : 0;
}

static void
walk_psk(dg_store *st, walk *w)
{
	memset(w, 0, sizeof(*w));
	ck_assert_int_eq(dg_store_each_psk(st, psk_cb, w), 0);
}

static void
walk_dev(dg_store *st, walk *w)
{
	memset(w, 0, sizeof(*w));
	ck_assert_int_eq(dg_store_each_device(st, dev_cb, w), 0);
}

static const psk_copy *
find_psk(const walk *w, const char *identity)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->psk[i].identity, identity) == 0)
			return &w->psk[i];
	return NULL;
}

static const dev_copy *
find_dev(const walk *w, const char *project, const char *name)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->dev[i].project, project) == 0 && strcmp(w->dev[i].name, name) == 0)
			return &w->dev[i];
	return NULL;
}

#define E(id, dev, key)                                                                            \
	{                                                                                          \
		(id), (dev), (const uint8_t *)(key), sizeof(key) - 1                               \
	}

START_TEST(test_open_creates_dir_and_migrates)
{
	struct stat sb;
	char parent[PATH_MAX];
	int n = count_migrations();
	dg_store *st;

	ck_assert_msg(n >= 1, "no sql/*.sql found from %s", getcwd(parent, sizeof(parent)));
	snprintf(parent, sizeof(parent), "%s/var/lib/devgate", tmp);
	ck_assert_int_eq(stat(parent, &sb), -1);
	st = open_store(0);
	ck_assert_int_eq(stat(parent, &sb), 0);
	ck_assert(S_ISDIR(sb.st_mode));
	ck_assert_int_eq(stat(dbpath, &sb), 0);
	ck_assert(S_ISREG(sb.st_mode));
	ck_assert_int_eq(dg_store_schema_version(st), n);
	dg_store_close(st);
	ck_assert_int_eq(sql1("PRAGMA user_version"), n);
	/* The schema is there. */
	ck_assert_int_eq(sql1("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
	                      " ('projects', 'devices', 'credentials')"),
	                 3);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 0);

	/* Reopening keeps the version and the data, with and without the writer. */
	st = open_store(0);
	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	ck_assert_int_eq(dg_store_schema_version(st), n);
	dg_store_close(st);
	st = open_store(DG_STORE_WRITER);
	ck_assert_int_eq(dg_store_schema_version(st), n);
	dg_store_close(st);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects WHERE slug = 'acme'"), 1);
	ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(test_open_upgrades)
{
	/* A database left at version 1 by an older devgate is migrated, its rows kept. */
	char dir[PATH_MAX], *text;
	FILE *f;
	long len;
	sqlite3 *db;
	dg_store *st;
	int n = count_migrations();

	ck_assert_int_ge(n, 1);
	f = fopen("sql/001_core.sql", "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	ck_assert_int_gt(len, 0);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	snprintf(dir, sizeof(dir), "%s/var", tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/var/lib", tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/var/lib/devgate", tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, text, NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db,
	                              "INSERT INTO projects (slug, name, created_at)"
	                              " VALUES ('old', 'old', 1); PRAGMA user_version = 1",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	free(text);

	st = open_store(0);
	ck_assert_int_eq(dg_store_schema_version(st), n);
	ck_assert_int_eq(dg_store_ensure_project(st, "old"), 0);
	dg_store_close(st);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 1);
	ck_assert_int_eq(sql1("SELECT created_at FROM projects WHERE slug = 'old'"), 1);
}
END_TEST

START_TEST(test_open_newer_schema)
{
	dg_store *st = open_store(0), *st2 = (dg_store *)&st;
	int n = dg_store_schema_version(st);
	char pragma[64];

	dg_store_close(st);
	snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", n + 1);
	sql1(pragma);
	ck_assert_int_eq(dg_store_open(dbpath, 0, &st2, err, sizeof(err)), -EPROTO);
	ck_assert_ptr_nonnull(strstr(err, "newer"));
	/* *out is left alone on failure. */
	ck_assert_ptr_eq(st2, (dg_store *)&st);
}
END_TEST

START_TEST(test_open_fails)
{
	dg_store *st = NULL;
	char file[PATH_MAX];
	FILE *f;

	/* A parent "directory" that is a regular file. */
	snprintf(file, sizeof(file), "%s/plain", tmp);
	f = fopen(file, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	snprintf(dbpath, sizeof(dbpath), "%s/plain/sub/devgate.db", tmp);
	ck_assert_int_lt(dg_store_open(dbpath, 0, &st, err, sizeof(err)), 0);
	ck_assert_ptr_null(st);
	ck_assert_ptr_nonnull(strstr(err, dbpath));

	/* A database path that is a directory. */
	snprintf(dbpath, sizeof(dbpath), "%s", tmp);
	err[0] = '\0';
	ck_assert_int_lt(dg_store_open(dbpath, 0, &st, err, sizeof(err)), 0);
	ck_assert_ptr_null(st);
	ck_assert_str_ne(err, "");
	dg_store_close(NULL);
}
END_TEST

START_TEST(test_sync_creates)
{
	dg_store *st = open_store(0);
	dg_psk_entry e[] = {
	        E("s1@acme", "sensor-1", "secret-one"),
	        E("s2@acme", "sensor-2", "secret-two"),
	        E("s1b@acme", "sensor-1", "\x01\x02\x00\x03"),
	};
	walk w;
	const psk_copy *p;
	int64_t before = dg_now_ms();

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 3), 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 2);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials WHERE source = 'file'"), 3);

	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 3);
	/* Ordered by identity. */
	ck_assert_str_eq(w.psk[0].identity, "s1@acme");
	ck_assert_str_eq(w.psk[1].identity, "s1b@acme");
	ck_assert_str_eq(w.psk[2].identity, "s2@acme");
	p = find_psk(&w, "s1@acme");
	ck_assert_str_eq(p->slug, "acme");
	ck_assert_str_eq(p->device, "sensor-1");
	ck_assert_uint_eq(p->key_len, 10);
	ck_assert_mem_eq(p->key, "secret-one", 10);
	ck_assert_int_eq(p->project_enabled, 1);
	ck_assert_int_eq(p->device_blocked, 0);
	/* Binary keys keep their NUL bytes. */
	p = find_psk(&w, "s1b@acme");
	ck_assert_uint_eq(p->key_len, 4);
	ck_assert_mem_eq(p->key, "\x01\x02\x00\x03", 4);
	/* Two credentials of one device share its id; the other device has its own. */
	ck_assert_int_eq(find_psk(&w, "s1@acme")->device_id, find_psk(&w, "s1b@acme")->device_id);
	ck_assert_int_ne(find_psk(&w, "s1@acme")->device_id, find_psk(&w, "s2@acme")->device_id);
	ck_assert_int_eq(find_psk(&w, "s1@acme")->project_id, find_psk(&w, "s2@acme")->project_id);

	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_ge(w.dev[0].created_at, before - 1000);
	ck_assert_int_le(w.dev[0].created_at, dg_now_ms() + 1000);

	/* The same sync again changes nothing. */
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 3), 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 2);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials"), 3);
	dg_store_close(st);
}
END_TEST

START_TEST(test_sync_drops_and_updates)
{
	dg_store *st = open_store(0);
	dg_psk_entry first[] = {
	        E("s1@acme", "sensor-1", "k1"),
	        E("s2@acme", "sensor-2", "k2"),
	        E("s3@acme", "sensor-3", "k3"),
	};
	dg_psk_entry second[] = {
	        E("s2@acme", "sensor-2", "k2-rotated"),
	};
	walk w;
	int64_t dev2;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", first, 3), 0);
	walk_psk(st, &w);
	dev2 = find_psk(&w, "s2@acme")->device_id;
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", second, 1), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_str_eq(w.psk[0].identity, "s2@acme");
	ck_assert_uint_eq(w.psk[0].key_len, strlen("k2-rotated"));
	ck_assert_mem_eq(w.psk[0].key, "k2-rotated", strlen("k2-rotated"));
	ck_assert_int_eq(w.psk[0].device_id, dev2);
	/* The devices of the dropped credentials stay. */
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 3);
	ck_assert_ptr_nonnull(find_dev(&w, "acme", "sensor-1"));
	ck_assert_ptr_nonnull(find_dev(&w, "acme", "sensor-3"));

	/* An empty file drops every file credential. */
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", NULL, 0), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 3);
	dg_store_close(st);
}
END_TEST

START_TEST(test_sync_moves_identity_to_other_device)
{
	dg_store *st = open_store(0);
	dg_psk_entry a[] = {E("s1@acme", "old-device", "k")};
	dg_psk_entry b[] = {E("s1@acme", "new-device", "k")};
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", a, 1), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", b, 1), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_str_eq(w.psk[0].device, "new-device");
	dg_store_close(st);
}
END_TEST

START_TEST(test_sync_keeps_other_projects)
{
	dg_store *st = open_store(0);
	dg_psk_entry a[] = {E("s1@acme", "d", "ka")};
	dg_psk_entry b[] = {E("s1@beta", "d", "kb"), E("s2@beta", "e", "kb2")};
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", a, 1), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "beta", b, 2), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", NULL, 0), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_str_eq(w.psk[0].identity, "s1@beta");
	ck_assert_str_eq(w.psk[0].slug, "beta");
	ck_assert_str_eq(w.psk[1].identity, "s2@beta");
	/* Same device name in two projects: two devices. */
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 3);
	ck_assert_int_ne(find_dev(&w, "acme", "d")->id, find_dev(&w, "beta", "d")->id);
	dg_store_close(st);
}
END_TEST

START_TEST(test_cli_credentials_survive)
{
	dg_store *st = open_store(0);
	dg_psk_entry a[] = {E("s1@acme", "sensor-1", "file-key")};
	dg_psk_entry b[] = {E("s2@acme", "sensor-2", "file-key-2"),
	                    E("cli-1@acme", "sensor-2", "file-tries-to-take-it")};
	walk w;
	const psk_copy *p;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", a, 1), 0);
	/* What `devgate psk add` would do: a credential with source 'cli' on the same device. */
	sql1("INSERT INTO credentials (device_id, identity, psk, source, created_at)"
	     " SELECT id, 'cli-1@acme', x'c0ffee', 'cli', 1 FROM devices WHERE name = 'sensor-1'");
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials WHERE source = 'cli'"), 1);

	/* A sync that no longer lists s1, nor ever listed cli-1: only s1 goes. */
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", NULL, 0), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_str_eq(w.psk[0].identity, "cli-1@acme");
	ck_assert_uint_eq(w.psk[0].key_len, 3);
	ck_assert_mem_eq(w.psk[0].key, "\xc0\xff\xee", 3);

	/* A file naming the CLI's identity does not take it over. */
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", b, 2), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 2);
	p = find_psk(&w, "cli-1@acme");
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(p->device, "sensor-1");
	ck_assert_mem_eq(p->key, "\xc0\xff\xee", 3);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials WHERE source = 'cli'"), 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials WHERE source = 'file'"), 1);
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", NULL, 0), 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials WHERE source = 'cli'"), 1);
	dg_store_close(st);
}
END_TEST

START_TEST(test_ensure_project)
{
	dg_store *st = open_store(0);

	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	ck_assert_int_eq(dg_store_ensure_project(st, "beta"), 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 2);
	ck_assert_int_eq(sql1("SELECT enabled FROM projects WHERE slug = 'acme'"), 1);
	dg_store_close(st);
}
END_TEST

START_TEST(test_each_device_order_and_fields)
{
	dg_store *st = open_store(0);
	dg_psk_entry z[] = {E("1@zeta", "b", "k"), E("2@zeta", "a", "k")};
	dg_psk_entry a[] = {E("3@acme", "mid", "k"), E("4@acme", "Zed", "k"),
	                    E("5@acme", "alpha", "k")};
	static const char *const want[][2] = {
	        {"acme", "Zed"}, {"acme", "alpha"}, {"acme", "mid"}, {"zeta", "a"}, {"zeta", "b"},
	};
	walk w;
	int64_t before = dg_now_ms();

	ck_assert_int_eq(dg_store_sync_psk(st, "zeta", z, 2), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", a, 3), 0);
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 5);
	for (size_t i = 0; i < 5; i++) {
		ck_assert_str_eq(w.dev[i].project, want[i][0]);
		ck_assert_str_eq(w.dev[i].name, want[i][1]);
		ck_assert_int_eq(w.dev[i].has_cert, 0);
		ck_assert_int_eq(w.dev[i].blocked, 0);
		ck_assert_int_eq(w.dev[i].last_seen, -1);
		ck_assert_int_ge(w.dev[i].created_at, before - 1000);
		ck_assert_int_gt(w.dev[i].id, 0);
	}

	/* Fields the CLI sets show through. */
	sql1("UPDATE devices SET certificate_id = 'cert-1', blocked = 1 WHERE name = 'mid'");
	walk_dev(st, &w);
	ck_assert_int_eq(find_dev(&w, "acme", "mid")->has_cert, 1);
	ck_assert_int_eq(find_dev(&w, "acme", "mid")->blocked, 1);
	ck_assert_int_eq(find_dev(&w, "acme", "alpha")->has_cert, 0);
	walk_psk(st, &w);
	ck_assert_int_eq(find_psk(&w, "3@acme")->device_blocked, 1);
	ck_assert_int_eq(find_psk(&w, "4@acme")->device_blocked, 0);
	sql1("UPDATE projects SET enabled = 0 WHERE slug = 'zeta'");
	walk_psk(st, &w);
	ck_assert_int_eq(find_psk(&w, "1@zeta")->project_enabled, 0);
	ck_assert_int_eq(find_psk(&w, "3@acme")->project_enabled, 1);
	dg_store_close(st);
}
END_TEST

START_TEST(test_each_stops_on_nonzero)
{
	dg_store *st = open_store(0);
	dg_psk_entry e[] = {E("a@acme", "a", "k"), E("b@acme", "b", "k"), E("c@acme", "c", "k")};
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 3), 0);
	memset(&w, 0, sizeof(w));
	w.stop_after = 2;
	ck_assert_int_eq(dg_store_each_psk(st, psk_cb, &w), 77);
	ck_assert_uint_eq(w.n, 2);
	memset(&w, 0, sizeof(w));
	w.stop_after = 1;
	ck_assert_int_eq(dg_store_each_device(st, dev_cb, &w), -ECANCELED);
	ck_assert_uint_eq(w.n, 1);
	/* An empty walk calls nothing. */
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", NULL, 0), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 0);
	dg_store_close(st);
}
END_TEST

START_TEST(test_touch_and_flush)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	dg_psk_entry e[] = {E("a@acme", "a", "k"), E("b@acme", "b", "k")};
	walk w;
	int64_t ida, idb;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 2), 0);
	walk_dev(st, &w);
	ida = find_dev(&w, "acme", "a")->id;
	idb = find_dev(&w, "acme", "b")->id;
	ck_assert_int_eq(find_dev(&w, "acme", "a")->last_seen, -1);

	ck_assert_int_eq(dg_store_touch_device(st, ida, 1700000000123), 0);
	ck_assert_int_eq(dg_store_flush(st), 0);
	walk_dev(st, &w);
	ck_assert_int_eq(find_dev(&w, "acme", "a")->last_seen, 1700000000123);
	ck_assert_int_eq(find_dev(&w, "acme", "b")->last_seen, -1);

	/* last_seen never goes back; the latest of a batch wins. */
	ck_assert_int_eq(dg_store_touch_device(st, ida, 1600000000000), 0);
	ck_assert_int_eq(dg_store_touch_device(st, idb, 5), 0);
	ck_assert_int_eq(dg_store_touch_device(st, idb, 7), 0);
	ck_assert_int_eq(dg_store_touch_device(st, idb, 6), 0);
	/* An unknown device is not an error. */
	ck_assert_int_eq(dg_store_touch_device(st, 999999, 1), 0);
	ck_assert_int_eq(dg_store_flush(st), 0);
	walk_dev(st, &w);
	ck_assert_int_eq(find_dev(&w, "acme", "a")->last_seen, 1700000000123);
	ck_assert_int_eq(find_dev(&w, "acme", "b")->last_seen, 7);
	/* A flush with nothing queued returns at once. */
	ck_assert_int_eq(dg_store_flush(st), 0);
	dg_store_close(st);
}
END_TEST

START_TEST(test_close_flushes)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	dg_psk_entry e[] = {E("a@acme", "a", "k")};
	walk w;
	int64_t id;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 1), 0);
	walk_dev(st, &w);
	id = w.dev[0].id;
	for (int i = 1; i <= 100; i++)
		ck_assert_int_eq(dg_store_touch_device(st, id, 1000 + i), 0);
	dg_store_close(st);
	ck_assert_int_eq(sql1("SELECT last_seen FROM devices WHERE name = 'a'"), 1100);
}
END_TEST

START_TEST(test_touch_without_writer)
{
	dg_store *st = open_store(0);
	dg_psk_entry e[] = {E("a@acme", "a", "k")};
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 1), 0);
	walk_dev(st, &w);
	ck_assert_int_eq(dg_store_touch_device(st, w.dev[0].id, 12345), -EPIPE);
	ck_assert_int_eq(dg_store_flush(st), 0);
	walk_dev(st, &w);
	ck_assert_int_eq(w.dev[0].last_seen, -1);
	dg_store_close(st);
}
END_TEST

typedef struct toucher {
	dg_store *st;
	int64_t ids[4];
	int base;
} toucher;

static void *
touch_thread(void *arg)
{
	toucher *t = arg;

	for (int i = 0; i < 2000; i++)
		if (dg_store_touch_device(t->st, t->ids[i % 4], t->base + i) != 0)
			return (void *)1;
	return NULL;
}

START_TEST(test_touch_from_threads)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	dg_psk_entry e[] = {E("a@acme", "a", "k"), E("b@acme", "b", "k"), E("c@acme", "c", "k"),
	                    E("d@acme", "d", "k")};
	toucher t[4];
	pthread_t th[4];
	walk w;
	void *ret;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 4), 0);
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 4);
	for (int i = 0; i < 4; i++) {
		t[i].st = st;
		for (int j = 0; j < 4; j++)
			t[i].ids[j] = w.dev[j].id;
		t[i].base = 10000 * (i + 1);
		ck_assert_int_eq(pthread_create(&th[i], NULL, touch_thread, &t[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], &ret), 0);
		ck_assert_ptr_null(ret);
	}
	ck_assert_int_eq(dg_store_flush(st), 0);
	walk_dev(st, &w);
	/* The largest value each device got: thread 4's base + its last index for that device. */
	for (int j = 0; j < 4; j++)
		ck_assert_int_eq(w.dev[j].last_seen, 40000 + 1996 + j);
	dg_store_close(st);
}
END_TEST

/* A job that holds the writer until the test writes a byte into its pipe. */
typedef struct gate {
	int fds[2];
	int started[2];
	int done_calls;
	int done_rc;
} gate;

static int
gate_run(sqlite3 *db, void *arg)
{
	gate *g = arg;
	char c = 0;
	(void)db;
	ck_assert_int_eq(write(g->started[1], "s", 1), 1);
	ck_assert_int_eq(read(g->fds[0], &c, 1), 1);
	return 0;
}

static int
nop_run(sqlite3 *db, void *arg)
{
	(void)db;
	(void)arg;
	return 0;
}

static void
count_done(void *arg, int rc)
{
	gate *g = arg;
	g->done_calls++;
	g->done_rc = rc;
}

static void
ignore_prov(void *arg, const dg_provision_result *res)
{
	(void)arg;
	(void)res;
}

START_TEST(test_write_queue_bound)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	gate g = {0};
	char c;

	ck_assert_int_eq(pipe(g.fds), 0);
	ck_assert_int_eq(pipe(g.started), 0);
	dg_store_set_max_queue(st, 3);
	/* The first job is taken by the writer and holds it: it still counts. */
	ck_assert_int_eq(dg_store_job(st, gate_run, count_done, &g), 0);
	ck_assert_int_eq(read(g.started[0], &c, 1), 1);
	ck_assert_int_eq(dg_store_job(st, nop_run, count_done, &g), 0);
	ck_assert_int_eq(dg_store_job(st, nop_run, count_done, &g), 0);
	ck_assert_uint_eq(dg_store_queue_depth(st), 3);
	/* Full: every kind of write is refused, and no callback runs for it. */
	ck_assert_int_eq(dg_store_job(st, nop_run, count_done, &g), -EAGAIN);
	ck_assert_int_eq(dg_store_provision_async(st, 1, "x", ignore_prov, NULL), -EAGAIN);
	ck_assert_uint_eq(dg_store_queue_depth(st), 3);
	/* last_seen updates have a bound of their own: still taken, not counted here. */
	ck_assert_int_eq(dg_store_touch_device(st, 1, 2), 0);
	ck_assert_uint_eq(dg_store_queue_depth(st), 3);
	/* A larger bound, set live, takes more at once. */
	dg_store_set_max_queue(st, 4);
	ck_assert_int_eq(dg_store_job(st, nop_run, count_done, &g), 0);
	ck_assert_int_eq(dg_store_job(st, nop_run, count_done, &g), -EAGAIN);
	/* Once the writer catches up the queue takes writes again. */
	ck_assert_int_eq(write(g.fds[1], "g", 1), 1);
	ck_assert_int_eq(dg_store_flush(st), 0);
	ck_assert_int_eq(g.done_calls, 4);
	ck_assert_uint_eq(dg_store_queue_depth(st), 0);
	ck_assert_int_eq(dg_store_job(st, nop_run, count_done, &g), 0);
	ck_assert_int_eq(dg_store_flush(st), 0);
	ck_assert_int_eq(g.done_calls, 5);
	dg_store_close(st);
	close(g.fds[0]);
	close(g.fds[1]);
	close(g.started[0]);
	close(g.started[1]);
}
END_TEST

/* --- group commit, the statement cache, coalesced last_seen, the reader --- */

/* One job of a group-commit test: inserts its number into gc, or fails after doing so. */
typedef struct gc_job {
	int n;
	int fail;     /* Return -EINVAL after the insert. */
	int orphan;   /* Insert a row that breaks a deferred foreign key (COMMIT fails). */
	int done;     /* Calls of done. */
	int rc;       /* What done got. */
	int seen_all; /* In done: rows of the batch visible to another connection. */
	int total;    /* Rows the batch commits, for seen_all. */
} gc_job;

static int
gc_run(sqlite3 *db, void *arg)
{
	gc_job *j = arg;
	char q[128];
	snprintf(q, sizeof(q), "INSERT INTO gc (n) VALUES (%d)", j->n);
	if (sqlite3_exec(db, q, NULL, NULL, NULL) != SQLITE_OK)
		return -EIO;
	if (j->orphan && sqlite3_exec(db, "INSERT INTO gc_child (p) VALUES (999999)", NULL, NULL,
	                              NULL) != SQLITE_OK)
		return -EIO;
	return j->fail ? -EINVAL : 0;
}

static void
count_only(void *arg, int rc)
{
	gc_job *j = arg;
	(void)rc;
	__atomic_add_fetch(&j->done, 1, __ATOMIC_SEQ_CST);
}

static void
gc_done(void *arg, int rc)
{
	gc_job *j = arg;
	j->done++;
	j->rc = rc;
	/* Another connection sees only what is committed: the whole batch, already. */
	j->seen_all = (int)sql1("SELECT COUNT(*) FROM gc");
}

static void
make_gc_tables(void)
{
	sql1("CREATE TABLE gc (n INTEGER)");
	sql1("CREATE TABLE gc_child (p INTEGER REFERENCES devices(id) DEFERRABLE INITIALLY "
	     "DEFERRED)");
}

START_TEST(test_group_commit_savepoints)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	gate g = {0};
	gc_job j[6];
	char c;

	make_gc_tables();
	ck_assert_int_eq(pipe(g.fds), 0);
	ck_assert_int_eq(pipe(g.started), 0);
	/* Hold the writer, so that the six jobs queue up and make one batch. */
	ck_assert_int_eq(dg_store_job(st, gate_run, count_done, &g), 0);
	ck_assert_int_eq(read(g.started[0], &c, 1), 1);
	for (int i = 0; i < 6; i++) {
		j[i] = (gc_job){.n = i, .fail = i == 2};
		ck_assert_int_eq(dg_store_job(st, gc_run, gc_done, &j[i]), 0);
	}
	ck_assert_int_eq(write(g.fds[1], "g", 1), 1);
	ck_assert_int_eq(dg_store_flush(st), 0);
	/* The failing job rolled back to its savepoint alone; the others committed. */
	ck_assert_int_eq(sql1("SELECT COUNT(*) FROM gc"), 5);
	ck_assert_int_eq(sql1("SELECT COUNT(*) FROM gc WHERE n = 2"), 0);
	for (int i = 0; i < 6; i++) {
		ck_assert_int_eq(j[i].done, 1);
		ck_assert_int_eq(j[i].rc, i == 2 ? -EINVAL : 0);
		/* Acknowledged after the one COMMIT: even the first saw the last job's row. */
		ck_assert_int_eq(j[i].seen_all, 5);
	}
	dg_store_close(st);
	close(g.fds[0]);
	close(g.fds[1]);
	close(g.started[0]);
	close(g.started[1]);
}
END_TEST

START_TEST(test_group_commit_failed_commit)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	gate g = {0};
	gc_job j[4];
	char c;

	make_gc_tables();
	ck_assert_int_eq(pipe(g.fds), 0);
	ck_assert_int_eq(pipe(g.started), 0);
	ck_assert_int_eq(dg_store_job(st, gate_run, count_done, &g), 0);
	ck_assert_int_eq(read(g.started[0], &c, 1), 1);
	/* Job 1 breaks a deferred foreign key: its savepoint is released, the COMMIT fails. */
	for (int i = 0; i < 4; i++) {
		j[i] = (gc_job){.n = i, .orphan = i == 1};
		ck_assert_int_eq(dg_store_job(st, gc_run, gc_done, &j[i]), 0);
	}
	ck_assert_int_eq(write(g.fds[1], "g", 1), 1);
	ck_assert_int_ne(dg_store_flush(st), 0);
	ck_assert_int_eq(sql1("SELECT COUNT(*) FROM gc"), 0);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(j[i].done, 1);
		ck_assert_int_eq(j[i].rc, -EEXIST); /* SQLITE_CONSTRAINT, for every job. */
		ck_assert_int_eq(j[i].seen_all, 0);
	}
	/* The writer goes on: the next batch commits. */
	gc_job k = {.n = 9};
	ck_assert_int_eq(dg_store_job(st, gc_run, gc_done, &k), 0);
	dg_store_flush(st);
	ck_assert_int_eq(k.done, 1);
	ck_assert_int_eq(k.rc, 0);
	ck_assert_int_eq(sql1("SELECT COUNT(*) FROM gc"), 1);
	dg_store_close(st);
	close(g.fds[0]);
	close(g.fds[1]);
	close(g.started[0]);
	close(g.started[1]);
}
END_TEST

START_TEST(test_group_commit_many)
{
	/* More jobs than one transaction takes: all committed and acknowledged once. */
	dg_store *st = open_store(DG_STORE_WRITER);
	enum { N = 5000 };
	gc_job *j = calloc(N, sizeof(*j));

	ck_assert_ptr_nonnull(j);
	make_gc_tables();
	dg_store_set_max_queue(st, N);
	for (int i = 0; i < N; i++) {
		j[i].n = i;
		ck_assert_int_eq(dg_store_job(st, gc_run, count_only, &j[i]), 0);
	}
	ck_assert_int_eq(dg_store_flush(st), 0);
	ck_assert_int_eq(sql1("SELECT COUNT(*) FROM gc"), N);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(j[i].done, 1);
	dg_store_close(st);
	free(j);
}
END_TEST

START_TEST(test_stmt_cache)
{
	dg_store *st = open_store(0);
	sqlite3 *db = dg_store_reader(st);
	const char *q = "SELECT id FROM projects WHERE slug = ?1";

	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	sqlite3_stmt *a = dg_store_stmt(db, q);
	ck_assert_ptr_nonnull(a);
	sqlite3_bind_text(a, 1, "acme", -1, SQLITE_STATIC);
	ck_assert_int_eq(sqlite3_step(a), SQLITE_ROW);
	/* In use (stepped, not handed back): a nested use gets a statement of its own. */
	sqlite3_stmt *b = dg_store_stmt(db, q);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(a, b);
	dg_store_stmt_done(b);
	dg_store_stmt_done(a);
	/* Handed back: the same text gets one of those again, bindings cleared. */
	sqlite3_stmt *again = dg_store_stmt(db, q);
	ck_assert(again == a || again == b);
	a = again;
	ck_assert_int_eq(sqlite3_step(a), SQLITE_DONE); /* NULL slug: no row. */
	dg_store_stmt_done(a);
	/* Another text, another statement; a bad one is NULL. */
	sqlite3_stmt *c = dg_store_stmt(db, "SELECT 1");
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_ne(c, a);
	ck_assert_ptr_null(dg_store_stmt(db, "SELEKT nothing"));
	/* The jobs of data.c reuse theirs: a thousand state reads prepare one statement. */
	int before = 0, after = 0;
	for (sqlite3_stmt *s = NULL; (s = sqlite3_next_stmt(db, s)) != NULL;)
		before++;
	for (int i = 0; i < 1000; i++) {
		dg_state_read r = {.device_id = 1};
		ck_assert_int_eq(dg_data_state_read(db, &r), 0);
		ck_assert_str_eq(r.doc, "");
		free(r.doc);
	}
	for (sqlite3_stmt *s = NULL; (s = sqlite3_next_stmt(db, s)) != NULL;)
		after++;
	ck_assert_int_eq(after, before + 1);
	/* Closing finalizes what the cache holds. */
	dg_store_close(st);
}
END_TEST

/* Waits until the writer has applied what was queued, without forcing coalesced values out. */
static void
writer_sync(dg_store *st)
{
	gc_job j = {0};
	ck_assert_int_eq(dg_store_job(st, nop_run, count_only, &j), 0);
	for (int i = 0; i < 400 && __atomic_load_n(&j.done, __ATOMIC_SEQ_CST) == 0; i++)
		usleep(5000);
	ck_assert_int_eq(__atomic_load_n(&j.done, __ATOMIC_SEQ_CST), 1);
}

/* A last_seen update alone never wakes the writer, and is written by its sweep all the same. */
START_TEST(test_touch_alone)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	dg_psk_entry e[] = {E("a@acme", "a", "k"), E("b@acme", "b", "k")};
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 2), 0);
	walk_dev(st, &w);
	ck_assert_int_eq(dg_store_touch_device(st, w.dev[0].id, 700), 0);
	ck_assert_int_eq(dg_store_touch_device(st, w.dev[1].id, 800), 0);
	long long a = -2, b = -2;
	for (int i = 0; i < 60 && (a != 700 || b != 800); i++) {
		usleep(50000);
		a = sql1("SELECT last_seen FROM devices WHERE name = 'a'");
		b = sql1("SELECT last_seen FROM devices WHERE name = 'b'");
	}
	ck_assert_int_eq(a, 700);
	ck_assert_int_eq(b, 800);
	dg_store_close(st);
}
END_TEST

START_TEST(test_touch_coalesced)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	dg_psk_entry e[] = {E("a@acme", "a", "k")};
	walk w;
	int64_t id;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 1), 0);
	walk_dev(st, &w);
	id = w.dev[0].id;
	/* The first value of a device goes with the writer's next batch (or its sweep). */
	ck_assert_int_eq(dg_store_touch_device(st, id, 100), 0);
	writer_sync(st);
	ck_assert_int_eq(sql1("SELECT last_seen FROM devices WHERE name = 'a'"), 100);
	/* Within the interval (default a minute) the next ones wait, coalesced. */
	for (int i = 1; i <= 50; i++)
		ck_assert_int_eq(dg_store_touch_device(st, id, 100 + i), 0);
	writer_sync(st);
	ck_assert_int_eq(sql1("SELECT last_seen FROM devices WHERE name = 'a'"), 100);
	/* A flush writes the last one. */
	ck_assert_int_eq(dg_store_flush(st), 0);
	ck_assert_int_eq(sql1("SELECT last_seen FROM devices WHERE name = 'a'"), 150);
	/* With a short interval, a waiting value is written by the sweep, without a flush. */
	dg_store_set_touch_interval(st, 200);
	usleep(250000);
	ck_assert_int_eq(dg_store_touch_device(st, id, 200), 0);
	ck_assert_int_eq(dg_store_touch_device(st, id, 300), 0);
	writer_sync(st);
	long long v = sql1("SELECT last_seen FROM devices WHERE name = 'a'");
	ck_assert(v == 200 || v == 300);
	for (int i = 0; i < 60 && v != 300; i++) {
		usleep(50000);
		v = sql1("SELECT last_seen FROM devices WHERE name = 'a'");
	}
	ck_assert_int_eq(v, 300);
	/* A value waiting at close is written by the close. */
	dg_store_set_touch_interval(st, 60000);
	ck_assert_int_eq(dg_store_touch_device(st, id, 400), 0);
	ck_assert_int_eq(dg_store_touch_device(st, id, 500), 0);
	dg_store_close(st);
	ck_assert_int_eq(sql1("SELECT last_seen FROM devices WHERE name = 'a'"), 500);
}
END_TEST

typedef struct read_ctx {
	dg_state_read r;
	pthread_t thread;
	int done;
	int rc;
} read_ctx;

static int
read_run(sqlite3 *db, void *arg)
{
	read_ctx *c = arg;
	c->thread = pthread_self();
	return dg_data_state_read(db, &c->r);
}

static void
read_done(void *arg, int rc)
{
	read_ctx *c = arg;
	c->rc = rc;
	__atomic_store_n(&c->done, 1, __ATOMIC_SEQ_CST);
}

START_TEST(test_reader_thread)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	dg_psk_entry e[] = {E("a@acme", "a", "k")};
	dg_state_change ch = {.path = strdup("t"), .value = cJSON_CreateNumber(21)};
	read_ctx c = {0};
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 1), 0);
	walk_dev(st, &w);
	ch.device_id = c.r.device_id = w.dev[0].id;
	ck_assert_int_eq(dg_store_run(st, dg_data_state_apply, &ch), 0);
	/* The writer's job hands back the document it stored. */
	ck_assert_str_eq(ch.doc_after, "{\"t\":21}");
	dg_data_state_change_clear(&ch);
	ck_assert_int_eq(dg_store_read(st, read_run, read_done, &c), 0);
	ck_assert_int_eq(dg_store_flush(st), 0); /* Waits for the reads too. */
	ck_assert_int_eq(c.done, 1);
	ck_assert_int_eq(c.rc, 0);
	ck_assert(!pthread_equal(c.thread, pthread_self()));
	ck_assert_str_eq(c.r.doc, "{\"t\":21}");
	free(c.r.doc);
	dg_store_close(st);
	/* Without a writer there is no reader either. */
	st = open_store(0);
	ck_assert_int_eq(dg_store_read(st, read_run, read_done, &c), -EPIPE);
	dg_store_close(st);
}
END_TEST

START_TEST(test_now_ms)
{
	int64_t a = dg_now_ms(), b;

	ck_assert_int_gt(a, 1600000000000); /* After 2020. */
	usleep(20000);
	b = dg_now_ms();
	ck_assert_int_ge(b - a, 15);
	ck_assert_int_lt(b - a, 5000);
}
END_TEST

/* --- projects, trust files, CLI edits and the registry serial --- */

/* The id of project `slug`, read on a plain connection; -1 when there is none. */
static int64_t
pid_of(const char *slug)
{
	char q[256];

	snprintf(q, sizeof(q), "SELECT id FROM projects WHERE slug = '%s'", slug);
	return sql1(q);
}

typedef struct proj_copy {
	int64_t id;
	char slug[64], name[130];
	int enabled, auto_provision;
	int64_t devices;
} proj_copy;

typedef struct pwalk {
	proj_copy p[16];
	size_t n;
	size_t stop_after; /* 0: never stop. */
} pwalk;

static int
proj_cb(void *arg, const dg_project_row *row)
{
	pwalk *w = arg;
	proj_copy *c;

	ck_assert_uint_lt(w->n, 16);
	c = &w->p[w->n++];
	c->id = row->id;
	copy_str(c->slug, sizeof(c->slug), row->slug);
	copy_str(c->name, sizeof(c->name), row->name);
	c->enabled = row->enabled;
	c->auto_provision = row->auto_provision;
	c->devices = row->devices;
	return w->stop_after != 0 && w->n == w->stop_after ? 55 : 0;
}

static void
walk_proj(dg_store *st, pwalk *w)
{
	memset(w, 0, sizeof(*w));
	ck_assert_int_eq(dg_store_each_project(st, proj_cb, w), 0);
}

static const proj_copy *
find_proj(const pwalk *w, const char *slug)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->p[i].slug, slug) == 0)
			return &w->p[i];
	ck_abort_msg("project %s not found", slug);
	return NULL;
}

typedef struct trust_copy {
	int64_t project_id;
	char fingerprint[65], subject[64], source[64];
	int64_t not_before, not_after;
	uint8_t der[64];
	size_t der_len;
} trust_copy;

typedef struct twalk {
	trust_copy t[16];
	size_t n;
} twalk;

static int
ca_cb(void *arg, const dg_ca_row *row)
{
	twalk *w = arg;
	trust_copy *c;

	ck_assert_uint_lt(w->n, 16);
	c = &w->t[w->n++];
	c->project_id = row->project_id;
	copy_str(c->fingerprint, sizeof(c->fingerprint), row->fingerprint);
	copy_str(c->subject, sizeof(c->subject), row->subject);
	copy_str(c->source, sizeof(c->source), row->source);
	c->not_before = row->not_before;
	c->not_after = row->not_after;
	ck_assert_uint_le(row->der_len, sizeof(c->der));
	memcpy(c->der, row->der, row->der_len);
	c->der_len = row->der_len;
	return 0;
}

static int
crl_cb(void *arg, const dg_crl_row *row)
{
	twalk *w = arg;
	trust_copy *c;

	ck_assert_uint_lt(w->n, 16);
	c = &w->t[w->n++];
	memset(c, 0, sizeof(*c));
	c->project_id = row->project_id;
	copy_str(c->source, sizeof(c->source), row->source);
	ck_assert_uint_le(row->der_len, sizeof(c->der));
	memcpy(c->der, row->der, row->der_len);
	c->der_len = row->der_len;
	return 0;
}

static void
walk_cas(dg_store *st, twalk *w)
{
	memset(w, 0, sizeof(*w));
	ck_assert_int_eq(dg_store_each_ca(st, ca_cb, w), 0);
}

static void
walk_crls(dg_store *st, twalk *w)
{
	memset(w, 0, sizeof(*w));
	ck_assert_int_eq(dg_store_each_crl(st, crl_cb, w), 0);
}

/* The CA row of `project_id` with the fingerprint of `digit` repeated, or NULL. */
static const trust_copy *
find_ca(const twalk *w, int64_t project_id, char digit)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->t[i].project_id == project_id && w->t[i].fingerprint[0] == digit)
			return &w->t[i];
	return NULL;
}

static size_t
count_rows(const twalk *w, int64_t project_id)
{
	size_t n = 0;

	for (size_t i = 0; i < w->n; i++)
		n += w->t[i].project_id == project_id;
	return n;
}

/*
 * A stand-in CA: the store keeps what dg_trust_read_cas() read without
 * parsing it, so its DER is the subject's text and its fingerprint
 * `digit` 64 times.
 */
static void
fake_ca(dg_ca_cert *c, char digit, const char *cn)
{
	memset(c, 0, sizeof(*c));
	memset(c->fingerprint, digit, 64);
	c->fingerprint[64] = '\0';
	snprintf(c->subject, sizeof(c->subject), "/CN=%s", cn);
	c->der = (uint8_t *)c->subject;
	c->der_len = strlen(c->subject);
	c->not_before_ms = 1700000000000 + (digit - '0');
	c->not_after_ms = 1800000000000 + (digit - '0');
}

START_TEST(test_set_project)
{
	dg_store *st = open_store(0);
	dg_project_settings ps = {.name = "ACME Inc.", .enabled = 1, .auto_provision = 0};
	dg_psk_entry e[] = {E("a@beta", "a", "k"), E("b@beta", "b", "k")};
	int64_t s0 = dg_store_registry_serial(st), s1, s2, id;
	pwalk w;

	ck_assert_int_ge(s0, 0);
	ck_assert_int_eq(dg_store_set_project(st, "acme", &ps), 0);
	s1 = dg_store_registry_serial(st);
	ck_assert_int_ne(s1, s0);
	walk_proj(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_str_eq(w.p[0].slug, "acme");
	ck_assert_str_eq(w.p[0].name, "ACME Inc.");
	ck_assert_int_eq(w.p[0].enabled, 1);
	ck_assert_int_eq(w.p[0].auto_provision, 0);
	ck_assert_int_eq(w.p[0].devices, 0);
	ck_assert_int_gt(w.p[0].id, 0);
	id = w.p[0].id;

	/* An update keeps the row; no name means the slug. */
	ps = (dg_project_settings){.name = NULL, .enabled = 0, .auto_provision = 1};
	ck_assert_int_eq(dg_store_set_project(st, "acme", &ps), 0);
	s2 = dg_store_registry_serial(st);
	ck_assert_int_ne(s2, s1);
	walk_proj(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_int_eq(w.p[0].id, id);
	ck_assert_str_eq(w.p[0].name, "acme");
	ck_assert_int_eq(w.p[0].enabled, 0);
	ck_assert_int_eq(w.p[0].auto_provision, 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 1);

	/* A project that psk.json made keeps its devices and credentials. */
	ck_assert_int_eq(dg_store_sync_psk(st, "beta", e, 2), 0);
	ps = (dg_project_settings){.name = "Beta", .enabled = 1, .auto_provision = 1};
	ck_assert_int_eq(dg_store_set_project(st, "beta", &ps), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s2);
	walk_proj(st, &w);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_str_eq(find_proj(&w, "beta")->name, "Beta");
	ck_assert_int_eq(find_proj(&w, "beta")->devices, 2);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials"), 2);
	dg_store_close(st);
}
END_TEST

START_TEST(test_disable_missing)
{
	dg_store *st = open_store(0);
	dg_project_settings on = {.name = NULL, .enabled = 1, .auto_provision = 1};
	const char *const present[] = {"acme", "gamma", "zeta"};
	int64_t s0;
	pwalk w;

	ck_assert_int_eq(dg_store_set_project(st, "acme", &on), 0);
	ck_assert_int_eq(dg_store_set_project(st, "beta", &on), 0);
	ck_assert_int_eq(dg_store_set_project(st, "gamma", &on), 0);
	s0 = dg_store_registry_serial(st);

	/* beta's directory is gone; zeta's is there but has no row: none is made. */
	ck_assert_int_eq(dg_store_disable_missing(st, present, 3), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_proj(st, &w);
	ck_assert_uint_eq(w.n, 3);
	ck_assert_int_eq(find_proj(&w, "acme")->enabled, 1);
	ck_assert_int_eq(find_proj(&w, "beta")->enabled, 0);
	ck_assert_int_eq(find_proj(&w, "gamma")->enabled, 1);

	/* Nothing present: everything disabled, nothing deleted. */
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_disable_missing(st, NULL, 0), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_proj(st, &w);
	ck_assert_uint_eq(w.n, 3);
	for (size_t i = 0; i < w.n; i++)
		ck_assert_int_eq(w.p[i].enabled, 0);

	/* A directory that comes back is enabled again by its settings. */
	ck_assert_int_eq(dg_store_set_project(st, "beta", &on), 0);
	walk_proj(st, &w);
	ck_assert_int_eq(find_proj(&w, "beta")->enabled, 1);
	ck_assert_int_eq(find_proj(&w, "acme")->enabled, 0);
	dg_store_close(st);
}
END_TEST

START_TEST(test_sync_trust)
{
	dg_store *st = open_store(0);
	dg_ca_cert root[2], other[1], beta[1];
	static const uint8_t crl1[] = {0, 0, 0, 2, 0x30, 0x00};
	static const uint8_t crl2[] = {0, 0, 0, 3, 0x30, 0x01, 0x05};
	dg_trust_file ca_files[2], crl_files[1], beta_files[1];
	const trust_copy *c;
	int64_t s0, acme, pbeta;
	twalk w;

	fake_ca(&root[0], '1', "Root A");
	fake_ca(&root[1], '2', "Root B");
	fake_ca(&other[0], '3', "Other");
	fake_ca(&beta[0], '1', "Root A"); /* The same CA in another project. */
	ca_files[0] = (dg_trust_file){.source = "cas/root.pem", .ok = 1, .cas = root, .n_cas = 2};
	ca_files[1] = (dg_trust_file){.source = "cas/other.pem", .ok = 1, .cas = other, .n_cas = 1};
	crl_files[0] = (dg_trust_file){
	        .source = "crls/root.pem", .ok = 1, .crl = crl1, .crl_len = sizeof(crl1)};
	beta_files[0] = (dg_trust_file){.source = "cas/a.pem", .ok = 1, .cas = beta, .n_cas = 1};

	/* The project row is made when missing. */
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_sync_trust(st, "acme", ca_files, 2, crl_files, 1), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	acme = pid_of("acme");
	ck_assert_int_gt(acme, 0);
	ck_assert_int_eq(dg_store_sync_trust(st, "beta", beta_files, 1, NULL, 0), 0);
	pbeta = pid_of("beta");
	walk_cas(st, &w);
	ck_assert_uint_eq(w.n, 4);
	ck_assert_uint_eq(count_rows(&w, acme), 3);
	c = find_ca(&w, acme, '1');
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->fingerprint, root[0].fingerprint);
	ck_assert_str_eq(c->subject, "/CN=Root A");
	ck_assert_str_eq(c->source, "cas/root.pem");
	ck_assert_int_eq(c->not_before, 1700000000001);
	ck_assert_int_eq(c->not_after, 1800000000001);
	ck_assert_uint_eq(c->der_len, strlen("/CN=Root A"));
	ck_assert_mem_eq(c->der, "/CN=Root A", c->der_len);
	ck_assert_str_eq(find_ca(&w, acme, '2')->source, "cas/root.pem");
	ck_assert_str_eq(find_ca(&w, acme, '3')->source, "cas/other.pem");
	ck_assert_str_eq(find_ca(&w, pbeta, '1')->source, "cas/a.pem");
	walk_crls(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_int_eq(w.t[0].project_id, acme);
	ck_assert_str_eq(w.t[0].source, "crls/root.pem");
	ck_assert_uint_eq(w.t[0].der_len, sizeof(crl1));
	ck_assert_mem_eq(w.t[0].der, crl1, sizeof(crl1));

	/*
	 * root.pem turned bad: its rows stay. other.pem is gone: its rows go.
	 * The CRL file is bad too: its row stays.
	 */
	ca_files[0] = (dg_trust_file){.source = "cas/root.pem", .ok = 0};
	crl_files[0] = (dg_trust_file){.source = "crls/root.pem", .ok = 0};
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_sync_trust(st, "acme", ca_files, 1, crl_files, 1), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_cas(st, &w);
	ck_assert_uint_eq(count_rows(&w, acme), 2);
	ck_assert_ptr_nonnull(find_ca(&w, acme, '1'));
	ck_assert_ptr_nonnull(find_ca(&w, acme, '2'));
	ck_assert_ptr_null(find_ca(&w, acme, '3'));
	/* The other project's rows are its own. */
	ck_assert_uint_eq(count_rows(&w, pbeta), 1);
	walk_crls(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_mem_eq(w.t[0].der, crl1, sizeof(crl1));

	/* root.pem good again with one CA: its rows are replaced; a new CRL replaces the old. */
	ca_files[0] =
	        (dg_trust_file){.source = "cas/root.pem", .ok = 1, .cas = &root[1], .n_cas = 1};
	crl_files[0] = (dg_trust_file){
	        .source = "crls/root.pem", .ok = 1, .crl = crl2, .crl_len = sizeof(crl2)};
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_sync_trust(st, "acme", ca_files, 1, crl_files, 1), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_cas(st, &w);
	ck_assert_uint_eq(count_rows(&w, acme), 1);
	ck_assert_ptr_nonnull(find_ca(&w, acme, '2'));
	walk_crls(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_uint_eq(w.t[0].der_len, sizeof(crl2));
	ck_assert_mem_eq(w.t[0].der, crl2, sizeof(crl2));

	/* Every file gone: no rows left in this project, the other's untouched. */
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_sync_trust(st, "acme", NULL, 0, NULL, 0), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_cas(st, &w);
	ck_assert_uint_eq(count_rows(&w, acme), 0);
	ck_assert_uint_eq(count_rows(&w, pbeta), 1);
	walk_crls(st, &w);
	ck_assert_uint_eq(w.n, 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 2);
	dg_store_close(st);
}
END_TEST

START_TEST(test_each_project_counts)
{
	dg_store *st = open_store(0);
	dg_psk_entry a[] = {E("1@acme", "a", "k"), E("2@acme", "b", "k"), E("3@acme", "c", "k"),
	                    E("4@acme", "c", "k")};
	dg_psk_entry z[] = {E("1@zeta", "a", "k")};
	dg_provision_result r;
	pwalk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "zeta", z, 1), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", a, 4), 0);
	ck_assert_int_eq(dg_store_ensure_project(st, "beta"), 0);
	dg_store_provision(st, pid_of("zeta"), "cert-1", &r);
	ck_assert_int_eq(r.rc, 0);

	walk_proj(st, &w);
	ck_assert_uint_eq(w.n, 3);
	/* By slug. */
	ck_assert_str_eq(w.p[0].slug, "acme");
	ck_assert_str_eq(w.p[1].slug, "beta");
	ck_assert_str_eq(w.p[2].slug, "zeta");
	ck_assert_int_eq(w.p[0].devices, 3);
	ck_assert_int_eq(w.p[1].devices, 0);
	ck_assert_int_eq(w.p[2].devices, 2);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_str_eq(w.p[i].name, w.p[i].slug);
		ck_assert_int_eq(w.p[i].enabled, 1);
		ck_assert_int_eq(w.p[i].auto_provision, 1);
		ck_assert_int_eq(w.p[i].id, pid_of(w.p[i].slug));
	}

	/* A nonzero return stops the walk and is returned. */
	memset(&w, 0, sizeof(w));
	w.stop_after = 2;
	ck_assert_int_eq(dg_store_each_project(st, proj_cb, &w), 55);
	ck_assert_uint_eq(w.n, 2);
	dg_store_close(st);
}
END_TEST

START_TEST(test_set_blocked)
{
	dg_store *st = open_store(0);
	dg_psk_entry a[] = {E("s1@acme", "sensor-1", "k")};
	dg_psk_entry b[] = {E("s1@beta", "sensor-1", "k")};
	int64_t s0;
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", a, 1), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "beta", b, 1), 0);
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_set_blocked(st, "acme", "sensor-1", 1), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_dev(st, &w);
	ck_assert_int_eq(find_dev(&w, "acme", "sensor-1")->blocked, 1);
	/* The same name in another project is another device. */
	ck_assert_int_eq(find_dev(&w, "beta", "sensor-1")->blocked, 0);
	walk_psk(st, &w);
	ck_assert_int_eq(find_psk(&w, "s1@acme")->device_blocked, 1);
	ck_assert_int_eq(find_psk(&w, "s1@beta")->device_blocked, 0);

	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_set_blocked(st, "acme", "sensor-1", 0), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_dev(st, &w);
	ck_assert_int_eq(find_dev(&w, "acme", "sensor-1")->blocked, 0);

	/* Unknown device or project: -ENOENT, and nothing changes. */
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_set_blocked(st, "acme", "sensor-2", 1), -ENOENT);
	ck_assert_int_eq(dg_store_set_blocked(st, "gamma", "sensor-1", 1), -ENOENT);
	ck_assert_int_eq(dg_store_set_blocked(st, "acme", "Sensor-1", 1), -ENOENT);
	ck_assert_int_eq(dg_store_registry_serial(st), s0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices WHERE blocked = 1"), 0);
	dg_store_close(st);
}
END_TEST

START_TEST(test_psk_add)
{
	dg_store *st = open_store(0);
	dg_psk_entry f[] = {E("s1@acme", "sensor-1", "file-key")};
	dg_psk_entry g[] = {E("s1@beta", "x", "k")};
	int64_t s0;
	walk w;
	const psk_copy *p, *q;

	/* No such project: nothing is made. */
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "dev", "c1@acme", (const uint8_t *)"abc", 3),
	                 -ENOENT);
	ck_assert_int_eq(sql1("SELECT count(*) FROM projects"), 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 0);

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", f, 1), 0);
	ck_assert_int_eq(dg_store_sync_psk(st, "beta", g, 1), 0);
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "dev", "c1@acme", (const uint8_t *)"a\0c", 3),
	                 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_psk(st, &w);
	p = find_psk(&w, "c1@acme");
	ck_assert_ptr_nonnull(p);
	ck_assert_str_eq(p->device, "dev");
	ck_assert_str_eq(p->slug, "acme");
	ck_assert_uint_eq(p->key_len, 3);
	ck_assert_mem_eq(p->key, "a\0c", 3);
	ck_assert_int_eq(sql1("SELECT count(*) FROM credentials WHERE identity = 'c1@acme'"
	                      " AND source = 'cli'"),
	                 1);

	/* A second credential of the same device reuses it. */
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "dev", "c2@acme", (const uint8_t *)"x", 1),
	                 0);
	/* And one for the device psk.json made. */
	ck_assert_int_eq(
	        dg_store_psk_add(st, "acme", "sensor-1", "c3@acme", (const uint8_t *)"y", 1), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 5);
	p = find_psk(&w, "c1@acme");
	q = find_psk(&w, "c2@acme");
	ck_assert_int_eq(p->device_id, q->device_id);
	ck_assert_int_eq(find_psk(&w, "c3@acme")->device_id, find_psk(&w, "s1@acme")->device_id);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 3);

	/* A taken identity, whoever holds it: -EEXIST, and no device is left behind. */
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "ghost", "c1@acme", (const uint8_t *)"z", 1),
	                 -EEXIST);
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "ghost", "s1@acme", (const uint8_t *)"z", 1),
	                 -EEXIST);
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "ghost", "s1@beta", (const uint8_t *)"z", 1),
	                 -EEXIST);
	ck_assert_int_eq(dg_store_registry_serial(st), s0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices WHERE name = 'ghost'"), 0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 5);
	ck_assert_mem_eq(find_psk(&w, "c1@acme")->key, "a\0c", 3);
	ck_assert_mem_eq(find_psk(&w, "s1@acme")->key, "file-key", 8);
	dg_store_close(st);
}
END_TEST

START_TEST(test_psk_remove)
{
	dg_store *st = open_store(0);
	dg_psk_entry f[] = {E("s1@acme", "sensor-1", "file-key")};
	int64_t s0;
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", f, 1), 0);
	ck_assert_int_eq(
	        dg_store_psk_add(st, "acme", "sensor-1", "cli-1@acme", (const uint8_t *)"k", 1), 0);

	/* A credential of psk.json is the file's to remove. */
	s0 = dg_store_registry_serial(st);
	ck_assert_int_eq(dg_store_psk_remove(st, "s1@acme"), -EPERM);
	ck_assert_int_eq(dg_store_psk_remove(st, "nope@acme"), -ENOENT);
	ck_assert_int_eq(dg_store_psk_remove(st, "S1@acme"), -ENOENT);
	ck_assert_int_eq(dg_store_registry_serial(st), s0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 2);

	ck_assert_int_eq(dg_store_psk_remove(st, "cli-1@acme"), 0);
	ck_assert_int_ne(dg_store_registry_serial(st), s0);
	walk_psk(st, &w);
	ck_assert_uint_eq(w.n, 1);
	ck_assert_str_eq(w.psk[0].identity, "s1@acme");
	/* The device stays. */
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 1);
	ck_assert_int_eq(dg_store_psk_remove(st, "cli-1@acme"), -ENOENT);
	dg_store_close(st);
}
END_TEST

/* --- provisioning of certificate devices --- */

START_TEST(test_provision_rules)
{
	dg_store *st = open_store(0);
	dg_psk_entry e[] = {E("s1@acme", "sensor-1", "k")};
	dg_provision_result r, r2;
	int64_t pid, sid;
	walk w;

	ck_assert_int_eq(dg_store_sync_psk(st, "acme", e, 1), 0);
	pid = pid_of("acme");
	walk_dev(st, &w);
	sid = find_dev(&w, "acme", "sensor-1")->id;
	ck_assert_int_eq(find_dev(&w, "acme", "sensor-1")->has_cert, 0);

	/* (c) A new certificate ID: a new device named like it. */
	memset(&r, 0x55, sizeof(r));
	dg_store_provision(st, pid, "dev-1", &r);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(r.created, 1);
	ck_assert_int_eq(r.attached, 0);
	ck_assert_str_eq(r.name, "dev-1");
	ck_assert_int_gt(r.device_id, 0);
	ck_assert_int_ne(r.device_id, sid);
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_eq(find_dev(&w, "acme", "dev-1")->id, r.device_id);
	ck_assert_str_eq(find_dev(&w, "acme", "dev-1")->cert, "dev-1");
	ck_assert_int_eq(find_dev(&w, "acme", "dev-1")->blocked, 0);

	/* (a) The device with this certificate ID is reused. */
	memset(&r2, 0x55, sizeof(r2));
	dg_store_provision(st, pid, "dev-1", &r2);
	ck_assert_int_eq(r2.rc, 0);
	ck_assert_int_eq(r2.created, 0);
	ck_assert_int_eq(r2.attached, 0);
	ck_assert_int_eq(r2.device_id, r.device_id);
	ck_assert_str_eq(r2.name, "dev-1");

	/* (b) A device named like the certificate ID, with none, gets it. */
	memset(&r, 0x55, sizeof(r));
	dg_store_provision(st, pid, "sensor-1", &r);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(r.created, 0);
	ck_assert_int_eq(r.attached, 1);
	ck_assert_int_eq(r.device_id, sid);
	ck_assert_str_eq(r.name, "sensor-1");
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_eq(find_dev(&w, "acme", "sensor-1")->has_cert, 1);
	ck_assert_str_eq(find_dev(&w, "acme", "sensor-1")->cert, "sensor-1");
	/* Its PSK credential is still its own. */
	walk_psk(st, &w);
	ck_assert_int_eq(find_psk(&w, "s1@acme")->device_id, sid);
	/* Once attached, it is found by its certificate ID. */
	dg_store_provision(st, pid, "sensor-1", &r);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(r.created + r.attached, 0);
	ck_assert_int_eq(r.device_id, sid);

	/* Certificate IDs are per project. */
	ck_assert_int_eq(dg_store_ensure_project(st, "beta"), 0);
	dg_store_provision(st, pid_of("beta"), "dev-1", &r);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(r.created, 1);
	ck_assert_int_ne(r.device_id, r2.device_id);
	ck_assert_str_eq(r.name, "dev-1");
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 3);
	dg_store_close(st);
}
END_TEST

START_TEST(test_provision_name_taken)
{
	dg_store *st = open_store(0);
	dg_provision_result r, r2;
	int64_t pid, other;
	char q[256];
	walk w;

	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	pid = pid_of("acme");
	snprintf(q, sizeof(q),
	         "INSERT INTO devices (project_id, name, certificate_id, created_at)"
	         " VALUES (%lld, 'dev-1', 'other', 1)",
	         (long long)pid);
	sql1(q);
	other = sql1("SELECT id FROM devices WHERE name = 'dev-1'");

	/* "dev-1" belongs to certificate "other": the new device gets a suffix. */
	dg_store_provision(st, pid, "dev-1", &r);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(r.created, 1);
	ck_assert_int_eq(r.attached, 0);
	ck_assert_int_ne(r.device_id, other);
	ck_assert_uint_eq(strlen(r.name), strlen("dev-1-") + 6);
	ck_assert_msg(strncmp(r.name, "dev-1-", 6) == 0, "%s", r.name);
	for (size_t i = 6; i < 12; i++)
		ck_assert_msg(strchr("0123456789abcdef", r.name[i]) != NULL, "%s", r.name);
	walk_dev(st, &w);
	ck_assert_uint_eq(w.n, 2);
	ck_assert_int_eq(find_dev(&w, "acme", r.name)->id, r.device_id);
	ck_assert_str_eq(find_dev(&w, "acme", r.name)->cert, "dev-1");
	ck_assert_str_eq(find_dev(&w, "acme", "dev-1")->cert, "other");

	/* Next time it is found by its certificate ID, suffix and all. */
	dg_store_provision(st, pid, "dev-1", &r2);
	ck_assert_int_eq(r2.rc, 0);
	ck_assert_int_eq(r2.created + r2.attached, 0);
	ck_assert_int_eq(r2.device_id, r.device_id);
	ck_assert_str_eq(r2.name, r.name);
	/* And "other" finds the device named dev-1. */
	dg_store_provision(st, pid, "other", &r2);
	ck_assert_int_eq(r2.rc, 0);
	ck_assert_int_eq(r2.created + r2.attached, 0);
	ck_assert_int_eq(r2.device_id, other);
	ck_assert_str_eq(r2.name, "dev-1");
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 2);
	dg_store_close(st);
}
END_TEST

typedef struct prov_slot {
	dg_store *st;
	int64_t project_id;
	pthread_barrier_t *go;
	int rc;    /* What dg_store_provision_async() returned. */
	int calls; /* How often `done` ran. */
	dg_provision_result res;
} prov_slot;

static void
prov_done(void *arg, const dg_provision_result *res)
{
	prov_slot *p = arg;

	p->calls++;
	p->res = *res;
}

static void *
prov_async_thread(void *arg)
{
	prov_slot *p = arg;

	pthread_barrier_wait(p->go);
	p->rc = dg_store_provision_async(p->st, p->project_id, "new-1", prov_done, p);
	return NULL;
}

START_TEST(test_provision_async_once)
{
	dg_store *st = open_store(DG_STORE_WRITER);
	prov_slot slot[50];
	pthread_t th[50];
	pthread_barrier_t go;
	int64_t pid;
	int created = 0;

	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	pid = pid_of("acme");
	memset(slot, 0, sizeof(slot));
	ck_assert_int_eq(pthread_barrier_init(&go, NULL, 50), 0);
	for (int i = 0; i < 50; i++) {
		slot[i].st = st;
		slot[i].project_id = pid;
		slot[i].go = &go;
		ck_assert_int_eq(pthread_create(&th[i], NULL, prov_async_thread, &slot[i]), 0);
	}
	for (int i = 0; i < 50; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&go);
	/* The flush waits for every queued provisioning and its callback. */
	ck_assert_int_eq(dg_store_flush(st), 0);
	for (int i = 0; i < 50; i++) {
		ck_assert_int_eq(slot[i].rc, 0);
		ck_assert_int_eq(slot[i].calls, 1);
		ck_assert_int_eq(slot[i].res.rc, 0);
		ck_assert_int_eq(slot[i].res.attached, 0);
		ck_assert_int_eq(slot[i].res.device_id, slot[0].res.device_id);
		ck_assert_str_eq(slot[i].res.name, "new-1");
		created += slot[i].res.created;
	}
	ck_assert_int_gt(slot[0].res.device_id, 0);
	ck_assert_int_eq(created, 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices WHERE certificate_id = 'new-1'"), 1);
	ck_assert_int_eq(sql1("SELECT id FROM devices WHERE certificate_id = 'new-1'"),
	                 slot[0].res.device_id);
	dg_store_close(st);
}
END_TEST

START_TEST(test_provision_async_without_writer)
{
	dg_store *st = open_store(0);
	prov_slot p;

	memset(&p, 0, sizeof(p));
	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	ck_assert_int_eq(dg_store_provision_async(st, pid_of("acme"), "new-1", prov_done, &p),
	                 -EPIPE);
	ck_assert_int_eq(dg_store_flush(st), 0);
	ck_assert_int_eq(p.calls, 0);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 0);
	dg_store_close(st);
}
END_TEST

#define N_CONN  8
#define N_CERTS 20

typedef struct conn_slot {
	dg_store *st;
	int64_t project_id;
	pthread_barrier_t *go;
	dg_provision_result shared;
	dg_provision_result each[N_CERTS];
} conn_slot;

static void *
prov_conn_thread(void *arg)
{
	conn_slot *c = arg;
	char id[32];

	pthread_barrier_wait(c->go);
	dg_store_provision(c->st, c->project_id, "shared-1", &c->shared);
	for (int j = 0; j < N_CERTS; j++) {
		snprintf(id, sizeof(id), "c-%d", j);
		dg_store_provision(c->st, c->project_id, id, &c->each[j]);
	}
	return NULL;
}

START_TEST(test_provision_connections_once)
{
	/* Several processes or connections on one database: still one device per certificate. */
	dg_store *first = open_store(0);
	conn_slot slot[N_CONN];
	pthread_t th[N_CONN];
	pthread_barrier_t go;
	int64_t pid;
	int created;

	ck_assert_int_eq(dg_store_ensure_project(first, "acme"), 0);
	pid = pid_of("acme");
	memset(slot, 0, sizeof(slot));
	ck_assert_int_eq(pthread_barrier_init(&go, NULL, N_CONN), 0);
	for (int i = 0; i < N_CONN; i++) {
		slot[i].st = i == 0 ? first : open_store(0);
		slot[i].project_id = pid;
		slot[i].go = &go;
	}
	for (int i = 0; i < N_CONN; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, prov_conn_thread, &slot[i]), 0);
	for (int i = 0; i < N_CONN; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&go);

	created = 0;
	for (int i = 0; i < N_CONN; i++) {
		ck_assert_msg(slot[i].shared.rc == 0, "connection %d: %d", i, slot[i].shared.rc);
		ck_assert_int_eq(slot[i].shared.device_id, slot[0].shared.device_id);
		ck_assert_str_eq(slot[i].shared.name, "shared-1");
		created += slot[i].shared.created;
	}
	ck_assert_int_eq(created, 1);
	for (int j = 0; j < N_CERTS; j++) {
		created = 0;
		for (int i = 0; i < N_CONN; i++) {
			ck_assert_msg(slot[i].each[j].rc == 0, "connection %d, c-%d: %d", i, j,
			              slot[i].each[j].rc);
			ck_assert_int_eq(slot[i].each[j].device_id, slot[0].each[j].device_id);
			created += slot[i].each[j].created;
		}
		ck_assert_int_eq(created, 1);
	}
	for (int i = 0; i < N_CONN; i++)
		dg_store_close(slot[i].st);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices"), 1 + N_CERTS);
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices WHERE certificate_id = 'shared-1'"), 1);
	ck_assert_int_eq(sql1("SELECT count(DISTINCT certificate_id) FROM devices"), 1 + N_CERTS);
	/* No suffixed names: each device is named like its certificate ID. */
	ck_assert_int_eq(sql1("SELECT count(*) FROM devices WHERE name <> certificate_id"), 0);
}
END_TEST

/* Sets `path` to a string of `n` bytes under limits.max_state_bytes `max`; returns the rc. */
static int
set_big(dg_store *st, int64_t dev, const char *path, size_t n, size_t max)
{
	dg_state_change c = {.device_id = dev, .max_bytes = max};
	char *text = malloc(n + 1);
	ck_assert_ptr_nonnull(text);
	memset(text, 'x', n);
	text[n] = '\0';
	c.path = strdup(path);
	c.value = cJSON_CreateString(text);
	free(text);
	int rc = dg_store_run(st, dg_data_state_apply, &c);
	dg_data_state_change_clear(&c);
	return rc;
}

/* A state set that would grow a document past max_bytes fails with -EFBIG and changes nothing. */
START_TEST(test_state_max_bytes)
{
	dg_store *st = open_store(0);
	dg_psk_entry f[] = {E("s1@acme", "sensor-1", "key")};
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", f, 1), 0);
	int64_t dev = sql1("SELECT id FROM devices WHERE name = 'sensor-1'");

	ck_assert_int_eq(set_big(st, dev, "a", 1200, 4096), 0);
	ck_assert_int_eq(set_big(st, dev, "b", 1200, 4096), 0);
	ck_assert_int_eq(set_big(st, dev, "c", 1200, 4096), 0);
	int64_t len = sql1("SELECT length(doc) FROM state");
	ck_assert_int_le(len, 4096);
	ck_assert_int_eq(set_big(st, dev, "d", 1200, 4096), -EFBIG);
	ck_assert_int_eq(sql1("SELECT length(doc) FROM state"), len);
	/* Shrinking, or replacing with as much, is still taken; no limit (0) takes anything. */
	ck_assert_int_eq(set_big(st, dev, "a", 100, 4096), 0);
	ck_assert_int_eq(set_big(st, dev, "a", 1200, 4096), 0);
	ck_assert_int_eq(set_big(st, dev, "d", 1200, 0), 0);
	ck_assert_int_gt(sql1("SELECT length(doc) FROM state"), 4096);
	/* Over the limit already (it was lowered): a write that shrinks it is taken. */
	ck_assert_int_eq(set_big(st, dev, "d", 10, 4096), 0);
	ck_assert_int_eq(set_big(st, dev, "e", 10, 1024), -EFBIG);
	dg_store_close(st);
}
END_TEST

static Suite *
store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc;

	tc = tcase_create("open");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_open_creates_dir_and_migrates);
	tcase_add_test(tc, test_state_max_bytes);
	tcase_add_test(tc, test_open_upgrades);
	tcase_add_test(tc, test_open_newer_schema);
	tcase_add_test(tc, test_open_fails);
	suite_add_tcase(s, tc);

	tc = tcase_create("sync");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_sync_creates);
	tcase_add_test(tc, test_sync_drops_and_updates);
	tcase_add_test(tc, test_sync_moves_identity_to_other_device);
	tcase_add_test(tc, test_sync_keeps_other_projects);
	tcase_add_test(tc, test_cli_credentials_survive);
	tcase_add_test(tc, test_ensure_project);
	suite_add_tcase(s, tc);

	tc = tcase_create("read");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_each_device_order_and_fields);
	tcase_add_test(tc, test_each_stops_on_nonzero);
	suite_add_tcase(s, tc);

	tc = tcase_create("writer");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_touch_and_flush);
	tcase_add_test(tc, test_close_flushes);
	tcase_add_test(tc, test_touch_without_writer);
	tcase_add_test(tc, test_touch_from_threads);
	tcase_add_test(tc, test_write_queue_bound);
	tcase_add_test(tc, test_now_ms);
	tcase_add_test(tc, test_group_commit_savepoints);
	tcase_add_test(tc, test_group_commit_failed_commit);
	tcase_add_test(tc, test_group_commit_many);
	tcase_add_test(tc, test_stmt_cache);
	tcase_add_test(tc, test_touch_coalesced);
	tcase_add_test(tc, test_touch_alone);
	tcase_add_test(tc, test_reader_thread);
	suite_add_tcase(s, tc);

	tc = tcase_create("admin");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_set_project);
	tcase_add_test(tc, test_disable_missing);
	tcase_add_test(tc, test_sync_trust);
	tcase_add_test(tc, test_each_project_counts);
	tcase_add_test(tc, test_set_blocked);
	tcase_add_test(tc, test_psk_add);
	tcase_add_test(tc, test_psk_remove);
	suite_add_tcase(s, tc);

	tc = tcase_create("provision");
	tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_provision_rules);
	tcase_add_test(tc, test_provision_name_taken);
	tcase_add_test(tc, test_provision_async_once);
	tcase_add_test(tc, test_provision_async_without_writer);
	tcase_add_test(tc, test_provision_connections_once);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(store_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
