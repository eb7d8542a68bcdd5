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

enum op_kind { OP_TOUCH = 1, OP_PROVISION = 2, OP_JOB = 3 };

typedef struct store_op {
	struct store_op *next;
	enum op_kind kind;
	int64_t device_id; /* OP_TOUCH */
	int64_t ts_ms;
	int64_t project_id; /* OP_PROVISION */
	char *cert_id;
	void (*done)(void *arg, const dg_provision_result *res);
	void *arg;
	int (*run)(sqlite3 *db, void *arg); /* OP_JOB */
	void (*job_done)(void *arg, int rc);
} store_op;

static void provision_on(sqlite3 *db, int64_t project_id, const char *cert_id,
                         dg_provision_result *res);

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
	uint64_t max_queue; /* Ops queued and not committed, at most. */
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
		if (mkdir(buf, 0750) != 0) {
			struct stat sb;
			if (errno != EEXIST)
				return -errno;
			/* Something is there: it must be a directory (or a link to one). */
			if (stat(buf, &sb) != 0)
				return -errno;
			if (!S_ISDIR(sb.st_mode))
				return -ENOTDIR;
		}
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

/* Ends the transaction the caller began: COMMIT when rc is 0, else ROLLBACK. Returns the outcome.
 */
static int
end_txn(sqlite3 *db, int rc)
{
	if (rc == 0)
		return exec_sql(db, "COMMIT", NULL, 0);
	exec_sql(db, "ROLLBACK", NULL, 0);
	return rc;
}

static int
open_conn(const char *path, sqlite3 **out, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	/*
	 * Serialized: the reader connection is used by every worker loop
	 * (state reads) and the control loop (imports, registry builds).
	 */
	int rc = sqlite3_open_v2(
	        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
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
		if (sqlite3_errcode(db) == SQLITE_NOTADB || sqlite3_errcode(db) == SQLITE_CORRUPT)
			snprintf(err, errlen, "not an SQLite database, or a corrupt one (%s)",
			         sqlite3_errmsg(db));
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

/*
 * Applies one batch of queued operations: the touches of a run between
 * provisionings commit together; each provisioning is its own transaction
 * and reports back through its callback.
 */
static int
apply_batch(sqlite3 *db, sqlite3_stmt *touch, store_op *ops)
{
	int rc = 0, in_txn = 0;

	for (store_op *op = ops; op != NULL; op = op->next) {
		if (op->kind == OP_JOB) {
			if (in_txn) {
				int c = exec_sql(db, "COMMIT", NULL, 0);
				rc = rc != 0 ? rc : c;
				in_txn = 0;
			}
			int r = exec_sql(db, "BEGIN IMMEDIATE", NULL, 0);
			if (r == 0) {
				r = end_txn(db, op->run(db, op->arg));
			}
			op->job_done(op->arg, r);
			continue;
		}
		if (op->kind == OP_PROVISION) {
			if (in_txn) {
				int c = exec_sql(db, "COMMIT", NULL, 0);
				rc = rc != 0 ? rc : c;
				in_txn = 0;
			}
			dg_provision_result res;
			provision_on(db, op->project_id, op->cert_id, &res);
			op->done(op->arg, &res);
			continue;
		}
		if (!in_txn) {
			int b = exec_sql(db, "BEGIN IMMEDIATE", NULL, 0);
			if (b != 0) {
				rc = b;
				continue;
			}
			in_txn = 1;
		}
		sqlite3_bind_int64(touch, 1, op->ts_ms);
		sqlite3_bind_int64(touch, 2, op->device_id);
		int st = sqlite3_step(touch);
		sqlite3_reset(touch);
		if (st != SQLITE_DONE)
			rc = sqlite_errno(st);
	}
	if (in_txn) {
		int c = exec_sql(db, "COMMIT", NULL, 0);
		rc = rc != 0 ? rc : c;
	}
	return rc;
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
			free(batch->cert_id);
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
	char why[384] = "";
	int rc;

	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	pthread_cond_init(&st->done_cv, NULL);
	st->max_queue = DG_STORE_DEFAULT_MAX_QUEUE;

	/* Every error names the file: `why` is the reason, err gets "<path>: <why>". */
	rc = mkdir_parents(path);
	if (rc != 0) {
		snprintf(why, sizeof(why), "cannot create its directory: %s", strerror(-rc));
		goto out;
	}
	rc = open_conn(path, &st->db, why, sizeof(why));
	if (rc != 0)
		goto out;
	/*
	 * SQLite opens a file it may not write (mode bits, an immutable
	 * attribute, a read-only mount) read-only without a word; the daemon
	 * would then fail on its first write. Say so now.
	 */
	if ((flags & DG_STORE_WRITER) && sqlite3_db_readonly(st->db, "main") == 1) {
		snprintf(why, sizeof(why),
		         "cannot be written (read-only: check its permissions, its owner, its "
		         "directory and attributes such as chattr +i)");
		rc = -EACCES;
		goto out;
	}
	rc = migrate(st->db, why, sizeof(why));
	if (rc != 0)
		goto out;
	if (flags & DG_STORE_WRITER) {
		rc = open_conn(path, &st->wdb, why, sizeof(why));
		if (rc != 0)
			goto out;
		rc = -pthread_create(&st->writer, NULL, writer_main, st);
		if (rc != 0) {
			snprintf(why, sizeof(why), "cannot start writer thread: %s", strerror(-rc));
			goto out;
		}
		st->has_writer = 1;
	}
	*out = st;
	st = NULL;
out:
	if (rc != 0)
		snprintf(err, errlen, "%s: %s", path, why);
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

void
dg_store_set_max_queue(dg_store *st, uint64_t max_queue)
{
	pthread_mutex_lock(&st->mu);
	st->max_queue = max_queue > 0 ? max_queue : 1;
	pthread_mutex_unlock(&st->mu);
}

/*
 * Queues one op, or frees it and returns -EAGAIN when max_queue ops are
 * already waiting for their commit (the batch being written included).
 */
static int
enqueue(dg_store *st, store_op *op)
{
	pthread_mutex_lock(&st->mu);
	if (st->queued - st->committed >= st->max_queue) {
		pthread_mutex_unlock(&st->mu);
		free(op->cert_id);
		free(op);
		return -EAGAIN;
	}
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
	return enqueue(st, op);
}

int
dg_store_job(dg_store *st, int (*run)(sqlite3 *db, void *arg), void (*done)(void *arg, int rc),
             void *arg)
{
	store_op *op;

	if (!st->has_writer)
		return -EPIPE;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->kind = OP_JOB;
	op->run = run;
	op->job_done = done;
	op->arg = arg;
	return enqueue(st, op);
}

int
dg_store_run(dg_store *st, int (*run)(sqlite3 *db, void *arg), void *arg)
{
	int rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	return end_txn(st->db, run(st->db, arg));
}

sqlite3 *
dg_store_reader(dg_store *st)
{
	return st->db;
}

int
dg_store_errno(int sqlite_rc)
{
	return sqlite_errno(sqlite_rc);
}

int
dg_store_provision_async(dg_store *st, int64_t project_id, const char *cert_id,
                         void (*done)(void *arg, const dg_provision_result *res), void *arg)
{
	store_op *op;

	if (!st->has_writer)
		return -EPIPE;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->cert_id = strdup(cert_id);
	if (op->cert_id == NULL) {
		free(op);
		return -ENOMEM;
	}
	op->kind = OP_PROVISION;
	op->project_id = project_id;
	op->done = done;
	op->arg = arg;
	return enqueue(st, op);
}

uint64_t
dg_store_queue_depth(dg_store *st)
{
	pthread_mutex_lock(&st->mu);
	uint64_t n = st->queued - st->committed;
	pthread_mutex_unlock(&st->mu);
	return n;
}

int
dg_store_flush_timeout(dg_store *st, unsigned timeout_ms)
{
	struct timespec until;
	int rc = 0;

	if (!st->has_writer)
		return 0;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&st->mu);
	uint64_t target = st->queued;
	while (st->committed < target && rc == 0)
		if (pthread_cond_timedwait(&st->done_cv, &st->mu, &until) == ETIMEDOUT)
			rc = -ETIMEDOUT;
	if (rc == 0)
		rc = st->write_error;
	pthread_mutex_unlock(&st->mu);
	return rc;
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

static int bump_serial(sqlite3 *db);

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
	if (rc == 0)
		rc = bump_serial(st->db);
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
	                        " d.blocked, c.source, c.created_at FROM credentials c"
	                        " JOIN devices d ON d.id = c.device_id"
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
		        .source = (const char *)sqlite3_column_text(s, 8),
		        .created_at = sqlite3_column_int64(s, 9),
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
	                        " d.created_at, d.last_seen, d.project_id FROM devices d"
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
		        .project_id = sqlite3_column_int64(s, 7),
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

/* Runs `sql` with one text binding (NULL: none); returns 0 or a negative errno. */
static int
exec_bound(sqlite3 *db, const char *sql, const char *text)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	if (text != NULL)
		sqlite3_bind_text(s, 1, text, -1, SQLITE_STATIC);
	rc = step_done(s);
	sqlite3_finalize(s);
	return rc;
}

static int
bump_serial(sqlite3 *db)
{
	return exec_bound(db, "UPDATE meta SET value = value + 1 WHERE key = 'registry_serial'",
	                  NULL);
}

int64_t
dg_store_registry_serial(dg_store *st)
{
	sqlite3_stmt *s = NULL;
	int64_t v = -1;
	if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = 'registry_serial'", -1,
	                       &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

int
dg_store_set_project(dg_store *st, const char *slug, const dg_project_settings *ps)
{
	sqlite3_stmt *s = NULL;
	int rc;

	rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(
	        st->db,
	        "INSERT INTO projects (slug, name, enabled, auto_provision, created_at)"
	        " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (slug) DO UPDATE SET"
	        " name = excluded.name, enabled = excluded.enabled,"
	        " auto_provision = excluded.auto_provision",
	        -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, ps->name != NULL ? ps->name : slug, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, ps->enabled != 0);
	sqlite3_bind_int(s, 4, ps->auto_provision != 0);
	sqlite3_bind_int64(s, 5, dg_now_ms());
	rc = step_done(s);
	if (rc == 0)
		rc = bump_serial(st->db);
out:
	sqlite3_finalize(s);
	return end_txn(st->db, rc);
}

int
dg_store_disable_missing(dg_store *st, const char *const *present, size_t n)
{
	sqlite3_stmt *s = NULL;
	int rc = exec_sql(st->db,
	                  "BEGIN IMMEDIATE; CREATE TEMP TABLE IF NOT EXISTS present (slug TEXT);"
	                  " DELETE FROM temp.present;",
	                  NULL, 0);
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(st->db, "INSERT INTO temp.present (slug) VALUES (?1)", -1, &s,
	                        NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		sqlite3_bind_text(s, 1, present[i], -1, SQLITE_STATIC);
		rc = step_done(s);
		sqlite3_reset(s);
	}
	if (rc == 0)
		rc = exec_bound(st->db,
		                "UPDATE projects SET enabled = 0 WHERE enabled = 1 AND slug NOT IN"
		                " (SELECT slug FROM temp.present)",
		                NULL);
	if (rc == 0 && sqlite3_changes(st->db) > 0)
		rc = bump_serial(st->db);
out:
	sqlite3_finalize(s);
	return end_txn(st->db, rc);
}

/* Replaces (or keeps, for a bad file) the rows of one source, and marks it present. */
static int
sync_trust_file(sqlite3 *db, int64_t pid, const char *table, const dg_trust_file *f)
{
	sqlite3_stmt *s = NULL;
	char sql[256];
	int rc;

	rc = exec_bound(db, "INSERT INTO temp.sources (source) VALUES (?1)", f->source);
	if (rc != 0 || !f->ok)
		return rc;
	snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE project_id = %lld AND source = ?1", table,
	         (long long)pid);
	rc = exec_bound(db, sql, f->source);
	if (rc != 0)
		return rc;
	if (strcmp(table, "crls") == 0) {
		rc = sqlite3_prepare_v2(
		        db, "INSERT INTO crls (project_id, source, der) VALUES (?1, ?2, ?3)", -1,
		        &s, NULL);
		if (rc != SQLITE_OK)
			return sqlite_errno(rc);
		sqlite3_bind_int64(s, 1, pid);
		sqlite3_bind_text(s, 2, f->source, -1, SQLITE_STATIC);
		sqlite3_bind_blob(s, 3, f->crl, (int)f->crl_len, SQLITE_STATIC);
		rc = step_done(s);
		sqlite3_finalize(s);
		return rc;
	}
	rc = sqlite3_prepare_v2(
	        db,
	        "INSERT INTO cas (project_id, fingerprint, subject, not_before, not_after,"
	        " source, der) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
	        " ON CONFLICT (project_id, fingerprint) DO UPDATE SET"
	        " source = excluded.source",
	        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	for (size_t i = 0; i < f->n_cas && rc == 0; i++) {
		const dg_ca_cert *c = &f->cas[i];
		sqlite3_bind_int64(s, 1, pid);
		sqlite3_bind_text(s, 2, c->fingerprint, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, c->subject, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, c->not_before_ms);
		sqlite3_bind_int64(s, 5, c->not_after_ms);
		sqlite3_bind_text(s, 6, f->source, -1, SQLITE_STATIC);
		sqlite3_bind_blob(s, 7, c->der, (int)c->der_len, SQLITE_STATIC);
		rc = step_done(s);
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	return rc;
}

int
dg_store_sync_trust(dg_store *st, const char *slug, const dg_trust_file *ca_files,
                    size_t n_ca_files, const dg_trust_file *crl_files, size_t n_crl_files)
{
	int64_t pid = 0;
	char sql[256];
	int rc;

	rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	rc = project_id(st->db, slug, &pid);
	if (rc == 0)
		rc = exec_sql(st->db,
		              "CREATE TEMP TABLE IF NOT EXISTS sources (source TEXT);"
		              " DELETE FROM temp.sources;",
		              NULL, 0);
	for (size_t i = 0; i < n_ca_files && rc == 0; i++)
		rc = sync_trust_file(st->db, pid, "cas", &ca_files[i]);
	if (rc == 0) {
		snprintf(sql, sizeof(sql),
		         "DELETE FROM cas WHERE project_id = %lld AND source NOT IN"
		         " (SELECT source FROM temp.sources); DELETE FROM temp.sources;",
		         (long long)pid);
		rc = exec_sql(st->db, sql, NULL, 0);
	}
	for (size_t i = 0; i < n_crl_files && rc == 0; i++)
		rc = sync_trust_file(st->db, pid, "crls", &crl_files[i]);
	if (rc == 0) {
		snprintf(sql, sizeof(sql),
		         "DELETE FROM crls WHERE project_id = %lld AND source NOT IN"
		         " (SELECT source FROM temp.sources)",
		         (long long)pid);
		rc = exec_sql(st->db, sql, NULL, 0);
	}
	if (rc == 0)
		rc = bump_serial(st->db);
	if (rc == 0)
		return exec_sql(st->db, "COMMIT", NULL, 0);
	log_errorx("store: trust sync of project %s failed: %s", slug, sqlite3_errmsg(st->db));
	exec_sql(st->db, "ROLLBACK", NULL, 0);
	return rc;
}

int
dg_store_each_project(dg_store *st, int (*cb)(void *arg, const dg_project_row *row), void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(
	        st->db,
	        "SELECT p.id, p.slug, p.name, p.enabled, p.auto_provision,"
	        " (SELECT COUNT(*) FROM devices d WHERE d.project_id = p.id) FROM projects p"
	        " ORDER BY p.slug",
	        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		dg_project_row row = {
		        .id = sqlite3_column_int64(s, 0),
		        .slug = (const char *)sqlite3_column_text(s, 1),
		        .name = (const char *)sqlite3_column_text(s, 2),
		        .enabled = sqlite3_column_int(s, 3),
		        .auto_provision = sqlite3_column_int(s, 4),
		        .devices = sqlite3_column_int64(s, 5),
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
dg_store_each_ca(dg_store *st, int (*cb)(void *arg, const dg_ca_row *row), void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(st->db,
	                            "SELECT project_id, fingerprint, subject, source, not_before,"
	                            " not_after, der FROM cas ORDER BY project_id, source, id",
	                            -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		dg_ca_row row = {
		        .project_id = sqlite3_column_int64(s, 0),
		        .fingerprint = (const char *)sqlite3_column_text(s, 1),
		        .subject = (const char *)sqlite3_column_text(s, 2),
		        .source = (const char *)sqlite3_column_text(s, 3),
		        .not_before = sqlite3_column_int64(s, 4),
		        .not_after = sqlite3_column_int64(s, 5),
		        .der = sqlite3_column_blob(s, 6),
		        .der_len = (size_t)sqlite3_column_bytes(s, 6),
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
dg_store_each_crl(dg_store *st, int (*cb)(void *arg, const dg_crl_row *row), void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(
	        st->db, "SELECT project_id, source, der FROM crls ORDER BY project_id, id", -1, &s,
	        NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		dg_crl_row row = {
		        .project_id = sqlite3_column_int64(s, 0),
		        .source = (const char *)sqlite3_column_text(s, 1),
		        .der = sqlite3_column_blob(s, 2),
		        .der_len = (size_t)sqlite3_column_bytes(s, 2),
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
dg_store_set_blocked(dg_store *st, const char *slug, const char *name, int blocked)
{
	sqlite3_stmt *s = NULL;
	int rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(st->db,
	                        "UPDATE devices SET blocked = ?3 WHERE name = ?2 AND project_id ="
	                        " (SELECT id FROM projects WHERE slug = ?1)",
	                        -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, blocked != 0);
	rc = step_done(s);
	if (rc == 0 && sqlite3_changes(st->db) == 0)
		rc = -ENOENT;
	if (rc == 0)
		rc = bump_serial(st->db);
out:
	sqlite3_finalize(s);
	return end_txn(st->db, rc);
}

int
dg_store_psk_add(dg_store *st, const char *slug, const char *name, const char *identity,
                 const uint8_t *key, size_t key_len)
{
	sqlite3_stmt *s = NULL;
	int64_t pid = 0, now = dg_now_ms();
	int rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(st->db, "SELECT id FROM projects WHERE slug = ?1", -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		rc = rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
		goto out;
	}
	pid = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	s = NULL;
	rc = sqlite3_prepare_v2(
	        st->db,
	        "INSERT INTO devices (project_id, name, created_at) VALUES (?1, ?2, ?3)"
	        " ON CONFLICT (project_id, name) DO NOTHING",
	        -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	rc = step_done(s);
	sqlite3_finalize(s);
	s = NULL;
	if (rc != 0)
		goto out;
	rc = sqlite3_prepare_v2(
	        st->db,
	        "INSERT INTO credentials (device_id, identity, psk, source, created_at)"
	        " SELECT id, ?3, ?4, 'cli', ?5 FROM devices WHERE project_id = ?1 AND name = ?2",
	        -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, identity, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 4, key, (int)key_len, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, now);
	rc = step_done(s);
	if (rc == 0)
		rc = bump_serial(st->db);
out:
	sqlite3_finalize(s);
	return end_txn(st->db, rc);
}

int
dg_store_psk_remove(dg_store *st, const char *identity)
{
	sqlite3_stmt *s = NULL;
	int rc = exec_sql(st->db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(st->db, "SELECT source FROM credentials WHERE identity = ?1", -1,
	                        &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto out;
	}
	sqlite3_bind_text(s, 1, identity, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		rc = rc == SQLITE_DONE ? -ENOENT : sqlite_errno(rc);
		goto out;
	}
	rc = strcmp((const char *)sqlite3_column_text(s, 0), "cli") == 0 ? 0 : -EPERM;
	if (rc == 0)
		rc = exec_bound(st->db, "DELETE FROM credentials WHERE identity = ?1", identity);
	if (rc == 0)
		rc = bump_serial(st->db);
out:
	sqlite3_finalize(s);
	return end_txn(st->db, rc);
}

/* Looks up one device id and name by a WHERE clause over (project, text). */
static int
find_device(sqlite3 *db, const char *where, int64_t pid, const char *text, int64_t *id, char *name,
            size_t cap, int *blocked)
{
	sqlite3_stmt *s = NULL;
	char sql[256];
	int rc;

	snprintf(sql, sizeof(sql),
	         "SELECT id, name, blocked FROM devices WHERE project_id = ?1 AND %s", where);
	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sqlite_errno(rc);
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		snprintf(name, cap, "%s", (const char *)sqlite3_column_text(s, 1));
		*blocked = sqlite3_column_int(s, 2);
		rc = 1;
	} else {
		rc = rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
	}
	sqlite3_finalize(s);
	return rc;
}

/*
 * Finds or makes the device of a certificate's first connection. It does
 * not bump the registry serial: a rebuild costs O(devices) and a
 * revalidation pass O(sessions) on the loop, and a first connection must
 * cost neither. The session takes its device from the result; the snapshot
 * learns the certificate ID at its next rebuild (an import, or a CLI change
 * such as a block, which bumps the serial itself), and until then a second
 * connection of the certificate is provisioned again, which finds this row.
 */
static void
provision_on(sqlite3 *db, int64_t pid, const char *cert_id, dg_provision_result *res)
{
	sqlite3_stmt *s = NULL;
	int64_t id = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	rc = exec_sql(db, "BEGIN IMMEDIATE", NULL, 0);
	if (rc != 0)
		goto done;
	rc = find_device(db, "certificate_id = ?2", pid, cert_id, &id, res->name, sizeof(res->name),
	                 &res->blocked);
	if (rc == 1)
		goto found;
	if (rc == 0)
		rc = find_device(db, "name = ?2 AND certificate_id IS NULL", pid, cert_id, &id,
		                 res->name, sizeof(res->name), &res->blocked);
	if (rc == 1) {
		rc = sqlite3_prepare_v2(db, "UPDATE devices SET certificate_id = ?1 WHERE id = ?2",
		                        -1, &s, NULL);
		if (rc != SQLITE_OK) {
			rc = sqlite_errno(rc);
			goto fail;
		}
		sqlite3_bind_text(s, 1, cert_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, id);
		rc = step_done(s);
		if (rc != 0)
			goto fail;
		res->attached = 1;
		goto found;
	}
	if (rc < 0)
		goto fail;
	rc = sqlite3_prepare_v2(
	        db,
	        "INSERT INTO devices (project_id, name, certificate_id, created_at)"
	        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (project_id, name) DO NOTHING",
	        -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlite_errno(rc);
		goto fail;
	}
	/* The name is the certificate ID; when another certificate took it, add a suffix. */
	for (int attempt = 0; attempt < 8; attempt++) {
		char name[sizeof(res->name)];
		if (attempt == 0) {
			snprintf(name, sizeof(name), "%s", cert_id);
		} else {
			uint32_t r = 0;
			sqlite3_randomness(sizeof(r), &r);
			snprintf(name, sizeof(name), "%s-%06x", cert_id, r & 0xffffff);
		}
		sqlite3_bind_int64(s, 1, pid);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(s, 3, cert_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, dg_now_ms());
		rc = step_done(s);
		sqlite3_reset(s);
		if (rc != 0)
			goto fail;
		if (sqlite3_changes(db) == 1) {
			id = sqlite3_last_insert_rowid(db);
			snprintf(res->name, sizeof(res->name), "%s", name);
			res->created = 1;
			goto found;
		}
	}
	rc = -EEXIST;
	goto fail;
found:
	sqlite3_finalize(s);
	s = NULL;
	rc = exec_sql(db, "COMMIT", NULL, 0);
	if (rc != 0)
		goto fail;
	res->device_id = id;
	res->rc = 0;
	return;
fail:
	sqlite3_finalize(s);
	exec_sql(db, "ROLLBACK", NULL, 0);
done:
	res->rc = rc != 0 ? rc : -EIO;
	res->created = res->attached = 0;
}

void
dg_store_provision(dg_store *st, int64_t project_id, const char *cert_id, dg_provision_result *res)
{
	provision_on(st->db, project_id, cert_id, res);
}
