/*
 * Unit tests of the LightDB State tree: recursive merge, replacement of
 * scalars, arrays and objects, leaf get, creation of intermediate
 * objects, delete, exact key matching, path parsing and the overlap rule
 * that decides which observers a change reaches.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/state.h"

#define MAX_SEGS 16

static cJSON *doc;

static void
setup(void)
{
	doc = NULL;
}

static void
teardown(void)
{
	cJSON_Delete(doc);
	doc = NULL;
}

static cJSON *
json(const char *text)
{
	cJSON *v = cJSON_Parse(text);

	ck_assert_msg(v != NULL, "bad test JSON: %s", text);
	return v;
}

/* A parsed path, whose segments point into the string literal. */
typedef struct path {
	dg_path_seg seg[MAX_SEGS];
	size_t n;
} path;

static path
P(const char *text)
{
	path p;

	p.n = dg_state_path_parse(text, p.seg, MAX_SEGS);
	return p;
}

static void
set(const char *where, const char *value)
{
	path p = P(where);

	ck_assert_int_eq(dg_state_set(&doc, p.seg, p.n, json(value)), 0);
}

/* Checks the whole document against compact JSON ("" for no document). */
static void
doc_is(const char *expected)
{
	char *text;

	if (doc == NULL) {
		ck_assert_str_eq("", expected);
		return;
	}
	text = cJSON_PrintUnformatted(doc);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, expected);
	free(text);
}

/* Checks the value at a path against compact JSON (NULL for unset). */
static void
get_is(const char *where, const char *expected)
{
	path p = P(where);
	const cJSON *v = dg_state_get(doc, p.seg, p.n);
	char *text;

	if (expected == NULL) {
		ck_assert_msg(v == NULL, "%s is set", where);
		return;
	}
	ck_assert_msg(v != NULL, "%s is unset", where);
	text = cJSON_PrintUnformatted(v);
	ck_assert_str_eq(text, expected);
	free(text);
}

static int
del(const char *where)
{
	path p = P(where);

	return dg_state_delete(&doc, p.seg, p.n);
}

static int
overlaps(const char *observed, const char *changed)
{
	path o = P(observed), c = P(changed);

	return dg_state_path_overlaps(o.seg, o.n, c.seg, c.n);
}

START_TEST(test_set_root_merges)
{
	set("", "{\"a\":1}");
	doc_is("{\"a\":1}");
	set("", "{\"b\":2}");
	doc_is("{\"a\":1,\"b\":2}");
	set("", "{\"a\":{\"x\":1}}");
	doc_is("{\"a\":{\"x\":1},\"b\":2}");
	set("", "{}");
	doc_is("{\"a\":{\"x\":1},\"b\":2}");
}
END_TEST

START_TEST(test_merge_recursive)
{
	set("", "{\"s\":{\"t\":1,\"h\":2},\"x\":0}");
	set("s", "{\"t\":5,\"n\":{\"q\":1}}");
	doc_is("{\"s\":{\"t\":5,\"h\":2,\"n\":{\"q\":1}},\"x\":0}");
	set("", "{\"s\":{\"n\":{\"r\":2}},\"y\":true}");
	doc_is("{\"s\":{\"t\":5,\"h\":2,\"n\":{\"q\":1,\"r\":2}},\"x\":0,\"y\":true}");
	/* Merging at a leaf path reaches only that subtree. */
	set("s/n", "{\"q\":null}");
	doc_is("{\"s\":{\"t\":5,\"h\":2,\"n\":{\"q\":null,\"r\":2}},\"x\":0,\"y\":true}");
}
END_TEST

START_TEST(test_get)
{
	set("", "{\"s\":{\"t\":5,\"n\":{\"q\":[1,2]}},\"x\":\"v\"}");
	get_is("s/t", "5");
	get_is("s/n/q", "[1,2]");
	get_is("s/n", "{\"q\":[1,2]}");
	get_is("x", "\"v\"");
	get_is("", "{\"s\":{\"t\":5,\"n\":{\"q\":[1,2]}},\"x\":\"v\"}");
	get_is("s/zz", NULL);
	get_is("zz", NULL);
	get_is("s/t/deeper", NULL); /* Below a scalar. */
	get_is("s/n/q/0", NULL);    /* Arrays are not indexed. */
	cJSON_Delete(doc);
	doc = NULL;
	get_is("", NULL);
	get_is("a", NULL);
}
END_TEST

START_TEST(test_set_creates_intermediates)
{
	set("a/b/c", "1");
	doc_is("{\"a\":{\"b\":{\"c\":1}}}");
	set("a/x/y", "\"s\"");
	doc_is("{\"a\":{\"b\":{\"c\":1},\"x\":{\"y\":\"s\"}}}");
	set("a/b/d/e", "{\"f\":true}");
	doc_is("{\"a\":{\"b\":{\"c\":1,\"d\":{\"e\":{\"f\":true}}},\"x\":{\"y\":\"s\"}}}");
	get_is("a/b/d/e/f", "true");
}
END_TEST

START_TEST(test_replace_scalar_by_object)
{
	set("", "{\"a\":1,\"k\":0}");
	set("a", "{\"b\":2}");
	doc_is("{\"a\":{\"b\":2},\"k\":0}");
	/* A scalar on the way is replaced by an object. */
	set("a/b/c", "3");
	doc_is("{\"a\":{\"b\":{\"c\":3}},\"k\":0}");
	set("k/l/m", "4");
	doc_is("{\"a\":{\"b\":{\"c\":3}},\"k\":{\"l\":{\"m\":4}}}");
}
END_TEST

START_TEST(test_replace_object_by_scalar)
{
	set("", "{\"a\":{\"b\":2},\"c\":1}");
	set("a", "5");
	doc_is("{\"a\":5,\"c\":1}");
	set("a", "null");
	doc_is("{\"a\":null,\"c\":1}");
	/* The root: a scalar replaces it, then a path needs an object again. */
	set("", "7");
	doc_is("7");
	get_is("x", NULL);
	set("x", "1");
	doc_is("{\"x\":1}");
	set("", "\"text\"");
	doc_is("\"text\"");
	set("", "{\"y\":2}");
	doc_is("{\"y\":2}");
}
END_TEST

START_TEST(test_arrays_replace)
{
	set("", "{\"a\":[1,2,3],\"o\":{\"b\":1}}");
	set("a", "[4]");
	doc_is("{\"a\":[4],\"o\":{\"b\":1}}");
	set("o", "[1]");
	doc_is("{\"a\":[4],\"o\":[1]}");
	set("a", "{\"k\":1}");
	doc_is("{\"a\":{\"k\":1},\"o\":[1]}");
	set("", "{\"a\":[]}");
	doc_is("{\"a\":[],\"o\":[1]}");
	set("", "[1,2]");
	doc_is("[1,2]");
	set("", "[{\"z\":1}]");
	doc_is("[{\"z\":1}]");
}
END_TEST

START_TEST(test_repeated_keys)
{
	/* Members are set one by one: the last of a repeated key wins, objects merge. */
	set("", "{\"a\":1,\"a\":2}");
	doc_is("{\"a\":2}");
	set("n", "{\"o\":{\"p\":1},\"o\":{\"q\":2},\"r\":0,\"r\":[1]}");
	doc_is("{\"a\":2,\"n\":{\"o\":{\"p\":1,\"q\":2},\"r\":[1]}}");
	set("", "{\"n\":{\"o\":5,\"o\":{\"s\":3}}}");
	doc_is("{\"a\":2,\"n\":{\"o\":{\"s\":3},\"r\":[1]}}");
}
END_TEST

START_TEST(test_keys_exact)
{
	dg_path_seg nul = {"a\0b", 3}, a = {"a", 1}, bad_utf8 = {"\xff", 1};

	set("", "{\"A\":1,\"temp\":2}");
	set("a", "3");
	doc_is("{\"A\":1,\"temp\":2,\"a\":3}");
	get_is("A", "1");
	get_is("a", "3");
	get_is("tem", NULL);
	get_is("temperature", NULL);
	/* A segment with NUL matches no key, and cannot become one. */
	ck_assert_ptr_null(dg_state_get(doc, &nul, 1));
	ck_assert_ptr_nonnull(dg_state_get(doc, &a, 1));
	ck_assert_int_eq(dg_state_delete(&doc, &nul, 1), 0);
	ck_assert_int_eq(dg_state_set(&doc, &nul, 1, json("1")), -EINVAL);
	ck_assert_int_eq(dg_state_set(&doc, &bad_utf8, 1, json("{\"x\":1}")), -EINVAL);
	doc_is("{\"A\":1,\"temp\":2,\"a\":3}");
	/* Anything else is a key: dots, spaces, UTF-8. */
	set("x.y/with space/\xC3\xA9", "true");
	get_is("x.y/with space/\xC3\xA9", "true");
	get_is("x.y/with space", "{\"\xC3\xA9\":true}");
}
END_TEST

START_TEST(test_set_value_with_key)
{
	/* A value detached from another object still carries its key. */
	cJSON *src = json("{\"old\":{\"m\":1},\"k\":2}");
	cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(src, "old");
	path p = P("new");

	ck_assert_int_eq(dg_state_set(&doc, p.seg, p.n, v), 0);
	doc_is("{\"new\":{\"m\":1}}");
	v = cJSON_DetachItemFromObjectCaseSensitive(src, "k");
	cJSON_Delete(src);
	ck_assert_int_eq(dg_state_set(&doc, NULL, 0, v), 0);
	doc_is("2");
	ck_assert_ptr_null(doc->string);
}
END_TEST

START_TEST(test_set_invalid)
{
	path p = P("a");

	ck_assert_int_eq(dg_state_set(&doc, p.seg, p.n, NULL), -EINVAL);
	ck_assert_int_eq(dg_state_set(NULL, p.seg, p.n, json("1")), -EINVAL);
	ck_assert_ptr_null(doc);
}
END_TEST

START_TEST(test_delete)
{
	set("", "{\"s\":{\"t\":1,\"h\":{\"x\":2}},\"k\":3}");
	ck_assert_int_eq(del("s/t"), 1);
	doc_is("{\"s\":{\"h\":{\"x\":2}},\"k\":3}");
	ck_assert_int_eq(del("s/t"), 0);
	ck_assert_int_eq(del("zz"), 0);
	ck_assert_int_eq(del("k/below/scalar"), 0);
	ck_assert_int_eq(del("s/h/x/y"), 0);
	/* A subtree; its parent stays, empty. */
	ck_assert_int_eq(del("s/h"), 1);
	doc_is("{\"s\":{},\"k\":3}");
	ck_assert_int_eq(del("s"), 1);
	doc_is("{\"k\":3}");
	/* The root. */
	ck_assert_int_eq(del(""), 1);
	ck_assert_ptr_null(doc);
	ck_assert_int_eq(del(""), 0);
	ck_assert_int_eq(del("k"), 0);
	ck_assert_int_eq(dg_state_delete(NULL, NULL, 0), 0);
	/* A scalar root has no members. */
	set("", "5");
	ck_assert_int_eq(del("k"), 0);
	ck_assert_int_eq(del(""), 1);
}
END_TEST

START_TEST(test_path_parse)
{
	dg_path_seg seg[4];
	path p;

	p = P("a/b/c");
	ck_assert_uint_eq(p.n, 3);
	ck_assert_uint_eq(p.seg[0].len, 1);
	ck_assert_int_eq(p.seg[0].s[0], 'a');
	ck_assert_int_eq(p.seg[2].s[0], 'c');
	/* Empty segments are dropped: leading, trailing, repeated slashes. */
	p = P("/sensor//temp/");
	ck_assert_uint_eq(p.n, 2);
	ck_assert_uint_eq(p.seg[0].len, 6);
	ck_assert(memcmp(p.seg[0].s, "sensor", 6) == 0);
	ck_assert_uint_eq(p.seg[1].len, 4);
	ck_assert(memcmp(p.seg[1].s, "temp", 4) == 0);
	ck_assert_uint_eq(P("").n, 0);
	ck_assert_uint_eq(P("///").n, 0);
	ck_assert_uint_eq(dg_state_path_parse(NULL, seg, 4), 0);
	/* At most max are stored; the count tells a caller the path did not fit. */
	ck_assert_uint_eq(dg_state_path_parse("a/b/c/d/e/f", seg, 4), 4);
	ck_assert_int_eq(seg[3].s[0], 'd');
	ck_assert_uint_eq(dg_state_path_parse("a/b", seg, 0), 0);
	ck_assert_uint_eq(dg_state_path_count("a/b/c/d/e/f"), 6);
	ck_assert_uint_eq(dg_state_path_count("//a//b//"), 2);
	ck_assert_uint_eq(dg_state_path_count(""), 0);
	ck_assert_uint_eq(dg_state_path_count("/"), 0);
	ck_assert_uint_eq(dg_state_path_count(NULL), 0);
}
END_TEST

START_TEST(test_overlaps)
{
	/* At, below, above. */
	ck_assert(overlaps("sensor", "sensor"));
	ck_assert(overlaps("sensor", "sensor/temp"));
	ck_assert(overlaps("sensor", "sensor/temp/deep"));
	ck_assert(overlaps("sensor/temp", "sensor"));
	ck_assert(overlaps("sensor/temp", ""));
	ck_assert(overlaps("", "anything/at/all"));
	ck_assert(overlaps("", ""));
	/* Disjoint, and siblings sharing a prefix of bytes. */
	ck_assert(!overlaps("a", "b"));
	ck_assert(!overlaps("temp", "temperature"));
	ck_assert(!overlaps("temperature", "temp"));
	ck_assert(!overlaps("s/temp", "s/temperature"));
	ck_assert(!overlaps("s/temp/x", "s/temperature"));
	ck_assert(!overlaps("a/b", "a/c"));
	ck_assert(!overlaps("x/a", "y/a"));
	ck_assert(!overlaps("Sensor", "sensor"));
	/* Segments are compared whole, not as joined text. */
	{
		dg_path_seg ab[1] = {{"a/b", 3}}, a_b[2] = {{"a", 1}, {"b", 1}};

		ck_assert(!dg_state_path_overlaps(ab, 1, a_b, 2));
		ck_assert(!dg_state_path_overlaps(a_b, 2, ab, 1));
	}
}
END_TEST

/* Merges of many members go through the key index: same results as the list. */
START_TEST(test_large_merge)
{
	enum { N = 20000 };
	cJSON *v = cJSON_CreateObject();
	char key[32];
	path p = P("big");
	const cJSON *big;
	int count = 0;

	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cJSON_AddNumberToObject(v, key, i);
	}
	/* A repeat of the first key, last: it wins. */
	cJSON_AddNumberToObject(v, "k0", -1);
	ck_assert_int_eq(dg_state_set(&doc, p.seg, p.n, v), 0);
	big = dg_state_get(doc, p.seg, p.n);
	ck_assert_int_eq(cJSON_GetArraySize(big), N);

	/* Half of them again, and as many new ones; some become objects. */
	v = cJSON_CreateObject();
	for (int i = N / 2; i < N + N / 2; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		if (i % 1000 == 0) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddNumberToObject(o, "i", i);
			cJSON_AddItemToObject(v, key, o);
		} else {
			cJSON_AddNumberToObject(v, key, -i);
		}
	}
	ck_assert_int_eq(dg_state_set(&doc, p.seg, p.n, v), 0);
	big = dg_state_get(doc, p.seg, p.n);
	ck_assert_int_eq(cJSON_GetArraySize(big), N + N / 2);
	for (const cJSON *c = big->child; c != NULL; c = c->next) {
		int i = atoi(c->string + 1);

		if (i == 0) {
			if (c->valuedouble != -1)
				ck_abort_msg("k0 is %g", c->valuedouble);
		} else if (i >= N / 2 && i % 1000 == 0) {
			if (!cJSON_IsObject(c))
				ck_abort_msg("%s is not an object", c->string);
		} else if (c->valuedouble != (i < N / 2 ? i : -i)) {
			ck_abort_msg("%s is %g", c->string, c->valuedouble);
		}
		count++;
	}
	ck_assert_int_eq(count, N + N / 2);
	/* The first members kept their place; new ones came after. */
	ck_assert_str_eq(big->child->string, "k0");
	ck_assert_str_eq(big->child->prev->string, "k29999");
}
END_TEST

static Suite *
state_suite(void)
{
	Suite *s = suite_create("state");
	TCase *tc = tcase_create("state");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_set_root_merges);
	tcase_add_test(tc, test_merge_recursive);
	tcase_add_test(tc, test_get);
	tcase_add_test(tc, test_set_creates_intermediates);
	tcase_add_test(tc, test_replace_scalar_by_object);
	tcase_add_test(tc, test_replace_object_by_scalar);
	tcase_add_test(tc, test_arrays_replace);
	tcase_add_test(tc, test_repeated_keys);
	tcase_add_test(tc, test_keys_exact);
	tcase_add_test(tc, test_set_value_with_key);
	tcase_add_test(tc, test_set_invalid);
	tcase_add_test(tc, test_delete);
	tcase_add_test(tc, test_path_parse);
	tcase_add_test(tc, test_overlaps);
	tcase_add_test(tc, test_large_merge);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(state_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
