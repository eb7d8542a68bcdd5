/*
 * Fuzz target for the settings parsers: the input is a settings.json
 * text, and also a ".c/status" payload (JSON and CBOR through the payload
 * decoder). A rejected file must say why, prefixed by its path; an
 * accepted one must hold only valid names, sorted and unique, and encode
 * in both formats; an accepted report must carry an errors array.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/coap.h"
#include "devgate/payload.h"
#include "devgate/settings.h"

#define PATH "fuzz/acme/settings.json"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_list(const dg_settings *l)
{
	uint8_t *body = NULL;
	size_t len = 0;

	for (size_t i = 0; i < l->n; i++) {
		if (!dg_settings_name_valid(l->v[i].name))
			abort();
		if (i > 0 && strcmp(l->v[i - 1].name, l->v[i].name) >= 0)
			abort();
		if (l->v[i].type == DG_SETTING_STRING && l->v[i].s == NULL)
			abort();
	}
	if (dg_settings_encode(l, 1, DG_COAP_FMT_CBOR, &body, &len) == 0)
		free(body);
	if (dg_settings_encode(l, 1, DG_COAP_FMT_JSON, &body, &len) == 0)
		free(body);
}

static void
report(int format, const uint8_t *data, size_t size)
{
	cJSON *v = NULL;
	char diag[96], why[160];
	dg_settings_report r = {0};

	if (dg_payload_decode(format, data, size, &v, diag, sizeof(diag)) != 0)
		return;
	int rc = dg_settings_report_parse(v, &r, why, sizeof(why));
	if (rc == 0 && (r.errors == NULL || r.errors[0] != '['))
		abort();
	if (rc != 0 && r.errors != NULL)
		abort();
	dg_settings_report_clear(&r);
	cJSON_Delete(v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dg_settings l = {0};
	char err[512];
	int rc;

	memset(err, 0, sizeof(err));
	rc = dg_settings_parse_file(PATH, (const char *)data, size, &l, err, sizeof(err));
	if (rc == 0) {
		check_list(&l);
		dg_settings_clear(&l);
	} else if (rc == -EINVAL) {
		if (strncmp(err, PATH ": ", strlen(PATH ": ")) != 0 || l.n != 0)
			abort();
	} else if (rc != -ENOMEM) {
		abort();
	}
	if (size > 0) {
		report(DG_COAP_FMT_JSON, data, size);
		report(DG_COAP_FMT_CBOR, data, size);
	}
	return 0;
}
