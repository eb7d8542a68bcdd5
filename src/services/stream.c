/*
 * LightDB Stream helpers: record timestamps; see stream.h.
 *
 * Dates are turned into ms since the epoch with civil-calendar arithmetic
 * (days_from_civil), so nothing here reads TZ or calls timegm().
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "devgate/stream.h"

#define MS_PER_DAY 86400000LL
/* 9999-12-31T23:59:59.999Z: the last instant a four-digit year names. */
#define MS_MAX 253402300799999LL
/* Numbers below this are seconds, from it up milliseconds (1e11 s is in 5138). */
#define SECONDS_BELOW 1e11

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int
is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Reads exactly n decimal digits at *p into *out and advances *p; returns 0 or -1. */
static int
digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		char c = (*p)[i];

		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

/* Consumes the character c at *p; returns 0 or -1. */
static int
expect(const char **p, char c)
{
	if (**p != c)
		return -1;
	(*p)++;
	return 0;
}

int64_t
dg_stream_parse_iso8601(const char *s)
{
	const char *p = s;
	int year, mon, day, hour, min, sec, frac_ms = 0, off_h = 0, off_m = 0, sign = 0;
	int64_t ms;

	if (s == NULL)
		return -1;
	if (digits(&p, 4, &year) || expect(&p, '-') || digits(&p, 2, &mon) || expect(&p, '-') ||
	    digits(&p, 2, &day))
		return -1;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -1;
	p++;
	if (digits(&p, 2, &hour) || expect(&p, ':') || digits(&p, 2, &min) || expect(&p, ':') ||
	    digits(&p, 2, &sec))
		return -1;
	if (*p == '.') {
		/* 1..9 digits; what is finer than a millisecond is dropped. */
		int n = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, n++) {
			if (n == 9)
				return -1;
			if (n < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		}
		if (n == 0)
			return -1;
		for (; n < 3; n++)
			frac_ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		p++;
		if (digits(&p, 2, &off_h) || expect(&p, ':') || digits(&p, 2, &off_m))
			return -1;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;

	if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
	    min > 59 || sec > 59 || off_h > 23 || off_m > 59)
		return -1;
	ms = days_from_civil(year, mon, day) * MS_PER_DAY +
	     ((int64_t)hour * 3600 + min * 60 + sec) * 1000 + frac_ms;
	ms -= (int64_t)sign * ((int64_t)off_h * 3600 + off_m * 60) * 1000;
	if (ms < 0 || ms > MS_MAX)
		return -1;
	return ms;
}

/* A number of seconds or milliseconds, rounded to the nearest ms. */
static int64_t
from_number(double v)
{
	double ms;

	if (!isfinite(v) || v < 0)
		return -1;
	ms = v < SECONDS_BELOW ? v * 1000.0 : v;
	ms = floor(ms + 0.5);
	if (ms > (double)MS_MAX)
		return -1;
	return (int64_t)ms;
}

int64_t
dg_stream_timestamp(const cJSON *record)
{
	static const char *const names[] = {"t", "ts", "time"};
	const cJSON *v;

	if (!cJSON_IsObject(record))
		return -1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		v = cJSON_GetObjectItemCaseSensitive(record, names[i]);
		if (v == NULL)
			continue;
		/* The first member present decides, usable or not. */
		if (cJSON_IsNumber(v))
			return from_number(v->valuedouble);
		if (cJSON_IsString(v) && v->valuestring != NULL)
			return dg_stream_parse_iso8601(v->valuestring);
		return -1;
	}
	return -1;
}
