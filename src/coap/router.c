/*
 * Request routing. A table of resources, each a path prefix, the methods
 * it takes and its handler; /.well-known/core is generated from the table.
 */
#include <stdio.h>
#include <string.h>

#include "devgate/ota.h"
#include "devgate/router.h"
#include "devgate/services.h"
#include "devgate/session.h"
#include "devgate/settings.h"

#define M_GET    (1u << DG_COAP_GET)
#define M_POST   (1u << DG_COAP_POST)
#define M_PUT    (1u << DG_COAP_PUT)
#define M_DELETE (1u << DG_COAP_DELETE)

typedef void (*route_fn)(const dg_route_ctx *rc, const dg_coap_request *req,
                         dg_coap_response *resp);

typedef struct route {
	const char *segments[4]; /* NULL-terminated prefix. */
	int prefix;              /* 1: deeper paths match too. */
	unsigned methods;
	route_fn fn;
	const char *link_attrs; /* For /.well-known/core. */
} route;

static void well_known_core(const dg_route_ctx *rc, const dg_coap_request *req,
                            dg_coap_response *resp);

/* First match wins: ".s/logs" before ".s". */
static const route routes[] = {
        {{".well-known", "core", NULL}, 0, M_GET, well_known_core, ";ct=40"},
        {{".d", NULL}, 1, M_GET | M_POST | M_PUT | M_DELETE, dg_svc_state, ";obs;ct=\"50 60\""},
        {{".s", "logs", NULL}, 0, M_POST | M_PUT, dg_svc_logs, ";ct=\"50 60\""},
        {{".s", NULL}, 1, M_POST | M_PUT, dg_svc_stream, ";ct=\"50 60\""},
        {{"logs", NULL}, 0, M_POST | M_PUT, dg_svc_logs, ";ct=\"50 60\""},
        {{".c", NULL}, 1, M_GET | M_POST | M_PUT, dg_svc_settings, ";obs;ct=\"50 60\""},
        {{".rpc", NULL}, 1, M_GET | M_POST | M_PUT, dg_svc_rpc, ";obs;ct=\"50 60\""},
        {{".u", NULL}, 1, M_GET | M_POST | M_PUT, dg_svc_ota, ";obs;ct=\"42 50 60\""},
};

/* The renderer of each kind of observed resource that is made from the store. */
static const dg_render_fn renderers[DG_OBS_KINDS] = {
        [DG_OBS_STATE] = NULL,                  /* From the state cache or a read: services.c. */
        [DG_OBS_SETTINGS] = dg_settings_render, /* Settings: store/settings.c. */
        [DG_OBS_RPC] = NULL,                    /* From the session's queue: services/rpc.c. */
        [DG_OBS_OTA] = dg_ota_render_manifest,  /* The OTA manifest: store/ota.c. */
};

dg_render_fn
dg_router_renderer(int kind)
{
	return kind >= 0 && kind < DG_OBS_KINDS ? renderers[kind] : NULL;
}

static void
well_known_core(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	size_t pos = 0;
	(void)rc;
	(void)req;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		char link[160] = "<";
		for (const char *const *s = routes[i].segments; *s != NULL; s++) {
			strncat(link, "/", sizeof(link) - strlen(link) - 1);
			strncat(link, *s, sizeof(link) - strlen(link) - 1);
		}
		strncat(link, ">", sizeof(link) - strlen(link) - 1);
		strncat(link, routes[i].link_attrs, sizeof(link) - strlen(link) - 1);
		size_t n = strlen(link);
		if (pos + n + 1 > resp->body_cap)
			break;
		if (pos > 0)
			resp->body[pos++] = ',';
		memcpy(resp->body + pos, link, n);
		pos += n;
	}
	resp->body_len = pos;
	resp->code = DG_COAP_CONTENT;
	resp->content_format = DG_COAP_FMT_LINK;
}

/* Returns 1 when the route's segments are a prefix of (or, unless prefix, equal to) the path. */
static int
route_matches(const route *r, const dg_coap_request *req)
{
	size_t n = 0;
	for (; r->segments[n] != NULL; n++) {
		size_t len = strlen(r->segments[n]);
		if (n >= req->n_path || req->path[n].len != len ||
		    memcmp(req->path[n].s, r->segments[n], len) != 0)
			return 0;
	}
	return r->prefix ? 1 : n == req->n_path;
}

void
dg_router_handle(void *ctx, const dg_coap_request *req, dg_coap_response *resp)
{
	const dg_route_ctx *rc = ctx;

	/*
	 * The Golioth Linux SDK's keepalive: a CON DELETE with no Uri-Path.
	 * Any answer counts; 2.02 is the cheapest one that is not an error.
	 */
	if (req->code == DG_COAP_DELETE && req->n_path == 0) {
		resp->code = DG_COAP_DELETED;
		return;
	}
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!route_matches(&routes[i], req))
			continue;
		if (req->code > DG_COAP_DELETE || !(routes[i].methods & (1u << req->code))) {
			dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "method not allowed");
			return;
		}
		routes[i].fn(rc, req, resp);
		return;
	}
	dg_coap_set_text(resp, DG_COAP_NOT_FOUND, "not found");
}
