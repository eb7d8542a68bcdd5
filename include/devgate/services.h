/*
 * The device services the Golioth firmware SDK speaks: LightDB State
 * (".d/<path>", with Observe), LightDB Stream (".s/<path>", with Block1) and
 * logs (".s/logs" and the older "logs"). Each is a router handler.
 */
#ifndef DEVGATE_SERVICES_H
#define DEVGATE_SERVICES_H

#include "devgate/coap.h"
#include "devgate/router.h"

/* ".d/<path>": GET (Observe=0 registers, 1 deregisters), POST/PUT set, DELETE. */
void dg_svc_state(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

/* ".s/<path>": POST a value or an array of values, Block1 for large bodies. */
void dg_svc_stream(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

/* ".s/logs" and "logs": POST a log entry. */
void dg_svc_logs(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

#endif
