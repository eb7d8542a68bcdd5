/*
 * Unit tests of the settings data: the name rules, settings.json with its
 * plain and typed forms, values from the CLI's text, the CBOR and JSON
 * representation (types survive: 2.0 stays a CBOR float), the merge of a
 * project's settings with a device's overrides, the version rules and the
 * change feed rows, and status reports. Store tests use a database in a
 * temporary directory of their own.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbor.h>
#include <sqlite3.h>

#include "devgate/coap.h"
#include "devgate/payload.h"
#include "devgate/session.h"
#include "devgate/settings.h"
#include "devgate/store.h"

static char err[5000];

/* Parses a settings.json text or fails the test. */
static void
parse_ok(const char *text, dg_settings *l)
{
	int rc = dg_settings_parse_file("settings.json", text, strlen(text), l, err, sizeof(err));
	ck_assert_msg(rc == 0, "%s: %s", text, err);
}

/* Parses a bad settings.json: -EINVAL with `want` in the message. */
static void
parse_bad(const char *text, const char *want)
{
	dg_settings l = {0};
	err[0] = '\0';
	int rc =
	        dg_settings_parse_file("p/settings.json", text, strlen(text), &l, err, sizeof(err));
	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_msg(strstr(err, want) != NULL, "%s: got \"%s\", want \"%s\"", text, err, want);
	ck_assert_msg(strncmp(err, "p/settings.json: ", 17) == 0, "no path in \"%s\"", err);
	ck_assert_uint_eq(l.n, 0);
}

START_TEST(test_names)
{
	char name[80];
	ck_assert(dg_settings_name_valid("A"));
	ck_assert(dg_settings_name_valid("MOTOR_SPEED_2"));
	ck_assert(dg_settings_name_valid("_"));
	ck_assert(!dg_settings_name_valid(""));
	ck_assert(!dg_settings_name_valid("motor"));
	ck_assert(!dg_settings_name_valid("Motor"));
	ck_assert(!dg_settings_name_valid("A-B"));
	ck_assert(!dg_settings_name_valid("A B"));
	memset(name, 'A', 63);
	name[63] = '\0';
	ck_assert(dg_settings_name_valid(name));
	name[63] = 'A';
	name[64] = '\0';
	ck_assert(!dg_settings_name_valid(name));
	parse_bad("{\"motor\": 1}", "motor: a name is 1..63 of A-Z, 0-9 and _");
	parse_bad("{\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\": 1}",
	          "a name is 1..63");
	parse_bad("{\"\": 1}", "a name is 1..63");
}
END_TEST

START_TEST(test_file_forms)
{
	dg_settings l = {0};
	parse_ok("{\"I\": 5, \"N\": -7, \"F\": 2.5, \"E\": 1.5e-3, \"B\": false, \"S\": \"x\","
	         " \"TF\": {\"type\": \"float\", \"value\": 2}, \"TI\": {\"type\": \"int\","
	         " \"value\": 3}, \"TB\": {\"value\": true, \"type\": \"bool\"},"
	         " \"TS\": {\"type\": \"string\", \"value\": \"7\"}, \"D\": 2.0}",
	         &l);
	ck_assert_uint_eq(l.n, 11);
	const dg_setting *s = dg_settings_find(&l, "I");
	ck_assert(s->type == DG_SETTING_INT && s->i == 5);
	s = dg_settings_find(&l, "N");
	ck_assert(s->type == DG_SETTING_INT && s->i == -7);
	s = dg_settings_find(&l, "F");
	ck_assert(s->type == DG_SETTING_FLOAT && s->f == 2.5);
	s = dg_settings_find(&l, "E");
	ck_assert(s->type == DG_SETTING_FLOAT && s->f == 1.5e-3);
	s = dg_settings_find(&l, "B");
	ck_assert(s->type == DG_SETTING_BOOL && s->i == 0);
	s = dg_settings_find(&l, "S");
	ck_assert(s->type == DG_SETTING_STRING && strcmp(s->s, "x") == 0);
	s = dg_settings_find(&l, "TF");
	ck_assert(s->type == DG_SETTING_FLOAT && s->f == 2.0);
	s = dg_settings_find(&l, "TI");
	ck_assert(s->type == DG_SETTING_INT && s->i == 3);
	s = dg_settings_find(&l, "TB");
	ck_assert(s->type == DG_SETTING_BOOL && s->i == 1);
	s = dg_settings_find(&l, "TS");
	ck_assert(s->type == DG_SETTING_STRING && strcmp(s->s, "7") == 0);
	/* An integral JSON number is an int, whatever its spelling. */
	s = dg_settings_find(&l, "D");
	ck_assert(s->type == DG_SETTING_INT && s->i == 2);
	/* Sorted by name. */
	for (size_t i = 1; i < l.n; i++)
		ck_assert(strcmp(l.v[i - 1].name, l.v[i].name) < 0);
	dg_settings_clear(&l);
	parse_ok("{}", &l);
	ck_assert_uint_eq(l.n, 0);

	parse_bad("[1]", "must be an object");
	parse_bad("{\"A\": 1", "malformed JSON");
	parse_bad("{\"A\": 1} x", "text after the JSON value");
	parse_bad("{\"A\": null}", "A: must be an int, a float, a bool, a string");
	parse_bad("{\"A\": [1]}", "A: must be an int");
	parse_bad("{\"A\": 1, \"A\": 2}", "A: given twice");
	parse_bad("{\"A\": {\"type\": \"int\", \"value\": 2.5}}", "A: value: must be an integer");
	parse_bad("{\"A\": {\"type\": \"bool\", \"value\": 1}}", "A: value: must be a bool");
	parse_bad("{\"A\": {\"type\": \"float\", \"value\": \"2\"}}", "A: value: must be a number");
	parse_bad("{\"A\": {\"type\": \"double\", \"value\": 2}}", "A: type: must be");
	parse_bad("{\"A\": {\"type\": \"int\"}}", "A: value: required");
	parse_bad("{\"A\": {\"type\": \"int\", \"value\": 1, \"min\": 0}}", "A: min: unknown key");
	parse_bad("{\"A\": 1e300}", "A: an integer beyond int64");
	parse_bad("{\"A\": \"\\u0000\"}", "NUL");
}
END_TEST

START_TEST(test_to_json_round_trip)
{
	dg_settings l = {0}, back = {0};
	parse_ok("{\"F\": {\"type\": \"float\", \"value\": 2}, \"G\": 0.25, \"I\": 2}", &l);
	cJSON *o = cJSON_CreateObject();
	for (size_t i = 0; i < l.n; i++)
		cJSON_AddItemToObject(o, l.v[i].name, dg_settings_to_json(&l.v[i]));
	char *text = cJSON_PrintUnformatted(o);
	ck_assert_ptr_nonnull(text);
	/* The integral float keeps the typed form; the others are plain. */
	ck_assert_str_eq(text, "{\"F\":{\"type\":\"float\",\"value\":2},\"G\":0.25,\"I\":2}");
	parse_ok(text, &back);
	ck_assert(dg_settings_equal(&l, &back));
	free(text);
	cJSON_Delete(o);
	dg_settings_clear(&l);
	dg_settings_clear(&back);
}
END_TEST

START_TEST(test_from_text)
{
	dg_setting s;
	char why[160];
	ck_assert_int_eq(dg_settings_from_text("true", -1, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_BOOL && s.i == 1);
	ck_assert_int_eq(dg_settings_from_text("-42", -1, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_INT && s.i == -42);
	ck_assert_int_eq(dg_settings_from_text("2.0", -1, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_FLOAT && s.f == 2.0);
	ck_assert_int_eq(dg_settings_from_text("1E3", -1, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_FLOAT && s.f == 1000.0);
	ck_assert_int_eq(dg_settings_from_text("1.2.3", -1, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_STRING && strcmp(s.s, "1.2.3") == 0);
	free(s.s);
	ck_assert_int_eq(dg_settings_from_text("", -1, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_STRING && strcmp(s.s, "") == 0);
	free(s.s);
	ck_assert_int_eq(dg_settings_from_text("3", DG_SETTING_FLOAT, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_FLOAT && s.f == 3.0);
	ck_assert_int_eq(dg_settings_from_text("true", DG_SETTING_STRING, &s, why, sizeof(why)), 0);
	ck_assert(s.type == DG_SETTING_STRING && strcmp(s.s, "true") == 0);
	free(s.s);
	ck_assert_int_eq(dg_settings_from_text("1.5", DG_SETTING_INT, &s, why, sizeof(why)),
	                 -EINVAL);
	ck_assert_int_eq(
	        dg_settings_from_text("99999999999999999999", DG_SETTING_INT, &s, why, sizeof(why)),
	        -EINVAL);
	ck_assert_int_eq(dg_settings_from_text("yes", DG_SETTING_BOOL, &s, why, sizeof(why)),
	                 -EINVAL);
	ck_assert_int_eq(dg_settings_from_text("inf", DG_SETTING_FLOAT, &s, why, sizeof(why)),
	                 -EINVAL);
	ck_assert_int_eq(dg_settings_type_parse("float"), DG_SETTING_FLOAT);
	ck_assert_int_eq(dg_settings_type_parse("double"), -EINVAL);
}
END_TEST

/* Finds key `name` in a decoded CBOR map. */
static cbor_item_t *
map_get(cbor_item_t *map, const char *name)
{
	struct cbor_pair *p = cbor_map_handle(map);
	for (size_t i = 0; i < cbor_map_size(map); i++)
		if (cbor_string_length(p[i].key) == strlen(name) &&
		    memcmp(cbor_string_handle(p[i].key), name, strlen(name)) == 0)
			return p[i].value;
	return NULL;
}

START_TEST(test_cbor_types_survive)
{
	dg_settings l = {0};
	uint8_t *body = NULL;
	size_t len = 0;
	struct cbor_load_result res;

	parse_ok("{\"F\": {\"type\": \"float\", \"value\": 2}, \"G\": -0.5, \"I\": 2,"
	         " \"N\": -3, \"B\": true, \"S\": \"hi\"}",
	         &l);
	ck_assert_int_eq(dg_settings_encode(&l, 1700000000123, DG_COAP_FMT_CBOR, &body, &len), 0);
	cbor_item_t *root = cbor_load(body, len, &res);
	ck_assert_ptr_nonnull(root);
	ck_assert_uint_eq(res.read, len);
	ck_assert(cbor_isa_map(root));
	ck_assert_uint_eq(cbor_map_size(root), 2);
	cbor_item_t *ver = map_get(root, "version");
	ck_assert(cbor_isa_uint(ver) && cbor_get_int(ver) == 1700000000123ull);
	cbor_item_t *s = map_get(root, "settings");
	ck_assert(cbor_isa_map(s) && cbor_map_size(s) == 6);
	cbor_item_t *f = map_get(s, "F");
	/* 2.0 is a float (major type 7), never the integer 2. */
	ck_assert(cbor_isa_float_ctrl(f) && cbor_is_float(f));
	ck_assert(cbor_float_get_float(f) == 2.0);
	ck_assert(cbor_is_float(map_get(s, "G")) && cbor_float_get_float(map_get(s, "G")) == -0.5);
	ck_assert(cbor_isa_uint(map_get(s, "I")) && cbor_get_int(map_get(s, "I")) == 2);
	ck_assert(cbor_isa_negint(map_get(s, "N")) && cbor_get_int(map_get(s, "N")) == 2);
	ck_assert(cbor_is_bool(map_get(s, "B")) && cbor_get_bool(map_get(s, "B")));
	ck_assert(cbor_isa_string(map_get(s, "S")) && cbor_string_length(map_get(s, "S")) == 2);
	cbor_decref(&root);
	free(body);

	/* JSON: a float always has a point or an exponent. */
	ck_assert_int_eq(dg_settings_encode(&l, 5, DG_COAP_FMT_JSON, &body, &len), 0);
	ck_assert_int_eq(len, strlen("{\"version\":5,\"settings\":{\"B\":true,\"F\":2.0,\"G\":-0.5,"
	                             "\"I\":2,\"N\":-3,\"S\":\"hi\"}}"));
	ck_assert(memcmp(body,
	                 "{\"version\":5,\"settings\":{\"B\":true,\"F\":2.0,\"G\":-0.5,\"I\":2,"
	                 "\"N\":-3,\"S\":\"hi\"}}",
	                 len) == 0);
	free(body);

	/* Nothing set: an empty map. */
	dg_settings_clear(&l);
	ck_assert_int_eq(dg_settings_encode(&l, 0, DG_COAP_FMT_CBOR, &body, &len), 0);
	static const uint8_t empty[] = {0xa2, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x00,
	                                0x68, 's',  'e', 't', 't', 'i', 'n', 'g', 's', 0xa0};
	ck_assert_uint_eq(len, sizeof(empty));
	ck_assert(memcmp(body, empty, len) == 0);
	free(body);
	ck_assert_int_eq(dg_settings_encode(&l, 0, 0, &body, &len), -ENOTSUP);
}
END_TEST

START_TEST(test_json_floats_and_strings)
{
	dg_settings l = {0};
	uint8_t *body = NULL;
	size_t len = 0;
	dg_setting s = {.name = "F", .type = DG_SETTING_FLOAT, .f = 1e300};
	ck_assert_int_eq(dg_settings_put(&l, &s), 0);
	s = (dg_setting){.name = "G", .type = DG_SETTING_FLOAT, .f = 0.1};
	ck_assert_int_eq(dg_settings_put(&l, &s), 0);
	s = (dg_setting){.name = "S", .type = DG_SETTING_STRING, .s = (char *)"a\"b\\c\n"};
	ck_assert_int_eq(dg_settings_put(&l, &s), 0);
	ck_assert_int_eq(dg_settings_encode(&l, 1, DG_COAP_FMT_JSON, &body, &len), 0);
	cJSON *v = cJSON_ParseWithLength((const char *)body, len);
	ck_assert_ptr_nonnull(v);
	cJSON *set = cJSON_GetObjectItem(v, "settings");
	ck_assert(cJSON_GetObjectItem(set, "F")->valuedouble == 1e300);
	ck_assert(cJSON_GetObjectItem(set, "G")->valuedouble == 0.1);
	ck_assert_str_eq(cJSON_GetObjectItem(set, "S")->valuestring, "a\"b\\c\n");
	cJSON_Delete(v);
	free(body);
	char *t = dg_settings_value_text(dg_settings_find(&l, "F"));
	ck_assert_str_eq(t, "1e+300");
	free(t);
	dg_settings_clear(&l);
}
END_TEST

START_TEST(test_merge)
{
	dg_settings proj = {0}, dev = {0}, out = {0};
	parse_ok("{\"A\": 1, \"B\": \"x\", \"C\": true}", &proj);
	parse_ok("{\"B\": 2.5, \"D\": 4}", &dev);
	ck_assert_int_eq(dg_settings_merge(&proj, &dev, &out), 0);
	ck_assert_uint_eq(out.n, 4);
	ck_assert(dg_settings_find(&out, "A")->i == 1);
	/* An override wins, with its own type. */
	ck_assert(dg_settings_find(&out, "B")->type == DG_SETTING_FLOAT);
	ck_assert(dg_settings_find(&out, "B")->f == 2.5);
	ck_assert(dg_settings_find(&out, "D")->i == 4);
	ck_assert(!dg_settings_equal(&out, &proj));
	ck_assert_int_eq(dg_settings_remove(&out, "D"), 0);
	ck_assert_int_eq(dg_settings_remove(&out, "D"), -ENOENT);
	ck_assert_uint_eq(out.n, 3);
	dg_settings_clear(&out);
	dg_settings_clear(&proj);
	dg_settings_clear(&dev);
}
END_TEST

/* Store tests: a database of one project with two devices. */

static char dir[256];
static dg_store *st;
static int64_t pid, dev1, dev2;

static void
store_setup(void)
{
	char path[512], e[256];
	snprintf(dir, sizeof(dir), "%s/check_settings.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/devgate.db", dir);
	ck_assert_int_eq(dg_store_open(path, 0, &st, e, sizeof(e)), 0);
	dg_psk_entry psk[2] = {{"a@acme", "dev1", (const uint8_t *)"k", 1},
	                       {"b@acme", "dev2", (const uint8_t *)"k", 1}};
	ck_assert_int_eq(dg_store_sync_psk(st, "acme", psk, 2), 0);
	sqlite3 *db = dg_store_reader(st);
	ck_assert_int_eq(dg_settings_project_id(db, "acme", &pid), 0);
	ck_assert_int_eq(sqlite3_exec(db, "SELECT 1", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_stmt *s;
	ck_assert_int_eq(
	        sqlite3_prepare_v2(db, "SELECT id FROM devices ORDER BY name", -1, &s, NULL),
	        SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
	dev1 = sqlite3_column_int64(s, 0);
	ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
	dev2 = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
}

static void
store_teardown(void)
{
	char cmd[300];
	dg_store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* The number of change feed rows of kind settings for (project, device). */
static int
feed_rows(int64_t device_id)
{
	sqlite3_stmt *s;
	int n = -1;
	ck_assert_int_eq(sqlite3_prepare_v2(dg_store_reader(st),
	                                    "SELECT COUNT(*) FROM state_changes WHERE kind = ?1"
	                                    " AND project_id = ?2 AND device_id = ?3",
	                                    -1, &s, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int(s, 1, DG_OBS_SETTINGS);
	sqlite3_bind_int64(s, 2, pid);
	sqlite3_bind_int64(s, 3, device_id);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return n;
}

static int64_t
effective_version(int64_t device_id, dg_settings *out)
{
	int64_t v = -1;
	ck_assert_int_eq(dg_settings_effective(dg_store_reader(st), pid, device_id, out, &v), 0);
	return v;
}

static int
sync_file(const char *text)
{
	dg_settings l = {0};
	int changed = -1;
	parse_ok(text, &l);
	ck_assert_int_eq(dg_settings_sync_slug(st, "acme", &l, &changed), 0);
	dg_settings_clear(&l);
	return changed;
}

START_TEST(test_store_versions)
{
	dg_settings l = {0};
	int64_t before = dg_now_ms();

	/* Never set: version 0, nothing. */
	ck_assert_int_eq(effective_version(dev1, &l), 0);
	ck_assert_uint_eq(l.n, 0);
	ck_assert_int_eq(feed_rows(0), 0);

	/* A file sync: a version of about now, one feed row for the project. */
	ck_assert_int_eq(sync_file("{\"A\": 1, \"F\": {\"type\": \"float\", \"value\": 2}}"), 1);
	int64_t v1 = effective_version(dev1, &l);
	ck_assert(v1 >= before && v1 <= dg_now_ms() + 1);
	ck_assert_int_eq(feed_rows(0), 1);
	ck_assert(dg_settings_find(&l, "F")->type == DG_SETTING_FLOAT);
	dg_settings_clear(&l);

	/* The same file again changes nothing: no bump, no row. */
	ck_assert_int_eq(sync_file("{\"F\": {\"type\": \"float\", \"value\": 2}, \"A\": 1}"), 0);
	ck_assert_int_eq(effective_version(dev1, &l), v1);
	ck_assert_int_eq(feed_rows(0), 1);
	dg_settings_clear(&l);
	/* A type change alone is a change (2 the int is not 2.0 the float). */
	ck_assert_int_eq(sync_file("{\"A\": 1, \"F\": 2}"), 1);
	int64_t v2 = effective_version(dev1, &l);
	ck_assert(v2 > v1);
	dg_settings_clear(&l);

	/* Many changes within a millisecond: each version is above the last. */
	int64_t last = v2;
	for (int i = 0; i < 20; i++) {
		char text[64];
		snprintf(text, sizeof(text), "{\"A\": %d}", 100 + i);
		ck_assert_int_eq(sync_file(text), 1);
		int64_t v = effective_version(0, &l);
		ck_assert_msg(v > last, "version %lld after %lld", (long long)v, (long long)last);
		last = v;
		dg_settings_clear(&l);
	}
	ck_assert_int_eq(feed_rows(0), 22);

	/* An override: the device's version is above the project's; dev2 is untouched. */
	dg_settings_override o = {.project_id = pid, .device_id = dev1, .name = "A"};
	o.value = (dg_setting){.type = DG_SETTING_STRING, .s = (char *)"over"};
	ck_assert_int_eq(dg_store_run(st, dg_settings_override_apply, &o), 0);
	ck_assert_int_eq(o.changed, 1);
	ck_assert_int_eq(feed_rows(dev1), 1);
	int64_t d1 = effective_version(dev1, &l);
	ck_assert(d1 > last && d1 == o.version);
	ck_assert_str_eq(dg_settings_find(&l, "A")->s, "over");
	dg_settings_clear(&l);
	ck_assert_int_eq(effective_version(dev2, &l), last);
	ck_assert_int_eq(dg_settings_find(&l, "A")->i, 119);
	dg_settings_clear(&l);

	/* The same override again: no change. */
	ck_assert_int_eq(dg_store_run(st, dg_settings_override_apply, &o), 0);
	ck_assert_int_eq(o.changed, 0);
	ck_assert_int_eq(feed_rows(dev1), 1);

	/* A project change after it: every device's version grows, dev1's too. */
	ck_assert_int_eq(sync_file("{\"A\": 1, \"B\": true}"), 1);
	int64_t p3 = effective_version(0, &l);
	dg_settings_clear(&l);
	ck_assert(p3 > d1);
	ck_assert_int_eq(effective_version(dev1, &l), p3);
	ck_assert_str_eq(dg_settings_find(&l, "A")->s, "over");
	ck_assert(dg_settings_find(&l, "B")->i == 1);
	dg_settings_clear(&l);

	/* Deleting the override: the project's value is back, with a greater version. */
	dg_settings_override del = {.project_id = pid, .device_id = dev1, .name = "A", .del = 1};
	ck_assert_int_eq(dg_store_run(st, dg_settings_override_apply, &del), 0);
	ck_assert_int_eq(dg_store_run(st, dg_settings_override_apply, &del), -ENOENT);
	ck_assert(effective_version(dev1, &l) > p3);
	ck_assert_int_eq(dg_settings_find(&l, "A")->i, 1);
	dg_settings_clear(&l);

	/* The rendered representation says the same. */
	uint8_t *body = NULL;
	size_t len = 0;
	ck_assert_int_eq(dg_settings_render_body(dg_store_reader(st), pid, dev2, DG_COAP_FMT_JSON,
	                                         &body, &len),
	                 0);
	char want[128];
	snprintf(want, sizeof(want), "{\"version\":%lld,\"settings\":{\"A\":1,\"B\":true}}",
	         (long long)p3);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert(memcmp(body, want, len) == 0);
	free(body);

	/* An empty file: no settings, a new version. */
	ck_assert_int_eq(sync_file("{}"), 1);
	ck_assert(effective_version(dev2, &l) > p3);
	ck_assert_uint_eq(l.n, 0);
}
END_TEST

/* Collects the status rows. */
static int
status_row(void *arg, const dg_settings_status_row *r)
{
	char *out = arg;
	char line[400];
	snprintf(line, sizeof(line), "%s cur=%s applied=%lld errors=%s\n", r->device,
	         r->current > 0 ? "set" : "0", (long long)r->applied,
	         r->errors != NULL ? r->errors : "-");
	strcat(out, line);
	return 0;
}

/* Decodes JSON text and parses it as a report. */
static int
report(const char *json, dg_settings_report *r, char *why)
{
	cJSON *v = cJSON_Parse(json);
	ck_assert_ptr_nonnull(v);
	int rc = dg_settings_report_parse(v, r, why, 160);
	cJSON_Delete(v);
	return rc;
}

START_TEST(test_reports)
{
	dg_settings_report r = {.device_id = dev1};
	char why[160], out[2000] = "";

	ck_assert_int_eq(report("{\"version\": 42, \"errors\": [{\"setting_key\": \"A\","
	                        " \"error_code\": 1}, {\"setting_key\": \"B\", \"error_code\": 6,"
	                        " \"details\": \"no\"}], \"extra\": 1}",
	                        &r, why),
	                 0);
	ck_assert_int_eq(r.version, 42);
	ck_assert_str_eq(r.errors, "[{\"setting_key\":\"A\",\"error_code\":1},"
	                           "{\"setting_key\":\"B\",\"error_code\":6,\"details\":\"no\"}]");
	ck_assert_int_eq(dg_store_run(st, dg_settings_report_apply, &r), 0);
	dg_settings_report_clear(&r);
	ck_assert_int_eq(report("{\"version\": 0}", &r, why), 0);
	ck_assert_str_eq(r.errors, "[]");
	dg_settings_report_clear(&r);

	ck_assert_int_eq(report("{\"errors\": []}", &r, why), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "version"));
	ck_assert_int_eq(report("{\"version\": 1.5}", &r, why), -EINVAL);
	ck_assert_int_eq(report("[1]", &r, why), -EINVAL);
	ck_assert_int_eq(report("{\"version\": 1, \"errors\": 3}", &r, why), -EINVAL);
	ck_assert_int_eq(report("{\"version\": 1, \"errors\": [{\"setting_key\": \"A\","
	                        " \"error_code\": 7}]}",
	                        &r, why),
	                 -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "errors[0].error_code: must be 0..6"));
	ck_assert_int_eq(report("{\"version\": 1, \"errors\": [{\"error_code\": 1}]}", &r, why),
	                 -EINVAL);
	ck_assert_int_eq(report("{\"version\": 1, \"errors\": [{\"setting_key\": \"A\","
	                        " \"error_code\": 1, \"details\": 5}]}",
	                        &r, why),
	                 -EINVAL);
	ck_assert_ptr_null(r.errors);

	/* The same report in CBOR with indefinite lengths, through the payload decoder. */
	static const uint8_t cbor[] = {0xbf, 0x66, 'e',  'r', 'r',  'o',  'r',  's',  0x9f, 0xa2,
	                               0x6b, 's',  'e',  't', 't',  'i',  'n',  'g',  '_',  'k',
	                               'e',  'y',  0x61, 'X', 0x6a, 'e',  'r',  'r',  'o',  'r',
	                               '_',  'c',  'o',  'd', 'e',  0x03, 0xff, 0x67, 'v',  'e',
	                               'r',  's',  'i',  'o', 'n',  0x18, 0x2a, 0xff};
	cJSON *v = NULL;
	char diag[96];
	ck_assert_int_eq(dg_payload_decode(60, cbor, sizeof(cbor), &v, diag, sizeof(diag)), 0);
	ck_assert_int_eq(dg_settings_report_parse(v, &r, why, sizeof(why)), 0);
	cJSON_Delete(v);
	ck_assert_int_eq(r.version, 42);
	ck_assert_str_eq(r.errors, "[{\"setting_key\":\"X\",\"error_code\":3}]");
	dg_settings_report_clear(&r);

	ck_assert_int_eq(dg_settings_status_each(dg_store_reader(st), pid, status_row, out), 0);
	ck_assert_str_eq(out, "dev1 cur=0 applied=42 errors=[{\"setting_key\":\"A\","
	                      "\"error_code\":1},{\"setting_key\":\"B\",\"error_code\":6,"
	                      "\"details\":\"no\"}]\n"
	                      "dev2 cur=0 applied=-1 errors=-\n");
}
END_TEST

static Suite *
settings_suite(void)
{
	Suite *s = suite_create("settings");
	TCase *tc = tcase_create("values");
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_file_forms);
	tcase_add_test(tc, test_to_json_round_trip);
	tcase_add_test(tc, test_from_text);
	tcase_add_test(tc, test_cbor_types_survive);
	tcase_add_test(tc, test_json_floats_and_strings);
	tcase_add_test(tc, test_merge);
	suite_add_tcase(s, tc);
	tc = tcase_create("store");
	tcase_add_checked_fixture(tc, store_setup, store_teardown);
	tcase_add_test(tc, test_store_versions);
	tcase_add_test(tc, test_reports);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(settings_suite());
	int failed;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
