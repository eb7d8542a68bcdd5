/*
 * loadgen: a DTLS 1.2 / CoAP load generator for `make bench`.
 *
 * One UDP socket bound to 0.0.0.0 carries every session: each session has
 * its own source address 127.16.0.0 + index (chosen per datagram with
 * IP_PKTINFO), and replies are told apart by their destination address.
 * OpenSSL is the DTLS client, over memory BIOs. Every loop is bounded by a
 * count and by the -t deadline.
 *
 *   loadgen -p PORT -m hs|get|post|idle -n SESSIONS [-r REQUESTS] [-w WINDOW]
 *           [-i IDFMT] [-k KEY] [-C CERT -K KEY] [-u PATH] [-t SECONDS] [-H SECONDS]
 *
 * hs: N full handshakes (each closed with close_notify). get/post: N
 * sessions, then R requests spread over them (a 2.05 or 2.04 counts only
 * when it is received). idle: N sessions, then it prints "ready" and holds
 * them for -H seconds without traffic. Prints one line of key=value.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BASE_ADDR    0x7f100000u
#define MAX_SESSIONS (1u << 20)

enum st { ST_FREE, ST_HS, ST_UP, ST_DONE, ST_FAIL };

struct sess {
	SSL *ssl;
	BIO *rb, *wb;
	unsigned char st;
	double t_start, t_last, t_req;
	uint16_t mid;
	int busy;
};

struct gen {
	int fd;
	struct sockaddr_in srv;
	const char *idfmt, *key, *path, *cert, *certkey;
	int post;
	SSL_CTX *ctx;
	struct sess *s;
	unsigned n;
	double *lat;
	unsigned nlat, cap_lat;
	unsigned long sent_bytes;
};

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct gen *G;

static unsigned int
psk_cb(SSL *ssl, const char *hint, char *id, unsigned int id_len, unsigned char *psk,
       unsigned int psk_len)
{
	(void)hint;
	unsigned idx = (unsigned)(uintptr_t)SSL_get_app_data(ssl);
	size_t kl = strlen(G->key);
	snprintf(id, id_len, G->idfmt, idx);
	if (kl > psk_len)
		return 0;
	memcpy(psk, G->key, kl);
	return (unsigned)kl;
}

/* Sends what OpenSSL wrote for session idx, split on record boundaries into
 * datagrams of at most 1400 bytes, from source 127.16.0.0 + idx. */
static void
flush_out(struct gen *g, unsigned idx)
{
	struct sess *s = &g->s[idx];
	unsigned char buf[16384];
	int len = BIO_read(s->wb, buf, sizeof buf);
	if (len <= 0)
		return;
	int off = 0;
	while (off < len) {
		int end = off;
		while (end + 13 <= len) {
			int rl = 13 + ((buf[end + 11] << 8) | buf[end + 12]);
			if (end > off && end + rl - off > 1400)
				break;
			end += rl;
		}
		if (end == off)
			end = len;
		if (end > len)
			end = len;
		char cbuf[CMSG_SPACE(sizeof(struct in_pktinfo))];
		memset(cbuf, 0, sizeof cbuf);
		struct iovec iov = {buf + off, (size_t)(end - off)};
		struct msghdr mh = {0};
		mh.msg_name = &g->srv;
		mh.msg_namelen = sizeof g->srv;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof cbuf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
		struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(c);
		pi->ipi_spec_dst.s_addr = htonl(BASE_ADDR + idx);
		for (int tries = 0; tries < 100; tries++) {
			if (sendmsg(g->fd, &mh, 0) >= 0)
				break;
			if (errno != EAGAIN && errno != ENOBUFS)
				break;
			struct pollfd p = {g->fd, POLLOUT, 0};
			poll(&p, 1, 10);
		}
		g->sent_bytes += (unsigned long)(end - off);
		off = end;
	}
}

static int
start(struct gen *g, unsigned idx, double t)
{
	struct sess *s = &g->s[idx];
	s->ssl = SSL_new(g->ctx);
	if (!s->ssl)
		return -1;
	s->rb = BIO_new(BIO_s_mem());
	s->wb = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(s->rb, -1);
	SSL_set_bio(s->ssl, s->rb, s->wb);
	SSL_set_app_data(s->ssl, (void *)(uintptr_t)idx);
	SSL_set_options(s->ssl, SSL_OP_NO_QUERY_MTU);
	DTLS_set_link_mtu(s->ssl, 1400);
	SSL_set_connect_state(s->ssl);
	s->st = ST_HS;
	s->t_start = s->t_last = t;
	SSL_do_handshake(s->ssl);
	flush_out(g, idx);
	return 0;
}

static void
finish(struct gen *g, unsigned idx, int ok, int notify)
{
	struct sess *s = &g->s[idx];
	if (s->ssl) {
		if (notify) {
			SSL_shutdown(s->ssl);
			flush_out(g, idx);
		}
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	s->st = ok ? ST_DONE : ST_FAIL;
}

static void
add_lat(struct gen *g, double v)
{
	if (g->nlat < g->cap_lat)
		g->lat[g->nlat++] = v;
}

static void
send_req(struct gen *g, unsigned idx, double t)
{
	struct sess *s = &g->s[idx];
	unsigned char m[512];
	size_t n = 0;
	s->mid++;
	m[n++] = 0x40 | 2; /* CON, token length 2 */
	m[n++] = g->post ? 0x02 : 0x01;
	m[n++] = (unsigned char)(s->mid >> 8);
	m[n++] = (unsigned char)s->mid;
	m[n++] = (unsigned char)(s->mid >> 8);
	m[n++] = (unsigned char)s->mid;
	const char *p = g->path;
	unsigned last = 0;
	while (*p) {
		const char *e = strchr(p, '/');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l > 0 && l < 13 && n + l + 2 < 300) {
			m[n++] = (unsigned char)(((11 - last) << 4) | l);
			memcpy(m + n, p, l);
			n += l;
			last = 11;
		}
		p += l;
		if (*p == '/')
			p++;
	}
	if (g->post) {
		/* Content-Format 50 (JSON): option 12, delta 1 from 11. */
		m[n++] = (unsigned char)(((12 - last) << 4) | 1);
		m[n++] = 50;
		m[n++] = 0xff;
		n += (size_t)snprintf((char *)m + n, 100, "{\"i\":%u,\"m\":%u}", idx, s->mid);
	}
	s->busy = 1;
	s->t_req = t;
	SSL_write(s->ssl, m, (int)n);
	flush_out(g, idx);
}

/* Feeds one datagram to session idx; returns 1 when a CoAP answer with the
 * expected code arrived, 0 otherwise. */
static int
feed(struct gen *g, unsigned idx, unsigned char *d, int len, double t)
{
	struct sess *s = &g->s[idx];
	int got = 0;
	if (!s->ssl)
		return 0;
	BIO_write(s->rb, d, len);
	s->t_last = t;
	if (s->st == ST_HS) {
		int r = SSL_do_handshake(s->ssl);
		flush_out(g, idx);
		if (r == 1) {
			s->st = ST_UP;
			add_lat(g, t - s->t_start);
			got = 2;
		} else {
			int e = SSL_get_error(s->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				finish(g, idx, 0, 0);
				return 0;
			}
			return 0;
		}
	}
	unsigned char buf[2048];
	for (int k = 0; k < 8; k++) {
		int r = SSL_read(s->ssl, buf, sizeof buf);
		if (r <= 0)
			break;
		if (r >= 4 && s->busy) {
			uint16_t mid = (uint16_t)((buf[2] << 8) | buf[3]);
			int type = buf[0] >> 4 & 3;
			if (type == 2 && mid == s->mid) {
				int want = g->post ? 0x44 : 0x45;
				if (buf[1] == want) {
					add_lat(g, t - s->t_req);
					got = 1;
				}
				s->busy = 0;
			}
		}
	}
	flush_out(g, idx);
	return got;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void
usage(void)
{
	fprintf(stderr, "usage: loadgen -p PORT -m hs|get|post|idle -n N [-r R] [-w W] [-i IDFMT] "
	                "[-k KEY] [-C CERT -K KEY] [-u PATH] [-t SECS] [-H SECS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct gen g = {0};
	const char *mode = "hs";
	unsigned n = 10, reqs = 0, window = 64;
	double tmax = 60, hold = 5;
	int port = 0, opt;
	g.idfmt = "dev%u@bench";
	g.key = "benchbenchbenchbench";
	g.path = ".d";
	while ((opt = getopt(argc, argv, "p:m:n:r:w:i:k:C:K:u:t:H:")) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'm':
			mode = optarg;
			break;
		case 'n':
			n = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'r':
			reqs = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'w':
			window = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'i':
			g.idfmt = optarg;
			break;
		case 'k':
			g.key = optarg;
			break;
		case 'C':
			g.cert = optarg;
			break;
		case 'K':
			g.certkey = optarg;
			break;
		case 'u':
			g.path = optarg;
			break;
		case 't':
			tmax = atof(optarg);
			break;
		case 'H':
			hold = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (!port || n == 0 || n > MAX_SESSIONS || window == 0)
		usage();
	int is_hs = !strcmp(mode, "hs"), is_idle = !strcmp(mode, "idle");
	g.post = !strcmp(mode, "post");
	if (!is_hs && !is_idle && !g.post && strcmp(mode, "get"))
		usage();
	G = &g;
	g.n = n;
	g.s = calloc(n, sizeof *g.s);
	g.cap_lat = n + reqs + 16;
	g.lat = calloc(g.cap_lat, sizeof *g.lat);
	g.srv.sin_family = AF_INET;
	g.srv.sin_port = htons((uint16_t)port);
	g.srv.sin_addr.s_addr = htonl(0x7f000001);

	g.ctx = SSL_CTX_new(DTLS_client_method());
	SSL_CTX_set_min_proto_version(g.ctx, DTLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(g.ctx, DTLS1_2_VERSION);
	SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(g.ctx, SSL_OP_NO_TICKET);
	if (g.cert) {
		if (SSL_CTX_use_certificate_chain_file(g.ctx, g.cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(g.ctx, g.certkey ? g.certkey : g.cert,
		                                SSL_FILETYPE_PEM) != 1) {
			ERR_print_errors_fp(stderr);
			return 1;
		}
		SSL_CTX_set_cipher_list(g.ctx,
		                        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-CCM8");
		SSL_CTX_set1_groups_list(g.ctx, "P-256");
	} else {
		SSL_CTX_set_cipher_list(g.ctx, "PSK-AES128-CCM8");
		SSL_CTX_set_psk_client_callback(g.ctx, psk_cb);
	}

	g.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	int one = 1, big = 64 << 20;
	setsockopt(g.fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
	setsockopt(g.fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
	setsockopt(g.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	setsockopt(g.fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
	struct sockaddr_in any = {0};
	any.sin_family = AF_INET;
	if (bind(g.fd, (struct sockaddr *)&any, sizeof any) != 0) {
		perror("bind");
		return 1;
	}

	double t0 = now(), deadline = t0 + tmax, t_up = 0;
	unsigned next = 0, inflight = 0, up = 0, failed = 0, done_req = 0, sent_req = 0, ok_req = 0,
	         fail_req = 0;
	unsigned rr = 0;
	/* Phase 1: handshakes, WINDOW at a time. */
	unsigned long loops = 0;
	while (now() < deadline && loops++ < 100000000ul) {
		double t = now();
		while (next < n && inflight < window) {
			if (start(&g, next, t) == 0)
				inflight++;
			else
				failed++;
			next++;
		}
		if (inflight == 0 && next >= n)
			break;
		struct pollfd p = {g.fd, POLLIN, 0};
		poll(&p, 1, 20);
		for (int k = 0; k < 256; k++) {
			unsigned char d[4096];
			char cbuf[CMSG_SPACE(sizeof(struct in_pktinfo))];
			struct iovec iov = {d, sizeof d};
			struct msghdr mh = {0};
			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof cbuf;
			ssize_t len = recvmsg(g.fd, &mh, 0);
			if (len < 0)
				break;
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			if (!c || c->cmsg_type != IP_PKTINFO)
				continue;
			struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(c);
			unsigned idx = ntohl(pi->ipi_addr.s_addr) - BASE_ADDR;
			if (idx >= n || g.s[idx].st != ST_HS)
				continue;
			if (feed(&g, idx, d, (int)len, now()) == 2) {
				inflight--;
				up++;
				if (is_hs)
					finish(&g, idx, 1, 1);
				else if (is_idle) {
					/* The server holds the session; the client state is not
					 * needed. */
					SSL_set_quiet_shutdown(g.s[idx].ssl, 1);
					SSL_free(g.s[idx].ssl);
					g.s[idx].ssl = NULL;
				}
			} else if (g.s[idx].st == ST_FAIL) {
				inflight--;
				failed++;
			}
		}
		t = now();
		for (unsigned i = next > window * 4 ? next - window * 4 : 0; i < next; i++) {
			struct sess *s = &g.s[i];
			if (s->st != ST_HS || t - s->t_last < 1.0)
				continue;
			if (t - s->t_start > 10) {
				finish(&g, i, 0, 0);
				inflight--;
				failed++;
				continue;
			}
			DTLSv1_handle_timeout(s->ssl);
			s->t_last = t;
			flush_out(&g, i);
		}
	}
	t_up = now();
	double hs_secs = t_up - t0;
	unsigned hs_lat = g.nlat;
	double hs_p50 = 0, hs_p99 = 0;
	if (hs_lat) {
		qsort(g.lat, hs_lat, sizeof *g.lat, cmp);
		hs_p50 = g.lat[hs_lat / 2];
		hs_p99 = g.lat[(unsigned)(hs_lat * 0.99)];
	}
	if (is_hs) {
		printf("mode=hs sessions=%u ok=%u failed=%u secs=%.3f rate=%.1f p50_ms=%.3f "
		       "p99_ms=%.3f\n",
		       n, up, failed, hs_secs, up / hs_secs, hs_p50 * 1e3, hs_p99 * 1e3);
		return up == n ? 0 : 1;
	}
	if (is_idle) {
		printf("ready sessions=%u ok=%u failed=%u secs=%.3f\n", n, up, failed, hs_secs);
		fflush(stdout);
		double until = now() + hold;
		while (now() < until)
			usleep(50000);
		printf("mode=idle sessions=%u ok=%u failed=%u secs=%.3f\n", n, up, failed, hs_secs);
		return up == n ? 0 : 1;
	}
	/* Phase 2: requests; one outstanding per session, WINDOW sessions busy. */
	printf("ready sessions=%u ok=%u failed=%u secs=%.3f\n", n, up, failed, hs_secs);
	fflush(stdout);
	g.nlat = 0;
	unsigned busy = 0;
	double r0 = now();
	deadline = r0 + tmax;
	loops = 0;
	while (done_req < reqs && now() < deadline && loops++ < 100000000ul && up > 0) {
		double t = now();
		for (unsigned k = 0; sent_req < reqs && busy < window && k < n; k++) {
			unsigned i = rr++ % n;
			if (g.s[i].st != ST_UP || g.s[i].busy)
				continue;
			send_req(&g, i, t);
			sent_req++;
			busy++;
		}
		struct pollfd p = {g.fd, POLLIN, 0};
		poll(&p, 1, 5);
		for (int k = 0; k < 512; k++) {
			unsigned char d[4096];
			char cbuf[CMSG_SPACE(sizeof(struct in_pktinfo))];
			struct iovec iov = {d, sizeof d};
			struct msghdr mh = {0};
			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof cbuf;
			ssize_t len = recvmsg(g.fd, &mh, 0);
			if (len < 0)
				break;
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			if (!c || c->cmsg_type != IP_PKTINFO)
				continue;
			struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(c);
			unsigned idx = ntohl(pi->ipi_addr.s_addr) - BASE_ADDR;
			if (idx >= n || g.s[idx].st != ST_UP)
				continue;
			int was = g.s[idx].busy;
			int r = feed(&g, idx, d, (int)len, now());
			if (was && !g.s[idx].busy) {
				busy--;
				done_req++;
				if (r == 1)
					ok_req++;
				else
					fail_req++;
			}
		}
		t = now();
		if (busy > 0 && (loops & 63) == 0) {
			for (unsigned i = 0; i < n; i++) {
				if (g.s[i].busy && t - g.s[i].t_req > 2.0) {
					g.s[i].busy = 0;
					busy--;
					done_req++;
					fail_req++;
				}
			}
		}
	}
	double rsecs = now() - r0;
	double p50 = 0, p99 = 0;
	if (g.nlat) {
		qsort(g.lat, g.nlat, sizeof *g.lat, cmp);
		p50 = g.lat[g.nlat / 2];
		p99 = g.lat[(unsigned)(g.nlat * 0.99)];
	}
	printf("mode=%s sessions=%u requests=%u ok=%u failed=%u secs=%.3f rate=%.1f p50_ms=%.3f "
	       "p99_ms=%.3f\n",
	       mode, up, reqs, ok_req, fail_req + (reqs - done_req), rsecs, ok_req / rsecs,
	       p50 * 1e3, p99 * 1e3);
	for (unsigned i = 0; i < n; i++)
		if (g.s[i].ssl)
			finish(&g, i, 1, 1);
	return ok_req == reqs ? 0 : 1;
}
