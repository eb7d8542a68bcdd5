/*
 * Remote procedure calls in the store.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <cjson/cJSON.h>

#include "devgate/data.h"
#include "devgate/rpc.h"
#include "devgate/render.h"

/*
 * The text of call `row` when it is pending (or, with `queued_too`, queued
 * as well). Returns 0, -ENOENT or a negative errno.
 */
static int
call_text(sqlite3 *db, int64_t row, int queued_too, char **id, char **json, int64_t *deadline_ms)
{
	sqlite3_stmt *s =
	        dg_store_stmt(db, "SELECT call_id, method, params, deadline FROM rpc_calls"
	                          " WHERE id = ?1 AND (status = 'pending' OR (?2 AND"
	                          " status = 'queued'))");
	int rc;
	*id = NULL;
	*json = NULL;
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, row);
	sqlite3_bind_int(s, 2, queued_too);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		dg_store_stmt_done(s);
		return rc == SQLITE_DONE ? -ENOENT : dg_store_errno(rc);
	}
	cJSON *call = cJSON_CreateObject();
	cJSON *params = cJSON_Parse((const char *)sqlite3_column_text(s, 2));
	rc = -ENOMEM;
	if (call == NULL)
		goto out;
	if (params == NULL)
		params = cJSON_CreateArray();
	cJSON_AddStringToObject(call, "id", (const char *)sqlite3_column_text(s, 0));
	cJSON_AddStringToObject(call, "method", (const char *)sqlite3_column_text(s, 1));
	cJSON_AddItemToObject(call, "params", params);
	params = NULL;
	*id = strdup((const char *)sqlite3_column_text(s, 0));
	*json = cJSON_PrintUnformatted(call);
	*deadline_ms = sqlite3_column_int64(s, 3);
	if (*id != NULL && *json != NULL)
		rc = 0;
out:
	dg_store_stmt_done(s);
	cJSON_Delete(params);
	cJSON_Delete(call);
	if (rc != 0) {
		free(*id);
		free(*json);
		*id = NULL;
		*json = NULL;
	}
	return rc;
}

int
dg_rpc_call_text(sqlite3 *db, int64_t row, char **id, char **json, int64_t *deadline_ms)
{
	return call_text(db, row, 0, id, json, deadline_ms);
}

void
dg_rpc_waiting_clear(dg_rpc_waiting *w)
{
	for (size_t i = 0; i < w->n; i++) {
		free(w->calls[i].id);
		free(w->calls[i].call);
	}
	w->n = 0;
}

int
dg_rpc_waiting_read(sqlite3 *db, void *arg)
{
	dg_rpc_waiting *w = arg;
	int64_t rows[DG_RPC_WAITING_MAX];
	size_t n = 0;
	int rc;

	dg_rpc_waiting_clear(w);
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT id FROM rpc_calls WHERE device_id = ?1 AND"
	                                    " status IN ('pending', 'queued') AND deadline > ?2"
	                                    " ORDER BY id LIMIT 5");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, w->device_id);
	sqlite3_bind_int64(s, 2, dg_now_ms());
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < DG_RPC_WAITING_MAX)
		rows[n++] = sqlite3_column_int64(s, 0);
	dg_store_stmt_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return dg_store_errno(rc);
	for (size_t i = 0; i < n; i++) {
		rc = call_text(db, rows[i], 1, &w->calls[w->n].id, &w->calls[w->n].call,
		               &w->calls[w->n].deadline_ms);
		if (rc == -ENOENT)
			continue;
		if (rc != 0)
			return rc;
		w->calls[w->n++].row_id = rows[i];
	}
	return 0;
}

int
dg_rpc_mark_apply(sqlite3 *db, void *arg)
{
	const dg_rpc_mark *m = arg;
	sqlite3_stmt *s = dg_store_stmt(db, "UPDATE rpc_calls SET status = ?2, done_at = CASE"
	                                    " WHEN ?2 = 'queued' THEN NULL ELSE ?3 END"
	                                    " WHERE id = ?1 AND status IN ('pending', 'queued')");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, m->row_id);
	sqlite3_bind_text(s, 2, m->status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, dg_now_ms());
	return dg_store_stmt_run(s);
}

int
dg_rpc_result_apply(sqlite3 *db, void *arg)
{
	const dg_rpc_result *r = arg;
	sqlite3_stmt *s =
	        dg_store_stmt(db, "UPDATE rpc_calls SET status = 'done', status_code = ?3,"
	                          " detail = ?4, done_at = ?5 WHERE device_id = ?1 AND"
	                          " call_id = ?2 AND status IN ('pending', 'queued')");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, r->device_id);
	sqlite3_bind_text(s, 2, r->call_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, r->status_code);
	if (r->detail != NULL)
		sqlite3_bind_text(s, 4, r->detail, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 4);
	sqlite3_bind_int64(s, 5, dg_now_ms());
	return dg_store_stmt_run(s);
}

void
dg_rpc_result_free(void *arg)
{
	dg_rpc_result *r = arg;
	if (r == NULL)
		return;
	free(r->call_id);
	free(r->detail);
	free(r);
}

int
dg_rpc_create(sqlite3 *db, void *arg)
{
	dg_rpc_new *n = arg;
	uint8_t rnd[DG_RPC_ID_LEN / 2];
	int64_t now = dg_now_ms();

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(n->call_id + 2 * i, 3, "%02x", rnd[i]);
	sqlite3_stmt *s = dg_store_stmt(db, "INSERT INTO rpc_calls (device_id, call_id, method,"
	                                    " params, status, created_at, deadline) VALUES (?1, ?2,"
	                                    " ?3, ?4, 'pending', ?5, ?6)");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, n->device_id);
	sqlite3_bind_text(s, 2, n->call_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, n->method, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, n->params, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, now);
	sqlite3_bind_int64(s, 6, now + n->timeout_ms);
	int rc = dg_store_stmt_run(s);
	if (rc != 0)
		return rc;
	n->row_id = sqlite3_last_insert_rowid(db);
	if (n->project_id == 0) {
		s = dg_store_stmt(db, "SELECT project_id FROM devices WHERE id = ?1");
		if (s == NULL)
			return -EIO;
		sqlite3_bind_int64(s, 1, n->device_id);
		if (sqlite3_step(s) == SQLITE_ROW)
			n->project_id = sqlite3_column_int64(s, 0);
		dg_store_stmt_done(s);
	}
	return dg_data_change_record(db, DG_OBS_RPC, n->project_id, n->device_id, n->row_id);
}

void
dg_rpc_row_clear(dg_rpc_row *r)
{
	free(r->params);
	free(r->detail);
	r->params = NULL;
	r->detail = NULL;
}

#define ROW_COLUMNS                                                                                \
	"SELECT c.id, d.name, c.call_id, c.method, c.params, CASE WHEN c.status IN"                \
	" ('pending', 'queued') AND c.deadline < ?9 THEN 'timeout' ELSE c.status END,"             \
	" COALESCE(c.status_code, -1), c.detail, c.created_at, c.deadline,"                        \
	" COALESCE(c.done_at, 0) FROM rpc_calls c JOIN devices d ON d.id = c.device_id"

static const char *
text_or(sqlite3_stmt *s, int col, const char *dflt)
{
	const char *t = (const char *)sqlite3_column_text(s, col);
	return t != NULL ? t : dflt;
}

/* Fills `r` from a row of ROW_COLUMNS. Returns 0 or -ENOMEM. */
static int
read_row(sqlite3_stmt *s, dg_rpc_row *r)
{
	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(s, 0);
	snprintf(r->device, sizeof(r->device), "%s", text_or(s, 1, ""));
	snprintf(r->call_id, sizeof(r->call_id), "%s", text_or(s, 2, ""));
	snprintf(r->method, sizeof(r->method), "%s", text_or(s, 3, ""));
	snprintf(r->status, sizeof(r->status), "%s", text_or(s, 5, ""));
	r->status_code = sqlite3_column_int64(s, 6);
	r->created_at = sqlite3_column_int64(s, 8);
	r->deadline = sqlite3_column_int64(s, 9);
	r->done_at = sqlite3_column_int64(s, 10);
	r->params = strdup(text_or(s, 4, "[]"));
	if (sqlite3_column_type(s, 7) != SQLITE_NULL)
		r->detail = strdup(text_or(s, 7, "null"));
	if (r->params == NULL || (sqlite3_column_type(s, 7) != SQLITE_NULL && r->detail == NULL)) {
		dg_rpc_row_clear(r);
		return -ENOMEM;
	}
	return 0;
}

int
dg_rpc_get(dg_store *st, int64_t id, dg_rpc_row *out)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(dg_store_reader(st), ROW_COLUMNS " WHERE c.id = ?1", -1, &s,
	                            NULL);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 9, dg_now_ms());
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		rc = read_row(s, out);
	else
		rc = rc == SQLITE_DONE ? -ENOENT : dg_store_errno(rc);
	sqlite3_finalize(s);
	return rc;
}

int
dg_rpc_list(dg_store *st, const char *project, const char *device, int64_t limit,
            int (*cb)(void *arg, const dg_rpc_row *r), void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(dg_store_reader(st),
	                            "SELECT * FROM (" ROW_COLUMNS " WHERE d.project_id = (SELECT"
	                            " id FROM projects WHERE slug = ?1) AND"
	                            " (?2 IS NULL OR d.name = ?2) ORDER BY c.id DESC LIMIT ?3)"
	                            " ORDER BY 1",
	                            -1, &s, NULL);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	if (device != NULL)
		sqlite3_bind_text(s, 2, device, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, limit > 0 ? limit : 50);
	sqlite3_bind_int64(s, 9, dg_now_ms());
	rc = 0;
	int step;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		dg_rpc_row r;
		rc = read_row(s, &r);
		if (rc == 0)
			rc = cb(arg, &r);
		dg_rpc_row_clear(&r);
		if (rc != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = dg_store_errno(step);
	sqlite3_finalize(s);
	return rc > 0 ? 0 : rc;
}
