/*
 * LightDB Stream helpers: splitting a posted value into records and
 * finding each record's timestamp.
 */
#ifndef DEVGATE_STREAM_H
#define DEVGATE_STREAM_H

#include <stdint.h>

#include <cjson/cJSON.h>

/*
 * Returns the timestamp a record carries, in ms since the epoch, or -1
 * when it has none or an unusable one: a member "t", "ts" or "time" of an
 * object (first found in that order), a number of seconds (values below
 * 1e11, fractions kept to the ms) or of milliseconds (1e11 and above), or
 * an ISO 8601 / RFC 3339 string ("2024-05-01T12:00:00Z",
 * "2024-05-01T12:00:00.250+02:00").
 */
int64_t dg_stream_timestamp(const cJSON *record);

/* Parses an ISO 8601 / RFC 3339 date-time into ms since the epoch; -1 when it is not one. */
int64_t dg_stream_parse_iso8601(const char *s);

#endif
