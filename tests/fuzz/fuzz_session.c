/*
 * Fuzz target for a real server session: a dg_server on its own uv loop,
 * with a temporary config directory and database holding one PSK device
 * (dev1@acme), is set up once per process. Datagrams are injected with
 * dg_server_datagram(); the server's replies go out through its real UDP
 * socket to 127.0.0.x peers bound here, and are read back without
 * blocking. Everything stays on loopback.
 *
 * Each input starts with a fresh PSK handshake, made in memory by a
 * wolfSSL client whose I/O callbacks hand its datagrams to the server
 * and read the server's replies from peer A's socket. The input is then a
 * list of chunks:
 *
 *     flags (1 byte) | length (2 bytes, big-endian) | payload
 *
 * flags & 3 is the source: 0 and 3 peer A (127.0.0.1, the established
 * session's address), 1 peer B (127.0.0.1, another port), 2 peer C
 * (127.0.0.2, a new peer). (flags >> 2) & 3 is what to do:
 *   0  send the payload as one datagram, as is;
 *   1  send it as application data through the client's session (so it
 *      reaches the CoAP layer and the services), from the source chosen;
 *   2  make a full handshake from the source with a second client (it
 *      replaces A's session: one session per device), then send the
 *      payload through it as application data;
 *   3  the client closes its session (close_notify) after sending the
 *      payload as application data.
 * After each chunk the loop runs once (UV_RUN_NOWAIT) and every peer's
 * socket is drained; what reaches A is read by the client.
 *
 * The corpus keeps the datagrams this target found that broke the
 * invariant before the fixes of issue 8 (corpus/session/known-*): a record
 * that claims more bytes than its datagram holds, a plaintext handshake or
 * ChangeCipherSpec record from a live session's address, a fragment of a
 * ClientHello.
 *
 * The invariant checked after each input: unless the input legitimately
 * ended it (a close_notify, a replacing handshake), the established
 * session still answers a CoAP ping (empty CON) with an RST, and the
 * server sent it no alert. A violation aborts.
 *
 * With DG_FUZZ_TRANSCRIPT=FILE, the first handshake's client datagrams
 * are written to FILE as chunks (raw, from peer C), for seeding. With
 * DG_FUZZ_VERBOSE set, what the clients read is printed; DG_FUZZ_LOG sets
 * the server's log level (default error).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <coap3/coap.h>
#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/config.h"
#include "devgate/confdir.h"
#include "devgate/devcert.h"
#include "devgate/dtls.h"
#include "devgate/log.h"
#include "devgate/metrics.h"
#include "devgate/registry.h"
#include "devgate/server.h"
#include "devgate/store.h"

#define PSK_IDENTITY "dev1@acme"
#define PSK_KEY      "fuzz-session-key"
#define MAX_CHUNKS   64
#define MAX_DGRAM    2048
#define QUEUE_LEN    64
#define N_PEERS      3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Datagrams waiting, in order. */
typedef struct dgram_queue {
	uint8_t buf[QUEUE_LEN][MAX_DGRAM];
	size_t len[QUEUE_LEN];
	size_t head, n;
} dgram_queue;

/* A bound UDP socket on loopback: an address the server can answer. */
typedef struct peer {
	int fd;
	struct sockaddr_in addr;
} peer;

/* An in-memory DTLS client: what it writes is queued in tx, it reads rx. */
typedef struct client {
	WOLFSSL *ssl;
	peer *at;
	dgram_queue tx, rx;
	dgram_queue plain; /* What the client decrypted, for the invariant. */
	int established;
	int closed;          /* Closed or broken, by the server, the input or the client. */
	int ended_by_server; /* The wolfSSL error of an alert the server sent, or 0. */
} client;

typedef struct harness {
	char dir[96];
	dg_config *cfg;
	dg_store *store;
	dg_server *srv;
	uv_loop_t loop;
	WOLFSSL_CTX *cctx;
	peer peers[N_PEERS];
	client a, b;
	uint16_t mid;
	FILE *transcript;
	int verbose; /* DG_FUZZ_VERBOSE: print what the clients read. */
} harness;

static harness *H;

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_session: %s\n", what);
	abort();
}

static void
queue_push(dgram_queue *q, const uint8_t *d, size_t len)
{
	if (q->n == QUEUE_LEN)
		return; /* Lost, as a datagram may be. */
	size_t i = (q->head + q->n) % QUEUE_LEN;
	if (len > MAX_DGRAM)
		len = MAX_DGRAM;
	memcpy(q->buf[i], d, len);
	q->len[i] = len;
	q->n++;
}

static void
queue_clear(dgram_queue *q)
{
	q->head = 0;
	q->n = 0;
}

static int
client_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	client *c = ctx;
	(void)ssl;
	queue_push(&c->tx, (const uint8_t *)buf, (size_t)sz);
	return sz;
}

static int
client_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	client *c = ctx;
	(void)ssl;
	if (c->rx.n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = c->rx.len[c->rx.head];
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(buf, c->rx.buf[c->rx.head], n);
	c->rx.head = (c->rx.head + 1) % QUEUE_LEN;
	c->rx.n--;
	return (int)n;
}

static unsigned int
client_psk(WOLFSSL *ssl, const char *hint, char *identity, unsigned int id_max, unsigned char *key,
           unsigned int key_max)
{
	(void)ssl;
	(void)hint;
	if (id_max < sizeof(PSK_IDENTITY) || key_max < sizeof(PSK_KEY) - 1)
		return 0;
	memcpy(identity, PSK_IDENTITY, sizeof(PSK_IDENTITY));
	memcpy(key, PSK_KEY, sizeof(PSK_KEY) - 1);
	return sizeof(PSK_KEY) - 1;
}

static void
write_chunk(FILE *f, uint8_t flags, const uint8_t *d, size_t len)
{
	uint8_t hdr[3] = {flags, (uint8_t)(len >> 8), (uint8_t)len};
	fwrite(hdr, 1, sizeof(hdr), f);
	fwrite(d, 1, len, f);
}

/* Hands one datagram to the server as if `from` had sent it. */
static void
inject(const peer *from, const uint8_t *d, size_t len)
{
	dg_server_datagram(H->srv, 0, d, len, (const struct sockaddr *)&from->addr);
}

/* Reads what the client of `c` can read now; an alert or a close marks it closed. */
static void
client_read(client *c)
{
	uint8_t buf[MAX_DGRAM];

	if (c->ssl == NULL || !c->established || c->closed)
		return;
	for (int i = 0; i < QUEUE_LEN + 1; i++) {
		int n = wolfSSL_read(c->ssl, buf, sizeof(buf));
		if (n > 0) {
			if (H->verbose)
				fprintf(stderr,
				        "fuzz_session: client %c got type %d code %d.%02d, %d "
				        "bytes\n",
				        c == &H->a ? 'A' : 'B', (buf[0] >> 4) & 3,
				        n > 1 ? buf[1] >> 5 : 0, n > 1 ? buf[1] & 31 : 0, n);
			queue_push(&c->plain, buf, (size_t)n);
			continue;
		}
		int err = wolfSSL_get_error(c->ssl, n);
		if (H->verbose && err != WOLFSSL_ERROR_WANT_READ)
			fprintf(stderr, "fuzz_session: client %c read error %d\n",
			        c == &H->a ? 'A' : 'B', err);
		if (err != WOLFSSL_ERROR_WANT_READ) {
			c->closed = 1;
			/* The server ended it with an alert, which nothing in an input may cause.
			 */
			if (err == FATAL_ERROR || err == WOLFSSL_ERROR_ZERO_RETURN)
				c->ended_by_server = err;
		}
		return;
	}
}

/* Runs the loop once and hands what each peer received to its client. */
static void
pump(void)
{
	uint8_t buf[MAX_DGRAM];

	uv_run(&H->loop, UV_RUN_NOWAIT);
	for (int p = 0; p < N_PEERS; p++) {
		client *c = H->a.at == &H->peers[p]   ? &H->a
		            : H->b.at == &H->peers[p] ? &H->b
		                                      : NULL;
		for (int i = 0; i < 4 * QUEUE_LEN; i++) {
			ssize_t n = recv(H->peers[p].fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 0)
				break;
			if (c != NULL)
				queue_push(&c->rx, buf, (size_t)n);
		}
	}
	client_read(&H->a);
	client_read(&H->b);
}

/* Sends what the client has written, from its peer's address. */
static void
flush_client(client *c, uint8_t record_flags)
{
	while (c->tx.n > 0) {
		size_t i = c->tx.head;
		if (H->transcript != NULL)
			write_chunk(H->transcript, record_flags, c->tx.buf[i], c->tx.len[i]);
		inject(c->at, c->tx.buf[i], c->tx.len[i]);
		c->tx.head = (c->tx.head + 1) % QUEUE_LEN;
		c->tx.n--;
		pump();
	}
}

static void
client_drop(client *c)
{
	if (c->ssl != NULL)
		wolfSSL_free(c->ssl);
	c->ssl = NULL;
	c->at = NULL;
	c->established = 0;
	c->closed = 1;
	c->ended_by_server = 0;
	queue_clear(&c->tx);
	queue_clear(&c->rx);
	queue_clear(&c->plain);
}

/* A full PSK handshake of `c` from `at`. Returns 0 or -EPROTO. */
static int
client_handshake(client *c, peer *at)
{
	client_drop(c);
	c->at = at;
	c->closed = 0;
	c->ssl = wolfSSL_new(H->cctx);
	if (c->ssl == NULL)
		die("wolfSSL_new");
	wolfSSL_dtls_set_using_nonblock(c->ssl, 1);
	wolfSSL_SetIOReadCtx(c->ssl, c);
	wolfSSL_SetIOWriteCtx(c->ssl, c);
	pump(); /* Whatever was still on the way to this address is not for this session. */
	queue_clear(&c->rx);
	for (int round = 0; round < 16; round++) {
		int rc = wolfSSL_connect(c->ssl);
		flush_client(c, 0x02);
		if (rc == WOLFSSL_SUCCESS) {
			c->established = 1;
			return 0;
		}
		if (wolfSSL_get_error(c->ssl, rc) != WOLFSSL_ERROR_WANT_READ)
			break;
		if (c->rx.n == 0)
			pump();
	}
	c->closed = 1;
	return -EPROTO;
}

/* The client whose session is the device's now: B once it made one, else A. */
static client *
current(void)
{
	return H->b.ssl != NULL && H->b.established && !H->b.closed ? &H->b : &H->a;
}

/* Writes `d` as application data through `c`, sent from `from`. */
static void
client_write(client *c, const peer *from, const uint8_t *d, size_t len)
{
	if (c->ssl == NULL || !c->established || c->closed)
		return;
	if (len == 0)
		return; /* wolfSSL sends no empty record. */
	if (wolfSSL_write(c->ssl, d, (int)len) <= 0) {
		c->closed = 1;
		queue_clear(&c->tx);
		return;
	}
	while (c->tx.n > 0) {
		size_t i = c->tx.head;
		inject(from, c->tx.buf[i], c->tx.len[i]);
		c->tx.head = (c->tx.head + 1) % QUEUE_LEN;
		c->tx.n--;
		pump();
	}
}

/* Waits (bounded) for one decrypted datagram at `c`. Returns its length or -1. */
static int
client_wait(client *c, uint8_t *buf, size_t cap)
{
	struct timespec pause = {0, 1000000};

	for (int i = 0; i < 50 && !c->closed; i++) {
		if (c->plain.n > 0) {
			size_t n = c->plain.len[c->plain.head];
			if (n > cap)
				n = cap;
			memcpy(buf, c->plain.buf[c->plain.head], n);
			c->plain.head = (c->plain.head + 1) % QUEUE_LEN;
			c->plain.n--;
			return (int)n;
		}
		pump();
		if (c->plain.n == 0)
			nanosleep(&pause, NULL);
	}
	return -1;
}

/* The invariant: an established session answers an empty CON with an RST of its MID. */
static void
check_alive(client *c)
{
	uint8_t buf[MAX_DGRAM];

	if (c->ssl == NULL || !c->established)
		return;
	/* What the input left on the way is read first. */
	client_read(c);
	if (c->ended_by_server)
		die("the server ended the established session with an alert");
	if (c->closed)
		return;
	queue_clear(&c->plain);
	/*
	 * A MID the input used for a CON whose answer is deferred is a
	 * duplicate the server rightly ignores: the next try takes another.
	 */
	for (int tries = 0; tries < 8; tries++) {
		uint16_t mid =
		        (uint16_t)(0xa000 + (H->mid++ % 0x1000) * 7 + (unsigned)tries * 0x1111);
		uint8_t ping[4] = {0x40, 0x00, (uint8_t)(mid >> 8), (uint8_t)mid};
		client_write(c, c->at, ping, sizeof(ping));
		if (c->closed)
			break;
		for (;;) {
			int n = client_wait(c, buf, sizeof(buf));
			if (n < 0)
				break;
			/* Notifications and late answers may come first; skip them. */
			if (n == 4 && (buf[0] & 0x30) == 0x30 && buf[1] == 0 && buf[2] == ping[2] &&
			    buf[3] == ping[3])
				return;
		}
		if (c->closed)
			break;
	}
	if (c->ended_by_server)
		die("the server ended the established session with an alert");
	if (!c->closed)
		die("the established session no longer answers a CoAP ping");
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
teardown(void)
{
	if (H != NULL && H->dir[0] != '\0')
		nftw(H->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
		die(path);
}

static void
peer_bind(peer *p, const char *ip)
{
	socklen_t len = sizeof(p->addr);

	p->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->fd < 0)
		die("socket");
	memset(&p->addr, 0, sizeof(p->addr));
	p->addr.sin_family = AF_INET;
	inet_pton(AF_INET, ip, &p->addr.sin_addr);
	if (bind(p->fd, (struct sockaddr *)&p->addr, sizeof(p->addr)) != 0 ||
	    getsockname(p->fd, (struct sockaddr *)&p->addr, &len) != 0)
		die("bind a peer socket");
}

/* A port on 127.0.0.1 that was free a moment ago. */
static unsigned
free_port(void)
{
	peer p;
	peer_bind(&p, "127.0.0.1");
	unsigned port = ntohs(p.addr.sin_port);
	close(p.fd);
	return port;
}

static void
setup(void)
{
	char path[256], text[1024], err[512];
	dg_devcert_paths dev;
	dg_registry *reg = NULL;
	int n_errors = 0, rc = -1;
	const char *lvl = getenv("DG_FUZZ_LOG");

	H = calloc(1, sizeof(*H));
	if (H == NULL)
		die("out of memory");
	/* On tmpfs when there is one: the store syncs every commit. */
	snprintf(H->dir, sizeof(H->dir), "%s/dg-fuzz-session-XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(H->dir) == NULL)
		die("mkdtemp");
	atexit(teardown);
	snprintf(path, sizeof(path), "%s/projects", H->dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/projects/acme", H->dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/projects/acme/psk.json", H->dir);
	write_text(path, "[{\"identity\": \"" PSK_IDENTITY
	                 "\", \"device\": \"dev1\", \"key\": \"" PSK_KEY "\"}]\n");

	for (int attempt = 0; attempt < 8 && rc != 0; attempt++) {
		snprintf(text, sizeof(text),
		         "{\"listen\": [\"127.0.0.1:%u\"], \"database\": \"db/devgate.db\",\n"
		         " \"projects_dir\": \"projects\", \"metrics_listen\": \"\",\n"
		         " \"log\": {\"level\": \"%s\"},\n"
		         " \"workers\": 1,\n \"limits\": {\"device_requests_per_s\": 100000, \"max_body\": 4096}}\n",
		         free_port(), lvl != NULL ? lvl : "error");
		snprintf(path, sizeof(path), "%s/devgate.json", H->dir);
		write_text(path, text);
		if (dg_config_load(path, &H->cfg, err, sizeof(err)) != 0)
			die(err);
		if (attempt == 0) {
			dg_log_init(H->cfg->log_level, H->cfg->log_format);
			coap_startup();
			coap_set_log_level(LOG_EMERG);
			wolfSSL_Init();
			if (dg_store_open(H->cfg->database, DG_STORE_WRITER, &H->store, err,
			                  sizeof(err)) != 0)
				die(err);
			snprintf(path, sizeof(path), "%s/db/dev-certs", H->dir);
			if (dg_devcert_ensure(path, &dev, err, sizeof(err)) != 0)
				die(err);
			if (dg_confdir_import(H->cfg->projects_dir, H->store, &n_errors) != 0 ||
			    n_errors != 0)
				die("cannot import the projects");
			if (uv_loop_init(&H->loop) != 0)
				die("uv_loop_init");
		}
		if (dg_registry_build(H->store, &reg) != 0)
			die("cannot build the registry");
		rc = dg_server_new(&H->loop, DG_SERVER_ONE_LOOP, H->cfg, H->store, reg,
		                   dev.server_cert, dev.server_key, &H->srv, err, sizeof(err));
		if (rc != 0) {
			/* The port was taken in between: another one. */
			dg_registry_unref(reg);
			dg_config_free(H->cfg);
			H->cfg = NULL;
		}
	}
	if (rc != 0 || dg_server_start(H->srv) != 0)
		die("cannot start the server");

	H->cctx = wolfSSL_CTX_new(wolfDTLSv1_2_client_method());
	if (H->cctx == NULL || wolfSSL_CTX_set_cipher_list(H->cctx, "PSK-AES128-CCM-8") != 1)
		die("client context");
	wolfSSL_CTX_set_verify(H->cctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_set_psk_client_callback(H->cctx, client_psk);
	wolfSSL_CTX_SetIOSend(H->cctx, client_send);
	wolfSSL_CTX_SetIORecv(H->cctx, client_recv);
	peer_bind(&H->peers[0], "127.0.0.1");
	peer_bind(&H->peers[1], "127.0.0.1");
	peer_bind(&H->peers[2], "127.0.0.2");
	H->a.closed = H->b.closed = 1;
	H->verbose = getenv("DG_FUZZ_VERBOSE") != NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *tpath;
	size_t off = 0;

	if (H == NULL) {
		setup();
		tpath = getenv("DG_FUZZ_TRANSCRIPT");
		if (tpath != NULL && (H->transcript = fopen(tpath, "wb")) == NULL)
			die(tpath);
	}
	client_drop(&H->b);
	if (client_handshake(&H->a, &H->peers[0]) != 0) {
		/* What an earlier input left broke handshakes: from this address only, or all? */
		if (client_handshake(&H->b, &H->peers[2]) != 0)
			die("the in-memory PSK handshake failed, from any address");
		die("the in-memory PSK handshake failed from the address of the last input's "
		    "session; one from a new address works");
	}
	if (H->transcript != NULL) {
		fclose(H->transcript);
		H->transcript = NULL;
	}

	for (int n = 0; n < MAX_CHUNKS && size - off >= 3; n++) {
		uint8_t flags = data[off];
		size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
		off += 3;
		if (len > size - off)
			len = size - off;
		const uint8_t *d = data + off;
		off += len;

		peer *from = &H->peers[(flags & 3) == 3 ? 0 : flags & 3];
		switch ((flags >> 2) & 3) {
		case 0:
			inject(from, d, len);
			pump();
			break;
		case 1:
			client_write(current(), from, d,
			             len > MAX_DGRAM - 64 ? MAX_DGRAM - 64 : len);
			break;
		case 2:
			/* One session per device: the new one replaces A's (and B's). */
			if (from == H->a.at)
				client_drop(&H->a);
			H->a.closed = 1;
			if (client_handshake(&H->b, from) != 0)
				die("a second in-memory PSK handshake failed");
			client_write(&H->b, from, d, len > MAX_DGRAM - 64 ? MAX_DGRAM - 64 : len);
			break;
		case 3: {
			client *c = current();
			client_write(c, from, d, len > MAX_DGRAM - 64 ? MAX_DGRAM - 64 : len);
			if (c->ssl != NULL && c->established && !c->closed) {
				wolfSSL_shutdown(c->ssl);
				c->closed = 1;
				while (c->tx.n > 0) {
					size_t i = c->tx.head;
					inject(c->at, c->tx.buf[i], c->tx.len[i]);
					c->tx.head = (c->tx.head + 1) % QUEUE_LEN;
					c->tx.n--;
				}
				pump();
			}
			break;
		}
		}
	}
	/* Writes are answered once committed: let them commit, then send the answers. */
	dg_store_flush_timeout(H->store, 2000);
	pump();
	pump();
	check_alive(&H->a);
	check_alive(&H->b);
	return 0;
}
