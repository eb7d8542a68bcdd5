/*
 * Settings (".c"): a device observes ".c" (and GETs it whenever its
 * application registers a setting) and receives its effective settings
 * {"version": v, "settings": {NAME: value}}; after applying them it POSTs
 * ".c/status" {"version": v, "errors"?: [{"setting_key", "error_code",
 * "details"?}]}. The representation is rendered from the store
 * (dg_settings_render); changes reach observers through the change feed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devgate/payload.h"
#include "devgate/services.h"
#include "devgate/session.h"
#include "devgate/settings.h"

static void
free_report(void *arg)
{
	dg_settings_report *r = arg;
	dg_settings_report_clear(r);
	free(r);
}

/*
 * POST ".c/status": stored through the writer and answered 2.04 once
 * committed. A malformed report gets 4.00 with the reason; the session
 * goes on.
 */
static void
settings_status(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	char diag[96];
	cJSON *v = NULL;
	dg_settings_report *r = NULL;
	v = dg_svc_decode_request(req, resp);
	if (v == NULL)
		return;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		goto out;
	}
	r->device_id = rc->device_id;
	int prc = dg_settings_report_parse(v, r, diag, sizeof(diag));
	if (prc != 0) {
		if (prc == -EINVAL)
			dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, diag);
		else
			resp->code = DG_COAP_INTERNAL_ERROR;
		free_report(r);
		goto out;
	}
	dg_svc_defer_write(rc, req, resp, DG_COAP_CHANGED, dg_settings_report_apply, r,
	                   free_report);
out:
	cJSON_Delete(v);
}

void
dg_svc_settings(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	const dg_coap_str *seg[DG_COAP_MAX_PATH];
	size_t n = dg_svc_segments(req, seg);

	if (n == 1 && req->code == DG_COAP_GET) {
		dg_svc_get_rendered(rc, req, resp, DG_OBS_SETTINGS);
		return;
	}
	if (n == 2 && seg[1]->len == 6 && memcmp(seg[1]->s, "status", 6) == 0 &&
	    (req->code == DG_COAP_POST || req->code == DG_COAP_PUT)) {
		settings_status(rc, req, resp);
		return;
	}
	if (n <= 2)
		dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "method not allowed");
	else
		dg_coap_set_text(resp, DG_COAP_NOT_FOUND, "not found");
}
