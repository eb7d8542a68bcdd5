/*
 * Logging to stderr, one line per event, as text or JSON.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "devgate/log.h"

/*
 * Set by dg_log_init() at start-up and again on SIGHUP, while the writer
 * and metrics threads log: each is one atomic word, stored and loaded
 * relaxed (a line is written under the old or the new settings, never
 * under a torn one; each line reads each setting once).
 */
static _Atomic int log_threshold = DG_LOG_INFO;
static _Atomic int log_format = DG_LOG_TEXT;
/* stderr is journald's stream: syslog priority prefixes, no timestamps. */
static _Atomic int log_journal;

/*
 * Repeated-line limiting, shared by every worker loop: one mutex, taken
 * only for a line that is about to be rate-limited (handshake failures).
 */
static pthread_mutex_t rl_mu = PTHREAD_MUTEX_INITIALIZER;
#define RL_EVENTS     16
#define RL_PER_WINDOW 10
#define RL_WINDOW_MS  1000
static struct {
	const char *event;
	uint64_t window_ms;
	unsigned count;
	unsigned long suppressed;
} rl[RL_EVENTS];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Returns 1 when JOURNAL_STREAM names the file stderr is (systemd sets it). */
static int
stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat sb;
	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &sb) != 0)
		return 0;
	return (unsigned long long)sb.st_dev == dev && (unsigned long long)sb.st_ino == ino;
}

void
dg_log_init(dg_log_level level, dg_log_format format)
{
	atomic_store_explicit(&log_threshold, (int)level, memory_order_relaxed);
	atomic_store_explicit(&log_format, (int)format, memory_order_relaxed);
	atomic_store_explicit(&log_journal, stderr_is_journal(), memory_order_relaxed);
}

int
dg_log_enabled(dg_log_level level)
{
	return (int)level <= atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

/*
 * Appends `s` to buf at *pos with quotes and backslashes escaped and
 * control characters written as \u00XX (JSON) or \xXX (text).
 */
static void
put_escaped(char *buf, size_t cap, size_t *pos, const char *s, int json)
{
	for (; *s != '\0' && *pos + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[(*pos)++] = '\\';
			buf[(*pos)++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			*pos += (size_t)snprintf(buf + *pos, cap - *pos,
			                         json ? "\\u%04x" : "\\x%02x", c);
		} else {
			buf[(*pos)++] = (char)c;
		}
	}
}

static void
put_json_escaped(char *buf, size_t cap, size_t *pos, const char *s)
{
	put_escaped(buf, cap, pos, s, 1);
}

/* Appends `s` to buf as a text value: bare when safe, else quoted and escaped. */
static void
put_text_value(char *buf, size_t cap, size_t *pos, const char *s)
{
	int bare = *s != '\0';
	for (const char *p = s; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= 0x20 || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
			bare = 0;
	}
	if (bare) {
		size_t n = strlen(s);
		if (*pos + 1 >= cap)
			return;
		if (*pos + n >= cap)
			n = cap - *pos - 1;
		memcpy(buf + *pos, s, n);
		*pos += n;
		return;
	}
	if (*pos + 2 < cap)
		buf[(*pos)++] = '"';
	put_escaped(buf, cap, pos, s, 0);
	if (*pos + 1 < cap)
		buf[(*pos)++] = '"';
}

static void
put_raw(char *buf, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);
	if (*pos + 1 >= cap)
		return;
	if (*pos + n >= cap)
		n = cap - *pos - 1;
	memcpy(buf + *pos, s, n);
	*pos += n;
}

static void
put_timestamp(char *buf, size_t cap, size_t *pos)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	*pos += strftime(buf + *pos, cap - *pos, "%Y-%m-%dT%H:%M:%S", &tm);
	*pos += (size_t)snprintf(buf + *pos, cap - *pos, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Writes one event with optional key/value pairs and an optional message. */
static void
emit(dg_log_level level, const char *event, const char *const *kv, int n, const char *msg)
{
	char buf[2048];
	size_t pos = 0;
	const size_t cap = sizeof(buf) - 2;
	const int format = atomic_load_explicit(&log_format, memory_order_relaxed);
	const int journal = atomic_load_explicit(&log_journal, memory_order_relaxed);

	if (format == DG_LOG_JSON) {
		put_raw(buf, cap, &pos, "{\"ts\":\"");
		put_timestamp(buf, cap, &pos);
		put_raw(buf, cap, &pos, "\",\"level\":\"");
		put_raw(buf, cap, &pos, level_names[level]);
		put_raw(buf, cap, &pos, "\",\"event\":\"");
		put_json_escaped(buf, cap, &pos, event);
		put_raw(buf, cap, &pos, "\"");
		for (int i = 0; i + 1 < 2 * n; i += 2) {
			put_raw(buf, cap, &pos, ",\"");
			put_json_escaped(buf, cap, &pos, kv[i]);
			if (kv[i + 1] == NULL) {
				put_raw(buf, cap, &pos, "\":null");
				continue;
			}
			put_raw(buf, cap, &pos, "\":\"");
			put_json_escaped(buf, cap, &pos, kv[i + 1]);
			put_raw(buf, cap, &pos, "\"");
		}
		if (msg != NULL) {
			put_raw(buf, cap, &pos, ",\"msg\":\"");
			put_json_escaped(buf, cap, &pos, msg);
			put_raw(buf, cap, &pos, "\"");
		}
		put_raw(buf, cap, &pos, "}");
	} else {
		if (journal) {
			/* journald stamps the time itself and reads the priority from <N>. */
			static const char *const prio[] = {"<3>", "<4>", "<6>", "<7>"};
			put_raw(buf, cap, &pos, prio[level]);
		} else {
			put_timestamp(buf, cap, &pos);
			put_raw(buf, cap, &pos, " ");
		}
		put_raw(buf, cap, &pos, "level=");
		put_raw(buf, cap, &pos, level_names[level]);
		put_raw(buf, cap, &pos, " event=");
		put_text_value(buf, cap, &pos, event);
		for (int i = 0; i + 1 < 2 * n; i += 2) {
			put_raw(buf, cap, &pos, " ");
			put_raw(buf, cap, &pos, kv[i]);
			put_raw(buf, cap, &pos, "=");
			put_text_value(buf, cap, &pos, kv[i + 1] != NULL ? kv[i + 1] : "-");
		}
		if (msg != NULL) {
			put_raw(buf, cap, &pos, " msg=");
			put_text_value(buf, cap, &pos, msg);
		}
	}
	buf[pos++] = '\n';
	fwrite(buf, 1, pos, stderr);
	fflush(stderr);
}

void
dg_log(dg_log_level level, const char *event, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!dg_log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit(level, event, NULL, 0, msg);
}

void
dg_log_kv(dg_log_level level, const char *event, const char *const *kv, int n)
{
	if (!dg_log_enabled(level))
		return;
	emit(level, event, kv, n, NULL);
}

static int ratelimit_locked(const char *event, uint64_t now_ms);

int
dg_log_ratelimit(const char *event, uint64_t now_ms)
{
	pthread_mutex_lock(&rl_mu);
	int rc = ratelimit_locked(event, now_ms);
	pthread_mutex_unlock(&rl_mu);
	return rc;
}

static int
ratelimit_locked(const char *event, uint64_t now_ms)
{
	size_t i, slot = RL_EVENTS;
	for (i = 0; i < RL_EVENTS; i++) {
		if (rl[i].event == event ||
		    (rl[i].event != NULL && strcmp(rl[i].event, event) == 0))
			break;
		if (rl[i].event == NULL && slot == RL_EVENTS)
			slot = i;
	}
	if (i == RL_EVENTS) {
		if (slot == RL_EVENTS)
			return 1; /* The table is full: do not limit what it cannot track. */
		i = slot;
		rl[i].event = event;
		rl[i].window_ms = now_ms;
	}
	/* Workers' clocks differ by a little: a time before the window is within it. */
	if (now_ms > rl[i].window_ms && now_ms - rl[i].window_ms >= RL_WINDOW_MS) {
		if (rl[i].suppressed > 0)
			dg_log(DG_LOG_WARN, "log.suppressed",
			       "%lu %s lines suppressed in the last %llu ms", rl[i].suppressed,
			       event, (unsigned long long)(now_ms - rl[i].window_ms));
		rl[i].window_ms = now_ms;
		rl[i].count = 0;
		rl[i].suppressed = 0;
	}
	if (rl[i].count < RL_PER_WINDOW) {
		rl[i].count++;
		return 1;
	}
	rl[i].suppressed++;
	return 0;
}
