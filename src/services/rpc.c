/*
 * Remote procedure calls (".rpc"): a device observes ".rpc" and each
 * notification is one call {"id", "method", "params"}; it answers each
 * with a POST to ".rpc/status" {"id", "statusCode", "detail"}. Calls come
 * from the store (the CLI); the session queues them (session.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devgate/block.h"
#include "devgate/payload.h"
#include "devgate/rpc.h"
#include "devgate/services.h"
#include "devgate/session.h"
#include "devgate/store.h"

/*
 * The representation of ".rpc" now: the call at the head of the queue
 * (`now` set), or the text "OK" (the SDK ignores "OK", the answer to its
 * registration), in *body (malloc'ed). Returns 0 or a negative errno.
 */
static int
rpc_body(const dg_session *s, int now, int fmt, uint8_t **body, size_t *len)
{
	const char *head = now ? dg_session_rpc_head(s) : NULL;
	cJSON *v = head != NULL ? cJSON_Parse(head) : cJSON_CreateString("OK");
	if (v == NULL)
		return -ENOMEM;
	int rc = dg_payload_encode_alloc(fmt, v, DG_RPC_CALL_MAX, body, len);
	cJSON_Delete(v);
	return rc;
}

/* A registration waiting for the device's calls read back from the store. */
typedef struct registration {
	dg_rpc_waiting w; /* First: the read's arg. */
	int64_t seq;      /* The Observe number of the registration's answer. */
	int fmt;          /* Of the answer. */
	uint64_t loop_ms; /* The loop's clock and */
	int64_t wall_ms;  /* the wall clock when the read was asked for. */
} registration;

static int
waiting_run(sqlite3 *db, void *arg)
{
	return dg_rpc_waiting_read(db, arg);
}

static void
registration_free(void *arg)
{
	registration *r = arg;
	dg_rpc_waiting_clear(&r->w);
	free(r);
}

/*
 * The answer to a registration, once the device's waiting calls are read:
 * those go into the session's queue (a device that reconnects mid-call gets
 * what its old session held), the answer is "OK" with the Observe number.
 */
static void
registration_reply(dg_session *s, dg_deferred *d, dg_coap_response *resp, uint64_t now_ms)
{
	registration *r = d->arg;
	for (size_t i = 0; i < r->w.n; i++) {
		int64_t left = r->w.calls[i].deadline_ms - r->wall_ms;
		if (left > 0)
			dg_session_rpc_call(s, r->w.calls[i].row_id, r->w.calls[i].id,
			                    r->w.calls[i].call, r->loop_ms + (uint64_t)left,
			                    now_ms);
	}
	resp->code = DG_COAP_CONTENT;
	resp->observe = r->seq;
	resp->content_format = r->fmt;
	uint8_t *body = NULL;
	size_t len = 0;
	if (rpc_body(s, 0, resp->content_format, &body, &len) == 0 && len <= resp->body_cap) {
		memcpy(resp->body, body, len);
		resp->body_len = len;
	}
	free(body);
	if (dg_session_rpc_head(s) != NULL)
		dg_session_resource_changed(s, DG_OBS_RPC, now_ms);
}

/*
 * Observe=0: the observation is registered now (a call the change feed
 * brings meanwhile finds it), and answered once the device's waiting calls
 * are read back from the store.
 */
static void
register_observation(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                     int fmt)
{
	int64_t seq = dg_session_observe(rc->session, req, DG_OBS_RPC, "", fmt);
	if (seq < 0) {
		dg_coap_set_text(resp, DG_COAP_SERVICE_UNAVAILABLE, "too many observations");
		return;
	}
	resp->observe = seq;
	registration *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return; /* Answered now, without the waiting calls. */
	r->w.device_id = rc->device_id;
	r->seq = seq;
	r->loop_ms = rc->now_ms;
	r->wall_ms = dg_now_ms();
	r->fmt = fmt;
	dg_deferred *d = dg_svc_deferred_new(DG_COAP_CONTENT, waiting_run, r, registration_free);
	if (d == NULL)
		return;
	d->read = 1;
	d->reply = registration_reply;
	dg_session_defer(rc->session, req, resp, d);
}

/* GET ".rpc": Observe=0 registers for calls, 1 cancels; a later Block2 block of a call. */
static void
rpc_get(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	uint8_t *body = NULL;
	size_t len = 0;
	int registers;
	int fmt = dg_svc_get_start(rc, req, resp, &registers);

	if (fmt < 0)
		return;
	/*
	 * The registration is answered "OK" even with a call queued (the call
	 * is notified right after); a later block is cut from the call at the
	 * head of the queue, which may be larger than any stack buffer.
	 */
	if (rpc_body(rc->session, !registers, fmt, &body, &len) != 0) {
		dg_coap_set_text(resp, DG_COAP_INTERNAL_ERROR, "call cannot be encoded");
		return;
	}
	int brc = dg_svc_reply_blocks(rc->session, resp, body, len, fmt, req->block2, rc->now_ms);
	free(body);
	if (brc != 0)
		return;
	if (registers)
		register_observation(rc, req, resp, fmt);
}

/* POST ".rpc/status": the device's answer to a call, stored before the 2.04. */
static void
rpc_status(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	cJSON *v = NULL;
	v = dg_svc_decode_request(req, resp);
	if (v == NULL)
		return;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(v, "id");
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(v, "statusCode");
	const cJSON *detail = cJSON_GetObjectItemCaseSensitive(v, "detail");
	if (!cJSON_IsString(id) || strlen(id->valuestring) > 64) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "id: a text of at most 64 bytes");
		goto out;
	}
	if (!cJSON_IsNumber(code) || code->valuedouble < 0 || code->valuedouble > 65535 ||
	    code->valuedouble != (double)(int64_t)code->valuedouble) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "statusCode: an integer");
		goto out;
	}
	dg_rpc_result *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		goto out;
	}
	r->device_id = rc->device_id;
	r->call_id = strdup(id->valuestring);
	r->status_code = (int64_t)code->valuedouble;
	r->detail = detail != NULL ? cJSON_PrintUnformatted(detail) : NULL;
	if (r->call_id == NULL || (detail != NULL && r->detail == NULL)) {
		dg_rpc_result_free(r);
		resp->code = DG_COAP_INTERNAL_ERROR;
		goto out;
	}
	/* The call leaves the queue now: the next one goes out while this answer commits. */
	dg_session_rpc_done(rc->session, r->call_id, rc->now_ms);
	dg_svc_defer_write(rc, req, resp, DG_COAP_CHANGED, dg_rpc_result_apply, r,
	                   dg_rpc_result_free);
out:
	cJSON_Delete(v);
}

void
dg_svc_rpc(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	const dg_coap_str *seg[DG_COAP_MAX_PATH];
	size_t n = dg_svc_segments(req, seg);

	if (n == 1 && req->code == DG_COAP_GET) {
		rpc_get(rc, req, resp);
		return;
	}
	if (n == 2 && seg[1]->len == 6 && memcmp(seg[1]->s, "status", 6) == 0 &&
	    (req->code == DG_COAP_POST || req->code == DG_COAP_PUT)) {
		rpc_status(rc, req, resp);
		return;
	}
	if (n <= 2)
		dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "method not allowed");
	else
		dg_coap_set_text(resp, DG_COAP_NOT_FOUND, "not found");
}
