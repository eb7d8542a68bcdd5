/*
 * The server loop: sockets, peer table, cookie exchange, timers, signals.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <systemd/sd-daemon.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/chaincache.h"
#include "devgate/confdir.h"
#include "devgate/data.h"
#include "devgate/dtls.h"
#include "devgate/log.h"
#include "devgate/map.h"
#include "devgate/metrics.h"
#include "devgate/server.h"
#include "devgate/session.h"
#include "devgate/udpio.h"
#include "devgate/wheel.h"

/*
 * Received datagrams: libuv reads up to RX_BATCH of them in one recvmmsg
 * (UV_UDP_RECVMMSG), each into its own 64 KiB chunk of this buffer, and
 * hands them over one by one. Pages of chunks no datagram reached are
 * never touched, so never resident.
 */
#define RX_CHUNK          65536
#define RX_BATCH          20
#define RX_BUF_SIZE       (RX_CHUNK * RX_BATCH)
#define COOKIE_SECRET_LEN 32
#define COOKIE_ROTATE_MS  (5 * 60 * 1000)
/* How often a repeated warning about refused handshakes may be logged. */
#define WARN_INTERVAL_MS 10000
/* Changes under projects_dir are taken in after this much quiet. */
#define RELOAD_DEBOUNCE_MS 250
/* How often the store is asked whether the CLI changed what the registry holds. */
#define SERIAL_POLL_MS 500
#define MAX_WATCHES    1024
#define MAX_REASONS    64
/* How often the store is asked for state changes the CLI made. */
#define CHANGES_POLL_MS 250

/* A provisioning result on its way from the writer thread to the loop. */
typedef struct prov_done {
	struct prov_done *next;
	uint64_t session_id;
	dg_provision_result res;
} prov_done;

typedef struct prov_req {
	dg_server *srv;
	uint64_t session_id;
} prov_req;

typedef struct watch {
	uv_fs_event_t h;
	dg_server *srv;
	char only[256]; /* Non-empty: react only to events about this entry (the parent's watch). */
} watch;

typedef struct listener {
	uv_udp_t udp;
	dg_server *srv;
	WOLFSSL *ssl;       /* The listening object: answers ClientHellos statelessly. */
	dg_dtls_io io;      /* Its I/O: the datagram at hand and its sender. */
	dg_session *handed; /* Set by the ClientHello callback on a verified cookie. */
	const struct sockaddr *from;
} listener;

struct dg_server {
	uv_loop_t *loop;
	const dg_config *cfg;
	dg_config *owned_cfg; /* A configuration re-read on SIGHUP, or NULL. */
	dg_metrics *metrics;  /* Borrowed, or NULL. */
	uv_timer_t watchdog;
	dg_store *store;
	dg_registry *reg;
	WOLFSSL_CTX *ctx;
	listener listeners[DG_CONFIG_MAX_LISTEN];
	size_t n_listeners;
	dg_session_env env;
	dg_map *peers;   /* Address -> session: what an address's records go to. */
	dg_map *pending; /* Address -> a handshake that will replace peers' entry. */
	dg_map *devices; /* Device ID -> its one established session. */
	dg_map *by_id;   /* Session ID -> session, for results that come back later. */
	uv_async_t prov_async;
	pthread_mutex_t prov_mu;
	prov_done *prov_head;   /* Filled by the writer thread, drained on the loop. */
	dg_deferred *done_head; /* Deferred replies whose commit finished. */
	uv_timer_t changes_poll;
	int64_t changes_seen;
	uv_timer_t debounce;
	uv_timer_t serial_poll;
	watch *watches[MAX_WATCHES];
	size_t n_watches;
	struct {
		char *reason;
		uint64_t count;
	} refusals[MAX_REASONS];
	size_t n_refusals;
	dg_session **graveyard;
	size_t n_graveyard, cap_graveyard;
	size_t n_handshakes; /* Half-open: created, neither established nor closed. */
	dg_map *sources;     /* Source network -> its half-open handshakes (a count). */
	/* Session IDs of handshakes, oldest first: who gives way when all slots are taken. */
	uint64_t *hs_queue;
	size_t hs_head, hs_len, hs_cap;
	uint8_t psk_secret[DG_SESSION_PSK_SECRET_LEN];
	dg_wheel wheel;
	uv_timer_t tick;
	uv_check_t reaper;
	uv_prepare_t tx_flush; /* Sends what the pass queued (env.tx) before the loop waits. */
	uv_signal_t sigterm, sigint, sighup;
	uint8_t cookie_secret[COOKIE_SECRET_LEN];
	uint64_t cookie_rotated_ms;
	uint64_t next_session_id;
	uint64_t last_full_warning_ms;
	uint64_t refused_full; /* ClientHellos dropped at a limit since the last warning. */
	int stopping;
	uint8_t rx[RX_BUF_SIZE];
};

static void rewatch(dg_server *srv);
static void unwatch(dg_server *srv);

static int
listener_reset(listener *l)
{
	dg_server *srv = l->srv;
	if (l->ssl != NULL)
		wolfSSL_free(l->ssl);
	l->ssl = wolfSSL_new(srv->ctx);
	if (l->ssl == NULL)
		return -ENOMEM;
	dg_dtls_set_io(l->ssl, &l->io);
	wolfSSL_dtls_set_using_nonblock(l->ssl, 1);
	/* Unlike most of wolfSSL, this one returns 0 on success. */
	if (wolfSSL_DTLS_SetCookieSecret(l->ssl, srv->cookie_secret, COOKIE_SECRET_LEN) != 0)
		return -EIO;
	return 0;
}

static int ch_good(WOLFSSL *ssl, void *arg);

static int
listener_new_ssl(listener *l)
{
	int rc = listener_reset(l);
	if (rc == 0 && wolfDTLS_SetChGoodCb(l->ssl, ch_good, l) != WOLFSSL_SUCCESS)
		rc = -EIO;
	return rc;
}

static void
rotate_cookie_secret(dg_server *srv, uint64_t now)
{
	if (getrandom(srv->cookie_secret, sizeof(srv->cookie_secret), 0) !=
	    (ssize_t)sizeof(srv->cookie_secret))
		return; /* Keep the old secret rather than a weak one. */
	srv->cookie_rotated_ms = now;
	for (size_t i = 0; i < srv->n_listeners; i++)
		if (srv->listeners[i].ssl != NULL)
			wolfSSL_DTLS_SetCookieSecret(srv->listeners[i].ssl, srv->cookie_secret,
			                             COOKIE_SECRET_LEN);
}

static void warn_full(dg_server *srv, const char *what);
static void drop(dg_server *srv, const char *reason);

/* The number of half-open handshakes from the network of `sa`. */
static size_t
source_count(dg_server *srv, const struct sockaddr *sa)
{
	dg_map_key key;
	dg_map_key_source(&key, sa);
	return (size_t)(uintptr_t)dg_map_get(srv->sources, &key);
}

/* Counts a handshake in or out of its source network (delta +1 or -1). */
static void
source_add(dg_server *srv, const struct sockaddr *sa, int delta)
{
	dg_map_key key;
	dg_map_key_source(&key, sa);
	size_t n = (size_t)(uintptr_t)dg_map_get(srv->sources, &key);
	if (delta < 0 && n <= 1)
		dg_map_del(srv->sources, &key);
	else if (delta < 0)
		dg_map_put(srv->sources, &key, (void *)(uintptr_t)(n - 1), NULL);
	else if (dg_map_put(srv->sources, &key, (void *)(uintptr_t)(n + 1), NULL) != 0)
		dg_log(DG_LOG_ERROR, "server.error", "out of memory counting handshakes");
}

/* Appends a new handshake's session ID to the queue of handshakes, oldest first. */
static void
hs_queue_push(dg_server *srv, uint64_t id)
{
	if (srv->hs_head + srv->hs_len == srv->hs_cap) {
		if (srv->hs_head > 0) {
			memmove(srv->hs_queue, srv->hs_queue + srv->hs_head,
			        srv->hs_len * sizeof(*srv->hs_queue));
			srv->hs_head = 0;
		}
		if (srv->hs_len == srv->hs_cap) {
			size_t cap = srv->hs_cap ? srv->hs_cap * 2 : 256;
			uint64_t *q = realloc(srv->hs_queue, cap * sizeof(*q));
			if (q == NULL)
				return; /* It cannot give way then; everything else holds. */
			srv->hs_queue = q;
			srv->hs_cap = cap;
		}
	}
	srv->hs_queue[srv->hs_head + srv->hs_len++] = id;
}

/* The session `id` names if it is still a handshake, else NULL. */
static dg_session *
handshaking(dg_server *srv, uint64_t id)
{
	dg_map_key key;
	dg_map_key_u64(&key, id);
	dg_session *s = dg_map_get(srv->by_id, &key);
	if (s == NULL || dg_session_get_state(s) != DG_SESSION_HANDSHAKE)
		return NULL;
	return s;
}

/* How many queue entries one eviction looks at, at most. */
#define EVICT_SCAN 64

/*
 * Every handshake slot is taken: the oldest stalled handshake (see
 * dg_session_stalled) gives way to a newcomer. Returns 1 when one was
 * closed. Entries of handshakes that ended are dropped on the way; live
 * ones that are not stalled go to the back of the queue. At most
 * EVICT_SCAN entries are looked at, so a ClientHello costs O(1) here
 * however many handshakes there are.
 */
static int
evict_stalled(dg_server *srv)
{
	uint64_t now = uv_now(srv->loop);
	for (int i = 0; i < EVICT_SCAN && srv->hs_len > 0; i++) {
		uint64_t id = srv->hs_queue[srv->hs_head++];
		srv->hs_len--;
		dg_session *s = handshaking(srv, id);
		if (s == NULL)
			continue;
		if (dg_session_stalled(s, now)) {
			dg_session_close(s, "stalled handshake gave way to a new one", 0);
			return 1;
		}
		hs_queue_push(srv, id);
	}
	if (srv->hs_len == 0)
		srv->hs_head = 0;
	return 0;
}

/* Drops queue entries of handshakes that ended, once they outnumber the live ones. */
static void
hs_queue_compact(dg_server *srv)
{
	if (srv->hs_len < 2 * srv->n_handshakes + 256)
		return;
	size_t n = 0;
	for (size_t i = 0; i < srv->hs_len; i++) {
		uint64_t id = srv->hs_queue[srv->hs_head + i];
		if (handshaking(srv, id) != NULL)
			srv->hs_queue[n++] = id;
	}
	srv->hs_head = 0;
	srv->hs_len = n;
}

/*
 * Whether a new handshake from `from` may take a slot: at most
 * max_handshakes_per_source from one network, and at most max_handshakes
 * in all, where the oldest stalled handshake gives way to a newcomer.
 */
static int
handshake_admitted(dg_server *srv, const struct sockaddr *from)
{
	const dg_limits *lim = &srv->cfg->limits;
	if (source_count(srv, from) >= lim->max_handshakes_per_source) {
		warn_full(srv, "limits.max_handshakes_per_source");
		drop(srv, "limit");
		return 0;
	}
	if (srv->n_handshakes >= lim->max_handshakes && !evict_stalled(srv)) {
		warn_full(srv, "limits.max_handshakes");
		drop(srv, "limit");
		return 0;
	}
	return 1;
}

/* A handshake ended (established or closed): it no longer holds a slot. */
static void
handshake_ended(dg_server *srv, dg_session *s)
{
	srv->n_handshakes--;
	source_add(srv, dg_session_peer(s), -1);
}

/*
 * The ClientHello carried a valid cookie: the peer owns its address. Only
 * now does a session exist for it; the listening object becomes that
 * session's and the listener gets a fresh one after wolfSSL_accept()
 * returns.
 */
static int
ch_good(WOLFSSL *ssl, void *arg)
{
	listener *l = arg;
	dg_server *srv = l->srv;
	dg_session *s = NULL;
	dg_map_key key;

	if (!handshake_admitted(srv, l->from))
		return -1;
	if (dg_session_new(&srv->env, ++srv->next_session_id, ssl, &l->udp, l->from, srv->reg,
	                   uv_now(srv->loop), &s) != 0)
		return -1;
	dg_map_key_addr(&key, l->from);
	dg_map *table = dg_map_get(srv->peers, &key) != NULL ? srv->pending : srv->peers;
	void *old = NULL;
	if (dg_map_put(table, &key, s, &old) != 0) {
		/* The listener keeps its object; the session never went live. */
		dg_session_discard(s);
		dg_dtls_set_io(ssl, &l->io);
		return -1;
	}
	dg_map_key_u64(&key, dg_session_id(s));
	if (dg_map_put(srv->by_id, &key, s, NULL) != 0) {
		dg_map_key_addr(&key, l->from);
		dg_map_del(table, &key);
		if (old != NULL)
			dg_map_put(table, &key, old, NULL);
		dg_session_discard(s);
		dg_dtls_set_io(ssl, &l->io);
		return -1;
	}
	if (old != NULL)
		dg_session_close(old, "superseded by a newer handshake from the same address", 0);
	srv->n_handshakes++;
	source_add(srv, l->from, +1);
	hs_queue_compact(srv);
	hs_queue_push(srv, dg_session_id(s));
	l->handed = s;
	return 0;
}

static void
warn_full(dg_server *srv, const char *what)
{
	uint64_t now = uv_now(srv->loop);
	srv->refused_full++;
	if (now - srv->last_full_warning_ms < WARN_INTERVAL_MS && srv->last_full_warning_ms != 0)
		return;
	dg_log(DG_LOG_WARN, "handshake.refused", "%s reached; %llu ClientHellos dropped", what,
	       (unsigned long long)srv->refused_full);
	srv->refused_full = 0;
	srv->last_full_warning_ms = now;
}

static void
drop(dg_server *srv, const char *reason)
{
	if (srv->metrics != NULL)
		dg_metrics_dropped(srv->metrics, reason);
}

/*
 * A ClientHello from an address with no session (or a new one from a known
 * address). Stateless: only the first record of the datagram is looked at,
 * it must be one whole ClientHello (RFC 6347 4.2.1 lets a server refuse to
 * reassemble a fragmented one before the cookie is verified), and the
 * listening object is made anew after every datagram that does not become
 * a session, so that nothing one peer sends changes how the next peer's
 * ClientHello is treated.
 */
static void
listen_datagram(listener *l, const uint8_t *buf, size_t len, const struct sockaddr *from)
{
	dg_server *srv = l->srv;
	dg_dtls_record rec;
	dg_dtls_handshake hs;
	size_t off = 0;
	socklen_t alen;

	if (dg_dtls_next_record(buf, len, &off, &rec) != 0) {
		drop(srv, "not_dtls");
		return;
	}
	if (rec.epoch != 0 || rec.handshake_type != 1 || dg_dtls_handshake_header(&rec, &hs) != 0) {
		drop(srv, "no_session");
		return;
	}
	if (!dg_dtls_handshake_whole(&hs)) {
		drop(srv, "fragmented_hello");
		return;
	}
	if (dg_map_count(srv->peers) + dg_map_count(srv->pending) >=
	    srv->cfg->limits.max_sessions) {
		warn_full(srv, "limits.max_sessions");
		drop(srv, "limit");
		return;
	}
	if (l->ssl == NULL && listener_new_ssl(l) != 0)
		return;
	alen = from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                   : sizeof(struct sockaddr_in);
	memcpy(&l->io.peer, from, alen);
	l->io.peer_len = alen;
	l->io.rx = rec.raw;
	l->io.rx_len = rec.raw_len;
	l->from = from;
	/* The cookie is bound to this exact address. */
	wolfSSL_dtls_set_peer(l->ssl, (void *)(uintptr_t)from, alen);
	wolfSSL_accept(l->ssl);
	l->io.rx = NULL;
	l->io.rx_len = 0;
	l->from = NULL;
	if (l->handed != NULL) {
		dg_session *s = l->handed;
		l->handed = NULL;
		l->ssl = NULL;
		if (listener_new_ssl(l) != 0)
			dg_log(DG_LOG_ERROR, "listener.error",
			       "cannot make a listening DTLS object");
		/* Let the session see how the ClientHello went and arm its timers. */
		dg_session_input(s, NULL, 0, uv_now(srv->loop));
		return;
	}
	/* A HelloVerifyRequest was sent, or the ClientHello refused: start clean. */
	if (listener_new_ssl(l) != 0)
		dg_log(DG_LOG_ERROR, "listener.error", "cannot make a listening DTLS object");
}

static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	listener *l = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)l->srv->rx, sizeof(l->srv->rx));
}

static void
recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
        unsigned flags)
{
	listener *l = udp->data;
	dg_server *srv = l->srv;

	/* nread 0 with no address: nothing, or the end of a recvmmsg batch (UV_UDP_MMSG_FREE). */
	if (nread <= 0 || from == NULL)
		return;
	if (flags & UV_UDP_PARTIAL) {
		if (srv->metrics != NULL)
			dg_metrics_datagram(srv->metrics, DG_DIR_IN);
		drop(srv, "truncated");
		return;
	}
	dg_server_datagram(srv, (size_t)(l - srv->listeners), (const uint8_t *)buf->base,
	                   (size_t)nread, from);
}

void
dg_server_datagram(dg_server *srv, size_t listener_index, const uint8_t *data, size_t len,
                   const struct sockaddr *from)
{
	dg_map_key key;

	if (listener_index >= srv->n_listeners || data == NULL || from == NULL)
		return;
	listener *l = &srv->listeners[listener_index];
	if (srv->metrics != NULL)
		dg_metrics_datagram(srv->metrics, DG_DIR_IN);
	if (srv->stopping) {
		drop(srv, "stopping");
		return;
	}
	if (from->sa_family != AF_INET && from->sa_family != AF_INET6)
		return;
	/*
	 * Records are routed by address. A record with a Connection ID
	 * (content type 25) will be routed by a CID table first when CIDs
	 * are negotiated; until then it falls through to the address.
	 */
	dg_map_key_addr(&key, from);
	dg_session *pending = dg_map_get(srv->pending, &key);
	dg_session *s = dg_map_get(srv->peers, &key);
	dg_dtls_record rec;
	int framed = dg_dtls_peek(data, len, &rec) == 0;
	if (pending != NULL) {
		/*
		 * A new handshake from the address of a live session: only what
		 * may belong to it reaches it (epoch 0, and the epoch-1
		 * Finished). The live session keeps its application data and
		 * alerts until the new handshake completes, so a replayed
		 * ClientHello or an abandoned re-handshake cannot make it deaf.
		 */
		if (s != NULL && dg_session_get_state(s) == DG_SESSION_ESTABLISHED && framed &&
		    rec.epoch != 0 && rec.content_type != 22)
			dg_session_input(s, data, len, uv_now(srv->loop));
		else
			dg_session_input(pending, data, len, uv_now(srv->loop));
		return;
	}
	if (s != NULL && dg_session_get_state(s) == DG_SESSION_ESTABLISHED &&
	    dg_dtls_is_client_hello(data, len)) {
		/* A new handshake; the old session stays until this one completes. */
		listen_datagram(l, data, len, from);
		return;
	}
	if (s != NULL) {
		dg_session_input(s, data, len, uv_now(srv->loop));
		return;
	}
	listen_datagram(l, data, len, from);
}

static void
on_established(void *owner, dg_session *s)
{
	dg_server *srv = owner;
	if (srv->metrics != NULL) {
		dg_metrics_sessions_add(srv->metrics, dg_session_auth(s), 1);
		dg_metrics_handshake(srv->metrics, dg_session_auth(s), 1);
		dg_metrics_handshake_seconds(
		        srv->metrics,
		        (double)(uv_now(srv->loop) - dg_session_created_ms(s)) / 1000.0);
	}
	dg_map_key key;
	void *old = NULL;

	handshake_ended(srv, s);
	dg_map_key_addr(&key, dg_session_peer(s));
	if (dg_map_get(srv->pending, &key) == s) {
		dg_map_del(srv->pending, &key);
		dg_session *prev = dg_map_get(srv->peers, &key);
		if (prev != NULL)
			dg_session_close(prev, "replaced by a new handshake from the same address",
			                 0);
		if (dg_map_put(srv->peers, &key, s, NULL) != 0) {
			dg_session_close(s, "out of memory", 1);
			return;
		}
	}
	dg_map_key_u64(&key, (uint64_t)dg_session_device_id(s));
	if (dg_map_put(srv->devices, &key, s, &old) != 0) {
		dg_session_close(s, "out of memory", 1);
		return;
	}
	if (old != NULL && old != s)
		dg_session_close(old, "replaced by a new session of the same device", 1);
}

static void
on_closed(void *owner, dg_session *s, int was_established)
{
	dg_server *srv = owner;
	if (was_established && srv->metrics != NULL)
		dg_metrics_sessions_add(srv->metrics, dg_session_auth(s), -1);
	dg_map_key key;

	if (!was_established)
		handshake_ended(srv, s);
	dg_map_key_addr(&key, dg_session_peer(s));
	if (dg_map_get(srv->peers, &key) == s)
		dg_map_del(srv->peers, &key);
	if (dg_map_get(srv->pending, &key) == s)
		dg_map_del(srv->pending, &key);
	if (dg_session_device_id(s) >= 0) {
		dg_map_key_u64(&key, (uint64_t)dg_session_device_id(s));
		if (dg_map_get(srv->devices, &key) == s)
			dg_map_del(srv->devices, &key);
	}
	dg_map_key_u64(&key, dg_session_id(s));
	if (dg_map_get(srv->by_id, &key) == s)
		dg_map_del(srv->by_id, &key);
	if (srv->n_graveyard == srv->cap_graveyard) {
		size_t cap = srv->cap_graveyard ? srv->cap_graveyard * 2 : 64;
		dg_session **g = realloc(srv->graveyard, cap * sizeof(*g));
		if (g == NULL) {
			/* Leak rather than free what a caller up the stack may still use. */
			dg_log(DG_LOG_ERROR, "server.error", "out of memory; a session leaks");
			return;
		}
		srv->graveyard = g;
		srv->cap_graveyard = cap;
	}
	srv->graveyard[srv->n_graveyard++] = s;
}

/* Runs on the writer thread: hand the result to the loop. */
static void
provision_done(void *arg, const dg_provision_result *res)
{
	prov_req *req = arg;
	dg_server *srv = req->srv;
	prov_done *d = calloc(1, sizeof(*d));
	if (d != NULL) {
		d->session_id = req->session_id;
		d->res = *res;
		pthread_mutex_lock(&srv->prov_mu);
		d->next = srv->prov_head;
		srv->prov_head = d;
		pthread_mutex_unlock(&srv->prov_mu);
	}
	free(req);
	uv_async_send(&srv->prov_async);
}

static void
on_provision(void *owner, dg_session *s, int64_t project_id, const char *cert_id)
{
	dg_server *srv = owner;
	prov_req *req = calloc(1, sizeof(*req));
	int rc = -ENOMEM;

	if (req != NULL) {
		req->srv = srv;
		req->session_id = dg_session_id(s);
		rc = dg_store_provision_async(srv->store, project_id, cert_id, provision_done, req);
		if (rc != 0)
			free(req);
	}
	if (rc != 0) {
		dg_provision_result res = {.rc = rc};
		dg_session_provisioned(s, &res, uv_now(srv->loop));
	}
}

/* A commit changed a device's state: its session notifies its observers. */
static void
state_changed(void *owner, int64_t device_id, const char *path)
{
	dg_server *srv = owner;
	dg_map_key key;
	dg_map_key_u64(&key, (uint64_t)device_id);
	dg_session *s = dg_map_get(srv->devices, &key);
	if (s != NULL)
		dg_session_state_changed(s, path, uv_now(srv->loop));
}

static int
job_run(sqlite3 *db, void *arg)
{
	dg_deferred *d = arg;
	return d->run(db, d->arg);
}

/* Runs on the writer thread, after the commit: hand the request back to the loop. */
static void
job_done(void *arg, int rc)
{
	dg_deferred *d = arg;
	dg_server *srv = d->owner;
	d->rc = rc;
	pthread_mutex_lock(&srv->prov_mu);
	d->next = srv->done_head;
	srv->done_head = d;
	pthread_mutex_unlock(&srv->prov_mu);
	uv_async_send(&srv->prov_async);
}

static int
on_submit(void *owner, dg_deferred *d)
{
	dg_server *srv = owner;
	d->owner = srv;
	return dg_store_job(srv->store, job_run, job_done, d);
}

/* Answers the deferred requests whose commits finished, oldest first, then notifies. */
static void
drain_deferred(dg_server *srv, dg_deferred *list)
{
	dg_deferred *rev = NULL;
	while (list != NULL) {
		dg_deferred *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	while (rev != NULL) {
		dg_deferred *next = rev->next;
		dg_map_key key;
		int64_t dev = -1;
		char *path = NULL;
		dg_map_key_u64(&key, rev->session_id);
		if (rev->rc == 0 && rev->notify_device >= 0 &&
		    (rev->changed == NULL || *rev->changed)) {
			dev = rev->notify_device;
			path = rev->notify_path;
			rev->notify_path = NULL;
		}
		dg_session_deferred_done(dg_map_get(srv->by_id, &key), rev, uv_now(srv->loop));
		if (dev >= 0)
			state_changed(srv, dev, path != NULL ? path : "");
		free(path);
		rev = next;
	}
}

static void
changes_cb(void *arg, int64_t device_id, const char *path)
{
	state_changed(arg, device_id, path);
}

/* The CLI changed some state: notify the observers of it. */
static void
changes_poll_cb(uv_timer_t *t)
{
	dg_server *srv = t->data;
	srv->changes_seen = dg_data_changes_since(srv->store, srv->changes_seen, changes_cb, srv);
}

static void
prov_async_cb(uv_async_t *h)
{
	dg_server *srv = h->data;
	prov_done *list, *rev = NULL;
	dg_deferred *done;

	pthread_mutex_lock(&srv->prov_mu);
	list = srv->prov_head;
	srv->prov_head = NULL;
	done = srv->done_head;
	srv->done_head = NULL;
	pthread_mutex_unlock(&srv->prov_mu);
	drain_deferred(srv, done);
	/* The list was built newest first; answer in arrival order. */
	while (list != NULL) {
		prov_done *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	while (rev != NULL) {
		prov_done *next = rev->next;
		dg_map_key key;
		dg_map_key_u64(&key, rev->session_id);
		dg_session *s = dg_map_get(srv->by_id, &key);
		if (s != NULL)
			dg_session_provisioned(s, &rev->res, uv_now(srv->loop));
		free(rev);
		rev = next;
	}
}

static void
on_refused(void *owner, dg_session *s, const char *reason)
{
	dg_server *srv = owner;
	if (srv->metrics != NULL) {
		dg_metrics_handshake(srv->metrics, dg_session_auth(s), 0);
		dg_metrics_handshake_failure(srv->metrics, reason);
	}
	for (size_t i = 0; i < srv->n_refusals; i++) {
		if (strcmp(srv->refusals[i].reason, reason) == 0) {
			srv->refusals[i].count++;
			return;
		}
	}
	if (srv->n_refusals == MAX_REASONS)
		return;
	srv->refusals[srv->n_refusals].reason = strdup(reason);
	if (srv->refusals[srv->n_refusals].reason != NULL)
		srv->refusals[srv->n_refusals++].count = 1;
}

/* Frees closed sessions; called where no callback is using them. */
static void
reap(dg_server *srv)
{
	for (size_t i = 0; i < srv->n_graveyard; i++)
		dg_session_free(srv->graveyard[i]);
	srv->n_graveyard = 0;
}

static void
reap_cb(uv_check_t *h)
{
	reap(h->data);
}

static void
tx_flush_cb(uv_prepare_t *h)
{
	dg_server *srv = h->data;
	dg_udpio_flush(srv->env.tx);
}

static void
fire_cb(dg_wheel_entry *e, void *arg)
{
	dg_server *srv = arg;
	dg_session_timer(e, uv_now(srv->loop));
}

static void
tick_cb(uv_timer_t *t)
{
	dg_server *srv = t->data;
	uint64_t now = uv_now(srv->loop);

	dg_wheel_advance(&srv->wheel, now, fire_cb, srv);
	if (now - srv->cookie_rotated_ms >= COOKIE_ROTATE_MS)
		rotate_cookie_secret(srv, now);
}

typedef struct collect {
	dg_session **v;
	size_t n, cap;
} collect;

static void
collect_cb(void *v, void *arg)
{
	collect *c = arg;
	if (c->n < c->cap)
		c->v[c->n++] = v;
}

/* Closes every session (with close_notify to established ones). */
static void
close_all(dg_server *srv, const char *reason)
{
	collect c = {0};
	c.cap = dg_map_count(srv->peers) + dg_map_count(srv->pending);
	if (c.cap == 0)
		return;
	c.v = calloc(c.cap, sizeof(*c.v));
	if (c.v == NULL)
		return;
	dg_map_each(srv->peers, collect_cb, &c);
	dg_map_each(srv->pending, collect_cb, &c);
	for (size_t i = 0; i < c.n; i++)
		dg_session_close(c.v[i], reason, 1);
	free(c.v);
}

static void
shutdown_server(dg_server *srv, int signum)
{
	if (srv->stopping) {
		dg_log(DG_LOG_WARN, "server.exit", "second signal %d: exiting at once", signum);
		_exit(0);
	}
	srv->stopping = 1;
	sd_notify(0, "STOPPING=1");
	dg_log(DG_LOG_INFO, "server.stopping", "signal %d: closing %zu sessions", signum,
	       dg_map_count(srv->peers) + dg_map_count(srv->pending));
	/*
	 * Wait for the writer's queue, then answer what it finished while the
	 * sessions are still open, and only then close them: every write that
	 * is on disk is acknowledged before close_notify, so no device sends it
	 * again. (New datagrams are dropped from here on: srv->stopping.) No
	 * completion arrives after the handles below are closed. Twice: a
	 * device provisioned by the first pass may have written what it sent
	 * meanwhile; the second pass provisions nothing new.
	 */
	for (int pass = 0; pass < 2; pass++) {
		if (dg_store_flush_timeout(srv->store, srv->cfg->limits.shutdown_timeout_s *
		                                               1000) == -ETIMEDOUT) {
			/* Nothing unacknowledged is lost: replies wait for their commit. */
			dg_log(DG_LOG_ERROR, "server.exit",
			       "the store did not flush within limits.shutdown_timeout_s; exiting");
			_exit(0);
		}
		prov_async_cb(&srv->prov_async);
	}
	close_all(srv, "server shutting down");
	reap(srv);
	/* The close_notify alerts, before the sockets close. */
	dg_udpio_flush(srv->env.tx);
	uv_close((uv_handle_t *)&srv->tx_flush, NULL);
	for (size_t i = 0; i < srv->n_listeners; i++) {
		uv_udp_recv_stop(&srv->listeners[i].udp);
		uv_close((uv_handle_t *)&srv->listeners[i].udp, NULL);
	}
	uv_close((uv_handle_t *)&srv->tick, NULL);
	uv_close((uv_handle_t *)&srv->reaper, NULL);
	uv_close((uv_handle_t *)&srv->sigterm, NULL);
	uv_close((uv_handle_t *)&srv->sigint, NULL);
	uv_close((uv_handle_t *)&srv->sighup, NULL);
	uv_close((uv_handle_t *)&srv->prov_async, NULL);
	uv_close((uv_handle_t *)&srv->debounce, NULL);
	uv_close((uv_handle_t *)&srv->serial_poll, NULL);
	uv_close((uv_handle_t *)&srv->changes_poll, NULL);
	uv_close((uv_handle_t *)&srv->watchdog, NULL);
	unwatch(srv);
	for (size_t i = 0; i < srv->n_refusals; i++)
		dg_log(DG_LOG_INFO, "server.refusals", "%llu handshakes refused: %s",
		       (unsigned long long)srv->refusals[i].count, srv->refusals[i].reason);
}

/*
 * Swaps in a new snapshot and closes every session whose credentials it no
 * longer holds: a CA removed, a certificate revoked, a device blocked, a
 * project disabled, a PSK credential removed.
 */
static void
swap_registry(dg_server *srv, dg_registry *reg)
{
	collect c = {0};
	c.cap = dg_map_count(srv->by_id);
	c.v = c.cap ? calloc(c.cap, sizeof(*c.v)) : NULL;
	dg_registry_unref(srv->reg);
	srv->reg = reg;
	if (c.v == NULL)
		return;
	dg_map_each(srv->by_id, collect_cb, &c);
	for (size_t i = 0; i < c.n; i++) {
		const char *why = dg_session_revalidate(c.v[i], reg);
		if (why != NULL) {
			char reason[128];
			snprintf(reason, sizeof(reason), "credentials revoked: %s", why);
			dg_session_close(c.v[i], reason, 1);
		}
	}
	free(c.v);
}

/*
 * Re-reads the projects directory into the store (full) or only rebuilds
 * the snapshot from the store (after a CLI change), then swaps it in.
 */
/* Logs a setting SIGHUP cannot change; returns 1 when it differs. */
static int
needs_restart(const char *key, int differs)
{
	if (differs)
		dg_log(DG_LOG_WARN, "reload.restart_needed",
		       "%s changed; it takes effect at the next restart", key);
	return differs;
}

static int
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * SIGHUP: reads devgate.json again. A bad file keeps the running
 * configuration. Log settings and limits take effect now; listen
 * addresses, the database, the server certificate and metrics_listen are
 * logged as needing a restart. Returns 0 or a negative errno.
 */
static int
reload_config(dg_server *srv)
{
	char err[512];
	dg_config *cfg = NULL;
	const dg_config *old = srv->cfg;
	int rc = dg_config_load(old->path, &cfg, err, sizeof(err));

	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "reload.failed", "%s; keeping the running configuration", err);
		return rc;
	}
	int differs = cfg->n_listen != old->n_listen;
	for (size_t i = 0; !differs && i < cfg->n_listen; i++)
		differs = strcmp(cfg->listen[i].text, old->listen[i].text) != 0;
	needs_restart("listen", differs);
	needs_restart("database", !same_str(cfg->database, old->database));
	needs_restart("server_cert", !same_str(cfg->server_cert, old->server_cert) ||
	                                     !same_str(cfg->server_key, old->server_key));
	needs_restart("metrics_listen",
	              cfg->metrics_enabled != old->metrics_enabled ||
	                      strcmp(cfg->metrics_listen.text, old->metrics_listen.text) != 0);
	dg_log_init(cfg->log_level, cfg->log_format);
	/* Sessions read limits through the env on every use: they follow at once. */
	dg_store_set_max_queue(srv->store, cfg->limits.max_write_queue);
	srv->cfg = cfg;
	srv->env.cfg = cfg;
	dg_config_free(srv->owned_cfg);
	srv->owned_cfg = cfg;
	return 0;
}

static void
reload(dg_server *srv, int full, const char *why, int config_ok)
{
	int n_errors = 0, rc = 0;
	dg_registry *reg = NULL;

	if (full)
		rc = dg_confdir_import(srv->cfg->projects_dir, srv->store, &n_errors);
	if (rc == 0 || rc == -ENOENT)
		rc = dg_registry_build(srv->store, &reg);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "reload.failed", "%s: keeping the running configuration: %s",
		       why, strerror(-rc));
		if (srv->metrics != NULL)
			dg_metrics_reload(srv->metrics, 0);
		return;
	}
	if (srv->metrics != NULL)
		dg_metrics_reload(srv->metrics, config_ok);
	swap_registry(srv, reg);
	if (full)
		rewatch(srv);
	dg_log(DG_LOG_INFO, "reload.done", "%s: %zu PSK credentials, %d files skipped", why,
	       dg_registry_psk_count(reg), n_errors);
}

static void
debounce_cb(uv_timer_t *t)
{
	reload(t->data, 1, "projects directory changed", 1);
}

static void
fs_event_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	watch *w = dg_container_of(h, watch, h);
	(void)events;
	(void)status;
	/* The parent of projects_dir may hold the database: only projects_dir itself counts. */
	if (w->only[0] != '\0' && (filename == NULL || strcmp(filename, w->only) != 0))
		return;
	/* Restarted by every event: the reload runs once things are quiet. */
	uv_timer_start(&w->srv->debounce, debounce_cb, RELOAD_DEBOUNCE_MS, 0);
}

static void
watch_close_cb(uv_handle_t *h)
{
	free(dg_container_of((uv_fs_event_t *)(void *)h, watch, h));
}

static void
add_watch(dg_server *srv, const char *path)
{
	watch *w;
	if (srv->n_watches == MAX_WATCHES)
		return;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return;
	w->srv = srv;
	if (uv_fs_event_init(srv->loop, &w->h) != 0) {
		free(w);
		return;
	}
	if (uv_fs_event_start(&w->h, fs_event_cb, path, 0) != 0) {
		uv_close((uv_handle_t *)&w->h, watch_close_cb);
		return;
	}
	srv->watches[srv->n_watches++] = w;
}

static void
unwatch(dg_server *srv)
{
	for (size_t i = 0; i < srv->n_watches; i++)
		uv_close((uv_handle_t *)&srv->watches[i]->h, watch_close_cb);
	srv->n_watches = 0;
}

/*
 * Watches projects_dir, each project directory and its cas/ and crls/:
 * inotify is not recursive, so each directory gets its own watch, made
 * again after every reload.
 */
static void
rewatch(dg_server *srv)
{
	const char *dir = srv->cfg->projects_dir;
	size_t before = srv->n_watches;
	uv_dirent_t de;
	uv_fs_t req;

	unwatch(srv);
	add_watch(srv, dir);
	/*
	 * And its parent, for projects_dir itself: removed (rm -rf) and made
	 * again, or replaced by a rename, it is watched anew on the reload
	 * that follows, instead of never again.
	 */
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dir);
	for (size_t n = strlen(parent); n > 1 && parent[n - 1] == '/'; n--)
		parent[n - 1] = '\0';
	char *slash = strrchr(parent, '/');
	const char *base = slash != NULL ? slash + 1 : parent;
	if (*base != '\0' && strlen(base) < sizeof(srv->watches[0]->only)) {
		char name[256];
		memcpy(name, base, strlen(base) + 1); /* Its length was checked above. */
		if (slash == NULL)
			snprintf(parent, sizeof(parent), ".");
		else if (slash == parent)
			parent[1] = '\0';
		else
			*slash = '\0';
		size_t had = srv->n_watches;
		add_watch(srv, parent);
		if (srv->n_watches > had)
			snprintf(srv->watches[had]->only, sizeof(srv->watches[had]->only), "%s",
			         name);
	}
	if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0) {
		uv_fs_req_cleanup(&req);
		return;
	}
	while (uv_fs_scandir_next(&req, &de) != UV_EOF) {
		char path[4096];
		struct stat sb;
		if (de.name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de.name);
		if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
			continue;
		add_watch(srv, path);
		snprintf(path, sizeof(path), "%s/%s/cas", dir, de.name);
		if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
			add_watch(srv, path);
		snprintf(path, sizeof(path), "%s/%s/crls", dir, de.name);
		if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
			add_watch(srv, path);
	}
	uv_fs_req_cleanup(&req);
	/*
	 * A directory that appeared since the last reload (a new project, its
	 * cas/) may have been filled before its watch existed: read once more.
	 */
	if (before != 0 && srv->n_watches != before)
		uv_timer_start(&srv->debounce, debounce_cb, RELOAD_DEBOUNCE_MS, 0);
}

/* The CLI changed the store (a block, a PSK added or removed): rebuild the snapshot. */
static void
serial_poll_cb(uv_timer_t *t)
{
	dg_server *srv = t->data;
	int64_t serial = dg_store_registry_serial(srv->store);
	if (serial >= 0 && serial != dg_registry_serial(srv->reg))
		reload(srv, 0, "store changed", 1);
}

/* systemd's watchdog: a ping from the loop at half the interval proves the loop turns. */
static void
watchdog_cb(uv_timer_t *t)
{
	(void)t;
	sd_notify(0, "WATCHDOG=1");
}

static void
signal_cb(uv_signal_t *h, int signum)
{
	dg_server *srv = h->data;
	if (signum == SIGHUP) {
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		           (unsigned long long)uv_hrtime() / 1000);
		int config_ok = reload_config(srv) == 0;
		reload(srv, 1, "SIGHUP", config_ok);
		sd_notify(0, "READY=1");
	} else
		shutdown_server(srv, signum);
}

static int
bind_listener(dg_server *srv, listener *l, const dg_listen_addr *a, char *err, size_t errlen)
{
	int rc;

	l->srv = srv;
	rc = uv_udp_init_ex(srv->loop, &l->udp, a->addr.ss_family | UV_UDP_RECVMMSG);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s: %s", a->text, uv_strerror(rc));
		return rc;
	}
	/* Counted from here on, so that a failure below closes the handle. */
	srv->n_listeners++;
	l->udp.data = l;
	l->io.udp = &l->udp;
	l->io.tx = srv->env.tx;
	rc = uv_udp_bind(&l->udp, (const struct sockaddr *)&a->addr,
	                 a->addr.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s: %s", a->text, uv_strerror(rc));
		return rc;
	}
	rc = listener_new_ssl(l);
	if (rc != 0)
		snprintf(err, errlen, "%s: cannot make a listening DTLS object", a->text);
	return rc;
}

int
dg_server_new(uv_loop_t *loop, const dg_config *cfg, dg_store *store, dg_registry *reg,
              const char *cert_pem, const char *key_pem, dg_server **out, char *err, size_t errlen)
{
	dg_server *srv = calloc(1, sizeof(*srv));
	int rc;

	if (srv == NULL)
		return -ENOMEM;
	srv->loop = loop;
	srv->cfg = cfg;
	srv->store = store;
	srv->reg = reg;
	srv->env = (dg_session_env){
	        .cfg = cfg,
	        .wheel = &srv->wheel,
	        .store = store,
	        .owner = srv,
	        .provision = on_provision,
	        .refused = on_refused,
	        .submit = on_submit,
	        .state_changed = state_changed,
	        .established = on_established,
	        .closed = on_closed,
	};
	pthread_mutex_init(&srv->prov_mu, NULL);
	dg_wheel_init(&srv->wheel, uv_now(loop));
	rotate_cookie_secret(srv, uv_now(loop));
	if (getrandom(srv->psk_secret, sizeof(srv->psk_secret), 0) !=
	    (ssize_t)sizeof(srv->psk_secret)) {
		snprintf(err, errlen, "cannot read random bytes for the PSK secret");
		rc = -EIO;
		goto fail;
	}
	srv->env.psk_secret = srv->psk_secret;
	if (dg_map_new(&srv->peers) != 0 || dg_map_new(&srv->pending) != 0 ||
	    dg_map_new(&srv->devices) != 0 || dg_map_new(&srv->by_id) != 0 ||
	    dg_map_new(&srv->sources) != 0) {
		rc = -ENOMEM;
		goto fail;
	}
	/* The loop's batch of datagrams to send, flushed before the loop waits. */
	if (dg_udpio_new(&srv->env.tx) != 0) {
		rc = -ENOMEM;
		goto fail;
	}
	uv_prepare_init(loop, &srv->tx_flush);
	srv->tx_flush.data = srv;
	/* Unreferenced: it never keeps the loop alive on its own. */
	uv_unref((uv_handle_t *)&srv->tx_flush);
	/* The loop's cache of accepted certificate chains (chaincache.h). */
	if (dg_chaincache_new(DG_CHAINCACHE_SLOTS, &srv->env.chains) != 0) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = dg_dtls_ctx_new(cert_pem, key_pem, dg_session_psk_lookup, dg_session_verify_cert,
	                     &srv->ctx, err, errlen);
	if (rc != 0)
		goto fail;
	for (size_t i = 0; i < cfg->n_listen; i++) {
		rc = bind_listener(srv, &srv->listeners[i], &cfg->listen[i], err, errlen);
		if (rc != 0)
			goto fail;
	}
	uv_timer_init(loop, &srv->tick);
	srv->tick.data = srv;
	uv_check_init(loop, &srv->reaper);
	srv->reaper.data = srv;
	uv_signal_init(loop, &srv->sigterm);
	uv_signal_init(loop, &srv->sigint);
	uv_signal_init(loop, &srv->sighup);
	srv->sigterm.data = srv->sigint.data = srv->sighup.data = srv;
	uv_async_init(loop, &srv->prov_async, prov_async_cb);
	srv->prov_async.data = srv;
	uv_timer_init(loop, &srv->debounce);
	srv->debounce.data = srv;
	uv_timer_init(loop, &srv->serial_poll);
	srv->serial_poll.data = srv;
	uv_timer_init(loop, &srv->watchdog);
	srv->watchdog.data = srv;
	uv_timer_init(loop, &srv->changes_poll);
	srv->changes_poll.data = srv;
	srv->changes_seen = dg_data_changes_max(store);
	*out = srv;
	return 0;
fail:
	/* Close what was bound; the caller runs the loop once to finish the closes. */
	if (srv->env.tx != NULL)
		uv_close((uv_handle_t *)&srv->tx_flush, NULL);
	for (size_t i = 0; i < srv->n_listeners; i++) {
		if (!uv_is_closing((uv_handle_t *)&srv->listeners[i].udp))
			uv_close((uv_handle_t *)&srv->listeners[i].udp, NULL);
	}
	uv_run(loop, UV_RUN_DEFAULT);
	srv->n_listeners = 0;
	srv->reg = NULL; /* Still the caller's on failure. */
	dg_server_free(srv);
	return rc;
}

void
dg_server_set_metrics(dg_server *srv, dg_metrics *m)
{
	srv->metrics = m;
	srv->env.metrics = m;
	for (size_t i = 0; i < srv->n_listeners; i++)
		srv->listeners[i].io.metrics = m;
}

int
dg_server_start(dg_server *srv)
{
	int rc;
	for (size_t i = 0; i < srv->n_listeners; i++) {
		rc = uv_udp_recv_start(&srv->listeners[i].udp, alloc_cb, recv_cb);
		if (rc != 0)
			return rc;
	}
	uv_timer_start(&srv->tick, tick_cb, DG_WHEEL_TICK_MS, DG_WHEEL_TICK_MS);
	uv_check_start(&srv->reaper, reap_cb);
	uv_prepare_start(&srv->tx_flush, tx_flush_cb);
	uv_signal_start(&srv->sigterm, signal_cb, SIGTERM);
	uv_signal_start(&srv->sigint, signal_cb, SIGINT);
	uv_signal_start(&srv->sighup, signal_cb, SIGHUP);
	uv_timer_start(&srv->serial_poll, serial_poll_cb, SERIAL_POLL_MS, SERIAL_POLL_MS);
	uv_timer_start(&srv->changes_poll, changes_poll_cb, CHANGES_POLL_MS, CHANGES_POLL_MS);
	uint64_t wd_usec = 0;
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec >= 2000)
		uv_timer_start(&srv->watchdog, watchdog_cb, wd_usec / 2000, wd_usec / 2000);
	rewatch(srv);
	for (size_t i = 0; i < srv->cfg->n_listen; i++)
		dg_log(DG_LOG_INFO, "server.listening", "udp %s, DTLS 1.2, %zu PSK credentials",
		       srv->cfg->listen[i].text, dg_registry_psk_count(srv->reg));
	sd_notifyf(0, "READY=1\nSTATUS=serving %zu addresses", srv->cfg->n_listen);
	return 0;
}

void
dg_server_free(dg_server *srv)
{
	if (srv == NULL)
		return;
	reap(srv);
	free(srv->graveyard);
	for (size_t i = 0; i < DG_CONFIG_MAX_LISTEN; i++)
		if (srv->listeners[i].ssl != NULL)
			wolfSSL_free(srv->listeners[i].ssl);
	if (srv->ctx != NULL)
		wolfSSL_CTX_free(srv->ctx);
	dg_chaincache_free(srv->env.chains);
	dg_udpio_free(srv->env.tx);
	dg_map_free(srv->peers);
	dg_map_free(srv->pending);
	dg_map_free(srv->devices);
	dg_map_free(srv->by_id);
	dg_map_free(srv->sources);
	free(srv->hs_queue);
	explicit_bzero(srv->psk_secret, sizeof(srv->psk_secret));
	dg_config_free(srv->owned_cfg);
	for (size_t i = 0; i < srv->n_refusals; i++)
		free(srv->refusals[i].reason);
	while (srv->prov_head != NULL) {
		prov_done *next = srv->prov_head->next;
		free(srv->prov_head);
		srv->prov_head = next;
	}
	while (srv->done_head != NULL) {
		dg_deferred *next = srv->done_head->next;
		dg_deferred_free(srv->done_head);
		srv->done_head = next;
	}
	pthread_mutex_destroy(&srv->prov_mu);
	dg_registry_unref(srv->reg);
	explicit_bzero(srv->cookie_secret, sizeof(srv->cookie_secret));
	free(srv);
}
