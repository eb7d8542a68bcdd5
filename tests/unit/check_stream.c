/*
 * Unit tests of stream record timestamps: the member names and their
 * order, seconds against milliseconds, fractions, ISO 8601 / RFC 3339
 * strings with offsets and fractions, and everything that is not one.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "devgate/stream.h"

/* 2024-05-01T12:00:00Z */
#define T0 1714564800000LL

/* The timestamp of the record written as JSON text. */
static int64_t
ts_of(const char *json)
{
	cJSON *v = cJSON_Parse(json);
	int64_t t;

	ck_assert_msg(v != NULL, "test JSON does not parse: %s", json);
	t = dg_stream_timestamp(v);
	cJSON_Delete(v);
	return t;
}

static int64_t
ts_of_number(const char *name, double d)
{
	cJSON *o = cJSON_CreateObject();
	int64_t t;

	ck_assert_ptr_nonnull(cJSON_AddNumberToObject(o, name, d));
	t = dg_stream_timestamp(o);
	cJSON_Delete(o);
	return t;
}

#define ISO(s) dg_stream_parse_iso8601(s)

START_TEST(test_each_member)
{
	ck_assert_int_eq(ts_of("{\"t\": 1714564800}"), T0);
	ck_assert_int_eq(ts_of("{\"ts\": 1714564800}"), T0);
	ck_assert_int_eq(ts_of("{\"time\": 1714564800}"), T0);
	ck_assert_int_eq(ts_of("{\"v\": 1, \"t\": 1714564800000}"), T0);
	ck_assert_int_eq(ts_of("{\"ts\": \"2024-05-01T12:00:00Z\", \"temp\": 21.5}"), T0);
	ck_assert_int_eq(ts_of("{\"time\": \"2024-05-01T14:00:00+02:00\"}"), T0);
}
END_TEST

START_TEST(test_precedence)
{
	ck_assert_int_eq(ts_of("{\"time\": 1, \"ts\": 2, \"t\": 3}"), 3000);
	ck_assert_int_eq(ts_of("{\"t\": 3, \"ts\": 2, \"time\": 1}"), 3000);
	ck_assert_int_eq(ts_of("{\"time\": 1, \"ts\": 2}"), 2000);
	ck_assert_int_eq(ts_of("{\"time\": 1, \"x\": 2}"), 1000);
	/* The first member present decides even when it is unusable. */
	ck_assert_int_eq(ts_of("{\"t\": \"soon\", \"ts\": 2}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": null, \"ts\": 2}"), -1);
	ck_assert_int_eq(ts_of("{\"ts\": -5, \"time\": 2}"), -1);
	/* Names are case-sensitive, and nothing else counts. */
	ck_assert_int_eq(ts_of("{\"T\": 1, \"TS\": 2, \"Time\": 3, \"timestamp\": 4}"), -1);
	ck_assert_int_eq(ts_of("{\"x\": {\"t\": 1}}"), -1);
	ck_assert_int_eq(ts_of("{}"), -1);
}
END_TEST

START_TEST(test_wrong_member_types)
{
	ck_assert_int_eq(ts_of("{\"t\": true}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": false}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": null}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": {}}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": [1714564800]}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": \"\"}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": \"1714564800\"}"), -1);
}
END_TEST

START_TEST(test_non_objects)
{
	ck_assert_int_eq(dg_stream_timestamp(NULL), -1);
	ck_assert_int_eq(ts_of("1714564800"), -1);
	ck_assert_int_eq(ts_of("\"2024-05-01T12:00:00Z\""), -1);
	ck_assert_int_eq(ts_of("[{\"t\": 1714564800}]"), -1);
	ck_assert_int_eq(ts_of("[]"), -1);
	ck_assert_int_eq(ts_of("null"), -1);
	ck_assert_int_eq(ts_of("true"), -1);
}
END_TEST

START_TEST(test_seconds_or_ms)
{
	ck_assert_int_eq(ts_of("{\"t\": 0}"), 0);
	ck_assert_int_eq(ts_of("{\"t\": 1}"), 1000);
	ck_assert_int_eq(ts_of("{\"t\": 2147483648}"), 2147483648000LL);
	/* Below 1e11: seconds; from 1e11 up: milliseconds. */
	ck_assert_int_eq(ts_of("{\"t\": 99999999999}"), 99999999999000LL);
	ck_assert_int_eq(ts_of("{\"t\": 99999999999.5}"), 99999999999500LL);
	ck_assert_int_eq(ts_of("{\"t\": 100000000000}"), 100000000000LL);
	ck_assert_int_eq(ts_of("{\"t\": 1e11}"), 100000000000LL);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800000}"), T0);
	ck_assert_int_eq(ts_of("{\"t\": 1.7145648e12}"), T0);
	ck_assert_int_eq(ts_of("{\"t\": 1.7145648e9}"), T0);
	/* Up to the end of year 9999. */
	ck_assert_int_eq(ts_of("{\"t\": 253402300799999}"), 253402300799999LL);
	ck_assert_int_eq(ts_of("{\"t\": 253402300800000}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": 1e300}"), -1);
}
END_TEST

START_TEST(test_fractions)
{
	ck_assert_int_eq(ts_of("{\"t\": 1714564800.25}"), T0 + 250);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800.5}"), T0 + 500);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800.123}"), T0 + 123);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800.999}"), T0 + 999);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800.001}"), T0 + 1);
	ck_assert_int_eq(ts_of("{\"t\": 0.5}"), 500);
	ck_assert_int_eq(ts_of("{\"t\": 0.0004}"), 0);
	/* Finer than a millisecond rounds to the nearest one. */
	ck_assert_int_eq(ts_of("{\"t\": 1714564800.0996}"), T0 + 100);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800000.4}"), T0);
	ck_assert_int_eq(ts_of("{\"t\": 1714564800000.6}"), T0 + 1);
}
END_TEST

START_TEST(test_bad_numbers)
{
	ck_assert_int_eq(ts_of("{\"t\": -1}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": -0.001}"), -1);
	ck_assert_int_eq(ts_of("{\"t\": -1714564800000}"), -1);
	ck_assert_int_eq(ts_of_number("t", NAN), -1);
	ck_assert_int_eq(ts_of_number("t", INFINITY), -1);
	ck_assert_int_eq(ts_of_number("ts", -INFINITY), -1);
	ck_assert_int_eq(ts_of_number("time", 1714564800.0), T0);
}
END_TEST

START_TEST(test_iso_basic)
{
	ck_assert_int_eq(ISO("2024-05-01T12:00:00Z"), T0);
	ck_assert_int_eq(ISO("1970-01-01T00:00:00Z"), 0);
	ck_assert_int_eq(ISO("1970-01-01T00:00:01Z"), 1000);
	ck_assert_int_eq(ISO("2038-01-19T03:14:08Z"), 2147483648000LL);
	ck_assert_int_eq(ISO("2024-02-29T00:00:00Z"), 1709164800000LL);
	ck_assert_int_eq(ISO("2000-02-29T23:59:59Z"), 951868799000LL);
	ck_assert_int_eq(ISO("9999-12-31T23:59:59.999Z"), 253402300799999LL);
	/* Lowercase z and t, a space for the T. */
	ck_assert_int_eq(ISO("2024-05-01T12:00:00z"), T0);
	ck_assert_int_eq(ISO("2024-05-01t12:00:00Z"), T0);
	ck_assert_int_eq(ISO("2024-05-01 12:00:00Z"), T0);
	ck_assert_int_eq(ISO("2024-05-01 12:00:00+00:00"), T0);
}
END_TEST

START_TEST(test_iso_offsets)
{
	ck_assert_int_eq(ISO("2024-05-01T12:00:00+00:00"), T0);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00-00:00"), T0);
	ck_assert_int_eq(ISO("2024-05-01T14:00:00+02:00"), T0);
	ck_assert_int_eq(ISO("2024-05-01T06:30:00-05:30"), T0);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00-05:30"), 1714584600000LL);
	/* Offsets that cross a day, a month and a year. */
	ck_assert_int_eq(ISO("2024-05-02T01:00:00+13:00"), T0);
	ck_assert_int_eq(ISO("2024-04-30T23:00:00-13:00"), T0);
	ck_assert_int_eq(ISO("2023-12-31T23:00:00-01:00"), ISO("2024-01-01T00:00:00Z"));
	ck_assert_int_eq(ISO("1970-01-01T01:00:00+01:00"), 0);
	ck_assert_int_eq(ISO("2024-05-01T23:59:00+23:59"), ISO("2024-05-01T00:00:00Z"));
}
END_TEST

START_TEST(test_iso_fractions)
{
	ck_assert_int_eq(ISO("2024-05-01T10:00:00.250+00:00"), 1714557600250LL);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.250+02:00"), 1714557600250LL);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.5Z"), T0 + 500);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.05Z"), T0 + 50);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.123Z"), T0 + 123);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.0Z"), T0);
	/* Digits past the third are dropped, up to nine of them. */
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.1239Z"), T0 + 123);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.999999Z"), T0 + 999);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.123456789Z"), T0 + 123);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.123456789-01:00"), T0 + 3600000 + 123);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.1234567890Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00,5Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00.5.5Z"), -1);
}
END_TEST

START_TEST(test_iso_invalid_dates)
{
	ck_assert_int_eq(ISO("2024-13-01T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-00-01T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-01-00T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-01-32T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-02-30T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2023-02-29T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("1900-02-29T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-04-31T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T24:00:00Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:60:00Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:00:60Z"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00+24:00"), -1);
	ck_assert_int_eq(ISO("2024-05-01T12:00:00+05:60"), -1);
	/* Before the epoch, or after year 9999 once the offset is applied. */
	ck_assert_int_eq(ISO("1969-12-31T23:59:59.999Z"), -1);
	ck_assert_int_eq(ISO("1970-01-01T00:30:00+01:00"), -1);
	ck_assert_int_eq(ISO("0000-01-01T00:00:00Z"), -1);
	ck_assert_int_eq(ISO("9999-12-31T23:00:00-05:00"), -1);
}
END_TEST

START_TEST(test_iso_not_dates)
{
	static const char *const bad[] = {
	        "",
	        "Z",
	        "2024",
	        "2024-05-01",
	        "2024-05-01T12:00",
	        "2024-05-01T12:00Z",
	        "2024-05-01T12:00:00",
	        "2024-05-01T12:00:00+02",
	        "2024-05-01T12:00:00+0200",
	        "2024-05-01T12:00:00+2:00",
	        "2024-05-01T12:00:00 Z",
	        "2024-05-01T12:00:00Z ",
	        " 2024-05-01T12:00:00Z",
	        "2024-05-01T12:00:00ZZ",
	        "2024-05-01T12:00:00UTC",
	        "2024-05-01X12:00:00Z",
	        "2024-05-01T12:00:00Z\n",
	        "24-05-01T12:00:00Z",
	        "+2024-05-01T12:00:00Z",
	        "02024-05-01T12:00:00Z",
	        "2024-5-01T12:00:00Z",
	        "2024-05-1T12:00:00Z",
	        "2024-05-01T1:00:00Z",
	        "2024/05/01T12:00:00Z",
	        "2024-05-01T12.00.00Z",
	        "2024-05-01T-1:00:00Z",
	        "2024-05-01T12:00:0aZ",
	        "20240501T120000Z",
	        "1714564800",
	};

	ck_assert_int_eq(ISO(NULL), -1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(ISO(bad[i]) == -1, "\"%s\" parsed", bad[i]);
}
END_TEST

/* The result does not depend on the local time zone. */
START_TEST(test_iso_ignores_tz)
{
	setenv("TZ", "America/New_York", 1);
	tzset();
	ck_assert_int_eq(ISO("2024-05-01T12:00:00Z"), T0);
	ck_assert_int_eq(ISO("2024-05-01 08:00:00-04:00"), T0);
	setenv("TZ", "Asia/Kolkata", 1);
	tzset();
	ck_assert_int_eq(ISO("2024-05-01T12:00:00Z"), T0);
	ck_assert_int_eq(ts_of("{\"t\": \"2024-05-01T17:30:00+05:30\"}"), T0);
}
END_TEST

static Suite *
stream_suite(void)
{
	Suite *s = suite_create("stream");
	TCase *tc = tcase_create("timestamp");

	tcase_add_test(tc, test_each_member);
	tcase_add_test(tc, test_precedence);
	tcase_add_test(tc, test_wrong_member_types);
	tcase_add_test(tc, test_non_objects);
	tcase_add_test(tc, test_seconds_or_ms);
	tcase_add_test(tc, test_fractions);
	tcase_add_test(tc, test_bad_numbers);
	tcase_add_test(tc, test_iso_basic);
	tcase_add_test(tc, test_iso_offsets);
	tcase_add_test(tc, test_iso_fractions);
	tcase_add_test(tc, test_iso_invalid_dates);
	tcase_add_test(tc, test_iso_not_dates);
	tcase_add_test(tc, test_iso_ignores_tz);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(stream_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
