/*
 * Metrics: relaxed atomic counters updated by the loop, a mutex only for
 * the table of handshake failure reasons (not on the hot path), and a
 * Prometheus text endpoint served by libmicrohttpd's own thread.
 *
 * Every label combination of a fixed set is rendered, zeros included, so
 * that a scrape always shows the same series. Renders read each counter
 * once with a relaxed load: counters of one family may be a few events
 * apart from one another, never torn.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "devgate/log.h"
#include "devgate/metrics.h"

#define N_AUTH       3 /* psk, cert, none */
#define N_SESS_AUTH  2 /* Sessions are established with psk or cert only. */
#define N_CLASS      8 /* A CoAP code's class is 3 bits. */
#define MAX_REASONS  64
#define REASON_BYTES 128 /* A reason's longest kept form, NUL included. */
#define VERSION_MAX  128

#define HTTP_CONN_LIMIT   16
#define HTTP_TIMEOUT_S    10
#define HTTP_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static const char *const auth_names[N_AUTH] = {"psk", "cert", "none"};
static const char *const result_names[2] = {"failed", "ok"};
static const char *const dir_names[2] = {"in", "out"};
static const char *const service_names[DG_SVC_COUNT] = {
        "core", "keepalive", "state", "stream", "logs", "other", "settings", "rpc", "ota"};
/* The classes rendered even when zero; others only once counted. */
static const int fixed_classes[] = {2, 4, 5};

/* The reasons dg_metrics_dropped() knows, and "other" for the rest. */
static const char *const drop_names[] = {"not_dtls", "no_session",       "limit",
                                         "stopping", "truncated",        "bad_record",
                                         "epoch",    "fragmented_hello", "other"};
#define N_DROP     (sizeof(drop_names) / sizeof(drop_names[0]))
#define DROP_OTHER (N_DROP - 1)

/* Upper bounds of devgate_handshake_seconds, in microseconds, then +Inf. */
static const uint64_t bucket_us[] = {1000,   2500,   5000,   10000,   25000,   50000,
                                     100000, 250000, 500000, 1000000, 2500000, 5000000};
static const char *const bucket_le[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                        "0.25",  "0.5",    "1",     "2.5",  "5",     "+Inf"};
#define N_BUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

typedef struct reason {
	char name[REASON_BYTES];
	uint64_t count;
} reason;

struct dg_metrics {
	/* Hot path: relaxed atomics, no lock. */
	_Atomic int64_t sessions[N_SESS_AUTH];
	_Atomic int64_t worker_sessions[DG_METRICS_MAX_WORKERS];
	_Atomic int n_workers; /* Workers whose gauge is rendered. */
	_Atomic uint64_t handshakes[N_AUTH][2];
	_Atomic uint64_t hs_buckets[N_BUCKETS]; /* Not cumulative; the last is +Inf. */
	_Atomic uint64_t hs_sum_us;
	_Atomic uint64_t coap[DG_SVC_COUNT][N_CLASS];
	_Atomic uint64_t datagrams[2];
	_Atomic uint64_t dropped[N_DROP];
	_Atomic uint64_t provisioned;
	_Atomic uint64_t chain_cache[2]; /* [0] miss, [1] hit. */
	_Atomic uint64_t logs_dropped;
	_Atomic uint64_t reloads[2];

	/* Guards the reasons, the queue-depth callback and start_err. */
	pthread_mutex_t lock;
	reason reasons[MAX_REASONS];
	size_t n_reasons;
	uint64_t reasons_other;
	uint64_t (*queue_fn)(void *arg);
	void *queue_arg;

	/* The endpoint; changed only by the owner, never while it runs. */
	struct MHD_Daemon *httpd;
	char *version;       /* What the endpoint renders with. */
	int starting;        /* Under lock: libmicrohttpd's messages go to start_err. */
	char start_err[256]; /* Under lock: the first message while starting. */
};

/* A growing NUL-terminated string; `failed` sticks after an allocation failure. */
typedef struct sbuf {
	char *p;
	size_t len, cap;
	int failed;
} sbuf;

static int
reserve(sbuf *b, size_t extra)
{
	size_t cap;
	char *p;

	if (b->failed)
		return -1;
	if (b->len + extra + 1 <= b->cap)
		return 0;
	cap = b->cap != 0 ? b->cap : 4096;
	while (cap < b->len + extra + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (p == NULL) {
		b->failed = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = 1;
		return;
	}
	if (reserve(b, (size_t)n) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Appends a label value escaped as the exposition format asks: \\, \" and \n. */
static void
put_escaped(sbuf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (reserve(b, 2) != 0)
			return;
		if (*s == '\\' || *s == '"') {
			b->p[b->len++] = '\\';
			b->p[b->len++] = *s;
		} else if (*s == '\n') {
			b->p[b->len++] = '\\';
			b->p[b->len++] = 'n';
		} else {
			b->p[b->len++] = *s;
		}
		b->p[b->len] = '\0';
	}
}

/* Returns the length of the valid UTF-8 sequence at s, or 0 if it is not one. */
static size_t
utf8_len(const unsigned char *s)
{
	uint32_t cp;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) /* The NUL terminator stops here too. */
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Copies `in` into out[cap] as valid UTF-8 (each invalid byte becomes '?'),
 * cut at a character boundary so that it fits. Two strings that would
 * render the same are then the same key.
 */
static void
canonical(const char *in, char *out, size_t cap)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, n;

	while (*s != '\0') {
		n = utf8_len(s);
		if (o + (n != 0 ? n : 1) >= cap)
			break;
		if (n == 0) {
			out[o++] = '?';
			s++;
			continue;
		}
		memcpy(out + o, s, n);
		o += n;
		s += n;
	}
	out[o] = '\0';
}

static inline void
inc(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static inline uint64_t
get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

int
dg_metrics_new(dg_metrics **out)
{
	dg_metrics *m;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	/* calloc's zeros are valid initial values for these lock-free atomics. */
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		return -ENOMEM;
	}
	*out = m;
	return 0;
}

void
dg_metrics_http_stop(dg_metrics *m)
{
	if (m == NULL || m->httpd == NULL)
		return;
	MHD_stop_daemon(m->httpd);
	m->httpd = NULL;
	free(m->version);
	m->version = NULL;
}

void
dg_metrics_free(dg_metrics *m)
{
	if (m == NULL)
		return;
	dg_metrics_http_stop(m);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void
dg_metrics_sessions_add(dg_metrics *m, int auth, int delta)
{
	if (auth < 0 || auth >= N_SESS_AUTH)
		return;
	atomic_fetch_add_explicit(&m->sessions[auth], delta, memory_order_relaxed);
}

void
dg_metrics_set_workers(dg_metrics *m, int n)
{
	if (n < 0)
		n = 0;
	if (n > DG_METRICS_MAX_WORKERS)
		n = DG_METRICS_MAX_WORKERS;
	atomic_store_explicit(&m->n_workers, n, memory_order_relaxed);
}

void
dg_metrics_worker_sessions_add(dg_metrics *m, int worker, int delta)
{
	if (worker < 0 || worker >= DG_METRICS_MAX_WORKERS)
		return;
	atomic_fetch_add_explicit(&m->worker_sessions[worker], delta, memory_order_relaxed);
}

void
dg_metrics_handshake(dg_metrics *m, int auth, int ok)
{
	if (auth < 0 || auth >= N_AUTH)
		auth = DG_AUTH_NONE;
	inc(&m->handshakes[auth][ok != 0]);
}

void
dg_metrics_handshake_failure(dg_metrics *m, const char *why)
{
	char name[REASON_BYTES];
	size_t i;

	if (why == NULL)
		why = "other";
	canonical(why, name, sizeof(name));
	pthread_mutex_lock(&m->lock);
	if (name[0] == '\0' || strcmp(name, "other") == 0) {
		m->reasons_other++;
		goto out;
	}
	for (i = 0; i < m->n_reasons; i++) {
		if (strcmp(m->reasons[i].name, name) == 0) {
			m->reasons[i].count++;
			goto out;
		}
	}
	if (m->n_reasons == MAX_REASONS) {
		m->reasons_other++;
		goto out;
	}
	memcpy(m->reasons[m->n_reasons].name, name, sizeof(name));
	m->reasons[m->n_reasons].count = 1;
	m->n_reasons++;
out:
	pthread_mutex_unlock(&m->lock);
}

void
dg_metrics_handshake_seconds(dg_metrics *m, double seconds)
{
	uint64_t us;
	size_t i;

	/* NaN and negative durations count as 0; absurd ones are capped. */
	if (!(seconds > 0))
		seconds = 0;
	if (seconds > 1e9)
		seconds = 1e9;
	us = (uint64_t)llround(seconds * 1e6);
	for (i = 0; i < N_BUCKETS - 1; i++)
		if (us <= bucket_us[i])
			break;
	inc(&m->hs_buckets[i]);
	atomic_fetch_add_explicit(&m->hs_sum_us, us, memory_order_relaxed);
}

void
dg_metrics_coap_request(dg_metrics *m, int service, int response_class)
{
	if (service < 0 || service >= DG_SVC_COUNT)
		service = DG_SVC_OTHER;
	if (response_class < 0 || response_class >= N_CLASS)
		return;
	inc(&m->coap[service][response_class]);
}

void
dg_metrics_log_dropped(dg_metrics *m)
{
	inc(&m->logs_dropped);
}

void
dg_metrics_datagram(dg_metrics *m, int dir)
{
	if (dir != DG_DIR_IN && dir != DG_DIR_OUT)
		return;
	inc(&m->datagrams[dir]);
}

void
dg_metrics_dropped(dg_metrics *m, const char *why)
{
	size_t i;

	for (i = 0; i < DROP_OTHER; i++)
		if (why != NULL && strcmp(why, drop_names[i]) == 0)
			break;
	inc(&m->dropped[i]);
}

void
dg_metrics_provisioned(dg_metrics *m)
{
	inc(&m->provisioned);
}

void
dg_metrics_chain_cache(dg_metrics *m, int hit)
{
	inc(&m->chain_cache[hit != 0]);
}

void
dg_metrics_reload(dg_metrics *m, int ok)
{
	inc(&m->reloads[ok != 0]);
}

void
dg_metrics_set_queue_depth_fn(dg_metrics *m, uint64_t (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&m->lock);
	m->queue_fn = fn;
	m->queue_arg = arg;
	pthread_mutex_unlock(&m->lock);
}

static void
family(sbuf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
render_handshakes(dg_metrics *m, sbuf *b)
{
	uint64_t n;

	family(b, "devgate_handshakes_total", "counter",
	       "DTLS handshakes, by authentication and result.");
	for (int a = 0; a < N_AUTH; a++) {
		for (int r = 1; r >= 0; r--) {
			n = get(&m->handshakes[a][r]);
			/* No handshake succeeds without an authentication. */
			if (a == DG_AUTH_NONE && r == 1 && n == 0)
				continue;
			put(b, "devgate_handshakes_total{auth=\"%s\",result=\"%s\"} %" PRIu64 "\n",
			    auth_names[a], result_names[r], n);
		}
	}
}

static void
render_failures(dg_metrics *m, sbuf *b)
{
	family(b, "devgate_handshake_failures_total", "counter",
	       "Refused or failed DTLS handshakes, by reason (at most 64 reasons, then "
	       "\"other\").");
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n_reasons; i++) {
		put(b, "devgate_handshake_failures_total{reason=\"");
		put_escaped(b, m->reasons[i].name);
		put(b, "\"} %" PRIu64 "\n", m->reasons[i].count);
	}
	put(b, "devgate_handshake_failures_total{reason=\"other\"} %" PRIu64 "\n",
	    m->reasons_other);
	pthread_mutex_unlock(&m->lock);
}

static void
render_histogram(dg_metrics *m, sbuf *b)
{
	uint64_t cum = 0, sum_us;

	family(b, "devgate_handshake_seconds", "histogram",
	       "Duration of completed DTLS handshakes, from the first ClientHello.");
	/* The count is the buckets' total, so that it always equals le="+Inf". */
	for (size_t i = 0; i < N_BUCKETS; i++) {
		cum += get(&m->hs_buckets[i]);
		put(b, "devgate_handshake_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", bucket_le[i],
		    cum);
	}
	sum_us = get(&m->hs_sum_us);
	put(b, "devgate_handshake_seconds_sum %" PRIu64 ".%06" PRIu64 "\n", sum_us / 1000000,
	    sum_us % 1000000);
	put(b, "devgate_handshake_seconds_count %" PRIu64 "\n", cum);
}

static void
render_coap(dg_metrics *m, sbuf *b)
{
	uint64_t n;
	int fixed;

	family(b, "devgate_coap_requests_total", "counter",
	       "CoAP requests answered, by service and response class.");
	for (int s = 0; s < DG_SVC_COUNT; s++) {
		for (int c = 0; c < N_CLASS; c++) {
			n = get(&m->coap[s][c]);
			fixed = 0;
			for (size_t i = 0; i < sizeof(fixed_classes) / sizeof(fixed_classes[0]);
			     i++)
				fixed |= fixed_classes[i] == c;
			if (!fixed && n == 0)
				continue;
			put(b,
			    "devgate_coap_requests_total{service=\"%s\",class=\"%dxx\"} %" PRIu64
			    "\n",
			    service_names[s], c, n);
		}
	}
}

char *
dg_metrics_render(dg_metrics *m, const char *version)
{
	char ver[VERSION_MAX];
	uint64_t (*fn)(void *arg);
	void *arg;
	sbuf b = {0};

	family(&b, "devgate_sessions", "gauge", "Established DTLS sessions, by authentication.");
	for (int a = 0; a < N_SESS_AUTH; a++)
		put(&b, "devgate_sessions{auth=\"%s\"} %" PRId64 "\n", auth_names[a],
		    atomic_load_explicit(&m->sessions[a], memory_order_relaxed));
	int n_workers = atomic_load_explicit(&m->n_workers, memory_order_relaxed);
	if (n_workers > 0)
		family(&b, "devgate_worker_sessions", "gauge",
		       "Established DTLS sessions, by the worker loop that holds them.");
	for (int w = 0; w < n_workers; w++)
		put(&b, "devgate_worker_sessions{worker=\"%d\"} %" PRId64 "\n", w,
		    atomic_load_explicit(&m->worker_sessions[w], memory_order_relaxed));

	render_handshakes(m, &b);
	render_failures(m, &b);
	render_histogram(m, &b);
	render_coap(m, &b);

	family(&b, "devgate_datagrams_total", "counter", "UDP datagrams, by direction.");
	for (int d = 0; d < 2; d++)
		put(&b, "devgate_datagrams_total{direction=\"%s\"} %" PRIu64 "\n", dir_names[d],
		    get(&m->datagrams[d]));

	family(&b, "devgate_dropped_datagrams_total", "counter",
	       "Received datagrams dropped without an answer, by reason.");
	for (size_t i = 0; i < N_DROP; i++)
		put(&b, "devgate_dropped_datagrams_total{reason=\"%s\"} %" PRIu64 "\n",
		    drop_names[i], get(&m->dropped[i]));

	family(&b, "devgate_logs_dropped_total", "counter",
	       "Log posts over the request rate, answered 2.04 and not stored.");
	put(&b, "devgate_logs_dropped_total %" PRIu64 "\n", get(&m->logs_dropped));

	family(&b, "devgate_devices_provisioned_total", "counter",
	       "Devices provisioned on their first connection.");
	put(&b, "devgate_devices_provisioned_total %" PRIu64 "\n", get(&m->provisioned));

	family(&b, "devgate_certificate_chain_cache_total", "counter",
	       "Certificate chains judged from the cache of accepted chains (hit) or verified "
	       "in full (miss).");
	put(&b, "devgate_certificate_chain_cache_total{result=\"hit\"} %" PRIu64 "\n",
	    get(&m->chain_cache[1]));
	put(&b, "devgate_certificate_chain_cache_total{result=\"miss\"} %" PRIu64 "\n",
	    get(&m->chain_cache[0]));

	/* The callback is called outside the lock, which it may take itself. */
	pthread_mutex_lock(&m->lock);
	fn = m->queue_fn;
	arg = m->queue_arg;
	pthread_mutex_unlock(&m->lock);
	family(&b, "devgate_store_queue_depth", "gauge",
	       "Writes queued for the database and not yet committed.");
	put(&b, "devgate_store_queue_depth %" PRIu64 "\n", fn != NULL ? fn(arg) : 0);

	family(&b, "devgate_reloads_total", "counter", "Configuration reloads, by result.");
	put(&b, "devgate_reloads_total{result=\"ok\"} %" PRIu64 "\n", get(&m->reloads[1]));
	put(&b, "devgate_reloads_total{result=\"error\"} %" PRIu64 "\n", get(&m->reloads[0]));

	canonical(version != NULL ? version : "unknown", ver, sizeof(ver));
	family(&b, "devgate_build_info", "gauge", "Always 1; the version is in the label.");
	put(&b, "devgate_build_info{version=\"");
	put_escaped(&b, ver);
	put(&b, "\"} 1\n");

	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* Queues a short plain-text answer. */
static enum MHD_Result
reply(struct MHD_Connection *c, unsigned status, const char *text, int allow)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(strlen(text), (void *)(uintptr_t)text,
	                                    MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8") !=
	            MHD_YES ||
	    (allow && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* libmicrohttpd's request callback, on its thread. */
static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *http_version, const char *upload_data, size_t *upload_data_size,
           void **req_cls)
{
	dg_metrics *m = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	char *body;

	(void)http_version;
	(void)upload_data;
	(void)upload_data_size;
	(void)req_cls;
	/* HEAD is a GET without the body, which libmicrohttpd leaves out. */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", 1);
	if (strcmp(url, "/metrics") != 0)
		return reply(c, MHD_HTTP_NOT_FOUND, "not found; try /metrics\n", 0);
	body = dg_metrics_render(m, m->version);
	if (body == NULL)
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", 0);
	r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, HTTP_CONTENT_TYPE) !=
	    MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/*
 * libmicrohttpd's messages: the first one while starting becomes the
 * reason start failed; later ones (its thread, about scrapers) are debug
 * lines.
 */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	dg_metrics *m = cls;
	char msg[256];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	pthread_mutex_lock(&m->lock);
	if (m->starting) {
		if (m->start_err[0] == '\0')
			snprintf(m->start_err, sizeof(m->start_err), "%s", msg);
		pthread_mutex_unlock(&m->lock);
		return;
	}
	pthread_mutex_unlock(&m->lock);
	dg_log(DG_LOG_DEBUG, "metrics.http", "%s", msg);
}

/* Parses "a.b.c.d:port" or "[v6]:port", numeric, port 1..65535. */
static int
parse_listen(const char *s, struct sockaddr_storage *ss, char *err, size_t errlen)
{
	const char *host, *end, *port;
	char buf[INET6_ADDRSTRLEN + 1], *stop;
	unsigned long p;
	size_t hlen;
	int v6;

	memset(ss, 0, sizeof(*ss));
	if (s == NULL || s[0] == '\0') {
		snprintf(err, errlen, "metrics listen address is empty");
		return -EINVAL;
	}
	v6 = s[0] == '[';
	if (v6) {
		host = s + 1;
		end = strchr(host, ']');
		if (end == NULL || end[1] != ':')
			goto bad;
		port = end + 2;
	} else {
		host = s;
		end = strchr(s, ':');
		if (end == NULL || strchr(end + 1, ':') != NULL)
			goto bad;
		port = end + 1;
	}
	hlen = (size_t)(end - host);
	if (hlen == 0 || hlen >= sizeof(buf))
		goto bad;
	memcpy(buf, host, hlen);
	buf[hlen] = '\0';
	if (port[0] < '0' || port[0] > '9')
		goto bad;
	errno = 0;
	p = strtoul(port, &stop, 10);
	if (errno != 0 || *stop != '\0' || p == 0 || p > 65535)
		goto bad;
	if (v6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
			goto bad;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1)
			goto bad;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
	}
	return 0;
bad:
	snprintf(err, errlen,
	         "metrics listen address \"%.*s\": expected a numeric \"host:port\" or "
	         "\"[v6]:port\", port 1..65535",
	         200, s);
	return -EINVAL;
}

int
dg_metrics_http_start(dg_metrics *m, const char *listen, const char *version, char *err,
                      size_t errlen)
{
	struct sockaddr_storage ss;
	unsigned int flags;
	int rc, saved;

	if (m->httpd != NULL) {
		snprintf(err, errlen, "metrics endpoint already running");
		return -EALREADY;
	}
	rc = parse_listen(listen, &ss, err, errlen);
	if (rc != 0)
		return rc;
	m->version = strdup(version != NULL ? version : "unknown");
	if (m->version == NULL) {
		snprintf(err, errlen, "metrics: out of memory");
		return -ENOMEM;
	}
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;

	pthread_mutex_lock(&m->lock);
	m->starting = 1;
	m->start_err[0] = '\0';
	pthread_mutex_unlock(&m->lock);
	errno = 0;
	/*
	 * The port argument is ignored when MHD_OPTION_SOCK_ADDR is given. No
	 * MHD_OPTION_LISTENING_ADDRESS_REUSE: it means SO_REUSEPORT, which would
	 * let a second daemon share the port; libmicrohttpd sets SO_REUSEADDR.
	 */
	m->httpd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m,
	                            /* First, or the options before it log to stderr. */
	                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, m, MHD_OPTION_SOCK_ADDR,
	                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
	                            (unsigned int)HTTP_CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
	                            (unsigned int)HTTP_TIMEOUT_S, MHD_OPTION_END);
	saved = errno;
	pthread_mutex_lock(&m->lock);
	m->starting = 0;
	if (m->httpd == NULL) {
		/* errno is bind()'s when that failed; otherwise libmicrohttpd says why. */
		rc = saved > 0 ? -saved : -EIO;
		snprintf(err, errlen, "metrics listen address \"%.*s\": %s", 200, listen,
		         saved > 0 || m->start_err[0] == '\0' ? strerror(-rc) : m->start_err);
	}
	pthread_mutex_unlock(&m->lock);
	if (m->httpd == NULL) {
		free(m->version);
		m->version = NULL;
	}
	return rc;
}
