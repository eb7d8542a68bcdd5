/*
 * loadgen: a DTLS 1.2 / CoAP load generator for `make bench`.
 *
 * One UDP socket bound to 0.0.0.0 carries every session: each session has
 * its own source address 127.16.0.0 + base + index (chosen per datagram
 * with IP_PKTINFO), and replies are told apart by their destination
 * address, so one process holds far more sessions than its open-file
 * limit. OpenSSL is the DTLS client, over memory BIOs. Every loop is bounded
 * by a count and by the -t deadline.
 *
 *   loadgen -p PORT -m hs|get|post|idle -n SESSIONS [-r REQUESTS] [-w WINDOW]
 *           [-i IDFMT [-G GROUP]] [-k KEY] [-u PATH] [-t SECONDS] [-H SECONDS] [-b BASE] [-S]
 *           [-X ISSUER_CERT -Y ISSUER_KEY [-c CERTS] [-x] [-O SLUG] [-N CNFMT] [-W]]
 *
 * PSK (the default): session i presents identity IDFMT % (i, i / GROUP)
 * (-G GROUP; a server's PSK file may hold only so many identities, so they
 * are spread over projects) with key KEY, PSK-AES128-CCM8.
 *
 * Certificates (-X/-Y): the generator makes CERTS device certificates
 * itself (P-256 keys, X.509 v1, subject /O=SLUG/CN=CNFMT % j, signed with
 * SHA-256 by the issuer: what Golioth's openssl recipe makes); session i
 * presents certificate i % CERTS, with the issuer's certificate as a second
 * one when -x is given, over ECDHE-ECDSA-AES128-GCM-SHA256 on P-256. -W
 * first makes one unmeasured handshake per certificate, so that a server
 * that provisions devices on first sight has done so.
 *
 * hs: N full handshakes, WINDOW at a time, each closed with close_notify.
 * get/post: N sessions, then R requests (CON, one outstanding per session,
 * WINDOW sessions busy) spread over them; a request counts only when its
 * 2.05 (get) or 2.04 (post) is received, and one unanswered after 2 s
 * counts as failed. idle: N sessions whose client state is then dropped
 * (the server holds them); the generator waits for -H seconds.
 *
 * Before the measured phase it prints "ready ..." and, with -S, waits for a
 * line on stdin (at most -t seconds): the runner reads the server's CPU
 * time and RSS at that point. It ends with one line of key=value.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BASE_ADDR     0x7f100000u
#define MAX_SESSIONS  (1u << 20)
#define MAX_CERTS     100000u
#define RECV_BATCH    64
#define DGRAM_MAX     4096
#define HS_GIVE_UP_S  10.0
#define HS_RETRANSMIT 1.0
#define REQ_GIVE_UP_S 2.0
#define LOOP_MAX      100000000ul
#define MTU           1400
/* New requests sent in one pass of the loop: the window fills in steps, not
 * in one burst of WINDOW datagrams at once (a server's default 208 KB
 * receive buffer holds about 130 small datagrams). */
#define BURST_MAX 32

enum st { ST_FREE, ST_HS, ST_UP, ST_DONE, ST_FAIL };

struct sess {
	SSL *ssl;
	BIO *rb, *wb;
	double t_start, t_last, t_req;
	uint16_t mid;
	unsigned char st;
	unsigned char busy;
};

struct cred {
	X509 *cert;
	EVP_PKEY *key;
};

/* A request in flight, in the order sent: the sweep for unanswered ones
 * looks only at the oldest. */
struct pending {
	unsigned idx;
	uint16_t mid;
};

struct gen {
	int fd;
	struct sockaddr_in srv;
	unsigned base;
	const char *idfmt, *key, *path;
	unsigned group;
	int post;
	SSL_CTX *ctx;
	struct cred *creds;
	unsigned ncreds;
	X509 *issuer;
	int send_chain;
	struct sess *s;
	unsigned n;
	double *lat;
	unsigned nlat, cap_lat;
	struct pending *q;
	unsigned q_head, q_tail, q_cap;
	/* Receive buffers for recvmmsg. */
	unsigned char (*rbuf)[DGRAM_MAX];
	char (*rctl)[CMSG_SPACE(sizeof(struct in_pktinfo))];
	struct mmsghdr rmsg[RECV_BATCH];
	struct iovec riov[RECV_BATCH];
};

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned int
psk_cb(SSL *ssl, const char *hint, char *id, unsigned int id_len, unsigned char *psk,
       unsigned int psk_len)
{
	struct gen *g = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	unsigned idx = (unsigned)(uintptr_t)SSL_get_app_data(ssl);
	size_t kl = strlen(g->key);

	(void)hint;
	/* A second %u in IDFMT is the group: idx / GROUP (one project per group). */
	snprintf(id, id_len, g->idfmt, idx, g->group ? idx / g->group : 0);
	if (kl > psk_len)
		return 0;
	memcpy(psk, g->key, kl);
	return (unsigned)kl;
}

/*
 * Makes `n` device certificates signed by the issuer in cert_path/key_path,
 * as the recipe's `openssl x509 -req` does: version 1, no extensions,
 * subject /O=slug/CN=cnfmt%j, a random serial, SHA-256. Returns 0 or -1.
 */
static int
make_creds(struct gen *g, const char *cert_path, const char *key_path, unsigned n, const char *slug,
           const char *cnfmt)
{
	EVP_PKEY *cakey = NULL;
	FILE *f;
	int rc = -1;

	if ((f = fopen(cert_path, "r")) == NULL) {
		perror(cert_path);
		return -1;
	}
	g->issuer = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if ((f = fopen(key_path, "r")) == NULL) {
		perror(key_path);
		return -1;
	}
	cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	g->creds = calloc(n, sizeof *g->creds);
	if (g->issuer == NULL || cakey == NULL || g->creds == NULL)
		goto out;
	for (unsigned j = 0; j < n; j++) {
		char cn[64];
		unsigned char serial[8];
		X509 *x = X509_new();
		EVP_PKEY *k = EVP_EC_gen("P-256");
		X509_NAME *name = X509_NAME_new();
		BIGNUM *bn;

		g->creds[j].cert = x;
		g->creds[j].key = k;
		g->ncreds = j + 1;
		if (x == NULL || k == NULL || name == NULL ||
		    RAND_bytes(serial, sizeof serial) != 1)
			goto out_name;
		serial[0] &= 0x7f;
		snprintf(cn, sizeof cn, cnfmt, j);
		bn = BN_bin2bn(serial, sizeof serial, NULL);
		if (bn == NULL || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
			BN_free(bn);
			goto out_name;
		}
		BN_free(bn);
		if (!X509_set_version(x, X509_VERSION_1) ||
		    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
		                                (const unsigned char *)slug, -1, -1, 0) ||
		    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
		                                -1, -1, 0) ||
		    !X509_set_subject_name(x, name) ||
		    !X509_set_issuer_name(x, X509_get_subject_name(g->issuer)) ||
		    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
		    !X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400L) || !X509_set_pubkey(x, k) ||
		    X509_sign(x, cakey, EVP_sha256()) <= 0)
			goto out_name;
		X509_NAME_free(name);
		continue;
	out_name:
		X509_NAME_free(name);
		goto out;
	}
	rc = 0;
out:
	if (rc != 0)
		ERR_print_errors_fp(stderr);
	EVP_PKEY_free(cakey);
	return rc;
}

/* Sends what OpenSSL wrote for session idx, split on record boundaries into
 * datagrams of at most MTU bytes, from source 127.16.0.0 + base + idx. */
static void
flush_out(struct gen *g, unsigned idx)
{
	struct sess *s = &g->s[idx];
	unsigned char buf[16384];
	int len = BIO_read(s->wb, buf, sizeof buf);
	int off = 0;

	while (len > 0 && off < len) {
		int end = off;
		while (end + 13 <= len) {
			int rl = 13 + ((buf[end + 11] << 8) | buf[end + 12]);
			if (end > off && end + rl - off > MTU)
				break;
			end += rl;
		}
		if (end == off || end > len)
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
		pi->ipi_spec_dst.s_addr = htonl(BASE_ADDR + g->base + idx);
		for (int tries = 0; tries < 100; tries++) {
			if (sendmsg(g->fd, &mh, 0) >= 0)
				break;
			if (errno != EAGAIN && errno != ENOBUFS)
				break;
			struct pollfd p = {g->fd, POLLOUT, 0};
			poll(&p, 1, 10);
		}
		off = end;
		if (off >= len)
			len = BIO_read(s->wb, buf, sizeof buf), off = 0;
	}
}

static int
start(struct gen *g, unsigned idx, double t)
{
	struct sess *s = &g->s[idx];

	s->ssl = SSL_new(g->ctx);
	if (!s->ssl)
		return -1;
	if (g->ncreds) {
		struct cred *c = &g->creds[idx % g->ncreds];
		if (SSL_use_certificate(s->ssl, c->cert) != 1 ||
		    SSL_use_PrivateKey(s->ssl, c->key) != 1 ||
		    (g->send_chain && SSL_add1_chain_cert(s->ssl, g->issuer) != 1)) {
			ERR_print_errors_fp(stderr);
			SSL_free(s->ssl);
			s->ssl = NULL;
			return -1;
		}
	}
	s->rb = BIO_new(BIO_s_mem());
	s->wb = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(s->rb, -1);
	SSL_set_bio(s->ssl, s->rb, s->wb);
	SSL_set_app_data(s->ssl, (void *)(uintptr_t)idx);
	SSL_set_options(s->ssl, SSL_OP_NO_QUERY_MTU);
	DTLS_set_link_mtu(s->ssl, MTU);
	SSL_set_connect_state(s->ssl);
	s->st = ST_HS;
	s->busy = 0;
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
		} else {
			SSL_set_quiet_shutdown(s->ssl, 1);
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
	const char *p = g->path;
	unsigned last = 0;

	s->mid++;
	m[n++] = 0x40 | 2; /* CON, token length 2 */
	m[n++] = g->post ? 0x02 : 0x01;
	m[n++] = (unsigned char)(s->mid >> 8);
	m[n++] = (unsigned char)s->mid;
	m[n++] = (unsigned char)(s->mid >> 8);
	m[n++] = (unsigned char)s->mid;
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
		/* Content-Format 50 (JSON): option 12, one byte. */
		m[n++] = (unsigned char)(((12 - last) << 4) | 1);
		m[n++] = 50;
		m[n++] = 0xff;
		n += (size_t)snprintf((char *)m + n, 100, "{\"i\":%u,\"m\":%u}", idx, s->mid);
	}
	s->busy = 1;
	s->t_req = t;
	if (g->q_tail - g->q_head < g->q_cap) {
		g->q[g->q_tail % g->q_cap] = (struct pending){idx, s->mid};
		g->q_tail++;
	}
	SSL_write(s->ssl, m, (int)n);
	flush_out(g, idx);
}

/*
 * Feeds one datagram to session idx. Returns 2 when it completed the
 * handshake, 1 when it carried the answer to the request in flight with the
 * expected code, -1 when it carried that answer with another code, and 0
 * otherwise (the session is ST_FAIL if the handshake failed).
 */
static int
feed(struct gen *g, unsigned idx, unsigned char *d, int len, double t)
{
	struct sess *s = &g->s[idx];
	unsigned char buf[2048];
	int got = 0;

	if (!s->ssl)
		return 0;
	BIO_write(s->rb, d, len);
	s->t_last = t;
	if (s->st == ST_HS) {
		int r = SSL_do_handshake(s->ssl);
		flush_out(g, idx);
		if (r != 1) {
			int e = SSL_get_error(s->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				finish(g, idx, 0, 0);
			return 0;
		}
		s->st = ST_UP;
		add_lat(g, t - s->t_start);
		return 2;
	}
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
				} else {
					got = -1;
				}
				s->busy = 0;
			}
		}
	}
	flush_out(g, idx);
	return got;
}

/*
 * Receives up to RECV_BATCH datagrams and calls back for each with the
 * index of the session it was addressed to. Returns how many were read.
 */
typedef void (*on_dgram)(struct gen *g, unsigned idx, unsigned char *d, int len, void *arg);

static int
recv_batch(struct gen *g, on_dgram fn, void *arg)
{
	for (int i = 0; i < RECV_BATCH; i++) {
		g->riov[i].iov_base = g->rbuf[i];
		g->riov[i].iov_len = DGRAM_MAX;
		memset(&g->rmsg[i].msg_hdr, 0, sizeof g->rmsg[i].msg_hdr);
		g->rmsg[i].msg_hdr.msg_iov = &g->riov[i];
		g->rmsg[i].msg_hdr.msg_iovlen = 1;
		g->rmsg[i].msg_hdr.msg_control = g->rctl[i];
		g->rmsg[i].msg_hdr.msg_controllen = sizeof g->rctl[i];
	}
	int got = recvmmsg(g->fd, g->rmsg, RECV_BATCH, MSG_DONTWAIT, NULL);
	for (int i = 0; i < got; i++) {
		struct cmsghdr *c = CMSG_FIRSTHDR(&g->rmsg[i].msg_hdr);
		if (!c || c->cmsg_level != IPPROTO_IP || c->cmsg_type != IP_PKTINFO)
			continue;
		struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(c);
		unsigned idx = ntohl(pi->ipi_addr.s_addr) - BASE_ADDR - g->base;
		if (idx < g->n)
			fn(g, idx, g->rbuf[i], (int)g->rmsg[i].msg_len, arg);
	}
	return got < 0 ? 0 : got;
}

struct hs_run {
	unsigned inflight, up, failed;
	int close_after; /* 1: close_notify at once (hs); 2: drop the client state (idle). */
};

static void
hs_dgram(struct gen *g, unsigned idx, unsigned char *d, int len, void *arg)
{
	struct hs_run *h = arg;

	if (g->s[idx].st != ST_HS)
		return;
	if (feed(g, idx, d, len, now()) == 2) {
		h->inflight--;
		h->up++;
		if (h->close_after == 1)
			finish(g, idx, 1, 1);
		else if (h->close_after == 2)
			finish(g, idx, 1, 0);
	} else if (g->s[idx].st == ST_FAIL) {
		h->inflight--;
		h->failed++;
	}
}

/*
 * Runs handshakes for sessions 0..count-1, `window` at a time, for at most
 * tmax seconds; a handshake is retransmitted after HS_RETRANSMIT s of
 * silence and given up after HS_GIVE_UP_S. Sessions still in handshake at
 * the deadline count as failed.
 */
static void
handshakes(struct gen *g, unsigned count, unsigned window, double tmax, struct hs_run *h)
{
	double deadline = now() + tmax, t_sweep = 0;
	unsigned next = 0, lo = 0;
	unsigned long loops = 0;

	while (now() < deadline && loops++ < LOOP_MAX) {
		double t = now();
		while (next < count && h->inflight < window) {
			if (start(g, next, t) == 0)
				h->inflight++;
			else
				h->failed++, g->s[next].st = ST_FAIL;
			next++;
		}
		if (h->inflight == 0 && next >= count)
			break;
		struct pollfd p = {g->fd, POLLIN, 0};
		poll(&p, 1, 5);
		for (int k = 0; k < 8 && recv_batch(g, hs_dgram, h) == RECV_BATCH; k++)
			;
		t = now();
		if (t - t_sweep < 0.05)
			continue;
		t_sweep = t;
		while (lo < next && g->s[lo].st != ST_HS)
			lo++;
		for (unsigned i = lo; i < next; i++) {
			struct sess *s = &g->s[i];
			if (s->st != ST_HS || t - s->t_last < HS_RETRANSMIT)
				continue;
			if (t - s->t_start > HS_GIVE_UP_S) {
				finish(g, i, 0, 0);
				h->inflight--;
				h->failed++;
				continue;
			}
			DTLSv1_handle_timeout(s->ssl);
			s->t_last = t;
			flush_out(g, i);
		}
	}
	for (unsigned i = lo; i < next; i++) {
		if (g->s[i].st == ST_HS) {
			finish(g, i, 0, 0);
			h->inflight--;
			h->failed++;
		}
	}
	h->failed += count - next;
}

struct req_run {
	unsigned busy, done, ok, wrong, lost;
};

static void
req_dgram(struct gen *g, unsigned idx, unsigned char *d, int len, void *arg)
{
	struct req_run *r = arg;
	struct sess *s = &g->s[idx];

	if (s->st != ST_UP)
		return;
	int was = s->busy;
	int got = feed(g, idx, d, len, now());
	if (was && !s->busy) {
		r->busy--;
		r->done++;
		if (got == 1)
			r->ok++;
		else
			r->wrong++;
	}
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void
percentiles(struct gen *g, double *p50, double *p99)
{
	*p50 = *p99 = 0;
	if (g->nlat == 0)
		return;
	qsort(g->lat, g->nlat, sizeof *g->lat, cmp);
	*p50 = g->lat[g->nlat / 2] * 1e3;
	*p99 = g->lat[(unsigned)(g->nlat * 0.99)] * 1e3;
}

/* Prints the ready line; with sync, waits up to tmax s for a line on stdin. */
static void
ready(unsigned n, unsigned up, unsigned failed, double secs, int sync, double tmax)
{
	printf("ready sessions=%u ok=%u failed=%u secs=%.3f\n", n, up, failed, secs);
	fflush(stdout);
	if (sync) {
		struct pollfd p = {0, POLLIN, 0};
		char line[64];
		if (poll(&p, 1, (int)(tmax * 1000)) > 0 && read(0, line, sizeof line) < 0)
			perror("stdin");
	}
}

static void
usage(void)
{
	fprintf(stderr,
	        "usage: loadgen -p PORT -m hs|get|post|idle -n N [-r R] [-w W] [-i IDFMT [-G "
	        "GROUP]]\n"
	        "               [-k KEY] [-u PATH] [-t SECS] [-H SECS] [-b BASE] [-S]\n"
	        "               [-X ISSUER_CERT -Y ISSUER_KEY [-c CERTS] [-x] [-O SLUG] [-N CNFMT] "
	        "[-W]]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct gen g = {0};
	const char *mode = "hs", *issuer = NULL, *issuer_key = NULL, *slug = "bench",
	           *cnfmt = "cert%u";
	unsigned n = 10, reqs = 0, window = 64, ncerts = 1000;
	double tmax = 60, hold = 5;
	int port = 0, opt, sync = 0, warm = 0;

	g.idfmt = "dev%u@bench";
	g.key = "benchbenchbenchbench";
	g.path = ".d";
	while ((opt = getopt(argc, argv, "p:m:n:r:w:i:G:k:u:t:H:b:SX:Y:c:xO:N:W")) != -1) {
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
		case 'G':
			g.group = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'k':
			g.key = optarg;
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
		case 'b':
			g.base = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'S':
			sync = 1;
			break;
		case 'X':
			issuer = optarg;
			break;
		case 'Y':
			issuer_key = optarg;
			break;
		case 'c':
			ncerts = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'x':
			g.send_chain = 1;
			break;
		case 'O':
			slug = optarg;
			break;
		case 'N':
			cnfmt = optarg;
			break;
		case 'W':
			warm = 1;
			break;
		default:
			usage();
		}
	}
	if (!port || n == 0 || n > MAX_SESSIONS || g.base > MAX_SESSIONS || window == 0 ||
	    tmax <= 0 || (issuer && (!issuer_key || ncerts == 0 || ncerts > MAX_CERTS)))
		usage();
	int is_hs = !strcmp(mode, "hs"), is_idle = !strcmp(mode, "idle");
	g.post = !strcmp(mode, "post");
	if (!is_hs && !is_idle && !g.post && strcmp(mode, "get"))
		usage();
	if (reqs > 100000000u)
		usage();
	g.n = n;
	g.s = calloc(n, sizeof *g.s);
	g.cap_lat = n + reqs + 16;
	g.lat = calloc(g.cap_lat, sizeof *g.lat);
	g.q_cap = reqs + 16;
	g.q = calloc(g.q_cap, sizeof *g.q);
	g.rbuf = calloc(RECV_BATCH, sizeof *g.rbuf);
	g.rctl = calloc(RECV_BATCH, sizeof *g.rctl);
	if (!g.s || !g.lat || !g.q || !g.rbuf || !g.rctl) {
		fprintf(stderr, "loadgen: out of memory\n");
		return 1;
	}
	g.srv.sin_family = AF_INET;
	g.srv.sin_port = htons((uint16_t)port);
	g.srv.sin_addr.s_addr = htonl(0x7f000001);

	g.ctx = SSL_CTX_new(DTLS_client_method());
	SSL_CTX_set_app_data(g.ctx, &g);
	SSL_CTX_set_min_proto_version(g.ctx, DTLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(g.ctx, DTLS1_2_VERSION);
	SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(g.ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(g.ctx, SSL_MODE_RELEASE_BUFFERS);
	if (issuer) {
		double tc = now();
		if (make_creds(&g, issuer, issuer_key, ncerts, slug, cnfmt) != 0)
			return 1;
		fprintf(stderr, "loadgen: %u device certificates in %.2f s\n", ncerts, now() - tc);
		SSL_CTX_set_cipher_list(g.ctx, "ECDHE-ECDSA-AES128-GCM-SHA256");
		SSL_CTX_set1_groups_list(g.ctx, "P-256");
		SSL_CTX_set1_sigalgs_list(g.ctx, "ECDSA+SHA256");
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

	/* Handshakes in flight at once: what a server takes before it drops
	 * (libcoap holds 100 by default); the request window may be larger. */
	unsigned hs_window = is_hs || window < 64 ? window : 64;
	double t0 = now();
	struct hs_run h = {0};
	if (warm && g.ncreds) {
		/* One handshake per certificate, not measured. */
		struct hs_run w = {.close_after = 1};
		unsigned saved = g.n;
		g.n = g.ncreds < n ? g.ncreds : n;
		handshakes(&g, g.n, hs_window, tmax, &w);
		g.n = saved;
		fprintf(stderr, "loadgen: warm-up %u ok, %u failed in %.2f s\n", w.up, w.failed,
		        now() - t0);
		memset(g.s, 0, n * sizeof *g.s);
		g.nlat = 0;
		/* Let the last close_notify land before the measured phase. */
		usleep(200000);
	}
	if (is_hs) {
		double p50, p99;
		ready(n, 0, 0, 0, sync, tmax);
		t0 = now();
		h.close_after = 1;
		handshakes(&g, n, window, tmax, &h);
		double secs = now() - t0;
		percentiles(&g, &p50, &p99);
		printf("mode=hs sessions=%u ok=%u failed=%u secs=%.3f rate=%.1f p50_ms=%.3f "
		       "p99_ms=%.3f\n",
		       n, h.up, h.failed, secs, h.up / secs, p50, p99);
		return h.up == n ? 0 : 1;
	}
	h.close_after = is_idle ? 2 : 0;
	handshakes(&g, n, hs_window, tmax, &h);
	double hs_secs = now() - t0, hs_p50, hs_p99;
	percentiles(&g, &hs_p50, &hs_p99);
	if (is_idle) {
		ready(n, h.up, h.failed, hs_secs, sync, hold);
		if (!sync)
			usleep((useconds_t)(hold * 1e6));
		printf("mode=idle sessions=%u ok=%u failed=%u secs=%.3f rate=%.1f p50_ms=%.3f "
		       "p99_ms=%.3f\n",
		       n, h.up, h.failed, hs_secs, h.up / hs_secs, hs_p50, hs_p99);
		return h.up == n ? 0 : 1;
	}

	/* Requests: one outstanding per session, WINDOW sessions busy. */
	ready(n, h.up, h.failed, hs_secs, sync, tmax);
	g.nlat = 0;
	struct req_run r = {0};
	unsigned sent = 0, rr = 0, nup = 0;
	unsigned *ups = calloc(h.up + 1, sizeof *ups);
	for (unsigned i = 0; ups && i < n && nup < h.up; i++)
		if (g.s[i].st == ST_UP)
			ups[nup++] = i;
	double r0 = now(), deadline = r0 + tmax, t_sweep = 0;
	unsigned long loops = 0;
	while (r.done < reqs && now() < deadline && loops++ < LOOP_MAX && nup > 0) {
		double t = now();
		unsigned burst = 0;
		for (unsigned k = 0; sent < reqs && r.busy < window && k < nup && burst < BURST_MAX;
		     k++) {
			unsigned i = ups[rr++ % nup];
			if (g.s[i].st != ST_UP || g.s[i].busy)
				continue;
			burst++;
			send_req(&g, i, t);
			sent++;
			r.busy++;
		}
		struct pollfd p = {g.fd, POLLIN, 0};
		poll(&p, 1, 5);
		for (int k = 0; k < 8 && recv_batch(&g, req_dgram, &r) == RECV_BATCH; k++)
			;
		t = now();
		if (t - t_sweep < 0.05)
			continue;
		t_sweep = t;
		/* Unanswered requests, oldest first; answered ones are skipped. */
		while (g.q_head != g.q_tail) {
			struct pending *e = &g.q[g.q_head % g.q_cap];
			struct sess *s = &g.s[e->idx];
			if (s->busy && s->mid == e->mid) {
				if (t - s->t_req < REQ_GIVE_UP_S)
					break;
				s->busy = 0;
				r.busy--;
				r.done++;
				r.lost++;
			}
			g.q_head++;
		}
	}
	double rsecs = now() - r0, p50, p99;
	percentiles(&g, &p50, &p99);
	printf("mode=%s sessions=%u requests=%u ok=%u failed=%u secs=%.3f rate=%.1f p50_ms=%.3f "
	       "p99_ms=%.3f hs_failed=%u wrong_code=%u unanswered=%u\n",
	       mode, h.up, reqs, r.ok, reqs - r.ok, rsecs, r.ok / rsecs, p50, p99, h.failed,
	       r.wrong, r.lost);
	for (unsigned i = 0; i < n; i++)
		if (g.s[i].ssl)
			finish(&g, i, 1, 1);
	return r.ok == reqs ? 0 : 1;
}
