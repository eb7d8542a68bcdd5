/*
 * OTA updates (".u"): the device observes its desired manifest
 * (".u/desired", rendered from the store by dg_ota_render_manifest()),
 * downloads each component from its URI (".u/c/<package>@<version>") in
 * Block2 blocks, and reports its progress (POST ".u/c/<package>").
 *
 * A download block is read from the stored artifact by offset on the
 * store's reader thread when it is asked for: the daemon holds nothing
 * for a download but the one block being answered, and each block that
 * has a next one lets that next one through the device's rate limit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devgate/block.h"
#include "devgate/ota.h"
#include "devgate/payload.h"
#include "devgate/services.h"
#include "devgate/session.h"

/* The longest current or target version a report may carry. */
#define REPORT_VERSION_MAX 64

static int
seg_is(const dg_coap_str *s, const char *word)
{
	size_t n = strlen(word);
	return s->len == n && memcmp(s->s, word, n) == 0;
}

/* Copies segment `s` into out (cap bytes, NUL-terminated). Returns 0, or -1 when too long. */
static int
seg_copy(const dg_coap_str *s, char *out, size_t cap)
{
	if (s->len >= cap)
		return -1;
	memcpy(out, s->s, s->len);
	out[s->len] = '\0';
	return 0;
}

/* A download block waiting for its read; the request's Block2 is kept for the reply. */
typedef struct block_get {
	dg_ota_block b; /* First: the job's arg is also a dg_ota_block. */
	int64_t block2;
} block_get;

/* The first 8 bytes of a hex sha256, as the ETag of every block of an artifact. */
static void
etag_of(const char *sha256, uint8_t etag[8])
{
	for (size_t i = 0; i < 8; i++) {
		unsigned v = 0;
		for (size_t j = 0; j < 2; j++) {
			char ch = sha256[2 * i + j];
			v = v * 16 + (unsigned)(ch >= 'a' ? ch - 'a' + 10 : ch - '0');
		}
		etag[i] = (uint8_t)v;
	}
}

static int
block_get_run(sqlite3 *db, void *arg)
{
	return dg_ota_block_read(db, arg);
}

/* The reply once the block is read: 4.04 for an unknown artifact, else the block. */
static void
block_reply(dg_session *s, dg_deferred *d, dg_coap_response *resp, uint64_t now_ms)
{
	block_get *g = d->arg;
	dg_block_opt answer;
	size_t offset = 0, chunk = 0;

	if (!g->b.found) {
		dg_coap_set_text(resp, DG_COAP_NOT_FOUND, "no such artifact");
		return;
	}
	size_t cap = resp->body_cap < DG_OTA_BLOCK_MAX ? resp->body_cap : DG_OTA_BLOCK_MAX;
	int blockwise =
	        dg_block2_slice((size_t)g->b.size, cap, g->block2, &answer, &offset, &chunk);
	if (blockwise < 0) {
		/* As dg_svc_reply_blocks() answers a block past the end of any resource. */
		dg_coap_set_text(
		        resp, blockwise == -ERANGE ? DG_COAP_BAD_OPTION : DG_COAP_INTERNAL_ERROR,
		        blockwise == -ERANGE ? "block out of range" : "no room for a block");
		return;
	}
	if ((int64_t)offset != g->b.offset || chunk > g->b.len) {
		/* The artifact changed size under the read: never serve other bytes. */
		dg_coap_set_text(resp, DG_COAP_SERVICE_UNAVAILABLE, "artifact changed");
		return;
	}
	resp->code = DG_COAP_CONTENT;
	resp->content_format = DG_COAP_FMT_OCTETS;
	memcpy(resp->body, g->b.data, chunk);
	resp->body_len = chunk;
	etag_of(g->b.sha256, resp->etag);
	resp->etag_len = sizeof(resp->etag);
	resp->size2 = (uint32_t)g->b.size;
	if (blockwise) {
		resp->block2 = dg_block_encode(&answer);
		if (answer.more)
			dg_session_block2_served(s, answer.num, now_ms);
	}
}

/*
 * GET ".u/c/<package>@<version>": one block of the artifact, the bytes
 * (Content-Format 42) whatever Accept says (the SDK asks 42 from one call
 * and 50 from another for the same bytes). Blocks are 1024 bytes unless
 * the client asks for smaller ones.
 */
static void
download(const dg_route_ctx *rc, const dg_coap_request *req, const dg_coap_str *spec,
         dg_coap_response *resp)
{
	dg_block_opt want = {.num = 0, .more = 0, .szx = 6};
	const uint8_t *at = memchr(spec->s, '@', spec->len);

	if (req->block2 >= 0 && dg_block_decode((uint32_t)req->block2, &want) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad Block2");
		return;
	}
	block_get *g = calloc(1, sizeof(*g));
	if (g == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	dg_coap_str pkg = {.s = spec->s, .len = at != NULL ? (size_t)(at - spec->s) : 0};
	dg_coap_str ver = {.s = at != NULL ? at + 1 : spec->s,
	                   .len = at != NULL ? spec->len - pkg.len - 1 : 0};
	if (at == NULL || seg_copy(&pkg, g->b.package, sizeof(g->b.package)) != 0 ||
	    seg_copy(&ver, g->b.version, sizeof(g->b.version)) != 0 ||
	    dg_ota_name_check("package", g->b.package, DG_OTA_PACKAGE_MAX, NULL, 0) != 0 ||
	    dg_ota_name_check("version", g->b.version, DG_OTA_VERSION_MAX, NULL, 0) != 0) {
		free(g);
		dg_coap_set_text(resp, DG_COAP_NOT_FOUND, "no such artifact");
		return;
	}
	if (want.szx > 6)
		want.szx = 6;
	g->b.project_id = rc->project_id;
	g->b.offset = (int64_t)want.num << (want.szx + 4);
	g->b.want = (size_t)16 << want.szx;
	g->block2 = req->block2;
	dg_deferred *d = dg_svc_deferred_new(DG_COAP_CONTENT, block_get_run, g, free);
	if (d == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		return;
	}
	d->read = 1;
	d->reply = block_reply;
	dg_session_defer(rc->session, req, resp, d);
}

/* Reads an optional text member of at most `max` bytes into *out (NULL when absent). */
static int
opt_text(const cJSON *v, const char *name, size_t max, char **out)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, name);
	*out = NULL;
	if (m == NULL || cJSON_IsNull(m))
		return 0;
	if (!cJSON_IsString(m) || strlen(m->valuestring) > max)
		return -EINVAL;
	*out = strdup(m->valuestring);
	return *out != NULL ? 0 : -ENOMEM;
}

/* Whether member `name` of v is an integer in 0..max; sets *out. */
static int
small_int(const cJSON *v, const char *name, int64_t max, int64_t *out)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, name);
	if (!cJSON_IsNumber(m) || m->valuedouble < 0 || m->valuedouble > (double)max ||
	    m->valuedouble != (double)(int64_t)m->valuedouble)
		return 0;
	*out = (int64_t)m->valuedouble;
	return 1;
}

/*
 * POST ".u/c/<package>": the device's state report {"s", "r", "pkg", "v",
 * "t"} (CBOR or JSON), stored as its last one for the package before the
 * 2.04.
 */
static void
report(const dg_route_ctx *rc, const dg_coap_request *req, const dg_coap_str *package,
       dg_coap_response *resp)
{
	cJSON *v = NULL;
	dg_ota_report *r = NULL;
	v = dg_svc_decode_request(req, resp);
	if (v == NULL)
		return;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		resp->code = DG_COAP_INTERNAL_ERROR;
		goto out;
	}
	if (seg_copy(package, r->package, sizeof(r->package)) != 0 ||
	    dg_ota_name_check("package", r->package, DG_OTA_PACKAGE_MAX, NULL, 0) != 0) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "bad package name");
		goto out;
	}
	if (!cJSON_IsObject(v)) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "a map {s, r, pkg, v, t}");
		goto out;
	}
	if (!small_int(v, "s", DG_OTA_STATE_MAX, &r->state)) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "s: an integer 0..3");
		goto out;
	}
	if (!small_int(v, "r", DG_OTA_REASON_MAX, &r->reason)) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "r: an integer 0..11");
		goto out;
	}
	const cJSON *pkg = cJSON_GetObjectItemCaseSensitive(v, "pkg");
	if (pkg != NULL && (!cJSON_IsString(pkg) || strcmp(pkg->valuestring, r->package) != 0)) {
		dg_coap_set_text(resp, DG_COAP_BAD_REQUEST, "pkg: the package of the path");
		goto out;
	}
	int erc = opt_text(v, "v", REPORT_VERSION_MAX, &r->version);
	if (erc == 0)
		erc = opt_text(v, "t", REPORT_VERSION_MAX, &r->target);
	if (erc != 0) {
		if (erc == -ENOMEM)
			resp->code = DG_COAP_INTERNAL_ERROR;
		else
			dg_coap_set_text(resp, DG_COAP_BAD_REQUEST,
			                 "v, t: texts of at most 64 bytes");
		goto out;
	}
	r->device_id = rc->device_id;
	r->at = dg_now_ms();
	dg_svc_defer_write(rc, req, resp, DG_COAP_CHANGED, dg_ota_report_apply, r,
	                   dg_ota_report_free);
	r = NULL;
out:
	dg_ota_report_free(r);
	cJSON_Delete(v);
}

void
dg_svc_ota(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp)
{
	const dg_coap_str *seg[DG_COAP_MAX_PATH];
	size_t n = dg_svc_segments(req, seg);

	if (n == 2 && seg_is(seg[1], "desired")) {
		if (req->code == DG_COAP_GET)
			dg_svc_get_rendered(rc, req, resp, DG_OBS_OTA);
		else
			dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "GET it");
		return;
	}
	if (n == 3 && seg_is(seg[1], "c")) {
		if (req->code == DG_COAP_GET)
			download(rc, req, seg[2], resp);
		else if (req->code == DG_COAP_POST || req->code == DG_COAP_PUT)
			report(rc, req, seg[2], resp);
		else
			dg_coap_set_text(resp, DG_COAP_METHOD_NOT_ALLOWED, "method not allowed");
		return;
	}
	dg_coap_set_text(resp, DG_COAP_NOT_FOUND, "not found");
}
