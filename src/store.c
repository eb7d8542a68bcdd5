/*
 * The store: SQLite with a write queue drained by one writer thread.
 *
 * Two connections: the caller's (reads, start-up imports, CLI) and the
 * writer's. Queued writes never make a worker loop wait for the disk; the
 * writer takes everything queued so far and commits it as one
 * transaction.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "devgate/log.h"
#include "devgate/store.h"

#include "schema.inc"

enum op_kind { OP_TOUCH = 1 };

typedef struct store_op {
	struct store_op *next;
	enum op_kind kind;
	int64_t device_id;
	int64_t ts_ms;
} store_op;

struct dg_store {
	sqlite3 *db;
	sqlite3 *wdb; /* The writer's connection, or NULL. */
	pthread_t writer;
	int has_writer;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* Signals the writer: work or stop. */
	pthread_cond_t done_cv; /* Signals flushers: a batch committed. */
	store_op *head, *tail;
	uint64_t queued;    /* Ops queued so far. */
	uint64_t committed; /* Ops committed (or failed) so far. */
	int stopping;
	int write_error;
};

int64_t
dg_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
sqlite_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_FULL:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

/* Creates the parent directories of `path`, like mkdir -p of its dirname. */
static int
mkdir_parents(const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0750) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

static int
exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		if (err != NULL)
			snprintf(err, errlen, "%s", msg != NULL ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return sqlite_errno(rc) != 0 ? sqlite_errno(rc) : -EIO;
	}
	return 0;
}

static int
open_conn(const char *path, sqlite3 **out, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(
	        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return sqlite_errno(rc) != 0 ? sqlite_errno(rc) : -EIO;
	}
	sqlite3_busy_timeout(db, 5000);
	/*
	 * WAL with synchronous=FULL: a commit is on disk when it returns, so
	 * nothing acknowledged is lost to a crash of the daemon or the host.
	 */
	rc = exec_sql(db,
	              "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
	              " PRAGMA foreign_keys=ON;",
	              err, errlen);
	if (rc != 0) {
		sqlite3_close(db);
		return rc;
	}
	*out = db;
	return 0;
}

static int
get_user_version(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int v = -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Applies every migration above the database's user_version, each in its own transaction. */
static int
migrate(sqlite3 *db, char *err, size_t errlen)
{
	const int n = (int)(sizeof(schema_migrations) / sizeof(schema_migrations[0]));
	int v = get_user_version(db);
	int rc;

	if (v < 0) {
		snprintf(err, errlen, "cannot read schema version");
		return -EIO;
	}
	if (v > n) {
		snprintf(err, errlen, "database schema version %d is newer than this devgate (%d)",
		         v, n);
		return -EPROTO;
	}
	for (; v < n; v++) {
		char pragma[64];
		rc = exec_sql(db, "BEGIN IMMEDIATE", err, errlen);
		if (rc != 0)
			return rc;
		/* Another process may have migrated while we waited for the lock. */
		if (get_user_version(db) > v) {
			exec_sql(db, "COMMIT", NULL, 0);
			continue;
		}
		rc = exec_sql(db, schema_migrations[v], err, errlen);
		if (rc == 0) {
			snprintf(pragma, sizeof(pragma), "PRAGMA user_version=%d", v + 1);
			rc = exec_sql(db, pragma, err, errlen);
		}
		if (rc != 0) {
			exec_sql(db, "ROLLBACK", NULL, 0);
			return rc;
		}
		rc = exec_sql(db, "COMMIT", err, errlen);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Applies one batch of queued operations in one transaction. */
static int
apply_batch(sqlite3 *db, sqlite3_stmt *touch, store_op *ops)
{
	int rc = exec_sql(db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	for (store_op *op = ops; op != NULL; op = op->next) {
		if (op->kind == OP_TOUCH) {
			sqlite3_bind_int64(touch, 1, op->ts_ms);
			sqlite3_bind_int64(touch, 2, op->device_id);
			int s = sqlite3_step(touch);
			sqlite3_reset(touch);
			if (s != SQLITE_DONE)
				rc = sqlite_errno(s);
		}
	}
	if (rc != 0) {
		exec_sql(db, "ROLLBACK", NULL, 0);
		return rc;
	}
	return exec_sql(db, "COMMIT", NULL, 0);
}

static void *
writer_main(void *arg)
{
	dg_store *st = arg;
	sqlite3_stmt *touch = NULL;

	if (sqlite3_prepare_v2(st->wdb,
	                       "UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?1)"
	                       " WHERE id = ?2",
	                       -1, &touch, NULL) != SQLITE_OK) {
		log_errorx("store: cannot prepare writer statement: %s", sqlite3_errmsg(st->wdb));
	}
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (st->head == NULL && !st->stopping)
			pthread_cond_wait(&st->cv, &st->mu);
		if (st->head == NULL && st->stopping)
			break;
		store_op *batch = st->head;
		uint64_t upto = st->queued;
		st->head = st->tail = NULL;
		pthread_mutex_unlock(&st->mu);

		int rc = touch != NULL ? apply_batch(st->wdb, touch, batch) : -EIO;
		if (rc != 0)
			log_errorx("store: write batch failed: %s", sqlite3_errmsg(st->wdb));
		while (batch != NULL) {
			store_op *next = batch->next;
			free(batch);
			batch = next;
		}

		pthread_mutex_lock(&st->mu);
		if (rc != 0 && st->write_error == 0)
			st->write_error = rc;
		st->committed = upto;
		pthread_cond_broadcast(&st->done_cv);
	}
	pthread_mutex_unlock(&st->mu);
	sqlite3_finalize(touch);
	return NULL;
}

int
dg_store_open(const char *path, int flags, dg_store **out, char *err, size_t errlen)
{
	dg_store *st = NULL;
	int rc;

	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	pthread_cond_init(&st->done_cv, NULL);

	rc = mkdir_parents(path);
	if (rc != 0) {
		snprintf(err, errlen, "%s: cannot create directory: %s", path, strerror(-rc));
		goto out;
	}
	rc = open_conn(path, &st->db, err, errlen);
	if (rc != 0)
		goto out;
	rc = migrate(st->db, err, errlen);
	if (rc != 0)
		goto out;
	if (flags & DG_STORE_WRITER) {
		rc = open_conn(path, &st->wdb, err, errlen);
		if (rc != 0)
			goto out;
		rc = -pthread_create(&st->writer, NULL, writer_main, st);
		if (rc != 0) {
			snprintf(err, errlen, "cannot start writer thread: %s", strerror(-rc));
			goto out;
		}
		st->has_writer = 1;
	}
	*out = st;
	st = NULL;
out:
	dg_store_close(st);
	return rc;
}

void
dg_store_close(dg_store *st)
{
	if (st == NULL)
		return;
	if (st->has_writer) {
		pthread_mutex_lock(&st->mu);
		st->stopping = 1;
		pthread_cond_signal(&st->cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->writer, NULL);
	}
	sqlite3_close(st->wdb);
	sqlite3_close(st->db);
	pthread_cond_destroy(&st->cv);
	pthread_cond_destroy(&st->done_cv);
	pthread_mutex_destroy(&st->mu);
	free(st);
}

int
dg_store_schema_version(dg_store *st)
{
	return get_user_version(st->db);
}

int
dg_store_touch_device(dg_store *st, int64_t device_id, int64_t ts_ms)
{
	store_op *op;

	if (!st->has_writer)
		return -EPIPE;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->kind = OP_TOUCH;
	op->device_id = device_id;
	op->ts_ms = ts_ms;
	pthread_mutex_lock(&st->mu);
	if (st->tail != NULL)
		st->tail->next = op;
	else
		st->head = op;
	st->tail = op;
	st->queued++;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->mu);
	return 0;
}

int
dg_store_flush(dg_store *st)
{
	int rc;
	if (!st->has_writer)
		return 0;
	pthread_mutex_lock(&st->mu);
	uint64_t target = st->queued;
	while (st->committed < target)
		pthread_cond_wait(&st->done_cv, &st->mu);
	rc = st->write_error;
	pthread_mutex_unlock(&st->mu);
	return rc;
}

/* Runs one prepared statement to completion with text/int bindings done by the caller. */
static int
step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

static int
project_id(sqlite3 *db, const char *slug, int64_t *id)
{
	sqlite3_stmt *s = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db,
	                        "INSERT INTO projects (slug, name, created_at) VALUES (?1, ?1, ?2)"
	                        " ON CONFLICT (slug) DO NOTHING",
	                        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, dg_now_ms());
	rc = step_done(s);
	sqlite3_finalize(s);
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(db, "SELECT id FROM projects WHERE slug = ?1", -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
	}
	sqlite3_finalize(s);
	return rc;
}

int
dg_store_ensure_project(dg_store *st, const char *slug)
{
	int64_t id;
	return project_id(st->db, slug, &id);
}

int
dg_store_sync_psk(dg_store *st, const char *slug, const dg_psk_entry *entries, size_t n)
{
	sqlite3_stmt *dev = NULL, *cred = NULL, *mark = NULL, *sweep = NULL;
	int64_t pid = 0;
	int64_t now = dg_now_ms();
	int rc;

	rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	rc = project_id(st->db, slug, &pid);
	if (rc != 0)
		goto out;
	if (sqlite3_prepare_v2(
	            st->db,
	            "INSERT INTO devices (project_id, name, created_at) VALUES (?1, ?2, ?3)"
	            " ON CONFLICT (project_id, name) DO NOTHING",
	            -1, &dev, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(
	            st->db,
	            "INSERT INTO credentials (device_id, identity, psk, source, created_at)"
	            " SELECT id, ?3, ?4, 'file', ?5 FROM devices WHERE project_id = ?1 AND name = "
	            "?2"
	            " ON CONFLICT (identity) DO UPDATE SET device_id = excluded.device_id,"
	            " psk = excluded.psk WHERE source = 'file'",
	            -1, &cred, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(st->db, "CREATE TEMP TABLE IF NOT EXISTS sync_keep (identity TEXT)",
	                       -1, &mark, NULL) != SQLITE_OK) {
		rc = -EIO;
		goto out;
	}
	rc = step_done(mark);
	sqlite3_finalize(mark);
	mark = NULL;
	if (rc != 0)
		goto out;
	rc = exec_sql(st->db, "DELETE FROM temp.sync_keep", NULL, 0);
	if (rc != 0)
		goto out;
	if (sqlite3_prepare_v2(st->db, "INSERT INTO temp.sync_keep (identity) VALUES (?1)", -1,
	                       &mark, NULL) != SQLITE_OK) {
		rc = -EIO;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_int64(dev, 1, pid);
		sqlite3_bind_text(dev, 2, entries[i].device, -1, SQLITE_STATIC);
		sqlite3_bind_int64(dev, 3, now);
		rc = step_done(dev);
		sqlite3_reset(dev);
		if (rc != 0)
			goto out;
		sqlite3_bind_int64(cred, 1, pid);
		sqlite3_bind_text(cred, 2, entries[i].device, -1, SQLITE_STATIC);
		sqlite3_bind_text(cred, 3, entries[i].identity, -1, SQLITE_STATIC);
		sqlite3_bind_blob(cred, 4, entries[i].key, (int)entries[i].key_len, SQLITE_STATIC);
		sqlite3_bind_int64(cred, 5, now);
		rc = step_done(cred);
		sqlite3_reset(cred);
		if (rc != 0)
			goto out;
		sqlite3_bind_text(mark, 1, entries[i].identity, -1, SQLITE_STATIC);
		rc = step_done(mark);
		sqlite3_reset(mark);
		if (rc != 0)
			goto out;
	}
	if (sqlite3_prepare_v2(st->db,
	                       "DELETE FROM credentials WHERE source = 'file'"
	                       " AND device_id IN (SELECT id FROM devices WHERE project_id = ?1)"
	                       " AND identity NOT IN (SELECT identity FROM temp.sync_keep)",
	                       -1, &sweep, NULL) != SQLITE_OK) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(sweep, 1, pid);
	rc = step_done(sweep);
out:
	sqlite3_finalize(dev);
	sqlite3_finalize(cred);
	sqlite3_finalize(mark);
	sqlite3_finalize(sweep);
	if (rc == 0)
		rc = exec_sql(st->db, "COMMIT", NULL, 0);
	if (rc != 0) {
		log_errorx("store: psk sync of project %s failed: %s", slug,
		           sqlite3_errmsg(st->db));
		exec_sql(st->db, "ROLLBACK", NULL, 0);
	}
	return rc;
}

int
dg_store_each_psk(dg_store *st, int (*cb)(void *arg, const dg_psk_row *row), void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc;

	rc = sqlite3_prepare_v2(st->db,
	                        "SELECT p.id, d.id, p.slug, d.name, c.identity, c.psk, p.enabled,"
	                        " d.blocked FROM credentials c JOIN devices d ON d.id = c.device_id"
	                        " JOIN projects p ON p.id = d.project_id ORDER BY c.identity",
	                        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		dg_psk_row row = {
		        .project_id = sqlite3_column_int64(s, 0),
		        .device_id = sqlite3_column_int64(s, 1),
		        .slug = (const char *)sqlite3_column_text(s, 2),
		        .device = (const char *)sqlite3_column_text(s, 3),
		        .identity = (const char *)sqlite3_column_text(s, 4),
		        .key = sqlite3_column_blob(s, 5),
		        .key_len = (size_t)sqlite3_column_bytes(s, 5),
		        .project_enabled = sqlite3_column_int(s, 6),
		        .device_blocked = sqlite3_column_int(s, 7),
		};
		int r = cb(arg, &row);
		if (r != 0) {
			sqlite3_finalize(s);
			return r;
		}
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}

int
dg_store_each_device(dg_store *st, int (*cb)(void *arg, const dg_device_row *row), void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc;

	rc = sqlite3_prepare_v2(st->db,
	                        "SELECT d.id, p.slug, d.name, d.certificate_id, d.blocked,"
	                        " d.created_at, d.last_seen FROM devices d"
	                        " JOIN projects p ON p.id = d.project_id ORDER BY p.slug, d.name",
	                        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		dg_device_row row = {
		        .id = sqlite3_column_int64(s, 0),
		        .project = (const char *)sqlite3_column_text(s, 1),
		        .name = (const char *)sqlite3_column_text(s, 2),
		        .certificate_id = (const char *)sqlite3_column_text(s, 3),
		        .blocked = sqlite3_column_int(s, 4),
		        .created_at = sqlite3_column_int64(s, 5),
		        .last_seen = sqlite3_column_type(s, 6) == SQLITE_NULL
		                             ? -1
		                             : sqlite3_column_int64(s, 6),
		};
		int r = cb(arg, &row);
		if (r != 0) {
			sqlite3_finalize(s);
			return r;
		}
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}
