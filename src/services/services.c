/*
 * Device services: LightDB State, LightDB Stream and logs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/block.h"
#include "devgate/data.h"
#include "devgate/payload.h"
#include "devgate/services.h"
#include "devgate/session.h"
#include "devgate/state.h"
#include "devgate/statecache.h"
#include "devgate/stream.h"

#define PATH_TEXT_MAX 256

/* Joins the Uri-Path segments after the first `skip` into "a/b/c"; -EINVAL when too long. */
static int
join_path(const dg_coap_request *req, size_t skip, char *out, size_t cap)
{
	size_t pos = 0;
	out[0] = '\0';
	for (size_t i = skip; i < req->n_path; i++) {
		const dg_coap_str *seg = &req->path[i];
		if (seg->len == 0)
			continue; /* An empty segment is dropped, as the SDK's clients do. */
		if (memchr(seg->s, '/', seg->len) != NULL || memchr(seg->s, '\0', seg->len) != NULL)
			return -EINVAL;
		if (pos + seg->len + 2 > cap)
			return -EINVAL;
		if (pos > 0)
			out[pos++] = '/';
		memcpy(out + pos, seg->s, seg->len);
		pos += seg->len;
		out[pos] = '\0';
	}
	return 0;
}

/* The request's format: Content-Format, JSON when absent. Returns -1 when unsupported. */
static int
request_format(const dg_coap_request *req)
{
	int f = req->content_format < 0 ? DG_COAP_FMT_JSON : req->content_format;
	return f == DG_COAP_FMT_JSON || f == DG_COAP_FMT_CBOR ? f : -1;
}

cJSON *
dg_svc_decode(const dg_coap_request *req, const uint8_t *data, size_t len, dg_coap_response *resp)
{
	char diag[96] = "";
	cJSON *v = NULL;
	int f = request_format(req);
	if (f < 0) {
		dg_coap_set_text(resp, DG_COAP_UNSUPPORTED_FORMAT,
		                 "content-format must be 50 or 60");
		return NULL;
	}
	int rc = dg_payload_decode(f, data, len, &v, diag, sizeof(diag));
	if (rc == -ENOMEM) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return NULL;
	}
	if (rc != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST,
		                 diag[0] != '\0' ? diag : "malformed payload");
		return NULL;
	}
	return v;
}

cJSON *
dg_svc_decode_request(const dg_coap_request *req, dg_coap_response *resp)
{
	if (req->payload == NULL || req->payload_len == 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "empty payload");
		return NULL;
	}
	return dg_svc_decode(req, req->payload, req->payload_len, resp);
}

dg_deferred *
dg_svc_deferred_new(uint8_t code_ok, int (*run)(sqlite3 *, void *), void *arg,
                    void (*free_arg)(void *))
{
	dg_deferred *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		free_arg(arg);
		return NULL;
	}
	d->code_ok = code_ok;
	d->run = run;
	d->arg = arg;
	d->free_arg = free_arg;
	d->notify_device = -1;
	return d;
}

static void
free_state_change(void *arg)
{
	dg_state_change *c = arg;
	dg_data_state_change_clear(c);
	free(c);
}

/* The largest representation a GET encodes (the document's own bound is far lower). */
#define ENCODE_MAX (64u << 20)

/* What a state GET asks for, wherever its document comes from. */
typedef struct get_args {
	char path[PATH_TEXT_MAX];
	int fmt;
	int64_t block2;
	int observe; /* 1: register an observation with the request's token. */
} get_args;

/* A state GET waiting for its read on the store's reader thread. */
typedef struct state_get_job {
	dg_state_read read;
	get_args a;
	uint64_t ticket; /* The cache's, for keeping what the read found. */
} state_get_job;

static int
state_get_run(sqlite3 *db, void *arg)
{
	state_get_job *j = arg;
	return dg_data_state_read(db, &j->read);
}

static void
free_get(void *arg)
{
	state_get_job *j = arg;
	free(j->read.doc);
	free(j);
}

/*
 * The reply of a GET from the document `doc` (NULL: none): the value at
 * the path, cut into a Block2 block when it does not fit, with the
 * observation registered under `token`.
 */
static void
get_reply(dg_session *s, const get_args *a, const uint8_t *token, size_t token_len,
          const cJSON *doc, dg_coap_response *resp, uint64_t now_ms)
{
	dg_path_seg segs[32];
	size_t n = dg_state_path_parse(a->path, segs, 32);
	uint8_t *data = NULL;
	size_t len = 0;

	const cJSON *v = dg_state_get(doc, segs, n);
	if (v != NULL && dg_payload_encode_alloc(a->fmt, v, ENCODE_MAX, &data, &len) != 0) {
		dg_coap_set_text(resp, DG_COAP_INTERNAL_ERROR, "value cannot be encoded");
		return;
	}
	if (dg_svc_reply_blocks(s, resp, data, len, a->fmt, a->block2, now_ms) != 0)
		goto out;
	if (a->observe) {
		dg_coap_request req;
		memset(&req, 0, sizeof(req));
		memcpy(req.token, token, token_len);
		req.token_len = token_len;
		int64_t seq = dg_session_observe(s, &req, DG_OBS_STATE, a->path, a->fmt);
		if (seq < 0) {
			dg_coap_set_text(resp, DG_COAP_SERVICE_UNAVAILABLE,
			                 "too many observations");
			goto out;
		}
		resp->observe = seq;
	}
out:
	free(data);
}

/*
 * The reply of a GET once its document is read (on the loop). What the
 * read found is kept in the loop's cache unless a change of the device
 * came in meanwhile (the cache judges, see statecache.h).
 */
static void
state_get_reply(dg_session *s, dg_deferred *d, dg_coap_response *resp, uint64_t now_ms)
{
	state_get_job *j = d->arg;
	const cJSON *kept = NULL;
	cJSON *doc = NULL;

	if (!dg_statecache_fill(dg_session_statecache(s), j->read.device_id, j->ticket, j->read.doc,
	                        &kept) &&
	    j->read.doc != NULL && j->read.doc[0] != '\0') {
		doc = cJSON_Parse(j->read.doc);
		if (doc == NULL) {
			resp->code = DG_COAP_INTERNAL_ERROR;
			return;
		}
		kept = doc;
	}
	get_reply(s, &j->a, d->token, d->token_len, kept, resp, now_ms);
	cJSON_Delete(doc);
}

/*
 * GET: the value at the path in the format Accept asks for; Observe
 * registers. The document comes from the loop's cache when it holds it,
 * else it is read on the store's reader thread (never on the loop) and the
 * reply made by state_get_reply() once it is there. What does not fit in
 * one message is served with Block2 (RFC 7959): every block is cut from
 * the document as it is when the block is asked for, with an ETag of the
 * whole representation so that a client sees a change between blocks, and
 * Size2 on the first.
 */
static void
state_get(const dg_route_ctx *rc, const dg_coap_request *req, const char *path,
          dg_coap_response *resp)
{
	int registers;
	get_args a;
	const cJSON *cached = NULL;
	uint64_t ticket = 0;
	int fmt = dg_svc_get_start(rc, req, resp, &registers);

	if (fmt < 0)
		return;
	snprintf(a.path, sizeof(a.path), "%s", path);
	a.fmt = fmt;
	a.block2 = req->block2;
	a.observe = registers;
	if (dg_statecache_get(dg_session_statecache(rc->session), rc->device_id, &cached,
	                      &ticket)) {
		get_reply(rc->session, &a, req->token, req->token_len, cached, resp, rc->now_ms);
		return;
	}
	state_get_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	j->read.device_id = rc->device_id;
	j->a = a;
	j->ticket = ticket;
	dg_deferred *d = dg_svc_deferred_new(DG_COAP_CONTENT, state_get_run, j, free_get);
	if (d == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	d->read = 1;
	d->reply = state_get_reply;
	dg_session_defer(rc->session, req, resp, d);
}

/*
 * The request's body: its payload, or a body assembled from Block1 blocks
 * (RFC 7959, as the stream takes them). Returns 1 with *body and *len set
 * when the body is complete, *assembled telling whether it came in blocks
 * (the caller then ends the session's transfer with dg_session_block1_end()
 * once it is done with the body, which the transfer owns); returns 0 when
 * `resp` holds the answer already (2.31 Continue, or an error).
 */
static int
request_body(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
             const uint8_t **body, size_t *len, int *assembled)
{
	*assembled = 0;
	if (req->block1 < 0) {
		if (req->payload == NULL) {
			dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "empty payload");
			return 0;
		}
		*body = req->payload;
		*len = req->payload_len;
		return 1;
	}
	dg_block_opt opt, answer;
	if (dg_block_decode((uint32_t)req->block1, &opt) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad Block1");
		return 0;
	}
	dg_block1 *b = dg_session_block1(rc->session, req, opt.num == 0, rc->now_ms);
	if (b == NULL) {
		dg_coap_set_text(resp, DG_COAP_REQUEST_ENTITY_INCOMPLETE, "no transfer under way");
		return 0;
	}
	dg_block1_status st =
	        dg_block1_add(b, &opt, req->payload, req->payload != NULL ? req->payload_len : 0,
	                      req->size1, &answer);
	switch (st) {
	case DG_BLOCK1_CONTINUE:
		resp->code = DG_COAP_CONTINUE;
		resp->block1 = dg_block_encode(&answer);
		return 0;
	case DG_BLOCK1_DONE:
		resp->block1 = dg_block_encode(&answer);
		*body = dg_block1_body(b, len);
		*assembled = 1;
		return 1;
	case DG_BLOCK1_TOO_LARGE:
		dg_coap_set_text(resp, DG_COAP_REQUEST_TOO_LARGE, "body too large");
		/* The transfer's own limit: a reload may have changed the configured one since. */
		resp->size1 = (int64_t)dg_block1_max_body(b);
		break;
	case DG_BLOCK1_INCOMPLETE:
		dg_coap_set_text(resp, DG_COAP_REQUEST_ENTITY_INCOMPLETE, "block out of order");
		break;
	default:
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad block");
		break;
	}
	dg_session_block1_end(rc->session);
	return 0;
}

void
dg_svc_state(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	char path[PATH_TEXT_MAX];
	dg_state_change *c;
	const uint8_t *body = NULL;
	size_t body_len = 0;
	int assembled = 0;

	if (join_path(req, 1, path, sizeof(path)) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad path");
		return;
	}
	if (req->code == DG_COAP_GET) {
		state_get(rc, req, path, resp);
		return;
	}
	if (req->code != DG_COAP_DELETE &&
	    !request_body(rc, req, resp, &body, &body_len, &assembled))
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		goto out;
	}
	c->device_id = rc->device_id;
	c->path = strdup(path);
	c->max_bytes = dg_session_config(rc->session)->limits.max_state_bytes;
	if (req->code == DG_COAP_DELETE) {
		c->del = 1;
	} else {
		c->value = dg_svc_decode(req, body, body_len, resp);
		if (c->value == NULL) {
			free_state_change(c);
			goto out;
		}
	}
	dg_deferred *d = dg_svc_deferred_new(c->del ? DG_COAP_DELETED : DG_COAP_CHANGED,
	                                     dg_data_state_apply, c, free_state_change);
	if (d == NULL || c->path == NULL) {
		dg_deferred_free(d);
		resp->code = DG_COAP_INTERNAL_ERROR;
		goto out;
	}
	d->notify_device = rc->device_id;
	d->notify_path = strdup(path);
	d->changed = &c->changed;
	d->notify_doc = &c->doc_after;
	dg_session_defer(rc->session, req, resp, d);
out:
	if (assembled)
		dg_session_block1_end(rc->session);
}

static void
free_batch(void *arg)
{
	dg_data_stream_batch_free(arg);
}

/* Makes the records of one stream POST: an array is one record per element. */
static dg_stream_batch *
make_batch(int64_t device_id, const char *path, const cJSON *value, int64_t now_ms)
{
	dg_stream_batch *b = calloc(1, sizeof(*b));
	size_t n = cJSON_IsArray(value) ? (size_t)cJSON_GetArraySize(value) : 1;
	if (b == NULL)
		return NULL;
	b->device_id = device_id;
	b->path = strdup(path);
	b->ts = calloc(n ? n : 1, sizeof(*b->ts));
	b->values = calloc(n ? n : 1, sizeof(*b->values));
	if (b->path == NULL || b->ts == NULL || b->values == NULL)
		goto fail;
	const cJSON *item = cJSON_IsArray(value) ? value->child : value;
	for (size_t i = 0; i < n && item != NULL; i++) {
		int64_t ts = dg_stream_timestamp(item);
		b->ts[i] = ts >= 0 ? ts : now_ms;
		b->values[i] = cJSON_PrintUnformatted(item);
		if (b->values[i] == NULL)
			goto fail;
		b->n++;
		item = cJSON_IsArray(value) ? item->next : NULL;
	}
	return b;
fail:
	dg_data_stream_batch_free(b);
	return NULL;
}

static void
store_stream(const dg_route_ctx *rc, const dg_coap_request *req, const char *path,
             const uint8_t *body, size_t len, dg_coap_response *resp)
{
	cJSON *v = dg_svc_decode(req, body, len, resp);
	if (v == NULL)
		return;
	dg_stream_batch *b = make_batch(rc->device_id, path, v, (int64_t)dg_now_ms());
	cJSON_Delete(v);
	if (b == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	dg_svc_defer_write(rc, req, resp, DG_COAP_CHANGED, dg_data_stream_append, b, free_batch);
}

void
dg_svc_stream(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	char path[PATH_TEXT_MAX];

	if (req->code != DG_COAP_POST && req->code != DG_COAP_PUT) {
		dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "POST a value");
		return;
	}
	if (join_path(req, 1, path, sizeof(path)) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad path");
		return;
	}
	const uint8_t *body = NULL;
	size_t len = 0;
	int assembled = 0;
	if (!request_body(rc, req, resp, &body, &len, &assembled))
		return;
	store_stream(rc, req, path, body, len, resp);
	if (assembled)
		dg_session_block1_end(rc->session);
}

static void
free_log(void *arg)
{
	dg_data_log_entry_free(arg);
}

static char *
member_text(const cJSON *o, const char *name)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
	if (m == NULL)
		return NULL;
	if (cJSON_IsString(m))
		return strdup(m->valuestring);
	return cJSON_PrintUnformatted(m);
}

void
dg_svc_logs(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	if (req->code != DG_COAP_POST && req->code != DG_COAP_PUT) {
		dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "POST a log entry");
		return;
	}
	cJSON *v = dg_svc_decode_request(req, resp);
	if (v == NULL)
		return;
	dg_log_entry *e = calloc(1, sizeof(*e));
	if (e == NULL) {
		cJSON_Delete(v);
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	e->device_id = rc->device_id;
	int64_t ts = dg_stream_timestamp(v);
	e->ts = ts >= 0 ? ts : (int64_t)dg_now_ms();
	if (cJSON_IsObject(v)) {
		e->level = member_text(v, "level");
		e->module = member_text(v, "module");
		e->msg = member_text(v, "msg");
		cJSON_DeleteItemFromObjectCaseSensitive(v, "level");
		cJSON_DeleteItemFromObjectCaseSensitive(v, "module");
		cJSON_DeleteItemFromObjectCaseSensitive(v, "msg");
		if (v->child != NULL)
			e->extra = cJSON_PrintUnformatted(v);
	} else {
		/* Anything well-formed is taken: a failing log upload makes the SDK loop. */
		e->msg = cJSON_IsString(v) ? strdup(v->valuestring) : cJSON_PrintUnformatted(v);
	}
	cJSON_Delete(v);
	if (e->level == NULL)
		e->level = strdup("info");
	dg_svc_defer_write(rc, req, resp, DG_COAP_CHANGED, dg_data_logs_append, e, free_log);
}
