/*
 * Logging: one line per event on stderr, as text (key=value fields) or as
 * one JSON object per line.
 *
 * The level and format are set at start-up by dg_log_init() and again on
 * SIGHUP; they are atomics, so any thread may log while they change. This
 * is the one piece of process-wide state, as in OpenBSD's log.c, so that
 * every module can log without a handle.
 */
#ifndef DEVGATE_LOG_H
#define DEVGATE_LOG_H

#include <stdarg.h>
#include <stdint.h>

typedef enum dg_log_level {
	DG_LOG_ERROR = 0,
	DG_LOG_WARN = 1,
	DG_LOG_INFO = 2,
	DG_LOG_DEBUG = 3,
} dg_log_level;

typedef enum dg_log_format {
	DG_LOG_TEXT = 0,
	DG_LOG_JSON = 1,
} dg_log_format;

/*
 * Sets the threshold and format (and whether stderr is journald's stream).
 * Safe while other threads log: each line is written wholly under the old
 * or wholly under the new settings.
 */
void dg_log_init(dg_log_level level, dg_log_format format);

/* Returns nonzero when a line of this level would be written. */
int dg_log_enabled(dg_log_level level);

/*
 * Writes one event. `event` is a short machine-readable name
 * ("session.established"); `fmt` formats the rest of the line, which in
 * text is appended as is and in JSON becomes the "msg" field. Use
 * dg_log_kv() to get structured key=value fields in both formats.
 */
void dg_log(dg_log_level level, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/*
 * Writes one event made of key/value pairs: `kv` holds `n` pairs of
 * strings (key, value, key, value ...); a NULL value is written as null in
 * JSON and as "-" in text. Values are quoted and escaped as needed.
 */
void dg_log_kv(dg_log_level level, const char *event, const char *const *kv, int n);

/*
 * Limits repeated lines of one event (a string literal, compared by
 * content) to 10 a second: returns 1 when a line may be written, 0 when it
 * is suppressed and counted; the count is logged when the next second
 * begins. Safe from any thread (the worker loops share one table).
 */
int dg_log_ratelimit(const char *event, uint64_t now_ms);

#define log_warnx(...)  dg_log(DG_LOG_WARN, "warning", __VA_ARGS__)
#define log_info(...)   dg_log(DG_LOG_INFO, "info", __VA_ARGS__)
#define log_debug(...)  dg_log(DG_LOG_DEBUG, "debug", __VA_ARGS__)
#define log_errorx(...) dg_log(DG_LOG_ERROR, "error", __VA_ARGS__)

#endif
