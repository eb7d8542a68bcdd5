/*
 * The router: maps a CoAP request's method and Uri-Path to a service
 * handler, and answers the protocol's own resources (/.well-known/core,
 * the Golioth keepalive).
 */
#ifndef DEVGATE_ROUTER_H
#define DEVGATE_ROUTER_H

#include <stdint.h>

#include "devgate/coap.h"
#include "devgate/render.h"

/* What a handler learns about the device it serves; borrowed for the call. */
struct dg_session;

typedef struct dg_route_ctx {
	const char *project;
	const char *device;
	long long device_id;
	long long project_id;
	struct dg_session *session; /* For deferring replies and observing. */
	uint64_t now_ms;
} dg_route_ctx;

/*
 * The dg_coap_handler for an established session: `ctx` is a
 * dg_route_ctx. Unknown paths get 4.04, known paths with a method they do
 * not take 4.05.
 */
void dg_router_handle(void *ctx, const dg_coap_request *req, dg_coap_response *resp);

/*
 * The renderer of resource `kind` (enum dg_obs_kind) for notifications and
 * GETs, or NULL when the kind is not rendered from the store.
 */
dg_render_fn dg_router_renderer(int kind);

#endif
