/*
 * Serving a rendered resource: the GET path of every resource that is made
 * from the store on demand (settings, the OTA manifest), and the Block2
 * cutting that every GET reply shares.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/block.h"
#include "devgate/render.h"
#include "devgate/router.h"
#include "devgate/services.h"
#include "devgate/session.h"

int
dg_render_run(sqlite3 *db, void *arg)
{
	dg_render *r = arg;
	free(r->body);
	r->body = NULL;
	r->len = 0;
	return r->fn != NULL ? r->fn(db, r) : -ENOSYS;
}

void
dg_render_free(void *arg)
{
	dg_render *r = arg;
	if (r == NULL)
		return;
	free(r->body);
	free(r);
}

int
dg_svc_reply_blocks(dg_session *s, dg_coap_response *resp, const uint8_t *data, size_t len,
                    int format, int64_t block2, uint64_t now_ms)
{
	dg_block_opt answer;
	size_t offset = 0, chunk = 0;
	int blockwise = dg_block2_slice(len, resp->body_cap, block2, &answer, &offset, &chunk);
	if (blockwise < 0) {
		dg_coap_set_text(
		        resp, blockwise == -ERANGE ? DG_COAP_BAD_OPTION : DG_COAP_INTERNAL_ERROR,
		        blockwise == -ERANGE ? "block out of range" : "no room for a block");
		return blockwise;
	}
	resp->code = DG_COAP_CONTENT;
	if (data != NULL) {
		resp->content_format = format;
		if (chunk > 0)
			memcpy(resp->body, data + offset, chunk);
		resp->body_len = chunk;
	}
	if (blockwise) {
		resp->block2 = dg_block_encode(&answer);
		dg_block2_etag(data, len, resp->etag);
		resp->etag_len = sizeof(resp->etag);
		if (answer.num == 0)
			resp->size2 = (uint32_t)len;
		if (answer.more)
			dg_session_block2_served(s, answer.num, now_ms);
	}
	return 0;
}

/* What a rendered GET asks for, kept until its render comes back. */
typedef struct rendered_get {
	dg_render r; /* First: the job's arg is also a dg_render. */
	int64_t block2;
	int observe;
} rendered_get;

static void
rendered_get_free(void *arg)
{
	rendered_get *g = arg;
	free(g->r.body);
	free(g);
}

/* The reply once the render is there: the block asked for, the observation registered. */
static void
rendered_reply(dg_session *s, dg_deferred *d, dg_coap_response *resp, uint64_t now_ms)
{
	rendered_get *g = d->arg;
	if (dg_svc_reply_blocks(s, resp, g->r.body, g->r.len, g->r.format, g->block2, now_ms) != 0)
		return;
	if (g->observe) {
		dg_coap_request req;
		memset(&req, 0, sizeof(req));
		memcpy(req.token, d->token, d->token_len);
		req.token_len = d->token_len;
		int64_t seq = dg_session_observe(s, &req, g->r.kind, "", g->r.format);
		if (seq < 0) {
			dg_coap_set_text(resp, DG_COAP_SERVICE_UNAVAILABLE,
			                 "too many observations");
			return;
		}
		resp->observe = seq;
	}
}

int
dg_svc_accept(const dg_coap_request *req, dg_coap_response *resp)
{
	int fmt = req->accept < 0 ? DG_COAP_FMT_JSON : req->accept;
	if (fmt != DG_COAP_FMT_JSON && fmt != DG_COAP_FMT_CBOR) {
		dg_coap_set_text(resp, DG_COAP_NOT_ACCEPTABLE, "accept must be 50 or 60");
		return -1;
	}
	return fmt;
}

size_t
dg_svc_segments(const dg_coap_request *req, const dg_coap_str **out)
{
	size_t n = 0;
	for (size_t i = 0; i < req->n_path && i < DG_COAP_MAX_PATH; i++)
		if (req->path[i].len > 0)
			out[n++] = &req->path[i];
	return n;
}

int
dg_svc_get_start(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                 int *registers)
{
	dg_block_opt want;
	int later_block = 0;
	int fmt = dg_svc_accept(req, resp);

	*registers = 0;
	if (fmt < 0)
		return -1;
	if (req->block2 >= 0) {
		if (dg_block_decode((uint32_t)req->block2, &want) != 0) {
			dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad Block2");
			return -1;
		}
		/* A later block of a notification or a GET: never a new observation. */
		later_block = want.num > 0;
	}
	if (req->observe == 1)
		dg_session_unobserve(rc->session, req->token, req->token_len);
	*registers = req->observe == 0 && !later_block;
	return fmt;
}

void
dg_svc_defer_write(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                   uint8_t code_ok, int (*run)(sqlite3 *, void *), void *arg,
                   void (*free_arg)(void *))
{
	dg_deferred *d = dg_svc_deferred_new(code_ok, run, arg, free_arg);
	if (d == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	dg_session_defer(rc->session, req, resp, d);
}

void
dg_svc_get_rendered(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                    int kind)
{
	int registers;

	if (req->code != DG_COAP_GET) {
		dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "GET it");
		return;
	}
	int fmt = dg_svc_get_start(rc, req, resp, &registers);
	if (fmt < 0)
		return;
	rendered_get *g = calloc(1, sizeof(*g));
	if (g == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	g->r.kind = kind;
	g->r.project_id = rc->project_id;
	g->r.device_id = rc->device_id;
	g->r.format = fmt;
	g->r.fn = dg_router_renderer(kind);
	g->block2 = req->block2;
	g->observe = registers;
	dg_deferred *d = dg_svc_deferred_new(DG_COAP_CONTENT, dg_render_run, g, rendered_get_free);
	if (d == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	d->read = 1;
	d->reply = rendered_reply;
	dg_session_defer(rc->session, req, resp, d);
}
