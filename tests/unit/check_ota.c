/*
 * Unit tests of OTA in the store: the manifest's bytes (no release, one
 * and two components, decoded back with libcbor: every key, in order),
 * release targeting and rollback with their change feed rows, an artifact
 * larger than any buffer (its sha256 and blocks read at offsets), content
 * stored once, refused names and files, and device reports.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbor.h>
#include <cjson/cJSON.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "devgate/coap.h"
#include "devgate/data.h"
#include "devgate/ota.h"
#include "devgate/session.h"
#include "devgate/store.h"

static char tmp[512], dbpath[600];
static dg_store *st;
static int64_t pid, dev1, dev2;

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
setup(void)
{
	char err[256];
	snprintf(tmp, sizeof(tmp), "%s/check_ota.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(dbpath, sizeof(dbpath), "%s/devgate.db", tmp);
	ck_assert_int_eq(dg_store_open(dbpath, 0, &st, err, sizeof(err)), 0);
	ck_assert_int_eq(dg_store_ensure_project(st, "acme"), 0);
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "dev1", "d1@acme", (const uint8_t *)"k", 1),
	                 0);
	ck_assert_int_eq(dg_store_psk_add(st, "acme", "dev2", "d2@acme", (const uint8_t *)"k", 1),
	                 0);
	ck_assert_int_eq(dg_data_device_id(st, "acme", "dev1", &dev1), 0);
	ck_assert_int_eq(dg_data_device_id(st, "acme", "dev2", &dev2), 0);
	sqlite3_stmt *s = NULL;
	ck_assert_int_eq(sqlite3_prepare_v2(dg_store_reader(st),
	                                    "SELECT id FROM projects WHERE slug = 'acme'", -1, &s,
	                                    NULL),
	                 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
	pid = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
}

static void
teardown(void)
{
	dg_store_close(st);
	st = NULL;
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* One integer from the store. */
static long long
sql1(const char *sql)
{
	sqlite3_stmt *s = NULL;
	long long v = -1;
	ck_assert_int_eq(sqlite3_prepare_v2(dg_store_reader(st), sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Writes `len` bytes made from `seed` (or `data` when not NULL) to tmp/name. */
static const char *
make_file(const char *name, const uint8_t *data, size_t len, uint32_t seed)
{
	static char path[700];
	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	uint32_t x = seed;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		uint8_t b = data != NULL ? data[i] : (uint8_t)(x >> 16);
		ck_assert_int_eq(fputc(b, f), b);
	}
	ck_assert_int_eq(fclose(f), 0);
	return path;
}

static int
add(const char *package, const char *version, const char *path, dg_ota_add *out)
{
	dg_ota_add a = {.project = "acme", .package = package, .version = version, .path = path};
	int rc = dg_store_run(st, dg_ota_artifact_add, &a);
	if (out != NULL)
		*out = a;
	return rc;
}

/* Creates a release of `arts` for all devices (devs NULL) or the devices named. */
static int64_t
release(const char *const *arts, size_t n, const char *const *devs, size_t nd)
{
	dg_ota_new_release r = {.project = "acme",
	                        .artifacts = arts,
	                        .n_artifacts = n,
	                        .devices = devs,
	                        .n_devices = nd,
	                        .all_devices = devs == NULL};
	ck_assert_msg(dg_store_run(st, dg_ota_release_create, &r) == 0, "%s", r.err);
	return r.id;
}

/* Renders the manifest of `device` in `fmt` into r (body owned by the caller). */
static void
render(int64_t device, int fmt, dg_render *r)
{
	memset(r, 0, sizeof(*r));
	r->kind = DG_OBS_OTA;
	r->project_id = pid;
	r->device_id = device;
	r->format = fmt;
	ck_assert_int_eq(dg_ota_render_manifest(dg_store_reader(st), r), 0);
	ck_assert_ptr_nonnull(r->body);
}

/* The CBOR manifest of `device`, decoded. */
static cbor_item_t *
manifest(int64_t device)
{
	dg_render r;
	struct cbor_load_result res;
	render(device, DG_COAP_FMT_CBOR, &r);
	cbor_item_t *m = cbor_load(r.body, r.len, &res);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(res.read, r.len);
	free(r.body);
	ck_assert(cbor_isa_map(m));
	return m;
}

/* The value of pair i of map m, checking that its key is the integer `key`. */
static cbor_item_t *
at_key(cbor_item_t *m, size_t i, uint64_t key)
{
	ck_assert_uint_gt(cbor_map_size(m), i);
	struct cbor_pair *p = cbor_map_handle(m);
	ck_assert(cbor_isa_uint(p[i].key));
	ck_assert_uint_eq(cbor_get_int(p[i].key), key);
	return p[i].value;
}

static void
text_is(cbor_item_t *v, const char *want)
{
	ck_assert(cbor_isa_string(v));
	ck_assert_uint_eq(cbor_string_length(v), strlen(want));
	ck_assert(memcmp(cbor_string_handle(v), want, strlen(want)) == 0);
}

/* Checks component c: all six keys, 1..6 in order, with these values. */
static void
component_is(cbor_item_t *c, const char *pkg, const char *ver, const dg_ota_add *a)
{
	char uri[64];
	ck_assert(cbor_isa_map(c));
	ck_assert_uint_eq(cbor_map_size(c), 6);
	text_is(at_key(c, 0, 1), pkg);
	text_is(at_key(c, 1, 2), ver);
	text_is(at_key(c, 2, 3), a->sha256);
	ck_assert_uint_eq(cbor_get_int(at_key(c, 3, 4)), (uint64_t)a->size);
	snprintf(uri, sizeof(uri), "/.u/c/%s@%s", pkg, ver);
	text_is(at_key(c, 4, 5), uri);
	text_is(at_key(c, 5, 6), a->bootloader);
}

START_TEST(test_no_release)
{
	dg_render r;
	render(dev1, DG_COAP_FMT_CBOR, &r);
	ck_assert_uint_eq(r.len, 1);
	ck_assert_uint_eq(r.body[0], 0xa0);
	free(r.body);
	render(dev1, DG_COAP_FMT_JSON, &r);
	ck_assert_uint_eq(r.len, 2);
	ck_assert(memcmp(r.body, "{}", 2) == 0);
	free(r.body);
}
END_TEST

START_TEST(test_one_component)
{
	static const uint8_t image[] = {0x3d, 0xb8, 0xf3, 0x96, 1, 2, 3, 4, 5};
	dg_ota_add a;
	ck_assert_int_eq(add("main", "1.2.3", make_file("img", image, sizeof(image), 0), &a), 0);
	ck_assert_str_eq(a.bootloader, "mcuboot");
	ck_assert_int_eq(a.size, (int64_t)sizeof(image));
	const char *arts[] = {"main@1.2.3"};
	int64_t id = release(arts, 1, NULL, 0);

	cbor_item_t *m = manifest(dev1);
	ck_assert_uint_eq(cbor_map_size(m), 3);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)id);
	cbor_item_t *hash = at_key(m, 1, 2);
	ck_assert(cbor_isa_string(hash));
	ck_assert_uint_eq(cbor_string_length(hash), 64);
	cbor_item_t *comps = at_key(m, 2, 3);
	ck_assert(cbor_isa_array(comps));
	ck_assert_uint_eq(cbor_array_size(comps), 1);
	component_is(cbor_array_handle(comps)[0], "main", "1.2.3", &a);
	cbor_decref(&m);

	dg_render r;
	render(dev2, DG_COAP_FMT_JSON, &r);
	cJSON *j = cJSON_ParseWithLength((const char *)r.body, r.len);
	free(r.body);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(cJSON_GetObjectItem(j, "sequenceNumber")->valueint, (int)id);
	ck_assert_int_eq(strlen(cJSON_GetObjectItem(j, "hash")->valuestring), 64);
	cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "components"), 0);
	ck_assert_str_eq(cJSON_GetObjectItem(c, "package")->valuestring, "main");
	ck_assert_str_eq(cJSON_GetObjectItem(c, "version")->valuestring, "1.2.3");
	ck_assert_str_eq(cJSON_GetObjectItem(c, "hash")->valuestring, a.sha256);
	ck_assert_int_eq(cJSON_GetObjectItem(c, "size")->valueint, (int)sizeof(image));
	ck_assert_str_eq(cJSON_GetObjectItem(c, "uri")->valuestring, "/.u/c/main@1.2.3");
	ck_assert_str_eq(cJSON_GetObjectItem(c, "bootloader")->valuestring, "mcuboot");
	cJSON_Delete(j);
}
END_TEST

START_TEST(test_two_components)
{
	dg_ota_add a, b;
	ck_assert_int_eq(add("main", "2.0.0", make_file("m", NULL, 5000, 1), &a), 0);
	ck_assert_int_eq(add("model", "7", make_file("n", NULL, 3000, 2), &b), 0);
	ck_assert_str_eq(a.bootloader, "");
	const char *one[] = {"main@2.0.0"};
	release(one, 1, NULL, 0);
	cbor_item_t *m1 = manifest(dev1);
	char hash1[65];
	snprintf(hash1, sizeof(hash1), "%.*s", 64,
	         (const char *)cbor_string_handle(at_key(m1, 1, 2)));
	cbor_decref(&m1);

	const char *two[] = {"main@2.0.0", "model@7"};
	int64_t id = release(two, 2, NULL, 0);
	cbor_item_t *m = manifest(dev1);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)id);
	cbor_item_t *comps = at_key(m, 2, 3);
	ck_assert_uint_eq(cbor_array_size(comps), 2);
	component_is(cbor_array_handle(comps)[0], "main", "2.0.0", &a);
	component_is(cbor_array_handle(comps)[1], "model", "7", &b);
	/* The hash covers the components: another set hashes otherwise, the same one the same. */
	cbor_item_t *h = at_key(m, 1, 2);
	ck_assert(memcmp(cbor_string_handle(h), hash1, 64) != 0);
	cbor_item_t *again = manifest(dev2);
	ck_assert(memcmp(cbor_string_handle(at_key(again, 1, 2)), cbor_string_handle(h), 64) == 0);
	cbor_decref(&again);
	cbor_decref(&m);

	/* Two artifacts of one package, an unknown one, or none: refused. */
	const char *dup[] = {"main@2.0.0", "main@2.0.0"};
	dg_ota_new_release r = {
	        .project = "acme", .artifacts = dup, .n_artifacts = 2, .all_devices = 1};
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_create, &r), -EINVAL);
	const char *unknown[] = {"main@9"};
	r.artifacts = unknown;
	r.n_artifacts = 1;
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_create, &r), -ENOENT);
	r.n_artifacts = 0;
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_create, &r), -EINVAL);
	ck_assert_int_eq(sql1("SELECT count(*) FROM ota_releases"), 2);
}
END_TEST

START_TEST(test_targeting)
{
	ck_assert_int_eq(add("main", "1", make_file("a", NULL, 100, 3), NULL), 0);
	ck_assert_int_eq(add("main", "2", make_file("b", NULL, 100, 4), NULL), 0);
	long long feed0 = sql1("SELECT count(*) FROM state_changes WHERE kind = 3");
	const char *v1[] = {"main@1"}, *v2[] = {"main@2"};
	const char *only1[] = {"dev1"};
	int64_t r1 = release(v1, 1, only1, 1);
	/* One feed row for the one device targeted. */
	ck_assert_int_eq(sql1("SELECT count(*) FROM state_changes WHERE kind = 3"), feed0 + 1);
	ck_assert_int_eq(sql1("SELECT device_id FROM state_changes WHERE kind = 3 ORDER BY id DESC"
	                      " LIMIT 1"),
	                 dev1);
	cbor_item_t *m = manifest(dev1);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)r1);
	cbor_decref(&m);
	m = manifest(dev2);
	ck_assert_uint_eq(cbor_map_size(m), 0);
	cbor_decref(&m);

	/* A newer release for all: both get it; device 0 in the feed. */
	int64_t r2 = release(v2, 1, NULL, 0);
	ck_assert_int_eq(sql1("SELECT device_id FROM state_changes WHERE kind = 3 ORDER BY id DESC"
	                      " LIMIT 1"),
	                 0);
	m = manifest(dev2);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)r2);
	cbor_decref(&m);
	/* A newer one for dev2 alone leaves dev1 on the release for all. */
	const char *only2[] = {"dev2"};
	int64_t r3 = release(v1, 1, only2, 1);
	m = manifest(dev1);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)r2);
	cbor_decref(&m);
	m = manifest(dev2);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)r3);
	cbor_decref(&m);
	/* An unknown device: refused, nothing made. */
	const char *nobody[] = {"nobody"};
	dg_ota_new_release r = {.project = "acme",
	                        .artifacts = v1,
	                        .n_artifacts = 1,
	                        .devices = nobody,
	                        .n_devices = 1};
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_create, &r), -ENOENT);
	ck_assert_int_eq(sql1("SELECT count(*) FROM ota_releases"), 3);
}
END_TEST

START_TEST(test_rollback)
{
	ck_assert_int_eq(add("main", "1", make_file("a", NULL, 100, 5), NULL), 0);
	ck_assert_int_eq(add("main", "2", make_file("b", NULL, 100, 6), NULL), 0);
	const char *v1[] = {"main@1"}, *v2[] = {"main@2"};
	int64_t r1 = release(v1, 1, NULL, 0);
	int64_t r2 = release(v2, 1, NULL, 0);
	long long feed = sql1("SELECT count(*) FROM state_changes WHERE kind = 3");

	dg_ota_rollback rb = {.project = "acme"};
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_rollback, &rb), 0);
	ck_assert_int_eq(rb.id, r2);
	ck_assert_int_eq(sql1("SELECT count(*) FROM state_changes WHERE kind = 3"), feed + 1);
	cbor_item_t *m = manifest(dev1);
	ck_assert_uint_eq(cbor_get_int(at_key(m, 0, 1)), (uint64_t)r1);
	cbor_decref(&m);
	/* The same one again: already. */
	rb.id = r2;
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_rollback, &rb), -EALREADY);
	rb.id = 0;
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_rollback, &rb), 0);
	ck_assert_int_eq(rb.id, r1);
	m = manifest(dev1);
	ck_assert_uint_eq(cbor_map_size(m), 0);
	cbor_decref(&m);
	rb.id = 0;
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_rollback, &rb), -ENOENT);
	rb.id = 999;
	ck_assert_int_eq(dg_store_run(st, dg_ota_release_rollback, &rb), -ENOENT);
}
END_TEST

/* Reads a block of main@big at `offset`. */
static dg_ota_block *
block(int64_t offset, size_t want)
{
	static dg_ota_block b;
	memset(&b, 0, sizeof(b));
	b.project_id = pid;
	snprintf(b.package, sizeof(b.package), "main");
	snprintf(b.version, sizeof(b.version), "big");
	b.offset = offset;
	b.want = want;
	ck_assert_int_eq(dg_ota_block_read(dg_store_reader(st), &b), 0);
	return &b;
}

START_TEST(test_large_artifact)
{
	/* Larger than the 64 KB chunk and any block, with a partial last block. */
	const size_t len = 3 * 1024 * 1024 + 123;
	const char *path = make_file("big", NULL, len, 7);
	uint8_t *all = malloc(len);
	ck_assert_ptr_nonnull(all);
	FILE *f = fopen(path, "rb");
	ck_assert_uint_eq(fread(all, 1, len, f), len);
	fclose(f);
	uint8_t digest[32];
	char want_hex[65];
	ck_assert_int_eq(wc_Sha256Hash(all, (word32)len, digest), 0);
	for (int i = 0; i < 32; i++)
		snprintf(want_hex + 2 * i, 3, "%02x", digest[i]);

	dg_ota_add a;
	ck_assert_int_eq(add("main", "big", path, &a), 0);
	ck_assert_str_eq(a.sha256, want_hex);
	ck_assert_int_eq(a.size, (int64_t)len);
	ck_assert_int_eq(a.blob_reused, 0);

	dg_ota_block *b = block(0, 1024);
	ck_assert(b->found);
	ck_assert_int_eq(b->size, (int64_t)len);
	ck_assert_str_eq(b->sha256, want_hex);
	ck_assert_uint_eq(b->len, 1024);
	ck_assert(memcmp(b->data, all, 1024) == 0);
	b = block(1024, 1024);
	ck_assert_uint_eq(b->len, 1024);
	ck_assert(memcmp(b->data, all + 1024, 1024) == 0);
	size_t last = len / 1024 * 1024;
	b = block((int64_t)last, 1024);
	ck_assert_uint_eq(b->len, 123);
	ck_assert(memcmp(b->data, all + last, 123) == 0);
	b = block(64 * 37, 64);
	ck_assert_uint_eq(b->len, 64);
	ck_assert(memcmp(b->data, all + 64 * 37, 64) == 0);
	b = block((int64_t)len, 1024);
	ck_assert(b->found);
	ck_assert_uint_eq(b->len, 0);
	/* An unknown version: not found. */
	dg_ota_block u = {.project_id = pid, .package = "main", .version = "nope", .want = 1024};
	ck_assert_int_eq(dg_ota_block_read(dg_store_reader(st), &u), 0);
	ck_assert(!u.found);
	free(all);
}
END_TEST

START_TEST(test_content_stored_once)
{
	const char *path = make_file("same", NULL, 200000, 8);
	dg_ota_add a, b;
	ck_assert_int_eq(add("main", "1", path, &a), 0);
	ck_assert_int_eq(add("main", "1-copy", path, &b), 0);
	ck_assert_int_eq(b.blob_reused, 1);
	ck_assert_str_eq(a.sha256, b.sha256);
	ck_assert_int_eq(sql1("SELECT count(*) FROM ota_blobs"), 1);
	ck_assert_int_eq(sql1("SELECT count(*) FROM ota_artifacts"), 2);
	ck_assert_int_eq(sql1("SELECT sum(length(data)) FROM ota_blobs"), 200000);
}
END_TEST

START_TEST(test_refused)
{
	const char *path = make_file("f", NULL, 10, 9);
	static const char *const bad[] = {
	        "", "a/b", "a@b", "sp ace", "\x01x", "tab\t", "12345678901234567", "caf\xc3\xa9",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(add(bad[i], "1", path, NULL), -EINVAL);
		ck_assert_int_eq(add("main", bad[i], path, NULL), -EINVAL);
	}
	/* Sixteen bytes is the most. */
	ck_assert_int_eq(add("1234567890123456", "1234567890123456", path, NULL), 0);
	ck_assert_int_eq(add("main", "1", path, NULL), 0);
	ck_assert_int_eq(add("main", "1", path, NULL), -EEXIST);
	ck_assert_int_eq(add("main", "2", make_file("empty", NULL, 0, 0), NULL), -EINVAL);
	char missing[700];
	snprintf(missing, sizeof(missing), "%s/missing", tmp);
	ck_assert_int_eq(add("main", "3", missing, NULL), -ENOENT);
	dg_ota_add x = {.project = "nope", .package = "main", .version = "1", .path = path};
	ck_assert_int_eq(dg_store_run(st, dg_ota_artifact_add, &x), -ENOENT);
	ck_assert_int_eq(sql1("SELECT count(*) FROM ota_artifacts"), 2);
	ck_assert_int_eq(sql1("SELECT count(*) FROM ota_blobs"), 1);
}
END_TEST

static int
count_status(void *arg, const dg_ota_status *s)
{
	int *n = arg;
	ck_assert_str_eq(s->device, "dev1");
	ck_assert_str_eq(s->package, "main");
	ck_assert_int_eq(s->state, 2);
	ck_assert_int_eq(s->reason, 0);
	ck_assert_str_eq(s->version, "1.0.0");
	ck_assert_ptr_null(s->target);
	(*n)++;
	return 0;
}

START_TEST(test_reports)
{
	dg_ota_report r = {.device_id = dev1,
	                   .state = 1,
	                   .reason = 4,
	                   .package = "main",
	                   .version = (char *)"1.0.0",
	                   .target = (char *)"1.2.3",
	                   .at = 1000};
	ck_assert_int_eq(dg_store_run(st, dg_ota_report_apply, &r), 0);
	r.state = 2;
	r.reason = 0;
	r.target = NULL;
	ck_assert_int_eq(dg_store_run(st, dg_ota_report_apply, &r), 0);
	int n = 0;
	ck_assert_int_eq(dg_ota_status_each(st, "acme", count_status, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(dg_ota_status_each(st, "nope", count_status, &n), -ENOENT);
	ck_assert_str_eq(dg_ota_state_name(3), "UPDATING");
	ck_assert_str_eq(dg_ota_reason_name(5), "INTEGRITY_CHECK_FAILURE");
	ck_assert_str_eq(dg_ota_reason_name(11), "AWAIT_RETRY");
	ck_assert_str_eq(dg_ota_reason_name(12), "?");
}
END_TEST

static Suite *
ota_suite(void)
{
	Suite *s = suite_create("ota");
	TCase *tc = tcase_create("store");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_no_release);
	tcase_add_test(tc, test_one_component);
	tcase_add_test(tc, test_two_components);
	tcase_add_test(tc, test_targeting);
	tcase_add_test(tc, test_rollback);
	tcase_add_test(tc, test_large_artifact);
	tcase_add_test(tc, test_content_stored_once);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_reports);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ota_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
