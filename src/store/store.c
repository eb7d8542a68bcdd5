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
#include "devgate/map.h"
#include "devgate/store.h"

#include "schema.inc"

/*
 * Group commit. The writer takes what is queued and applies it in
 * transactions of at most BATCH_MAX_OPS operations or BATCH_MAX_US of work,
 * each job in a SAVEPOINT of its own (a job that fails rolls back to it
 * alone); every callback of a transaction runs after its one COMMIT (with
 * the COMMIT's error, for all of them, when it fails). One fsync then
 * acknowledges a whole batch.
 */
#define BATCH_MAX_OPS 2048
#define BATCH_MAX_US  10000

/* last_seen is written at most once per device per this many ms (and at a flush). */
#define DG_STORE_TOUCH_INTERVAL_MS 60000
/* How often the writer looks for coalesced last_seen values that are due. */
#define TOUCH_SWEEP_MS 1000
/*
 * last_seen values waiting for the writer, at most (beyond it one is
 * dropped: a later session writes it again). They never wake the writer:
 * they go with its next batch or its sweep, so a reconnect storm of new
 * devices costs one commit a second, not one a handshake.
 */
#define MAX_TOUCHES_QUEUED (1u << 20)

enum op_kind { OP_TOUCH = 1, OP_PROVISION = 2, OP_JOB = 3 };

typedef struct store_op {
	struct store_op *next;
	enum op_kind kind;
	int rc;            /* The outcome, known after the transaction ends. */
	int64_t device_id; /* OP_TOUCH */
	int64_t ts_ms;
	int64_t project_id; /* OP_PROVISION */
	char *cert_id;
	dg_provision_result *res;
	void (*done)(void *arg, const dg_provision_result *res);
	void *arg;
	int (*run)(sqlite3 *db, void *arg); /* OP_JOB, and reads */
	void (*job_done)(void *arg, int rc);
} store_op;

/* A FIFO of ops with its counters; guarded by the store's mutex. */
typedef struct op_queue {
	store_op *head, *tail;
	uint64_t queued;   /* Ops queued so far. */
	uint64_t finished; /* Ops committed (or failed) so far. */
} op_queue;

/* One device's coalesced last_seen; the writer thread's alone. */
typedef struct touch_ent {
	int64_t device_id;
	int64_t pending;    /* The largest value not written yet, or -1. */
	int64_t written_at; /* CLOCK_MONOTONIC ms of the last write, or INT64_MIN. */
	int in_txn;         /* Written in the open transaction. */
	int dirty;          /* Listed in the writer's dirty array. */
} touch_ent;

/* What the writer thread keeps between batches. */
typedef struct writer {
	sqlite3 *db;
	sqlite3_stmt *touch;
	dg_map *touches;   /* device_id -> touch_ent */
	touch_ent **dirty; /* Touched in the open transaction. */
	size_t n_dirty, cap_dirty;
	int64_t last_sweep; /* CLOCK_MONOTONIC ms. */
	int fail_rc;        /* The error of the failing run of transactions, or 0. */
	uint64_t n_failed;  /* Transactions failed in that run. */
} writer;

static int provision_in(sqlite3 *db, int64_t project_id, const char *cert_id,
                        dg_provision_result *res);

struct dg_store {
	sqlite3 *db;
	sqlite3 *wdb; /* The writer's connection, or NULL. */
	sqlite3 *rdb; /* The reader's connection, or NULL. */
	pthread_t writer, reader;
	int has_writer, has_reader;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* Signals the writer: work, a flush or stop. */
	pthread_cond_t rcv;     /* Signals the reader: work or stop. */
	pthread_cond_t done_cv; /* Signals flushers: a transaction or reads finished. */
	op_queue w, r;
	op_queue t;         /* last_seen values (OP_TOUCH), taken by the writer on each pass. */
	uint64_t max_queue; /* Ops queued and not finished, at most, per queue. */
	uint64_t flush_req, flush_done; /* Flushes asked for, and served. */
	int64_t touch_interval_ms;
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
	int rc = sqlite3_open_v2(path, &db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	                         NULL);
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

static int64_t
mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

sqlite3_stmt *
dg_store_stmt(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s = NULL;

	/*
	 * The connection's statements are the cache: a handful per connection,
	 * so a walk over them costs less than one prepare. A statement in use
	 * (stepped and not reset) is skipped, so a nested use gets its own.
	 */
	while ((s = sqlite3_next_stmt(db, s)) != NULL) {
		const char *text = sqlite3_sql(s);
		if (text != NULL && !sqlite3_stmt_busy(s) && strcmp(text, sql) == 0)
			return s;
	}
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
		sqlite3_finalize(s);
		return NULL;
	}
	return s;
}

void
dg_store_stmt_done(sqlite3_stmt *s)
{
	if (s == NULL)
		return;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

int
dg_store_stmt_run(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	dg_store_stmt_done(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

/* Finalizes every statement of `db` (the cache included) and closes it. NULL is a no-op. */
static void
close_conn(sqlite3 *db)
{
	sqlite3_stmt *s;
	if (db == NULL)
		return;
	while ((s = sqlite3_next_stmt(db, NULL)) != NULL)
		sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Runs one cached, parameterless statement (a SAVEPOINT, a BEGIN). */
static int
exec_cached(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s = dg_store_stmt(db, sql);
	if (s == NULL)
		return sqlite_errno(sqlite3_errcode(db)) != 0 ? sqlite_errno(sqlite3_errcode(db))
		                                              : -EIO;
	int rc = sqlite3_step(s);
	dg_store_stmt_done(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

/*
 * Runs fn inside a SAVEPOINT of the open transaction: when it fails, what
 * it did is rolled back and the rest of the transaction stands. Returns
 * fn's result, or the savepoint's error.
 */
static int
in_savepoint(sqlite3 *db, int (*fn)(sqlite3 *db, void *arg), void *arg)
{
	int rc = exec_cached(db, "SAVEPOINT job");
	if (rc != 0)
		return rc;
	rc = fn(db, arg);
	if (sqlite3_get_autocommit(db))
		return rc != 0 ? rc : -EIO; /* An error SQLite met ended the whole transaction. */
	if (rc != 0)
		exec_cached(db, "ROLLBACK TO job");
	int r = exec_cached(db, "RELEASE job");
	return rc != 0 ? rc : r;
}

static int
provision_fn(sqlite3 *db, void *arg)
{
	store_op *op = arg;
	return provision_in(db, op->project_id, op->cert_id, op->res);
}

/* Notes a last_seen value; it is written when due (at most once per interval per device). */
static void
touch_note(writer *w, int64_t device_id, int64_t ts_ms)
{
	dg_map_key key;
	dg_map_key_u64(&key, (uint64_t)device_id);
	touch_ent *e = dg_map_get(w->touches, &key);
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL || dg_map_put(w->touches, &key, e, NULL) != 0) {
			free(e);
			log_errorx("store: out of memory; a last_seen update is lost");
			return;
		}
		e->device_id = device_id;
		e->pending = -1;
		e->written_at = INT64_MIN;
	}
	if (ts_ms > e->pending)
		e->pending = ts_ms;
	if (!e->dirty) {
		if (w->n_dirty == w->cap_dirty) {
			size_t cap = w->cap_dirty ? w->cap_dirty * 2 : 64;
			touch_ent **d = realloc(w->dirty, cap * sizeof(*d));
			if (d == NULL)
				return; /* It stays pending; the sweep writes it. */
			w->dirty = d;
			w->cap_dirty = cap;
		}
		w->dirty[w->n_dirty++] = e;
		e->dirty = 1;
	}
}

/* Writes entry e's pending value in the open transaction. */
static int
touch_write(writer *w, touch_ent *e)
{
	if (w->touch == NULL)
		return -EIO;
	sqlite3_bind_int64(w->touch, 1, e->pending);
	sqlite3_bind_int64(w->touch, 2, e->device_id);
	int rc = sqlite3_step(w->touch);
	sqlite3_reset(w->touch);
	if (rc != SQLITE_DONE)
		return sqlite_errno(rc);
	e->in_txn = 1;
	return 0;
}

static int
touch_due(const dg_store *st, const touch_ent *e, int64_t now_ms)
{
	return e->pending >= 0 &&
	       (e->written_at == INT64_MIN || now_ms - e->written_at >= st->touch_interval_ms);
}

/* Writes the due values among the entries touched in this transaction. */
static int
touch_write_dirty(dg_store *st, writer *w, int force)
{
	int64_t now = mono_us() / 1000;
	for (size_t i = 0; i < w->n_dirty; i++) {
		touch_ent *e = w->dirty[i];
		if (force ? e->pending >= 0 : touch_due(st, e, now)) {
			int rc = touch_write(w, e);
			if (rc != 0)
				return rc;
		}
	}
	return 0;
}

/*
 * The transaction ended: the values it wrote are written (committed) or
 * pending again (it failed). Costs O(entries touched in it).
 */
static void
touch_end_txn(writer *w, int committed)
{
	int64_t now = mono_us() / 1000;
	for (size_t i = 0; i < w->n_dirty; i++) {
		touch_ent *e = w->dirty[i];
		if (e->in_txn && committed) {
			e->pending = -1;
			e->written_at = now;
		}
		e->in_txn = 0;
		e->dirty = 0;
	}
	w->n_dirty = 0;
}

typedef struct sweep_ctx {
	dg_store *st;
	writer *w;
	int force;
	int64_t now;
	touch_ent **gone;
	size_t n_gone, cap_gone;
} sweep_ctx;

static void
sweep_one(void *v, void *arg)
{
	touch_ent *e = v;
	sweep_ctx *c = arg;
	if (e->in_txn)
		return;
	if (c->force ? e->pending >= 0 : touch_due(c->st, e, c->now)) {
		touch_note(c->w, e->device_id, e->pending);
		return;
	}
	/* Idle for a whole interval: forget it (its next touch is written at once). */
	if (e->pending < 0 && c->now - e->written_at >= c->st->touch_interval_ms &&
	    c->n_gone < c->cap_gone)
		c->gone[c->n_gone++] = e;
}

/* Calls the callbacks of a finished transaction, in queue order, and frees its ops. */
static void
ack_ops(store_op *op)
{
	while (op != NULL) {
		store_op *next = op->next;
		if (op->kind == OP_JOB) {
			op->job_done(op->arg, op->rc);
		} else if (op->kind == OP_PROVISION) {
			if (op->rc != 0) {
				memset(op->res, 0, sizeof(*op->res));
				op->res->rc = op->rc;
			}
			op->done(op->arg, op->res);
		}
		free(op->res);
		free(op->cert_id);
		free(op);
		op = next;
	}
}

/*
 * Applies ops from the head of *list in one transaction, as many as fit in
 * BATCH_MAX_OPS and BATCH_MAX_US of work, and settles the outcome of each.
 * The ops applied are cut off *list (which keeps the rest) and returned,
 * with their count in *n; the caller acknowledges them.
 */
static store_op *
apply_txn(dg_store *st, writer *w, store_op **list, int force, uint64_t *n, int *txn_rc)
{
	sqlite3 *db = w->db;
	store_op *first = *list, *last = NULL;
	int64_t t0 = mono_us();
	int rc = exec_cached(db, "BEGIN IMMEDIATE");

	*n = 0;
	for (store_op *op = first; op != NULL; op = op->next) {
		last = op;
		(*n)++;
		if (rc != 0) {
			op->rc = rc;
		} else if (op->kind == OP_JOB) {
			op->rc = in_savepoint(db, op->run, op->arg);
		} else if (op->kind == OP_PROVISION) {
			op->rc = in_savepoint(db, provision_fn, op);
		} else {
			op->rc = 0;
			touch_note(w, op->device_id, op->ts_ms);
		}
		/* An error that ended the transaction (I/O, disk full) fails all of it. */
		if (rc == 0 && sqlite3_get_autocommit(db))
			rc = op->rc != 0 ? op->rc : -EIO;
		if (*n >= BATCH_MAX_OPS || mono_us() - t0 >= BATCH_MAX_US)
			break;
	}
	if (last != NULL) {
		*list = last->next;
		last->next = NULL;
	} else {
		*list = NULL;
	}
	if (rc == 0)
		rc = touch_write_dirty(st, w, force && *list == NULL);
	if (rc == 0)
		rc = exec_cached(db, "COMMIT");
	if (rc != 0) {
		if (!sqlite3_get_autocommit(db))
			exec_cached(db, "ROLLBACK");
		for (store_op *op = first; op != NULL && last != NULL; op = op->next)
			op->rc = rc;
	}
	touch_end_txn(w, rc == 0);
	*txn_rc = rc;
	return last != NULL ? first : NULL;
}

/*
 * Logs how a transaction ended, once per run rather than per transaction:
 * the first failure of a run (a full disk fails every write until space
 * returns, and each is answered with an error), a change of its error, and
 * the first success after it, with the count of what failed meanwhile.
 */
static void
note_outcome(writer *w, int rc, const char *what)
{
	if (rc != 0 && rc == w->fail_rc) {
		w->n_failed++;
		return;
	}
	if (w->fail_rc != 0)
		dg_log(rc != 0 ? DG_LOG_ERROR : DG_LOG_INFO, "store.recovered",
		       "store: %llu write transactions failed with \"%s\"%s",
		       (unsigned long long)w->n_failed, strerror(-w->fail_rc),
		       rc != 0 ? ", and now with another error" : "; writes succeed again");
	if (rc != 0)
		dg_log(DG_LOG_ERROR, "store.failing",
		       "store: %s failed: %s; every write fails with it (answered with an error, "
		       "nothing acknowledged) until one succeeds, which is logged",
		       what, strerror(-rc));
	w->fail_rc = rc;
	w->n_failed = rc != 0 ? 1 : 0;
}

/* Applies a list in transactions of bounded size, acknowledging each after its COMMIT. */
static void
apply_list(dg_store *st, writer *w, store_op *list, int force)
{
	while (list != NULL) {
		uint64_t n = 0;
		int rc = 0;
		store_op *done = apply_txn(st, w, &list, force, &n, &rc);
		note_outcome(w, rc, "a write transaction");
		ack_ops(done);
		pthread_mutex_lock(&st->mu);
		if (rc != 0 && st->write_error == 0)
			st->write_error = rc;
		st->w.finished += n;
		pthread_cond_broadcast(&st->done_cv);
		pthread_mutex_unlock(&st->mu);
	}
}

/* Writes the coalesced last_seen values that are due (all of them when forced). */
static void
touch_sweep(dg_store *st, writer *w, int force)
{
	sweep_ctx c = {.st = st, .w = w, .force = force, .now = mono_us() / 1000};
	touch_ent *gone[256];

	c.gone = gone;
	c.cap_gone = sizeof(gone) / sizeof(gone[0]);
	w->last_sweep = c.now;
	dg_map_each(w->touches, sweep_one, &c);
	for (size_t i = 0; i < c.n_gone; i++) {
		dg_map_key key;
		dg_map_key_u64(&key, (uint64_t)c.gone[i]->device_id);
		free(dg_map_del(w->touches, &key));
	}
	if (w->n_dirty == 0)
		return;
	store_op *none = NULL;
	uint64_t n = 0;
	int rc = 0;
	apply_txn(st, w, &none, force, &n, &rc);
	note_outcome(w, rc, "a last_seen update");
}

static void
free_touch(void *v, void *arg)
{
	(void)arg;
	free(v);
}

static void
deadline_in(struct timespec *until, unsigned ms)
{
	clock_gettime(CLOCK_REALTIME, until);
	until->tv_sec += ms / 1000;
	until->tv_nsec += (long)(ms % 1000) * 1000000;
	if (until->tv_nsec >= 1000000000) {
		until->tv_sec++;
		until->tv_nsec -= 1000000000;
	}
}

static void *
writer_main(void *arg)
{
	dg_store *st = arg;
	writer w = {.db = st->wdb};

	if (dg_map_new(&w.touches) != 0)
		log_errorx("store: out of memory for the writer");
	w.touch = dg_store_stmt(st->wdb,
	                        "UPDATE devices SET last_seen = MAX(COALESCE(last_seen, 0), ?1)"
	                        " WHERE id = ?2");
	if (w.touch == NULL)
		log_errorx("store: cannot prepare writer statement: %s", sqlite3_errmsg(st->wdb));
	w.last_sweep = mono_us() / 1000;
	pthread_mutex_lock(&st->mu);
	for (;;) {
		if (st->w.head == NULL && !st->stopping && st->flush_req == st->flush_done) {
			struct timespec until;
			deadline_in(&until, TOUCH_SWEEP_MS);
			pthread_cond_timedwait(&st->cv, &st->mu, &until);
		}
		store_op *list = st->w.head, *touches = st->t.head;
		st->w.head = st->w.tail = NULL;
		st->t.head = st->t.tail = NULL;
		uint64_t flush_req = st->flush_req;
		int force = st->stopping || flush_req != st->flush_done;
		int stop = st->stopping && list == NULL;
		pthread_mutex_unlock(&st->mu);

		uint64_t n_touches = 0;
		while (touches != NULL) {
			store_op *next = touches->next;
			if (w.touches != NULL)
				touch_note(&w, touches->device_id, touches->ts_ms);
			free(touches);
			touches = next;
			n_touches++;
		}
		if (n_touches > 0) {
			pthread_mutex_lock(&st->mu);
			st->t.finished += n_touches;
			pthread_mutex_unlock(&st->mu);
		}
		if (w.touches != NULL) {
			apply_list(st, &w, list, force);
			if (force || mono_us() / 1000 - w.last_sweep >= TOUCH_SWEEP_MS)
				touch_sweep(st, &w, force);
		}

		pthread_mutex_lock(&st->mu);
		if (force && st->w.head == NULL) {
			st->flush_done = flush_req;
			pthread_cond_broadcast(&st->done_cv);
		}
		if (stop)
			break;
	}
	pthread_mutex_unlock(&st->mu);
	if (w.touches != NULL)
		dg_map_each(w.touches, free_touch, NULL);
	dg_map_free(w.touches);
	free(w.dirty);
	return NULL;
}

static void *
reader_main(void *arg)
{
	dg_store *st = arg;

	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (st->r.head == NULL && !st->stopping)
			pthread_cond_wait(&st->rcv, &st->mu);
		if (st->r.head == NULL && st->stopping)
			break;
		store_op *list = st->r.head;
		st->r.head = st->r.tail = NULL;
		pthread_mutex_unlock(&st->mu);
		uint64_t n = 0;
		while (list != NULL) {
			store_op *next = list->next;
			list->job_done(list->arg, list->run(st->rdb, list->arg));
			free(list);
			list = next;
			n++;
		}
		pthread_mutex_lock(&st->mu);
		st->r.finished += n;
		pthread_cond_broadcast(&st->done_cv);
	}
	pthread_mutex_unlock(&st->mu);
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
	pthread_cond_init(&st->rcv, NULL);
	pthread_cond_init(&st->done_cv, NULL);
	st->max_queue = DG_STORE_DEFAULT_MAX_QUEUE;
	st->touch_interval_ms = DG_STORE_TOUCH_INTERVAL_MS;

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
		if (rc == 0)
			rc = open_conn(path, &st->rdb, why, sizeof(why));
		if (rc != 0)
			goto out;
		rc = -pthread_create(&st->writer, NULL, writer_main, st);
		if (rc != 0) {
			snprintf(why, sizeof(why), "cannot start writer thread: %s", strerror(-rc));
			goto out;
		}
		st->has_writer = 1;
		rc = -pthread_create(&st->reader, NULL, reader_main, st);
		if (rc != 0) {
			snprintf(why, sizeof(why), "cannot start reader thread: %s", strerror(-rc));
			goto out;
		}
		st->has_reader = 1;
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
	pthread_mutex_lock(&st->mu);
	st->stopping = 1;
	pthread_cond_signal(&st->cv);
	pthread_cond_signal(&st->rcv);
	pthread_mutex_unlock(&st->mu);
	if (st->has_writer)
		pthread_join(st->writer, NULL);
	if (st->has_reader)
		pthread_join(st->reader, NULL);
	close_conn(st->rdb);
	close_conn(st->wdb);
	close_conn(st->db);
	pthread_cond_destroy(&st->cv);
	pthread_cond_destroy(&st->rcv);
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

void
dg_store_set_touch_interval(dg_store *st, unsigned interval_ms)
{
	pthread_mutex_lock(&st->mu);
	st->touch_interval_ms = interval_ms;
	pthread_mutex_unlock(&st->mu);
}

/*
 * Queues one op on q and signals cv (NULL: none; the op waits for the
 * thread's next pass), or frees it and returns -EAGAIN when `max` ops (0:
 * the store's max_queue) are already waiting there (the batch being
 * applied included).
 */
static int
enqueue(dg_store *st, op_queue *q, pthread_cond_t *cv, uint64_t max, store_op *op)
{
	pthread_mutex_lock(&st->mu);
	if (max == 0)
		max = st->max_queue;
	if (st->stopping || q->queued - q->finished >= max) {
		int stopping = st->stopping;
		pthread_mutex_unlock(&st->mu);
		free(op->res);
		free(op->cert_id);
		free(op);
		return stopping ? -EPIPE : -EAGAIN;
	}
	if (q->tail != NULL)
		q->tail->next = op;
	else
		q->head = op;
	q->tail = op;
	q->queued++;
	if (cv != NULL)
		pthread_cond_signal(cv);
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
	return enqueue(st, &st->t, NULL, MAX_TOUCHES_QUEUED, op);
}

/* Queues job `run` on the thread of queue `q` (signalled through `cv`), if that thread runs. */
static int
enqueue_job(dg_store *st, int has_thread, op_queue *q, pthread_cond_t *cv,
            int (*run)(sqlite3 *db, void *arg), void (*done)(void *arg, int rc), void *arg)
{
	store_op *op;

	if (!has_thread)
		return -EPIPE;
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return -ENOMEM;
	op->kind = OP_JOB;
	op->run = run;
	op->job_done = done;
	op->arg = arg;
	return enqueue(st, q, cv, 0, op);
}

int
dg_store_job(dg_store *st, int (*run)(sqlite3 *db, void *arg), void (*done)(void *arg, int rc),
             void *arg)
{
	return enqueue_job(st, st->has_writer, &st->w, &st->cv, run, done, arg);
}

int
dg_store_read(dg_store *st, int (*run)(sqlite3 *db, void *arg), void (*done)(void *arg, int rc),
              void *arg)
{
	return enqueue_job(st, st->has_reader, &st->r, &st->rcv, run, done, arg);
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
	op->res = calloc(1, sizeof(*op->res));
	if (op->cert_id == NULL || op->res == NULL) {
		free(op->res);
		free(op->cert_id);
		free(op);
		return -ENOMEM;
	}
	op->kind = OP_PROVISION;
	op->project_id = project_id;
	op->done = done;
	op->arg = arg;
	return enqueue(st, &st->w, &st->cv, 0, op);
}

uint64_t
dg_store_queue_depth(dg_store *st)
{
	pthread_mutex_lock(&st->mu);
	uint64_t n = st->w.queued - st->w.finished;
	pthread_mutex_unlock(&st->mu);
	return n;
}

/*
 * Waits until the writes and reads queued before the call finished and the
 * coalesced last_seen values are written; until `until` when not NULL.
 */
static int
flush_until(dg_store *st, const struct timespec *until)
{
	int rc = 0;

	if (!st->has_writer)
		return 0;
	pthread_mutex_lock(&st->mu);
	uint64_t wt = st->w.queued, rt = st->r.queued, ticket = ++st->flush_req;
	pthread_cond_signal(&st->cv);
	while ((st->w.finished < wt || st->r.finished < rt || st->flush_done < ticket) && rc == 0) {
		if (until == NULL)
			pthread_cond_wait(&st->done_cv, &st->mu);
		else if (pthread_cond_timedwait(&st->done_cv, &st->mu, until) == ETIMEDOUT)
			rc = -ETIMEDOUT;
	}
	if (rc == 0)
		rc = st->write_error;
	pthread_mutex_unlock(&st->mu);
	return rc;
}

int
dg_store_flush_timeout(dg_store *st, unsigned timeout_ms)
{
	struct timespec until;
	deadline_in(&until, timeout_ms);
	return flush_until(st, &until);
}

int
dg_store_flush(dg_store *st)
{
	return flush_until(st, NULL);
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
static int
provision_in(sqlite3 *db, int64_t pid, const char *cert_id, dg_provision_result *res)
{
	sqlite3_stmt *s = NULL;
	int64_t id = 0;
	int rc;

	memset(res, 0, sizeof(*res));
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
	res->device_id = id;
	res->rc = 0;
	return 0;
fail:
	sqlite3_finalize(s);
	res->rc = rc != 0 ? rc : -EIO;
	res->created = res->attached = 0;
	return res->rc;
}

/* As provision_fn() for dg_store_run(). */
typedef struct prov_call {
	int64_t project_id;
	const char *cert_id;
	dg_provision_result *res;
} prov_call;

static int
prov_call_run(sqlite3 *db, void *arg)
{
	prov_call *c = arg;
	return provision_in(db, c->project_id, c->cert_id, c->res);
}

void
dg_store_provision(dg_store *st, int64_t project_id, const char *cert_id, dg_provision_result *res)
{
	prov_call c = {project_id, cert_id, res};
	int rc = dg_store_run(st, prov_call_run, &c);
	if (rc != 0) {
		memset(res, 0, sizeof(*res));
		res->rc = rc;
	}
}
