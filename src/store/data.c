/*
 * Device data in SQLite: state documents, stream records, logs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "devgate/data.h"
#include "devgate/rpc.h"
#include "devgate/payload.h"
#include "devgate/render.h"
#include "devgate/state.h"

#define MAX_SEGMENTS 32

static int
step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : dg_store_errno(rc);
}

/*
 * JSON text of a document through the payload module, which prints numbers
 * so that they read back exactly. Returns a malloc'ed string or NULL.
 */
static char *
doc_text(const cJSON *doc)
{
	for (size_t cap = 4096; cap <= (64u << 20); cap *= 4) {
		uint8_t *buf = malloc(cap + 1);
		size_t len = 0;
		if (buf == NULL)
			return NULL;
		int rc = dg_payload_encode(50, doc, buf, cap, &len);
		if (rc == 0) {
			buf[len] = '\0';
			return (char *)buf;
		}
		free(buf);
		if (rc != -ENOBUFS)
			return NULL;
	}
	return NULL;
}

/* Reads a device's document; *text_len (when not NULL) is its stored size, 0 when none. */
static int
read_doc(sqlite3 *db, int64_t device_id, cJSON **doc, size_t *text_len)
{
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT doc FROM state WHERE device_id = ?1");
	int rc;
	*doc = NULL;
	if (text_len != NULL)
		*text_len = 0;
	if (s == NULL)
		return dg_store_errno(sqlite3_errcode(db));
	sqlite3_bind_int64(s, 1, device_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		/*
		 * cJSON reads the stored text (its nesting limit is far above
		 * what a document of 16-segment paths and 32-deep values
		 * reaches); a document that does not parse is an error, never
		 * an empty one that the next write would overwrite.
		 */
		const char *text = (const char *)sqlite3_column_text(s, 0);
		size_t len = (size_t)sqlite3_column_bytes(s, 0);
		if (text_len != NULL)
			*text_len = len;
		*doc = text != NULL ? cJSON_ParseWithLength(text, len) : NULL;
		rc = text != NULL && *doc == NULL ? -EIO : 0;
	} else {
		rc = rc == SQLITE_DONE ? 0 : dg_store_errno(rc);
	}
	dg_store_stmt_done(s);
	return rc;
}

int
dg_data_state_get(dg_store *st, int64_t device_id, cJSON **doc)
{
	return read_doc(dg_store_reader(st), device_id, doc, NULL);
}

void
dg_data_state_change_clear(dg_state_change *c)
{
	free(c->path);
	free(c->doc_after);
	cJSON_Delete(c->value);
	c->path = NULL;
	c->doc_after = NULL;
	c->value = NULL;
}

/* Changes are read within a second; an hour of them is plenty to keep. */
static int
prune_changes(sqlite3 *db)
{
	return sqlite3_exec(db,
	                    "DELETE FROM state_changes WHERE at < CAST(strftime('%s','now') AS"
	                    " INTEGER) * 1000 - 3600000",
	                    NULL, NULL, NULL) == SQLITE_OK
	               ? 0
	               : -EIO;
}

int
dg_data_change_record(sqlite3 *db, int kind, int64_t project_id, int64_t device_id, int64_t ref)
{
	sqlite3_stmt *s = dg_store_stmt(db, "INSERT INTO state_changes (kind, project_id,"
	                                    " device_id, ref, path, at) VALUES (?1, ?2, ?3, ?4,"
	                                    " '', ?5)");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int(s, 1, kind);
	sqlite3_bind_int64(s, 2, project_id);
	sqlite3_bind_int64(s, 3, device_id);
	sqlite3_bind_int64(s, 4, ref);
	sqlite3_bind_int64(s, 5, dg_now_ms());
	int rc = dg_store_stmt_run(s);
	return rc == 0 ? prune_changes(db) : rc;
}

int
dg_data_state_apply(sqlite3 *db, void *arg)
{
	dg_state_change *c = arg;
	dg_path_seg path[MAX_SEGMENTS];
	size_t n = dg_state_path_parse(c->path != NULL ? c->path : "", path, MAX_SEGMENTS);
	cJSON *doc = NULL;
	sqlite3_stmt *s = NULL;
	char *text = NULL;
	size_t old_len = 0;
	int rc;

	free(c->doc_after);
	c->doc_after = NULL;
	rc = read_doc(db, c->device_id, &doc, &old_len);
	if (rc != 0)
		return rc;
	if (c->del) {
		c->changed = dg_state_delete(&doc, path, n);
	} else {
		cJSON *v = c->value;
		c->value = NULL;
		rc = dg_state_set(&doc, path, n, v);
		if (rc != 0)
			goto out;
		c->changed = 1;
	}
	if (!c->changed)
		goto out;
	if (doc == NULL) {
		s = dg_store_stmt(db, "DELETE FROM state WHERE device_id = ?1");
	} else {
		text = doc_text(doc);
		if (text == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		/* Over the limit, only a write that does not grow the document is taken. */
		size_t new_len = strlen(text);
		if (c->max_bytes > 0 && new_len > c->max_bytes && new_len > old_len) {
			c->changed = 0;
			rc = -EFBIG;
			goto out;
		}
		s = dg_store_stmt(db,
		                  "INSERT INTO state (device_id, doc, updated_at) VALUES (?1, ?2,"
		                  " ?3) ON CONFLICT (device_id) DO UPDATE SET doc = excluded.doc,"
		                  " updated_at = excluded.updated_at");
	}
	if (s == NULL) {
		rc = dg_store_errno(sqlite3_errcode(db));
		rc = rc != 0 ? rc : -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, c->device_id);
	if (text != NULL) {
		sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, dg_now_ms());
	}
	rc = dg_store_stmt_run(s);
	if (rc == 0 && c->record) {
		s = dg_store_stmt(db,
		                  "INSERT INTO state_changes (device_id, path, at) VALUES (?1, ?2,"
		                  " ?3)");
		if (s == NULL) {
			rc = -EIO;
			goto out;
		}
		sqlite3_bind_int64(s, 1, c->device_id);
		sqlite3_bind_text(s, 2, c->path != NULL ? c->path : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, dg_now_ms());
		rc = dg_store_stmt_run(s);
		if (rc == 0)
			rc = prune_changes(db);
	}
	if (rc == 0) {
		/* The document as stored, for the notifications of this change. */
		c->doc_after = text != NULL ? text : strdup("");
		text = NULL;
		if (c->doc_after == NULL)
			rc = -ENOMEM;
	}
out:
	free(text);
	cJSON_Delete(doc);
	return rc;
}

void
dg_data_stream_batch_free(dg_stream_batch *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->n; i++)
		free(b->values[i]);
	free(b->values);
	free(b->ts);
	free(b->path);
	free(b);
}

int
dg_data_stream_append(sqlite3 *db, void *arg)
{
	dg_stream_batch *b = arg;
	sqlite3_stmt *s = dg_store_stmt(db, "INSERT INTO stream (device_id, path, ts, value) VALUES"
	                                    " (?1, ?2, ?3, ?4)");
	int rc = 0;
	if (s == NULL)
		return -EIO;
	for (size_t i = 0; i < b->n && rc == 0; i++) {
		sqlite3_bind_int64(s, 1, b->device_id);
		sqlite3_bind_text(s, 2, b->path, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, b->ts[i]);
		sqlite3_bind_text(s, 4, b->values[i], -1, SQLITE_STATIC);
		rc = step_done(s);
		sqlite3_reset(s);
	}
	dg_store_stmt_done(s);
	return rc;
}

void
dg_data_log_entry_free(dg_log_entry *e)
{
	if (e == NULL)
		return;
	free(e->level);
	free(e->module);
	free(e->msg);
	free(e->extra);
	free(e);
}

int
dg_data_logs_append(sqlite3 *db, void *arg)
{
	dg_log_entry *e = arg;
	sqlite3_stmt *s = dg_store_stmt(db, "INSERT INTO logs (device_id, ts, level, module, msg,"
	                                    " extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, e->device_id);
	sqlite3_bind_int64(s, 2, e->ts);
	sqlite3_bind_text(s, 3, e->level, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, e->module, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, e->msg, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, e->extra, -1, SQLITE_STATIC);
	return dg_store_stmt_run(s);
}

int
dg_data_stream_each(dg_store *st, int64_t device_id, const char *path, int64_t since_ms,
                    int64_t limit,
                    int (*cb)(void *arg, int64_t ts, const char *path, const char *value),
                    void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(
	        dg_store_reader(st),
	        "SELECT ts, path, value FROM (SELECT id, ts, path, value FROM stream"
	        " WHERE device_id = ?1 AND (?2 IS NULL OR path = ?2) AND ts >= ?3"
	        " ORDER BY ts DESC, id DESC LIMIT ?4) ORDER BY ts, id",
	        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	sqlite3_bind_int64(s, 1, device_id);
	if (path != NULL)
		sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, since_ms < 0 ? INT64_MIN : since_ms);
	sqlite3_bind_int64(s, 4, limit < 0 ? INT64_MAX : limit);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int r = cb(arg, sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1),
		           (const char *)sqlite3_column_text(s, 2));
		if (r != 0) {
			sqlite3_finalize(s);
			return r;
		}
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : dg_store_errno(rc);
}

int
dg_data_logs_each(dg_store *st, int64_t device_id, const char *level, int64_t since_ms,
                  int64_t limit,
                  int (*cb)(void *arg, int64_t ts, const char *level, const char *module,
                            const char *msg),
                  void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(
	        dg_store_reader(st),
	        "SELECT ts, level, module, msg FROM (SELECT id, ts, level, module, msg FROM logs"
	        " WHERE device_id = ?1 AND (?2 IS NULL OR level = ?2) AND ts >= ?3"
	        " ORDER BY ts DESC, id DESC LIMIT ?4) ORDER BY ts, id",
	        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	sqlite3_bind_int64(s, 1, device_id);
	if (level != NULL)
		sqlite3_bind_text(s, 2, level, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, since_ms < 0 ? INT64_MIN : since_ms);
	sqlite3_bind_int64(s, 4, limit < 0 ? INT64_MAX : limit);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int r = cb(arg, sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1),
		           (const char *)sqlite3_column_text(s, 2),
		           (const char *)sqlite3_column_text(s, 3));
		if (r != 0) {
			sqlite3_finalize(s);
			return r;
		}
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : dg_store_errno(rc);
}

int64_t
dg_data_changes_max(dg_store *st)
{
	sqlite3_stmt *s = NULL;
	int64_t v = -1;
	if (sqlite3_prepare_v2(dg_store_reader(st),
	                       "SELECT COALESCE(MAX(id), 0) FROM state_changes", -1, &s,
	                       NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

int
dg_data_device_id(dg_store *st, const char *slug, const char *name, int64_t *id)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(
	        dg_store_reader(st),
	        "SELECT d.id FROM devices d JOIN projects p ON p.id = d.project_id"
	        " WHERE p.slug = ?1 AND d.name = ?2",
	        -1, &s, NULL);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : dg_store_errno(rc);
	}
	sqlite3_finalize(s);
	return rc;
}

int
dg_data_state_read(sqlite3 *db, void *arg)
{
	dg_state_read *r = arg;
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT doc FROM state WHERE device_id = ?1");
	int rc;

	free(r->doc);
	r->doc = NULL;
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, r->device_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		const char *text =
		        rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
		r->doc = strdup(text != NULL ? text : "");
		rc = r->doc != NULL ? 0 : -ENOMEM;
	} else {
		rc = dg_store_errno(rc);
	}
	dg_store_stmt_done(s);
	return rc;
}

void
dg_data_changes_clear(dg_changes *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->items[i].path);
		free(c->items[i].doc);
	}
	free(c->items);
	c->items = NULL;
	c->n = 0;
}

int
dg_data_changes_read(sqlite3 *db, void *arg)
{
	dg_changes *c = arg;
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT id, device_id, path, kind, project_id, ref"
	                                    " FROM state_changes WHERE id > ?1 ORDER BY id"
	                                    " LIMIT 1000");
	size_t cap = 0;
	int rc;

	dg_data_changes_clear(c);
	c->last_id = c->after_id;
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, c->after_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (c->n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			dg_change_item *g = realloc(c->items, ncap * sizeof(*g));
			if (g == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			c->items = g;
			cap = ncap;
		}
		const char *path = (const char *)sqlite3_column_text(s, 2);
		dg_change_item *it = &c->items[c->n];
		memset(it, 0, sizeof(*it));
		it->device_id = sqlite3_column_int64(s, 1);
		it->kind = sqlite3_column_int(s, 3);
		it->project_id = sqlite3_column_int64(s, 4);
		it->ref = sqlite3_column_int64(s, 5);
		it->path = strdup(path != NULL ? path : "");
		if (it->path == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		c->n++;
		c->last_id = sqlite3_column_int64(s, 0);
	}
	dg_store_stmt_done(s);
	if (rc != SQLITE_DONE)
		return rc == SQLITE_NOMEM ? -ENOMEM : dg_store_errno(rc);
	/*
	 * Each state change goes with the document as it is now, and each RPC
	 * call with its text, so the loop reads nothing.
	 */
	for (size_t i = 0; i < c->n; i++) {
		dg_change_item *it = &c->items[i];
		if (it->kind == DG_OBS_STATE) {
			dg_state_read r = {.device_id = it->device_id};
			rc = dg_data_state_read(db, &r);
			if (rc != 0)
				return rc;
			it->doc = r.doc;
		} else if (it->kind == DG_OBS_RPC) {
			char *id = NULL;
			rc = dg_rpc_call_text(db, it->ref, &id, &it->doc, &it->deadline_ms);
			if (rc != 0 && rc != -ENOENT)
				return rc;
			if (id != NULL) {
				free(it->path);
				it->path = id;
			}
		}
	}
	return 0;
}
