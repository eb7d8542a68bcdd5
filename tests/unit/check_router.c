/*
 * Unit tests of the request router: requests built by hand as the CoAP
 * layer would hand them over, answered into a body buffer owned here.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/router.h"

/* The body buffer, with a guard area after body_cap to catch overruns. */
static uint8_t body[DG_COAP_MIN_BODY + 64];
static dg_coap_request req;
static dg_coap_response resp;
static dg_route_ctx rctx = {.project = "acme", .device = "sensor-1", .device_id = 42};

static void
reset(uint8_t code, size_t cap)
{
	memset(&req, 0, sizeof(req));
	req.type = DG_COAP_CON;
	req.code = code;
	req.mid = 0x1234;
	req.content_format = -1;
	req.accept = -1;
	req.observe = -1;
	req.block1 = -1;
	req.block2 = -1;
	req.size1 = -1;
	memset(body, 0xee, sizeof(body));
	memset(&resp, 0, sizeof(resp));
	resp.content_format = -1;
	resp.max_age = -1;
	resp.observe = -1;
	resp.block1 = -1;
	resp.block2 = -1;
	resp.size1 = -1;
	resp.body = body;
	resp.body_cap = cap;
}

static void
add_path(const char *seg)
{
	ck_assert_uint_lt(req.n_path, DG_COAP_MAX_PATH);
	req.path[req.n_path].s = (const uint8_t *)seg;
	req.path[req.n_path].len = strlen(seg);
	req.n_path++;
}

static void
assert_guard(size_t cap)
{
	for (size_t i = cap; i < sizeof(body); i++)
		if (body[i] != 0xee)
			ck_abort_msg("body written past body_cap at %zu", i);
}

static void
assert_body(const char *want)
{
	size_t n = strlen(want);

	ck_assert_uint_eq(resp.body_len, n);
	ck_assert_mem_eq(resp.body, want, n);
}

START_TEST(test_well_known_core)
{
	reset(DG_COAP_GET, DG_COAP_MIN_BODY);
	add_path(".well-known");
	add_path("core");
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_CONTENT);
	ck_assert_int_eq(resp.content_format, DG_COAP_FMT_LINK);
	ck_assert_uint_gt(resp.body_len, 0);
	ck_assert_uint_le(resp.body_len, resp.body_cap);
	/* The body starts with the resource itself, and every link is "<...>". */
	ck_assert_uint_ge(resp.body_len, strlen("</.well-known/core>"));
	ck_assert_mem_eq(resp.body, "</.well-known/core>", strlen("</.well-known/core>"));
	ck_assert_int_eq(memchr(resp.body, '\0', resp.body_len) == NULL, 1);
	assert_guard(DG_COAP_MIN_BODY);
	/* It says what it is: ct=40. */
	{
		char text[DG_COAP_MIN_BODY + 1];
		memcpy(text, resp.body, resp.body_len);
		text[resp.body_len] = '\0';
		ck_assert_ptr_nonnull(strstr(text, "</.well-known/core>;ct=40"));
	}
	/* Untouched response options. */
	ck_assert_int_eq(resp.observe, -1);
	ck_assert_int_eq(resp.block2, -1);
}
END_TEST

START_TEST(test_well_known_core_small_buffer)
{
	/* A body buffer too small for the first link: an empty listing, no overrun. */
	reset(DG_COAP_GET, 8);
	add_path(".well-known");
	add_path("core");
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_CONTENT);
	ck_assert_uint_le(resp.body_len, 8);
	assert_guard(8);
}
END_TEST

START_TEST(test_well_known_core_with_query)
{
	/* Queries (filtering) do not change the route. */
	static const char q[] = "rt=x";

	reset(DG_COAP_GET, DG_COAP_MIN_BODY);
	add_path(".well-known");
	add_path("core");
	req.query[0].s = (const uint8_t *)q;
	req.query[0].len = strlen(q);
	req.n_query = 1;
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_CONTENT);
	ck_assert_int_eq(resp.content_format, DG_COAP_FMT_LINK);
}
END_TEST

START_TEST(test_keepalive_delete)
{
	reset(DG_COAP_DELETE, DG_COAP_MIN_BODY);
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_DELETED);
	ck_assert_uint_eq(resp.body_len, 0);
	assert_guard(0);
	/* NON too. */
	reset(DG_COAP_DELETE, DG_COAP_MIN_BODY);
	req.type = DG_COAP_NON;
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_DELETED);
}
END_TEST

START_TEST(test_empty_path_other_methods)
{
	/* Only DELETE is the keepalive; GET / is just an unknown resource. */
	reset(DG_COAP_GET, DG_COAP_MIN_BODY);
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_NOT_FOUND);
	reset(DG_COAP_POST, DG_COAP_MIN_BODY);
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_NOT_FOUND);
}
END_TEST

START_TEST(test_not_found)
{
	static const char *const paths[][3] = {
	        {"nope", NULL, NULL},
	        {".well-known", NULL, NULL},
	        {".well-known", "cor", NULL},
	        {".well-known", "core", "x"},
	        {".well-known", "corex", NULL},
	        {"core", NULL, NULL},
	        {"", NULL, NULL},
	};

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		reset(DG_COAP_GET, DG_COAP_MIN_BODY);
		for (size_t j = 0; j < 3 && paths[i][j] != NULL; j++)
			add_path(paths[i][j]);
		dg_router_handle(&rctx, &req, &resp);
		ck_assert_msg(resp.code == DG_COAP_NOT_FOUND, "path %zu: code %#x", i, resp.code);
		ck_assert_int_eq(resp.content_format, DG_COAP_FMT_TEXT);
		assert_body("not found");
		assert_guard(DG_COAP_MIN_BODY);
	}
	/* DELETE of an unknown path is a 4.04, not the keepalive. */
	reset(DG_COAP_DELETE, DG_COAP_MIN_BODY);
	add_path("nope");
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_NOT_FOUND);
}
END_TEST

START_TEST(test_not_found_path_prefix)
{
	/* A segment that only starts like the route's, compared by length too. */
	static const uint8_t seg[] = {'.', 'w', 'e', 'l', 'l', '-', 'k', 'n', 'o', 'w', 'n', 'X'};

	reset(DG_COAP_GET, DG_COAP_MIN_BODY);
	req.path[0].s = seg;
	req.path[0].len = sizeof(seg);
	req.n_path = 1;
	add_path("core");
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_NOT_FOUND);
}
END_TEST

START_TEST(test_method_not_allowed)
{
	static const uint8_t methods[] = {DG_COAP_POST, DG_COAP_PUT, DG_COAP_DELETE, 5, 7, 31};

	for (size_t i = 0; i < sizeof(methods); i++) {
		reset(methods[i], DG_COAP_MIN_BODY);
		add_path(".well-known");
		add_path("core");
		dg_router_handle(&rctx, &req, &resp);
		ck_assert_msg(resp.code == DG_COAP_METHOD_NOT_ALLOWED, "method %u: code %#x",
		              methods[i], resp.code);
		ck_assert_int_eq(resp.content_format, DG_COAP_FMT_TEXT);
		assert_body("method not allowed");
	}
}
END_TEST

START_TEST(test_error_text_truncated)
{
	/* The error text is cut to body_cap, never written past it. */
	reset(DG_COAP_GET, 4);
	add_path("nope");
	dg_router_handle(&rctx, &req, &resp);
	ck_assert_uint_eq(resp.code, DG_COAP_NOT_FOUND);
	ck_assert_uint_eq(resp.body_len, 4);
	ck_assert_mem_eq(resp.body, "not ", 4);
	assert_guard(4);
}
END_TEST

static Suite *
router_suite(void)
{
	Suite *s = suite_create("router");
	TCase *tc = tcase_create("router");

	tcase_add_test(tc, test_well_known_core);
	tcase_add_test(tc, test_well_known_core_small_buffer);
	tcase_add_test(tc, test_well_known_core_with_query);
	tcase_add_test(tc, test_keepalive_delete);
	tcase_add_test(tc, test_empty_path_other_methods);
	tcase_add_test(tc, test_not_found);
	tcase_add_test(tc, test_not_found_path_prefix);
	tcase_add_test(tc, test_method_not_allowed);
	tcase_add_test(tc, test_error_text_truncated);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(router_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
