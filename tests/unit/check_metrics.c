/*
 * Unit tests of the metrics: the rendered exposition text line by line
 * (zeros for every fixed label set, HELP and TYPE, the histogram, label
 * escaping, the 64-reason limit), exact totals under concurrent
 * increments, and the HTTP endpoint fetched with a plain socket.
 */
#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "devgate/metrics.h"

#define VERSION   "1.2.3-test"
#define N_THREADS 4
#define N_INCS    100000

static dg_metrics *m;

static void
setup(void)
{
	ck_assert_int_eq(dg_metrics_new(&m), 0);
	ck_assert_ptr_nonnull(m);
}

static void
teardown(void)
{
	dg_metrics_free(m);
	m = NULL;
}

/* Returns 1 when `text` holds `line` as a whole line. */
static int
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
		p++;
	}
	return 0;
}

/* Returns how many lines of `text` begin with `prefix`. */
static int
count_prefix(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	const char *p = text;
	int count = 0;

	while (*p != '\0') {
		if (strncmp(p, prefix, n) == 0)
			count++;
		p = strchr(p, '\n');
		if (p == NULL)
			break;
		p++;
	}
	return count;
}

#define ASSERT_LINE(text, line)                                                                    \
	do {                                                                                       \
		if (!has_line((text), (line)))                                                     \
			ck_abort_msg("missing line: %s\n--- render:\n%s", (line), (text));         \
	} while (0)

static char *
render(void)
{
	char *text = dg_metrics_render(m, VERSION);
	ck_assert_ptr_nonnull(text);
	return text;
}

START_TEST(test_new_free)
{
	dg_metrics *x = NULL;

	dg_metrics_free(NULL);
	dg_metrics_http_stop(NULL);
	ck_assert_int_eq(dg_metrics_new(&x), 0);
	ck_assert_ptr_nonnull(x);
	dg_metrics_http_stop(x); /* Not running: a no-op. */
	dg_metrics_free(x);
}
END_TEST

START_TEST(test_zeros)
{
	static const char *const lines[] = {
	        "devgate_sessions{auth=\"psk\"} 0",
	        "devgate_sessions{auth=\"cert\"} 0",
	        "devgate_handshakes_total{auth=\"psk\",result=\"ok\"} 0",
	        "devgate_handshakes_total{auth=\"psk\",result=\"failed\"} 0",
	        "devgate_handshakes_total{auth=\"cert\",result=\"ok\"} 0",
	        "devgate_handshakes_total{auth=\"cert\",result=\"failed\"} 0",
	        "devgate_handshakes_total{auth=\"none\",result=\"failed\"} 0",
	        "devgate_handshake_failures_total{reason=\"other\"} 0",
	        "devgate_handshake_seconds_bucket{le=\"0.001\"} 0",
	        "devgate_handshake_seconds_bucket{le=\"+Inf\"} 0",
	        "devgate_handshake_seconds_sum 0.000000",
	        "devgate_handshake_seconds_count 0",
	        "devgate_datagrams_total{direction=\"in\"} 0",
	        "devgate_datagrams_total{direction=\"out\"} 0",
	        "devgate_dropped_datagrams_total{reason=\"not_dtls\"} 0",
	        "devgate_dropped_datagrams_total{reason=\"no_session\"} 0",
	        "devgate_dropped_datagrams_total{reason=\"limit\"} 0",
	        "devgate_dropped_datagrams_total{reason=\"stopping\"} 0",
	        "devgate_dropped_datagrams_total{reason=\"truncated\"} 0",
	        "devgate_dropped_datagrams_total{reason=\"other\"} 0",
	        "devgate_devices_provisioned_total 0",
	        "devgate_store_queue_depth 0",
	        "devgate_reloads_total{result=\"ok\"} 0",
	        "devgate_reloads_total{result=\"error\"} 0",
	        "devgate_build_info{version=\"" VERSION "\"} 1",
	};
	static const char *const services[] = {"core",   "keepalive", "state",
	                                       "stream", "logs",      "other"};
	static const char *const classes[] = {"2xx", "4xx", "5xx"};
	char line[160], *text = render();

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		ASSERT_LINE(text, lines[i]);
	for (size_t s = 0; s < 6; s++) {
		for (size_t c = 0; c < 3; c++) {
			snprintf(line, sizeof(line),
			         "devgate_coap_requests_total{service=\"%s\",class=\"%s\"} 0",
			         services[s], classes[c]);
			ASSERT_LINE(text, line);
		}
	}
	/* Exactly the fixed sets: 18 CoAP lines, 13 buckets, no none/ok. */
	ck_assert_int_eq(count_prefix(text, "devgate_coap_requests_total{"), 27);
	ck_assert_int_eq(count_prefix(text, "devgate_handshake_seconds_bucket{"), 13);
	ck_assert_int_eq(count_prefix(text, "devgate_handshakes_total{"), 5);
	ck_assert_int_eq(count_prefix(text, "devgate_handshake_failures_total{"), 1);
	ck_assert_int_eq(text[strlen(text) - 1], '\n');
	free(text);
}
END_TEST

START_TEST(test_help_type)
{
	static const struct {
		const char *name, *type;
	} families[] = {
	        {"devgate_sessions", "gauge"},
	        {"devgate_handshakes_total", "counter"},
	        {"devgate_handshake_failures_total", "counter"},
	        {"devgate_handshake_seconds", "histogram"},
	        {"devgate_coap_requests_total", "counter"},
	        {"devgate_datagrams_total", "counter"},
	        {"devgate_dropped_datagrams_total", "counter"},
	        {"devgate_devices_provisioned_total", "counter"},
	        {"devgate_store_queue_depth", "gauge"},
	        {"devgate_reloads_total", "counter"},
	        {"devgate_build_info", "gauge"},
	};
	char want[128], help[128], *text = render();
	const char *type_at, *first_sample;

	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		snprintf(want, sizeof(want), "# TYPE %s %s", families[i].name, families[i].type);
		ASSERT_LINE(text, want);
		snprintf(help, sizeof(help), "# HELP %s ", families[i].name);
		ck_assert_int_eq(count_prefix(text, help), 1);
		ck_assert_int_eq(count_prefix(text, want), 1);
		/* TYPE comes before the family's first sample. */
		type_at = strstr(text, want);
		snprintf(want, sizeof(want), "\n%s", families[i].name);
		first_sample = strstr(text, want);
		ck_assert_ptr_nonnull(first_sample);
		ck_assert(type_at < first_sample);
	}
	/* Every line is a comment or "name[{labels}] value". */
	for (char *p = text; *p != '\0';) {
		char *nl = strchr(p, '\n');
		ck_assert_ptr_nonnull(nl);
		if (*p != '#') {
			char *sp = memrchr(p, ' ', (size_t)(nl - p));
			ck_assert_ptr_nonnull(sp);
			ck_assert(strncmp(p, "devgate_", 8) == 0);
		}
		p = nl + 1;
	}
	free(text);
}
END_TEST

START_TEST(test_counters)
{
	char *text;

	dg_metrics_sessions_add(m, DG_AUTH_PSK, 1);
	dg_metrics_sessions_add(m, DG_AUTH_PSK, 1);
	dg_metrics_sessions_add(m, DG_AUTH_PSK, 1);
	dg_metrics_sessions_add(m, DG_AUTH_PSK, -1);
	dg_metrics_sessions_add(m, DG_AUTH_CERT, 1);
	dg_metrics_sessions_add(m, DG_AUTH_NONE, 1); /* Not a session kind: ignored. */
	dg_metrics_sessions_add(m, 99, 1);
	dg_metrics_handshake(m, DG_AUTH_PSK, 1);
	dg_metrics_handshake(m, DG_AUTH_PSK, 1);
	dg_metrics_handshake(m, DG_AUTH_CERT, 0);
	dg_metrics_handshake(m, DG_AUTH_NONE, 0);
	dg_metrics_handshake(m, -5, 0); /* Out of range: counts as none. */
	dg_metrics_coap_request(m, DG_SVC_STATE, 2);
	dg_metrics_coap_request(m, DG_SVC_STATE, 2);
	dg_metrics_coap_request(m, DG_SVC_CORE, 4);
	dg_metrics_coap_request(m, DG_SVC_LOGS, 5);
	dg_metrics_coap_request(m, 42, 4);            /* Unknown service: other. */
	dg_metrics_coap_request(m, DG_SVC_STREAM, 3); /* Shown only once counted. */
	dg_metrics_coap_request(m, DG_SVC_STREAM, 9); /* Not a class: ignored. */
	dg_metrics_datagram(m, DG_DIR_IN);
	dg_metrics_datagram(m, DG_DIR_IN);
	dg_metrics_datagram(m, DG_DIR_IN);
	dg_metrics_datagram(m, DG_DIR_OUT);
	dg_metrics_datagram(m, 7);
	dg_metrics_dropped(m, "not_dtls");
	dg_metrics_dropped(m, "limit");
	dg_metrics_dropped(m, "limit");
	dg_metrics_dropped(m, "truncated");
	dg_metrics_dropped(m, "no such reason");
	dg_metrics_dropped(m, NULL);
	dg_metrics_provisioned(m);
	dg_metrics_reload(m, 1);
	dg_metrics_reload(m, 0);
	dg_metrics_reload(m, 0);

	text = render();
	ASSERT_LINE(text, "devgate_sessions{auth=\"psk\"} 2");
	ASSERT_LINE(text, "devgate_sessions{auth=\"cert\"} 1");
	ASSERT_LINE(text, "devgate_handshakes_total{auth=\"psk\",result=\"ok\"} 2");
	ASSERT_LINE(text, "devgate_handshakes_total{auth=\"psk\",result=\"failed\"} 0");
	ASSERT_LINE(text, "devgate_handshakes_total{auth=\"cert\",result=\"failed\"} 1");
	ASSERT_LINE(text, "devgate_handshakes_total{auth=\"none\",result=\"failed\"} 2");
	ASSERT_LINE(text, "devgate_coap_requests_total{service=\"state\",class=\"2xx\"} 2");
	ASSERT_LINE(text, "devgate_coap_requests_total{service=\"core\",class=\"4xx\"} 1");
	ASSERT_LINE(text, "devgate_coap_requests_total{service=\"logs\",class=\"5xx\"} 1");
	ASSERT_LINE(text, "devgate_coap_requests_total{service=\"other\",class=\"4xx\"} 1");
	ASSERT_LINE(text, "devgate_coap_requests_total{service=\"stream\",class=\"3xx\"} 1");
	ck_assert_int_eq(count_prefix(text, "devgate_coap_requests_total{"), 28);
	ASSERT_LINE(text, "devgate_datagrams_total{direction=\"in\"} 3");
	ASSERT_LINE(text, "devgate_datagrams_total{direction=\"out\"} 1");
	ASSERT_LINE(text, "devgate_dropped_datagrams_total{reason=\"not_dtls\"} 1");
	ASSERT_LINE(text, "devgate_dropped_datagrams_total{reason=\"no_session\"} 0");
	ASSERT_LINE(text, "devgate_dropped_datagrams_total{reason=\"limit\"} 2");
	ASSERT_LINE(text, "devgate_dropped_datagrams_total{reason=\"truncated\"} 1");
	ASSERT_LINE(text, "devgate_dropped_datagrams_total{reason=\"other\"} 2");
	ASSERT_LINE(text, "devgate_devices_provisioned_total 1");
	ASSERT_LINE(text, "devgate_reloads_total{result=\"ok\"} 1");
	ASSERT_LINE(text, "devgate_reloads_total{result=\"error\"} 2");
	free(text);
}
END_TEST

static uint64_t
fake_depth(void *arg)
{
	return *(const uint64_t *)arg;
}

START_TEST(test_queue_depth)
{
	uint64_t depth = 17;
	char *text;

	dg_metrics_set_queue_depth_fn(m, fake_depth, &depth);
	text = render();
	ASSERT_LINE(text, "devgate_store_queue_depth 17");
	free(text);
	depth = 18446744073709551615ull;
	text = render();
	ASSERT_LINE(text, "devgate_store_queue_depth 18446744073709551615");
	free(text);
	dg_metrics_set_queue_depth_fn(m, NULL, NULL);
	text = render();
	ASSERT_LINE(text, "devgate_store_queue_depth 0");
	free(text);
}
END_TEST

START_TEST(test_histogram)
{
	/* One value per bucket edge and between them, and the odd ones. */
	dg_metrics_handshake_seconds(m, 0.0005); /* le 0.001 */
	dg_metrics_handshake_seconds(m, 0.001);  /* le 0.001: the bound is inclusive */
	dg_metrics_handshake_seconds(m, 0.003);  /* le 0.005 */
	dg_metrics_handshake_seconds(m, 0.2);    /* le 0.25 */
	dg_metrics_handshake_seconds(m, 0.7);    /* le 1 */
	dg_metrics_handshake_seconds(m, 1.0);    /* le 1 */
	dg_metrics_handshake_seconds(m, 3.0);    /* le 5 */
	dg_metrics_handshake_seconds(m, 12.5);   /* +Inf */
	dg_metrics_handshake_seconds(m, -1.0);   /* 0: le 0.001 */
	char *text = render();

	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.001\"} 3");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.0025\"} 3");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.005\"} 4");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.01\"} 4");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.025\"} 4");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.05\"} 4");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.1\"} 4");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.25\"} 5");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"0.5\"} 5");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"1\"} 7");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"2.5\"} 7");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"5\"} 8");
	ASSERT_LINE(text, "devgate_handshake_seconds_bucket{le=\"+Inf\"} 9");
	ASSERT_LINE(text, "devgate_handshake_seconds_count 9");
	/* 0.0005 + 0.001 + 0.003 + 0.2 + 0.7 + 1 + 3 + 12.5 + 0 */
	ASSERT_LINE(text, "devgate_handshake_seconds_sum 17.404500");
	/* The buckets come in order, so that they read as cumulative. */
	ck_assert(strstr(text, "le=\"0.001\"") < strstr(text, "le=\"0.0025\""));
	ck_assert(strstr(text, "le=\"5\"") < strstr(text, "le=\"+Inf\""));
	ck_assert(strstr(text, "le=\"+Inf\"") < strstr(text, "devgate_handshake_seconds_sum"));
	free(text);
}
END_TEST

START_TEST(test_failure_reasons)
{
	char *text;

	dg_metrics_handshake_failure(m, "unknown identity");
	dg_metrics_handshake_failure(m, "unknown identity");
	dg_metrics_handshake_failure(m, "bad \"psk\"\nid\\x");
	dg_metrics_handshake_failure(m, "other");
	dg_metrics_handshake_failure(m, "");
	dg_metrics_handshake_failure(m, NULL);
	dg_metrics_handshake_failure(m, "bad\xff utf8");
	dg_metrics_handshake_failure(m, "bad\xfe utf8"); /* The same once made valid. */
	dg_metrics_handshake_failure(m, "caf\xc3\xa9");
	text = render();
	ASSERT_LINE(text, "devgate_handshake_failures_total{reason=\"unknown identity\"} 2");
	ASSERT_LINE(text,
	            "devgate_handshake_failures_total{reason=\"bad \\\"psk\\\"\\nid\\\\x\"} 1");
	ASSERT_LINE(text, "devgate_handshake_failures_total{reason=\"other\"} 3");
	ASSERT_LINE(text, "devgate_handshake_failures_total{reason=\"bad? utf8\"} 2");
	ASSERT_LINE(text, "devgate_handshake_failures_total{reason=\"caf\xc3\xa9\"} 1");
	ck_assert_int_eq(count_prefix(text, "devgate_handshake_failures_total{"), 5);
	free(text);
}
END_TEST

START_TEST(test_long_reason)
{
	char longer[400], line[512], *text;

	/* A 2-byte character straddles the cut: it goes whole. */
	memset(longer, 'a', sizeof(longer));
	longer[126] = '\xc3';
	longer[127] = '\xa9';
	longer[sizeof(longer) - 1] = '\0';
	dg_metrics_handshake_failure(m, longer);
	dg_metrics_handshake_failure(m, longer);
	text = render();
	snprintf(line, sizeof(line), "devgate_handshake_failures_total{reason=\"%.126s\"} 2",
	         longer);
	ASSERT_LINE(text, line);
	free(text);
}
END_TEST

START_TEST(test_reasons_overflow)
{
	char reason[32], line[128], *text;

	for (int i = 0; i < 70; i++) {
		snprintf(reason, sizeof(reason), "reason %02d", i);
		dg_metrics_handshake_failure(m, reason);
	}
	/* A kept reason still counts in its own series. */
	dg_metrics_handshake_failure(m, "reason 05");
	dg_metrics_handshake_failure(m, "reason 69");
	text = render();
	for (int i = 0; i < 64; i++) {
		snprintf(line, sizeof(line),
		         "devgate_handshake_failures_total{reason=\"reason %02d\"} %d", i,
		         i == 5 ? 2 : 1);
		ASSERT_LINE(text, line);
	}
	ck_assert_ptr_null(strstr(text, "reason 64"));
	ck_assert_ptr_null(strstr(text, "reason 69"));
	ASSERT_LINE(text, "devgate_handshake_failures_total{reason=\"other\"} 7");
	ck_assert_int_eq(count_prefix(text, "devgate_handshake_failures_total{"), 65);
	free(text);
}
END_TEST

START_TEST(test_version_escaped)
{
	char *text = dg_metrics_render(m, "v\"1\\2\n");

	ck_assert_ptr_nonnull(text);
	ASSERT_LINE(text, "devgate_build_info{version=\"v\\\"1\\\\2\\n\"} 1");
	free(text);
	text = dg_metrics_render(m, NULL);
	ck_assert_ptr_nonnull(text);
	ASSERT_LINE(text, "devgate_build_info{version=\"unknown\"} 1");
	free(text);
}
END_TEST

static void *
hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < N_INCS; i++) {
		dg_metrics_datagram(m, DG_DIR_IN);
		dg_metrics_handshake(m, DG_AUTH_PSK, 1);
		dg_metrics_coap_request(m, DG_SVC_KEEPALIVE, 2);
		dg_metrics_sessions_add(m, DG_AUTH_CERT, 1);
		dg_metrics_dropped(m, "no_session");
		dg_metrics_provisioned(m);
		dg_metrics_handshake_seconds(m, 0.002);
		if (i % 1000 == 0)
			dg_metrics_handshake_failure(m, "contended");
	}
	return NULL;
}

/* Renders while the counters move: it must not crash or tear (TSan checks races). */
static void *
scrape(void *arg)
{
	(void)arg;
	for (int i = 0; i < 50; i++)
		free(dg_metrics_render(m, VERSION));
	return NULL;
}

START_TEST(test_concurrency)
{
	pthread_t t[N_THREADS + 1];
	char line[160], *text;
	const unsigned long total = (unsigned long)N_THREADS * N_INCS;

	for (int i = 0; i < N_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
	ck_assert_int_eq(pthread_create(&t[N_THREADS], NULL, scrape, NULL), 0);
	for (int i = 0; i <= N_THREADS; i++)
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);

	text = render();
	snprintf(line, sizeof(line), "devgate_datagrams_total{direction=\"in\"} %lu", total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_handshakes_total{auth=\"psk\",result=\"ok\"} %lu",
	         total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line),
	         "devgate_coap_requests_total{service=\"keepalive\",class=\"2xx\"} %lu", total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_sessions{auth=\"cert\"} %lu", total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_dropped_datagrams_total{reason=\"no_session\"} %lu",
	         total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_devices_provisioned_total %lu", total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_handshake_seconds_count %lu", total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_handshake_seconds_bucket{le=\"0.001\"} 0");
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_handshake_seconds_bucket{le=\"0.0025\"} %lu", total);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_handshake_seconds_sum %lu.000000", total * 2 / 1000);
	ASSERT_LINE(text, line);
	snprintf(line, sizeof(line), "devgate_handshake_failures_total{reason=\"contended\"} %d",
	         N_THREADS * (N_INCS / 1000));
	ASSERT_LINE(text, line);
	free(text);
}
END_TEST

/* HTTP: a port that was free a moment ago, found by binding port 0. */
static unsigned
free_port(int family)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*sin);
	}
	fd = socket(family, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
		close(fd);
		return 0;
	}
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	close(fd);
	return ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                                : ((struct sockaddr_in *)&ss)->sin_port);
}

/*
 * Sends `request` to the loopback port and reads the answer until the
 * server closes. Returns a malloc'ed string, or NULL when the connection
 * is refused.
 */
static char *
fetch(int family, unsigned port, const char *request)
{
	struct sockaddr_storage ss;
	struct timeval tv = {.tv_sec = 5};
	socklen_t len;
	size_t got = 0, cap = 1 << 16;
	char *buf;
	ssize_t n;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons((uint16_t)port);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin->sin_port = htons((uint16_t)port);
		len = sizeof(*sin);
	}
	fd = socket(family, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
		ck_assert_int_eq(errno, ECONNREFUSED);
		close(fd);
		return NULL;
	}
	ck_assert_int_eq(write(fd, request, strlen(request)), (ssize_t)strlen(request));
	buf = malloc(cap);
	ck_assert_ptr_nonnull(buf);
	while ((n = read(fd, buf + got, cap - got - 1)) > 0) {
		got += (size_t)n;
		ck_assert_uint_lt(got, cap - 1);
	}
	ck_assert_int_eq(n, 0); /* EOF, not the timeout. */
	buf[got] = '\0';
	close(fd);
	return buf;
}

/* The body after the blank line that ends the headers. */
static const char *
body_of(const char *resp)
{
	const char *p = strstr(resp, "\r\n\r\n");
	ck_assert_ptr_nonnull(p);
	return p + 4;
}

static unsigned
start_http(void)
{
	char listen[64], err[256] = "";
	unsigned port = free_port(AF_INET);

	ck_assert_uint_ne(port, 0);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	ck_assert_msg(dg_metrics_http_start(m, listen, VERSION, err, sizeof(err)) == 0, "%s", err);
	return port;
}

START_TEST(test_http_get)
{
	unsigned port = start_http();
	char *resp;

	dg_metrics_handshake(m, DG_AUTH_PSK, 1);
	dg_metrics_handshake(m, DG_AUTH_PSK, 1);
	resp = fetch(AF_INET, port, "GET /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp, "HTTP/1.0 200 ", 13) == 0 ||
	                      strncmp(resp, "HTTP/1.1 200 ", 13) == 0,
	              "%s", resp);
	ck_assert_msg(strcasestr(resp, "\r\nContent-Type: text/plain; version=0.0.4; "
	                               "charset=utf-8\r\n") != NULL,
	              "%s", resp);
	ASSERT_LINE(body_of(resp), "devgate_handshakes_total{auth=\"psk\",result=\"ok\"} 2");
	ASSERT_LINE(body_of(resp), "devgate_build_info{version=\"" VERSION "\"} 1");
	ASSERT_LINE(body_of(resp), "# TYPE devgate_handshake_seconds histogram");
	free(resp);

	/* A query string is not part of the path. */
	resp = fetch(AF_INET, port,
	             "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp, "HTTP/1.1 200 ", 13) == 0, "%s", resp);
	free(resp);

	/* HEAD: the headers only. */
	resp = fetch(AF_INET, port, "HEAD /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strstr(resp, " 200 ") != NULL, "%s", resp);
	ck_assert_str_eq(body_of(resp), "");
	free(resp);
}
END_TEST

START_TEST(test_http_not_found)
{
	unsigned port = start_http();
	char *resp;

	resp = fetch(AF_INET, port, "GET /other HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 404 ", 5) == 0, "%s", resp);
	ck_assert_ptr_null(strstr(resp, "devgate_"));
	free(resp);
	resp = fetch(AF_INET, port, "GET / HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 404 ", 5) == 0, "%s", resp);
	free(resp);
	resp = fetch(AF_INET, port, "GET /metrics/ HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 404 ", 5) == 0, "%s", resp);
	free(resp);
}
END_TEST

START_TEST(test_http_method)
{
	unsigned port = start_http();
	char *resp;

	resp = fetch(AF_INET, port, "POST /metrics HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 405 ", 5) == 0, "%s", resp);
	ck_assert_msg(strcasestr(resp, "\r\nAllow: GET, HEAD\r\n") != NULL, "%s", resp);
	ck_assert_ptr_null(strstr(resp, "devgate_"));
	free(resp);
	resp = fetch(AF_INET, port, "DELETE /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 405 ", 5) == 0, "%s", resp);
	free(resp);
	/* Still serving after those. */
	resp = fetch(AF_INET, port, "GET /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 200 ", 5) == 0, "%s", resp);
	free(resp);
}
END_TEST

START_TEST(test_http_bad_listen)
{
	static const char *const bad[] = {
	        "",
	        "127.0.0.1",
	        "127.0.0.1:",
	        "127.0.0.1:0",
	        "127.0.0.1:65536",
	        "127.0.0.1:80x",
	        "127.0.0.1:-1",
	        "127.0.0.1: 80",
	        "localhost:9684",
	        ":9684",
	        "::1:9684",
	        "[::1]",
	        "[::1:9684",
	        "[::1]9684",
	        "[127.0.0.1]:9684",
	        "[nothex]:9684",
	};
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(dg_metrics_http_start(m, bad[i], VERSION, err, sizeof(err)) ==
		                      -EINVAL,
		              "accepted \"%s\"", bad[i]);
		ck_assert_msg(err[0] != '\0', "no reason for \"%s\"", bad[i]);
	}
	err[0] = '\0';
	ck_assert_int_eq(dg_metrics_http_start(m, NULL, VERSION, err, sizeof(err)), -EINVAL);
	ck_assert_str_ne(err, "");
	/* A failed start leaves it stopped and startable. */
	start_http();
}
END_TEST

START_TEST(test_http_in_use)
{
	char listen[64], err[256] = "";
	unsigned port = start_http();
	dg_metrics *other;
	int rc;

	/* Started twice: refused. */
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	ck_assert_int_eq(dg_metrics_http_start(m, listen, VERSION, err, sizeof(err)), -EALREADY);
	/* Another endpoint on the same port: an error naming the address. */
	ck_assert_int_eq(dg_metrics_new(&other), 0);
	err[0] = '\0';
	rc = dg_metrics_http_start(other, listen, VERSION, err, sizeof(err));
	ck_assert_int_eq(rc, -EADDRINUSE);
	ck_assert_msg(strstr(err, listen) != NULL, "%s", err);
	ck_assert_msg(strstr(err, strerror(EADDRINUSE)) != NULL, "%s", err);
	dg_metrics_free(other);
	/* An address this host does not have. */
	err[0] = '\0';
	ck_assert_int_eq(dg_metrics_new(&other), 0);
	rc = dg_metrics_http_start(other, "192.0.2.1:9684", VERSION, err, sizeof(err));
	ck_assert_int_eq(rc, -EADDRNOTAVAIL);
	ck_assert_msg(strstr(err, "192.0.2.1:9684") != NULL, "%s", err);
	dg_metrics_free(other);
}
END_TEST

START_TEST(test_http_ipv6)
{
	char listen[64], err[256] = "";
	unsigned port = free_port(AF_INET6);
	char *resp;

	if (port == 0)
		return; /* No IPv6 loopback here. */
	snprintf(listen, sizeof(listen), "[::1]:%u", port);
	ck_assert_msg(dg_metrics_http_start(m, listen, VERSION, err, sizeof(err)) == 0, "%s", err);
	resp = fetch(AF_INET6, port, "GET /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	ck_assert_msg(strncmp(resp + 8, " 200 ", 5) == 0, "%s", resp);
	ASSERT_LINE(body_of(resp), "devgate_sessions{auth=\"psk\"} 0");
	free(resp);
}
END_TEST

START_TEST(test_http_stop)
{
	unsigned port = start_http();
	char *resp;

	resp = fetch(AF_INET, port, "GET /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	free(resp);
	dg_metrics_http_stop(m);
	ck_assert_ptr_null(fetch(AF_INET, port, "GET /metrics HTTP/1.0\r\n\r\n"));
	/* Started again, then stopped by dg_metrics_free. */
	port = start_http();
	resp = fetch(AF_INET, port, "GET /metrics HTTP/1.0\r\n\r\n");
	ck_assert_ptr_nonnull(resp);
	free(resp);
	dg_metrics_free(m);
	m = NULL;
	ck_assert_ptr_null(fetch(AF_INET, port, "GET /metrics HTTP/1.0\r\n\r\n"));
}
END_TEST

static Suite *
metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *render_tc = tcase_create("render");
	TCase *http_tc = tcase_create("http");

	tcase_add_checked_fixture(render_tc, setup, teardown);
	tcase_add_test(render_tc, test_new_free);
	tcase_add_test(render_tc, test_zeros);
	tcase_add_test(render_tc, test_help_type);
	tcase_add_test(render_tc, test_counters);
	tcase_add_test(render_tc, test_queue_depth);
	tcase_add_test(render_tc, test_histogram);
	tcase_add_test(render_tc, test_failure_reasons);
	tcase_add_test(render_tc, test_long_reason);
	tcase_add_test(render_tc, test_reasons_overflow);
	tcase_add_test(render_tc, test_version_escaped);
	tcase_add_test(render_tc, test_concurrency);
	tcase_set_timeout(render_tc, 60);
	suite_add_tcase(s, render_tc);

	tcase_add_checked_fixture(http_tc, setup, teardown);
	tcase_add_test(http_tc, test_http_get);
	tcase_add_test(http_tc, test_http_not_found);
	tcase_add_test(http_tc, test_http_method);
	tcase_add_test(http_tc, test_http_bad_listen);
	tcase_add_test(http_tc, test_http_in_use);
	tcase_add_test(http_tc, test_http_ipv6);
	tcase_add_test(http_tc, test_http_stop);
	tcase_set_timeout(http_tc, 30);
	suite_add_tcase(s, http_tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(metrics_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
