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

/* Decodes the request's payload, or answers 4.15/4.00 and returns NULL. */
static cJSON *
decode(const dg_coap_request *req, const uint8_t *data, size_t len, dg_coap_response *resp)
{
	char diag[96];
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

static dg_deferred *
deferred_new(uint8_t code_ok, int (*run)(sqlite3 *, void *), void *arg, void (*free_arg)(void *))
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

/* GET: the value at the path in the format Accept asks for; Observe registers. */
static void
state_get(const dg_route_ctx *rc, const dg_coap_request *req, const char *path,
          dg_coap_response *resp)
{
	int fmt = req->accept < 0 ? DG_COAP_FMT_JSON : req->accept;
	dg_path_seg segs[32];
	size_t n = dg_state_path_parse(path, segs, 32);
	cJSON *doc = NULL;

	if (fmt != DG_COAP_FMT_JSON && fmt != DG_COAP_FMT_CBOR) {
		dg_coap_set_text(resp, DG_COAP_NOT_ACCEPTABLE, "accept must be 50 or 60");
		return;
	}
	if (req->observe == 0) {
		int64_t seq = dg_session_observe(rc->session, req, path, fmt);
		if (seq < 0) {
			dg_coap_set_text(resp, DG_COAP_SERVICE_UNAVAILABLE,
			                 "too many observations");
			return;
		}
		resp->observe = seq;
	} else if (req->observe == 1) {
		dg_session_unobserve(rc->session, req->token, req->token_len);
	}
	if (dg_data_state_get(dg_session_store(rc->session), rc->device_id, &doc) != 0) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	resp->code = DG_COAP_CONTENT;
	const cJSON *v = dg_state_get(doc, segs, n);
	if (v != NULL) {
		size_t len = 0;
		int r = dg_payload_encode(fmt, v, resp->body, resp->body_cap, &len);
		if (r == 0) {
			resp->body_len = len;
			resp->content_format = fmt;
		} else {
			/* No Block2 yet: a value larger than one message is refused. */
			dg_coap_set_text(resp, DG_COAP_INTERNAL_ERROR,
			                 "value too large for one message");
			resp->observe = -1;
		}
	}
	cJSON_Delete(doc);
}

void
dg_svc_state(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	char path[PATH_TEXT_MAX];
	dg_state_change *c;

	if (join_path(req, 1, path, sizeof(path)) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad path");
		return;
	}
	if (req->code == DG_COAP_GET) {
		state_get(rc, req, path, resp);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	c->device_id = rc->device_id;
	c->path = strdup(path);
	if (req->code == DG_COAP_DELETE) {
		c->del = 1;
	} else {
		if (req->payload == NULL) {
			free_state_change(c);
			dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "empty payload");
			return;
		}
		c->value = decode(req, req->payload, req->payload_len, resp);
		if (c->value == NULL) {
			free_state_change(c);
			return;
		}
	}
	dg_deferred *d = deferred_new(c->del ? DG_COAP_DELETED : DG_COAP_CHANGED,
	                              dg_data_state_apply, c, free_state_change);
	if (d == NULL || c->path == NULL) {
		dg_deferred_free(d);
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	d->notify_device = rc->device_id;
	d->notify_path = strdup(path);
	d->changed = &c->changed;
	dg_session_defer(rc->session, req, resp, d);
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
	cJSON *v = decode(req, body, len, resp);
	if (v == NULL)
		return;
	dg_stream_batch *b = make_batch(rc->device_id, path, v, (int64_t)dg_now_ms());
	cJSON_Delete(v);
	if (b == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	dg_deferred *d = deferred_new(DG_COAP_CHANGED, dg_data_stream_append, b, free_batch);
	if (d == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	dg_session_defer(rc->session, req, resp, d);
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
	if (req->block1 < 0) {
		if (req->payload == NULL) {
			dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "empty payload");
			return;
		}
		store_stream(rc, req, path, req->payload, req->payload_len, resp);
		return;
	}
	dg_block_opt opt, answer;
	if (dg_block_decode((uint32_t)req->block1, &opt) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad Block1");
		return;
	}
	dg_block1 *b = dg_session_block1(rc->session, req, opt.num == 0, rc->now_ms);
	if (b == NULL) {
		dg_coap_set_text(resp, DG_COAP_REQUEST_ENTITY_INCOMPLETE, "no transfer under way");
		return;
	}
	dg_block1_status st =
	        dg_block1_add(b, &opt, req->payload, req->payload != NULL ? req->payload_len : 0,
	                      req->size1, &answer);
	switch (st) {
	case DG_BLOCK1_CONTINUE:
		resp->code = DG_COAP_CONTINUE;
		resp->block1 = dg_block_encode(&answer);
		return;
	case DG_BLOCK1_DONE: {
		size_t len = 0;
		const uint8_t *body = dg_block1_body(b, &len);
		resp->block1 = dg_block_encode(&answer);
		store_stream(rc, req, path, body, len, resp);
		dg_session_block1_end(rc->session);
		return;
	}
	case DG_BLOCK1_TOO_LARGE:
		dg_coap_set_text(resp, DG_COAP_REQUEST_TOO_LARGE, "body too large");
		/* The transfer's own limit: a reload may have changed the configured one since. */
		resp->size1 = (int64_t)dg_block1_max_body(b);
		dg_session_block1_end(rc->session);
		return;
	case DG_BLOCK1_INCOMPLETE:
		dg_coap_set_text(resp, DG_COAP_REQUEST_ENTITY_INCOMPLETE, "block out of order");
		dg_session_block1_end(rc->session);
		return;
	default:
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad block");
		dg_session_block1_end(rc->session);
		return;
	}
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
	if (req->payload == NULL) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "empty payload");
		return;
	}
	cJSON *v = decode(req, req->payload, req->payload_len, resp);
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
	dg_deferred *d = deferred_new(DG_COAP_CHANGED, dg_data_logs_append, e, free_log);
	if (d == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	dg_session_defer(rc->session, req, resp, d);
}
