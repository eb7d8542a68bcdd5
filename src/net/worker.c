/*
 * A worker loop. A datagram's path, top to bottom: the socket's receive
 * callback -> dg_worker_datagram() -> the peer table (by address; later
 * by Connection ID) -> the session's input, or the listener's cookie
 * exchange -> a new session. What a session reports back (established,
 * closed, a job to queue) lands here, and so do the writer's completions
 * and other threads' messages, through one uv_async.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "devgate/chaincache.h"
#include "devgate/listener.h"
#include "devgate/log.h"
#include "devgate/map.h"
#include "devgate/metrics.h"
#include "devgate/statecache.h"
#include "devgate/udpio.h"
#include "devgate/wheel.h"
#include "devgate/rpc.h"
#include "devgate/worker.h"

/*
 * Received datagrams: libuv reads up to RX_BATCH of them in one recvmmsg
 * (UV_UDP_RECVMMSG), each into its own 64 KiB chunk of the worker's
 * buffer, and hands them over one by one. Pages of chunks no datagram
 * reached are never touched, so never resident.
 */
#define RX_CHUNK         65536
#define RX_BATCH         20
#define RX_BUF_SIZE      (RX_CHUNK * RX_BATCH)
#define COOKIE_ROTATE_MS (5 * 60 * 1000)
/* How often a repeated warning about refused handshakes may be logged. */
#define WARN_INTERVAL_MS 10000
#define MAX_REASONS      64
/* How many handshake queue entries one eviction looks at, at most. */
#define EVICT_SCAN 64

/* A provisioning result on its way from the writer thread to the loop. */
typedef struct prov_done {
	struct prov_done *next;
	uint64_t session_id;
	dg_provision_result res;
} prov_done;

typedef struct prov_req {
	dg_worker *w;
	uint64_t session_id;
} prov_req;

enum msg_kind {
	MSG_DATAGRAM = 1,
	MSG_REGISTRY,
	MSG_CONFIG,
	MSG_CLOSE,
	MSG_STATE,
	MSG_RESOURCE, /* Settings or the OTA manifest of a device, or of a project's devices. */
	MSG_RPC,      /* An RPC call for a device's session. */
	MSG_EVICT, /* Every handshake slot is taken: close a stalled handshake if there is one. */
	MSG_STOP,
};

/* A message from another thread. */
typedef struct msg {
	struct msg *next;
	enum msg_kind kind;
	uint64_t session_id;  /* MSG_CLOSE */
	int64_t device_id;    /* MSG_STATE */
	dg_registry *reg;     /* MSG_REGISTRY: a reference of the message's. */
	const dg_config *cfg; /* MSG_CONFIG */
	size_t listener;      /* MSG_DATAGRAM */
	struct sockaddr_storage from;
	size_t len;
	size_t doc_off; /* MSG_STATE: where the document after the change starts in data, or 0. */
	int res_kind;   /* MSG_RESOURCE: enum dg_obs_kind. */
	int64_t project_id;  /* MSG_RESOURCE */
	int64_t row_id;      /* MSG_RPC: the call's row; data holds its id, then its text. */
	int64_t deadline_ms; /* MSG_RPC: wall clock. */
	uint8_t data[];      /* MSG_DATAGRAM: the datagram; MSG_CLOSE, MSG_STATE: a string. */
} msg;

struct dg_worker {
	dg_worker_shared *sh;
	size_t index;
	uv_loop_t own_loop;
	uv_loop_t *loop;
	int threaded; /* On a thread and loop of its own. */
	int thread_started;
	pthread_t thread;
	const dg_config *cfg;
	dg_registry *reg;
	dg_listener *listeners[DG_CONFIG_MAX_LISTEN];
	struct sockaddr_storage bound[DG_CONFIG_MAX_LISTEN];
	size_t n_listeners;
	dg_session_env env;
	dg_map *peers;   /* Address -> session: what an address's records go to. */
	dg_map *pending; /* Address -> a handshake that will replace peers' entry. */
	dg_map *devices; /* Device ID -> its one established session, if on this worker. */
	dg_map *by_id;   /* Session ID -> session, for results that come back later. */
	/* Filled by other threads under mu, drained on the loop. */
	uv_async_t wake;
	pthread_mutex_t mu;
	int closed; /* wake is closed: nothing is sent to it any more. */
	prov_done *prov_head;
	dg_deferred *done_head;
	msg *inbox_head, *inbox_tail;
	struct {
		char *reason;
		uint64_t count;
	} refusals[MAX_REASONS];
	size_t n_refusals;
	dg_session **graveyard;
	size_t n_graveyard, cap_graveyard;
	size_t n_handshakes; /* This worker's half-open handshakes. */
	/* Session IDs of handshakes, oldest first: who gives way when all slots are taken. */
	uint64_t *hs_queue;
	size_t hs_head, hs_len, hs_cap;
	dg_wheel wheel;
	uv_timer_t tick;
	uv_check_t reaper;
	uv_prepare_t tx_flush; /* Sends what the pass queued (env.tx) before the loop waits. */
	uint8_t cookie_secret[DG_LISTENER_SECRET_LEN];
	uint64_t cookie_rotated_ms;
	uint64_t last_full_warning_ms;
	uint64_t refused_full; /* ClientHellos dropped at a limit since the last warning. */
	int stopping;
	uint8_t rx[RX_BUF_SIZE];
};

/* Session IDs are unique across workers, in the order sessions were made. */
static uint64_t
next_session_id(dg_worker_shared *sh)
{
	return atomic_fetch_add_explicit(&sh->next_session_id, 1, memory_order_relaxed) + 1;
}

static dg_session *admit_cb(void *arg, WOLFSSL *ssl, uv_udp_t *udp, const struct sockaddr *from);
static void notify_device(dg_worker *w, int64_t device_id, const char *path, const char *doc);

static void
drop(dg_worker *w, const char *reason)
{
	if (w->sh->metrics != NULL)
		dg_metrics_dropped(w->sh->metrics, reason);
}

static void
warn_full(dg_worker *w, const char *what)
{
	uint64_t now = uv_now(w->loop);
	w->refused_full++;
	if (now - w->last_full_warning_ms < WARN_INTERVAL_MS && w->last_full_warning_ms != 0)
		return;
	dg_log(DG_LOG_WARN, "handshake.refused",
	       "%s reached; %llu ClientHellos dropped (worker %zu)", what,
	       (unsigned long long)w->refused_full, w->index);
	w->refused_full = 0;
	w->last_full_warning_ms = now;
}

static void
rotate_cookie_secret(dg_worker *w, uint64_t now)
{
	if (getrandom(w->cookie_secret, sizeof(w->cookie_secret), 0) !=
	    (ssize_t)sizeof(w->cookie_secret))
		return; /* Keep the old secret rather than a weak one. */
	w->cookie_rotated_ms = now;
	for (size_t i = 0; i < w->n_listeners; i++)
		dg_listener_set_secret(w->listeners[i], w->cookie_secret);
}

/* Appends a new handshake's session ID to the queue of handshakes, oldest first. */
static void
hs_queue_push(dg_worker *w, uint64_t id)
{
	if (w->hs_head + w->hs_len == w->hs_cap) {
		if (w->hs_head > 0) {
			memmove(w->hs_queue, w->hs_queue + w->hs_head,
			        w->hs_len * sizeof(*w->hs_queue));
			w->hs_head = 0;
		}
		if (w->hs_len == w->hs_cap) {
			size_t cap = w->hs_cap ? w->hs_cap * 2 : 256;
			uint64_t *q = realloc(w->hs_queue, cap * sizeof(*q));
			if (q == NULL)
				return; /* It cannot give way then; everything else holds. */
			w->hs_queue = q;
			w->hs_cap = cap;
		}
	}
	w->hs_queue[w->hs_head + w->hs_len++] = id;
}

static dg_session *
by_id(dg_worker *w, uint64_t id)
{
	dg_map_key key;
	dg_map_key_u64(&key, id);
	return dg_map_get(w->by_id, &key);
}

/* The session `id` names if it is still a handshake, else NULL. */
static dg_session *
handshaking(dg_worker *w, uint64_t id)
{
	dg_session *s = by_id(w, id);
	if (s == NULL || dg_session_get_state(s) != DG_SESSION_HANDSHAKE)
		return NULL;
	return s;
}

/*
 * Every handshake slot is taken: this worker's oldest stalled handshake
 * (see dg_session_stalled) gives way to a newcomer. Returns 1 when one was
 * closed. Entries of handshakes that ended are dropped on the way; live
 * ones that are not stalled go to the back of the queue. At most
 * EVICT_SCAN entries are looked at, so a ClientHello costs O(1) here.
 */
static int
evict_stalled(dg_worker *w)
{
	uint64_t now = uv_now(w->loop);
	for (int i = 0; i < EVICT_SCAN && w->hs_len > 0; i++) {
		uint64_t id = w->hs_queue[w->hs_head++];
		w->hs_len--;
		dg_session *s = handshaking(w, id);
		if (s == NULL)
			continue;
		if (dg_session_stalled(s, now)) {
			dg_session_close(s, "stalled handshake gave way to a new one", 0);
			return 1;
		}
		hs_queue_push(w, id);
	}
	if (w->hs_len == 0)
		w->hs_head = 0;
	return 0;
}

/* Drops queue entries of handshakes that ended, once they outnumber the live ones. */
static void
hs_queue_compact(dg_worker *w)
{
	if (w->hs_len < 2 * w->n_handshakes + 256)
		return;
	size_t n = 0;
	for (size_t i = 0; i < w->hs_len; i++) {
		uint64_t id = w->hs_queue[w->hs_head + i];
		if (handshaking(w, id) != NULL)
			w->hs_queue[n++] = id;
	}
	w->hs_head = 0;
	w->hs_len = n;
}

static msg *msg_new(enum msg_kind kind, size_t extra);
static int post(dg_worker *w, msg *m);

/*
 * When this worker's oldest stalled handshake was made, or 0 when none of
 * the first EVICT_SCAN in its queue has stalled (what evict_stalled()
 * would close).
 */
static uint64_t
oldest_stalled(dg_worker *w, uint64_t now)
{
	for (size_t i = 0; i < EVICT_SCAN && i < w->hs_len; i++) {
		dg_session *s = handshaking(w, w->hs_queue[w->hs_head + i]);
		if (s != NULL && dg_session_stalled(s, now)) {
			uint64_t t = dg_session_created_ms(s);
			return t != 0 ? t : 1;
		}
	}
	return 0;
}

/*
 * Publishes this worker's oldest stalled handshake for the others (0:
 * none), as give_way() reads it. Costs at most EVICT_SCAN lookups.
 */
static void
publish_stalled(dg_worker *w, uint64_t now)
{
	if (w->sh->n_workers > 1)
		atomic_store(&w->sh->stalled_ms[w->index], oldest_stalled(w, now));
}

/*
 * A new handshake is stalled until its client's second flight: publish it
 * at once when nothing here is published (none was, or a newcomer elsewhere
 * took what was), rather than at the next tick. Else every slot could be
 * held by handshakes a tick old on this worker while a newcomer on another
 * is refused, as if none had stalled. O(1).
 */
static void
publish_new(dg_worker *w, const dg_session *s)
{
	uint64_t none = 0, t = dg_session_created_ms(s);
	if (w->sh->n_workers > 1)
		atomic_compare_exchange_strong(&w->sh->stalled_ms[w->index], &none, t != 0 ? t : 1);
}

/*
 * A handshake of this worker ended (established or closed): when it is the
 * one published, publish the next one instead (or none), so that a
 * newcomer elsewhere does not pick a handshake that is gone over one that
 * stalled. O(1) unless it was the published one.
 */
static void
unpublish(dg_worker *w, const dg_session *s)
{
	uint64_t t = dg_session_created_ms(s);
	if (w->sh->n_workers > 1 && atomic_load(&w->sh->stalled_ms[w->index]) == (t != 0 ? t : 1))
		publish_stalled(w, uv_now(w->loop));
}

/*
 * Every handshake slot is taken, on all workers together: the oldest
 * stalled handshake gives way, wherever it is. Here, it is closed at
 * once. On another worker (as it published on its last tick), that
 * worker is asked to close it, and the newcomer takes a slot over the
 * limit meanwhile: each published stalled handshake pays for one such
 * slot only (it is taken by swapping in 0), so the excess is at most one
 * per worker and lasts until the message is handled. Returns 1 when a
 * slot was freed here (ask again), 2 when the newcomer may go over, 0 when
 * nothing stalled.
 */
static int
give_way(dg_worker *w)
{
	dg_worker_shared *sh = w->sh;
	uint64_t mine = oldest_stalled(w, uv_now(w->loop)), theirs = 0;
	size_t k = w->index;

	for (size_t i = 0; i < sh->n_workers; i++) {
		uint64_t t = i == w->index ? 0 : atomic_load(&sh->stalled_ms[i]);
		if (t != 0 && (theirs == 0 || t < theirs)) {
			theirs = t;
			k = i;
		}
	}
	if (mine != 0 && (theirs == 0 || mine <= theirs))
		return evict_stalled(w);
	if (theirs == 0 || !atomic_compare_exchange_strong(&sh->stalled_ms[k], &theirs, 0))
		return 0;
	msg *m = msg_new(MSG_EVICT, 0);
	if (m == NULL || post(sh->workers[k], m) != 0)
		return 0;
	return 2;
}

/*
 * Takes a handshake slot and a session slot for a handshake from `from`
 * (limits shared by every worker). Returns 1 when both were taken.
 */
static int
admitted(dg_worker *w, const struct sockaddr *from)
{
	const dg_limits *lim = &w->cfg->limits;
	const char *limit = NULL;
	int rc = dg_admit_handshake(w->sh->admit, from, lim->max_handshakes_per_source,
	                            lim->max_handshakes, &limit);
	if (rc == -EAGAIN && strcmp(limit, "limits.max_handshakes") == 0) {
		int how = give_way(w);
		if (how != 0)
			rc = dg_admit_handshake(w->sh->admit, from, lim->max_handshakes_per_source,
			                        how == 2 ? UINT32_MAX : lim->max_handshakes,
			                        &limit);
	}
	if (rc == 0 && !dg_admit_session(w->sh->admit, lim->max_sessions)) {
		dg_admit_handshake_end(w->sh->admit, from);
		limit = "limits.max_sessions";
		rc = -EAGAIN;
	}
	if (rc == -EAGAIN)
		warn_full(w, limit);
	if (rc != 0)
		drop(w, "limit");
	return rc == 0;
}

static void
admitted_undo(dg_worker *w, const struct sockaddr *from)
{
	dg_admit_handshake_end(w->sh->admit, from);
	dg_admit_session_end(w->sh->admit);
}

/*
 * The listener verified a ClientHello's cookie: the peer owns its address.
 * Only now does a session exist for it.
 */
static dg_session *
admit_cb(void *arg, WOLFSSL *ssl, uv_udp_t *udp, const struct sockaddr *from)
{
	dg_worker *w = arg;
	dg_session *s = NULL;
	dg_map_key key;
	void *old = NULL;

	if (!admitted(w, from))
		return NULL;
	if (dg_session_new(&w->env, next_session_id(w->sh), ssl, udp, from, w->reg, uv_now(w->loop),
	                   &s) != 0) {
		admitted_undo(w, from);
		return NULL;
	}
	dg_map_key_addr(&key, from);
	dg_map *table = dg_map_get(w->peers, &key) != NULL ? w->pending : w->peers;
	if (dg_map_put(table, &key, s, &old) != 0)
		goto fail;
	dg_map_key_u64(&key, dg_session_id(s));
	if (dg_map_put(w->by_id, &key, s, NULL) != 0) {
		dg_map_key_addr(&key, from);
		dg_map_del(table, &key);
		if (old != NULL)
			dg_map_put(table, &key, old, NULL);
		goto fail;
	}
	if (old != NULL)
		dg_session_close(old, "superseded by a newer handshake from the same address", 0);
	w->n_handshakes++;
	hs_queue_compact(w);
	hs_queue_push(w, dg_session_id(s));
	publish_new(w, s);
	return s;
fail:
	dg_session_discard(s);
	admitted_undo(w, from);
	return NULL;
}

/* A datagram that may start a session: the listener's cookie exchange. */
static void
hello(dg_worker *w, dg_listener *l, const uint8_t *data, size_t len, const struct sockaddr *from)
{
	const char *reason = NULL;
	dg_session *s = NULL;

	if (dg_admit_sessions(w->sh->admit) >= w->cfg->limits.max_sessions) {
		warn_full(w, "limits.max_sessions");
		drop(w, "limit");
		return;
	}
	switch (dg_listener_hello(l, data, len, from, &reason, &s)) {
	case DG_LISTEN_DROPPED:
		drop(w, reason);
		break;
	case DG_LISTEN_ANSWERED:
		break;
	case DG_LISTEN_SESSION:
		/* Let the session see how the ClientHello went and arm its timers. */
		dg_session_input(s, NULL, 0, uv_now(w->loop));
		break;
	}
}

void
dg_worker_datagram(dg_worker *w, size_t listener_index, const uint8_t *data, size_t len,
                   const struct sockaddr *from)
{
	dg_map_key key;

	if (listener_index >= w->n_listeners || data == NULL || from == NULL)
		return;
	dg_listener *l = w->listeners[listener_index];
	if (w->sh->metrics != NULL)
		dg_metrics_datagram(w->sh->metrics, DG_DIR_IN);
	if (w->stopping) {
		drop(w, "stopping");
		return;
	}
	if (from->sa_family != AF_INET && from->sa_family != AF_INET6)
		return;
	/*
	 * Records are routed by address. A record with a Connection ID
	 * (content type 25) will be routed by a CID table first when CIDs
	 * are negotiated: the CID names the worker that issued it, and a
	 * record that reached another worker (a NAT rebinding changed its
	 * 4-tuple) goes there with dg_worker_hand_datagram(). Until then it
	 * falls through to the address.
	 */
	dg_map_key_addr(&key, from);
	dg_session *pending = dg_map_get(w->pending, &key);
	dg_session *s = dg_map_get(w->peers, &key);
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
			dg_session_input(s, data, len, uv_now(w->loop));
		else
			dg_session_input(pending, data, len, uv_now(w->loop));
		return;
	}
	if (s != NULL && dg_session_get_state(s) == DG_SESSION_ESTABLISHED &&
	    dg_dtls_is_client_hello(data, len)) {
		/* A new handshake; the old session stays until this one completes. */
		hello(w, l, data, len, from);
		return;
	}
	if (s != NULL) {
		dg_session_input(s, data, len, uv_now(w->loop));
		return;
	}
	hello(w, l, data, len, from);
}

static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	dg_worker *w = dg_listener_owner(h->data);
	(void)suggested;
	*buf = uv_buf_init((char *)w->rx, sizeof(w->rx));
}

static void
recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
        unsigned flags)
{
	dg_listener *l = udp->data;
	dg_worker *w = dg_listener_owner(l);

	/* nread 0 with no address: nothing, or the end of a recvmmsg batch (UV_UDP_MMSG_FREE). */
	if (nread <= 0 || from == NULL)
		return;
	if (flags & UV_UDP_PARTIAL) {
		if (w->sh->metrics != NULL)
			dg_metrics_datagram(w->sh->metrics, DG_DIR_IN);
		drop(w, "truncated");
		return;
	}
	dg_worker_datagram(w, dg_listener_index(l), (const uint8_t *)buf->base, (size_t)nread,
	                   from);
}

/* What a session reports. */

static dg_devtab_owner
owner_of(dg_worker *w, dg_session *s)
{
	return (dg_devtab_owner){.worker = (uint32_t)w->index, .session_id = dg_session_id(s)};
}

static void
on_established(void *owner, dg_session *s)
{
	dg_worker *w = owner;
	dg_metrics *m = w->sh->metrics;
	if (m != NULL) {
		dg_metrics_sessions_add(m, dg_session_auth(s), 1);
		dg_metrics_worker_sessions_add(m, (int)w->index, 1);
		dg_metrics_handshake(m, dg_session_auth(s), 1);
		dg_metrics_handshake_seconds(
		        m, (double)(uv_now(w->loop) - dg_session_created_ms(s)) / 1000.0);
	}
	dg_map_key key;
	void *old = NULL;
	dg_devtab_owner prev;

	w->n_handshakes--;
	dg_admit_handshake_end(w->sh->admit, dg_session_peer(s));
	unpublish(w, s);
	dg_log(DG_LOG_DEBUG, "worker.session", "session %llu of device %lld on worker %zu",
	       (unsigned long long)dg_session_id(s), (long long)dg_session_device_id(s), w->index);
	dg_map_key_addr(&key, dg_session_peer(s));
	if (dg_map_get(w->pending, &key) == s) {
		dg_map_del(w->pending, &key);
		dg_session *before = dg_map_get(w->peers, &key);
		if (before != NULL)
			dg_session_close(before,
			                 "replaced by a new handshake from the same address", 0);
		if (dg_map_put(w->peers, &key, s, NULL) != 0) {
			dg_session_close(s, "out of memory", 1);
			return;
		}
	}
	dg_map_key_u64(&key, (uint64_t)dg_session_device_id(s));
	if (dg_map_put(w->devices, &key, s, &old) != 0) {
		dg_session_close(s, "out of memory", 1);
		return;
	}
	if (old != NULL && old != s)
		dg_session_close(old, "replaced by a new session of the same device", 1);
	/* At most one live session per device, across workers. */
	int rc = dg_devtab_claim(w->sh->devices, dg_session_device_id(s), owner_of(w, s), &prev);
	if (rc < 0) {
		dg_session_close(s, "out of memory", 1);
		return;
	}
	if (rc == 1 && prev.worker != w->index && prev.worker < w->sh->n_workers)
		dg_worker_close_session(w->sh->workers[prev.worker], prev.session_id,
		                        "replaced by a new session of the same device");
	else if (rc == 1 && prev.worker == w->index && by_id(w, prev.session_id) != NULL &&
	         by_id(w, prev.session_id) != s)
		dg_session_close(by_id(w, prev.session_id),
		                 "replaced by a new session of the same device", 1);
}

static void
on_closed(void *owner, dg_session *s, int was_established)
{
	dg_worker *w = owner;
	dg_metrics *m = w->sh->metrics;
	dg_map_key key;

	if (was_established && m != NULL) {
		dg_metrics_sessions_add(m, dg_session_auth(s), -1);
		dg_metrics_worker_sessions_add(m, (int)w->index, -1);
	}
	if (!was_established) {
		w->n_handshakes--;
		dg_admit_handshake_end(w->sh->admit, dg_session_peer(s));
		unpublish(w, s);
	}
	dg_admit_session_end(w->sh->admit);
	dg_map_key_addr(&key, dg_session_peer(s));
	if (dg_map_get(w->peers, &key) == s)
		dg_map_del(w->peers, &key);
	if (dg_map_get(w->pending, &key) == s)
		dg_map_del(w->pending, &key);
	if (dg_session_device_id(s) >= 0) {
		/* Whichever session of the device closes: removing is always safe. */
		dg_statecache_remove(w->env.docs, dg_session_device_id(s));
		dg_map_key_u64(&key, (uint64_t)dg_session_device_id(s));
		if (dg_map_get(w->devices, &key) == s)
			dg_map_del(w->devices, &key);
		dg_devtab_release(w->sh->devices, dg_session_device_id(s), owner_of(w, s));
	}
	dg_map_key_u64(&key, dg_session_id(s));
	if (dg_map_get(w->by_id, &key) == s)
		dg_map_del(w->by_id, &key);
	if (w->n_graveyard == w->cap_graveyard) {
		size_t cap = w->cap_graveyard ? w->cap_graveyard * 2 : 64;
		dg_session **g = realloc(w->graveyard, cap * sizeof(*g));
		if (g == NULL) {
			/* Leak rather than free what a caller up the stack may still use. */
			dg_log(DG_LOG_ERROR, "server.error", "out of memory; a session leaks");
			return;
		}
		w->graveyard = g;
		w->cap_graveyard = cap;
	}
	w->graveyard[w->n_graveyard++] = s;
}

static void
on_refused(void *owner, dg_session *s, const char *reason)
{
	dg_worker *w = owner;
	if (w->sh->metrics != NULL) {
		dg_metrics_handshake(w->sh->metrics, dg_session_auth(s), 0);
		dg_metrics_handshake_failure(w->sh->metrics, reason);
	}
	for (size_t i = 0; i < w->n_refusals; i++) {
		if (strcmp(w->refusals[i].reason, reason) == 0) {
			w->refusals[i].count++;
			return;
		}
	}
	if (w->n_refusals == MAX_REASONS)
		return;
	w->refusals[w->n_refusals].reason = strdup(reason);
	if (w->refusals[w->n_refusals].reason != NULL)
		w->refusals[w->n_refusals++].count = 1;
}

/* Wakes the loop; returns -ESHUTDOWN (and sends nothing) once the worker has stopped. */
static int
wake_locked(dg_worker *w)
{
	if (w->closed)
		return -ESHUTDOWN;
	uv_async_send(&w->wake);
	return 0;
}

/* Runs on the writer thread: hand the result to the worker that asked. */
static void
provision_done(void *arg, const dg_provision_result *res)
{
	prov_req *req = arg;
	dg_worker *w = req->w;
	prov_done *d = calloc(1, sizeof(*d));
	if (d != NULL) {
		d->session_id = req->session_id;
		d->res = *res;
		pthread_mutex_lock(&w->mu);
		d->next = w->prov_head;
		w->prov_head = d;
		wake_locked(w);
		pthread_mutex_unlock(&w->mu);
	}
	free(req);
}

static void
on_provision(void *owner, dg_session *s, int64_t project_id, const char *cert_id)
{
	dg_worker *w = owner;
	prov_req *req = calloc(1, sizeof(*req));
	int rc = -ENOMEM;

	if (req != NULL) {
		req->w = w;
		req->session_id = dg_session_id(s);
		rc = dg_store_provision_async(w->sh->store, project_id, cert_id, provision_done,
		                              req);
		if (rc != 0)
			free(req);
	}
	if (rc != 0) {
		dg_provision_result res = {.rc = rc};
		dg_session_provisioned(s, &res, uv_now(w->loop));
	}
}

static void
state_changed(void *owner, int64_t device_id, const char *path, const char *doc)
{
	notify_device(owner, device_id, path, doc);
}

static int
job_run(sqlite3 *db, void *arg)
{
	dg_deferred *d = arg;
	return d->run(db, d->arg);
}

/* Runs on the writer thread, after the commit: hand the request back to its worker. */
static void
job_done(void *arg, int rc)
{
	dg_deferred *d = arg;
	dg_worker *w = d->owner;
	d->rc = rc;
	pthread_mutex_lock(&w->mu);
	d->next = w->done_head;
	w->done_head = d;
	wake_locked(w);
	pthread_mutex_unlock(&w->mu);
}

static int
on_submit(void *owner, dg_deferred *d)
{
	dg_worker *w = owner;
	d->owner = w; /* The job comes back to the worker that submitted it. */
	/* A read goes to the store's reader thread; its completion comes back the same way. */
	return d->read ? dg_store_read(w->sh->store, job_run, job_done, d)
	               : dg_store_job(w->sh->store, job_run, job_done, d);
}

/* Answers the deferred requests whose commits finished, oldest first, then notifies. */
static void
drain_deferred(dg_worker *w, dg_deferred *list)
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
		int64_t dev = -1;
		char *path = NULL, *doc = NULL;
		if (rev->rc == 0 && rev->notify_device >= 0 &&
		    (rev->changed == NULL || *rev->changed)) {
			dev = rev->notify_device;
			path = rev->notify_path;
			rev->notify_path = NULL;
			if (rev->notify_doc != NULL) {
				doc = *rev->notify_doc;
				*rev->notify_doc = NULL;
			}
		}
		/*
		 * A state write's document replaces the cached one before the
		 * write is acknowledged, so a GET after the 2.04 sees it; a failed
		 * write empties the entry (the next GET reads the store).
		 */
		if (dev >= 0)
			dg_statecache_put(w->env.docs, dev, doc);
		else if (rev->notify_device >= 0 && rev->rc != 0)
			dg_statecache_invalidate(w->env.docs, rev->notify_device);
		dg_session_deferred_done(by_id(w, rev->session_id), rev, uv_now(w->loop));
		if (dev >= 0)
			notify_device(w, dev, path != NULL ? path : "", doc);
		free(path);
		free(doc);
		rev = next;
	}
}

/*
 * The writer's completions: deferred replies, then provisioning results, in
 * arrival order. When `inbox` is not NULL, the messages posted so far are
 * taken off under the same lock and set there for the caller to handle
 * after the completions: a message posted after a completion (a change
 * another worker made after this worker's write committed) is then never
 * handled before it, so the cache's invalidation is not undone by an older
 * write's document.
 */
static void
drain_completions(dg_worker *w, msg **inbox)
{
	prov_done *list, *rev = NULL;
	dg_deferred *done;

	pthread_mutex_lock(&w->mu);
	list = w->prov_head;
	w->prov_head = NULL;
	done = w->done_head;
	w->done_head = NULL;
	if (inbox != NULL) {
		*inbox = w->inbox_head;
		w->inbox_head = w->inbox_tail = NULL;
	}
	pthread_mutex_unlock(&w->mu);
	drain_deferred(w, done);
	while (list != NULL) {
		prov_done *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	while (rev != NULL) {
		prov_done *next = rev->next;
		dg_session *s = by_id(w, rev->session_id);
		if (s != NULL)
			dg_session_provisioned(s, &rev->res, uv_now(w->loop));
		free(rev);
		rev = next;
	}
}

/* Messages. */

static int
post(dg_worker *w, msg *m)
{
	int rc;
	m->next = NULL;
	pthread_mutex_lock(&w->mu);
	rc = wake_locked(w);
	if (rc == 0) {
		if (w->inbox_tail != NULL)
			w->inbox_tail->next = m;
		else
			w->inbox_head = m;
		w->inbox_tail = m;
	}
	pthread_mutex_unlock(&w->mu);
	if (rc != 0) {
		dg_registry_unref(m->reg);
		free(m);
	}
	return rc;
}

static msg *
msg_new(enum msg_kind kind, size_t extra)
{
	msg *m = calloc(1, sizeof(*m) + extra);
	if (m != NULL)
		m->kind = kind;
	return m;
}

static msg *
msg_text(enum msg_kind kind, const char *text)
{
	size_t n = text != NULL ? strlen(text) : 0;
	msg *m = msg_new(kind, n + 1);
	if (m != NULL && n > 0)
		memcpy(m->data, text, n);
	return m;
}

int
dg_worker_hand_datagram(dg_worker *w, size_t listener_index, const uint8_t *data, size_t len,
                        const struct sockaddr *from)
{
	msg *m = msg_new(MSG_DATAGRAM, len);
	if (m == NULL)
		return -ENOMEM;
	m->listener = listener_index;
	memcpy(&m->from, from,
	       from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                   : sizeof(struct sockaddr_in));
	m->len = len;
	memcpy(m->data, data, len);
	return post(w, m);
}

int
dg_worker_set_registry(dg_worker *w, dg_registry *reg)
{
	msg *m = msg_new(MSG_REGISTRY, 0);
	if (m == NULL)
		return -ENOMEM;
	m->reg = dg_registry_ref(reg);
	return post(w, m);
}

int
dg_worker_set_config(dg_worker *w, const dg_config *cfg)
{
	msg *m = msg_new(MSG_CONFIG, 0);
	if (m == NULL)
		return -ENOMEM;
	m->cfg = cfg;
	return post(w, m);
}

int
dg_worker_close_session(dg_worker *w, uint64_t session_id, const char *reason)
{
	msg *m = msg_text(MSG_CLOSE, reason);
	if (m == NULL)
		return -ENOMEM;
	m->session_id = session_id;
	return post(w, m);
}

int
dg_worker_state_changed(dg_worker *w, int64_t device_id, const char *path, const char *doc)
{
	size_t np = path != NULL ? strlen(path) : 0, nd = doc != NULL ? strlen(doc) : 0;
	msg *m = msg_new(MSG_STATE, np + 1 + (doc != NULL ? nd + 1 : 0));
	if (m == NULL)
		return -ENOMEM;
	if (np > 0)
		memcpy(m->data, path, np);
	if (doc != NULL) {
		m->doc_off = np + 1;
		memcpy(m->data + m->doc_off, doc, nd);
	}
	m->device_id = device_id;
	return post(w, m);
}

int
dg_worker_resource_changed(dg_worker *w, int kind, int64_t project_id, int64_t device_id)
{
	msg *m = msg_new(MSG_RESOURCE, 0);
	if (m == NULL)
		return -ENOMEM;
	m->res_kind = kind;
	m->project_id = project_id;
	m->device_id = device_id;
	return post(w, m);
}

int
dg_worker_rpc(dg_worker *w, int64_t device_id, int64_t row_id, const char *id, const char *call,
              int64_t deadline_ms)
{
	size_t ni = strlen(id), nc = strlen(call);
	msg *m = msg_new(MSG_RPC, ni + nc + 2);
	if (m == NULL)
		return -ENOMEM;
	memcpy(m->data, id, ni);
	m->doc_off = ni + 1;
	memcpy(m->data + m->doc_off, call, nc);
	m->device_id = device_id;
	m->row_id = row_id;
	m->deadline_ms = deadline_ms;
	return post(w, m);
}

int
dg_worker_stop(dg_worker *w)
{
	msg *m = msg_new(MSG_STOP, 0);
	return m != NULL ? post(w, m) : -ENOMEM;
}

void
dg_worker_route_state(dg_worker_shared *sh, int64_t device_id, const char *path, const char *doc)
{
	dg_devtab_owner o;
	if (dg_devtab_lookup(sh->devices, device_id, &o) == 0 && o.worker < sh->n_workers)
		dg_worker_state_changed(sh->workers[o.worker], device_id, path, doc);
}

/*
 * Notifies the observers of `device_id`: here when its session is here, else
 * through its worker. A session here may be one that a newer session on
 * another worker replaced, and that is not closed yet (its close is on its
 * way to this worker): the newer session's worker is told too, or its cache
 * of documents would keep what it read before this write committed.
 */
static void
notify_device(dg_worker *w, int64_t device_id, const char *path, const char *doc)
{
	dg_map_key key;
	dg_devtab_owner o;
	dg_map_key_u64(&key, (uint64_t)device_id);
	dg_session *s = dg_map_get(w->devices, &key);
	if (s == NULL) {
		dg_worker_route_state(w->sh, device_id, path, doc);
		return;
	}
	dg_session_state_changed(s, path, doc, uv_now(w->loop));
	if (w->sh->n_workers > 1 && dg_devtab_lookup(w->sh->devices, device_id, &o) == 0 &&
	    o.worker != w->index && o.worker < w->sh->n_workers)
		dg_worker_state_changed(w->sh->workers[o.worker], device_id, path, doc);
}

static void
free_mark(void *arg, int rc)
{
	(void)rc;
	free(arg);
}

/* Records in the store what became of RPC call `row_id` (status: dg_rpc_mark). */
static void
mark_rpc(dg_worker *w, int64_t row_id, const char *status)
{
	dg_rpc_mark *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return;
	m->row_id = row_id;
	m->status = status;
	if (dg_store_job(w->sh->store, dg_rpc_mark_apply, free_mark, m) != 0)
		free(m);
}

/* An RPC call for a device: its session queues it, or the store learns why not. */
static void
take_rpc(dg_worker *w, const msg *m)
{
	dg_map_key key;
	uint64_t now = uv_now(w->loop);
	int64_t left = m->deadline_ms - dg_now_ms();
	dg_map_key_u64(&key, (uint64_t)m->device_id);
	dg_session *s = dg_map_get(w->devices, &key);
	if (s == NULL) {
		mark_rpc(w, m->row_id, "offline");
		return;
	}
	if (left <= 0) {
		mark_rpc(w, m->row_id, "timeout");
		return;
	}
	int rc = dg_session_rpc_call(s, m->row_id, (const char *)m->data,
	                             (const char *)m->data + m->doc_off, now + (uint64_t)left, now);
	mark_rpc(w, m->row_id,
	         rc == 0         ? "queued"
	         : rc == -ENOENT ? "not_observing"
	         : rc == -EBUSY  ? "busy"
	                         : "offline");
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

/*
 * Settings or an OTA manifest changed: of one device, or (device 0) of
 * every device of a project, whose sessions here are collected first, so
 * that what a notification does cannot change the table being walked.
 */
static void
changed_resource(dg_worker *w, const msg *m)
{
	dg_map_key key;
	uint64_t now = uv_now(w->loop);
	if (m->device_id > 0) {
		dg_map_key_u64(&key, (uint64_t)m->device_id);
		dg_session *s = dg_map_get(w->devices, &key);
		if (s != NULL)
			dg_session_resource_changed(s, m->res_kind, now);
		return;
	}
	collect c = {0};
	c.cap = dg_map_count(w->devices);
	c.v = c.cap ? calloc(c.cap, sizeof(*c.v)) : NULL;
	if (c.v == NULL)
		return;
	dg_map_each(w->devices, collect_cb, &c);
	for (size_t i = 0; i < c.n; i++)
		if (dg_session_project_id(c.v[i]) == m->project_id)
			dg_session_resource_changed(c.v[i], m->res_kind, now);
	free(c.v);
}

/*
 * Swaps in a new snapshot and closes every session whose credentials it no
 * longer holds: a CA removed, a certificate revoked, a device blocked, a
 * project disabled, a PSK credential removed. Takes over `reg`'s reference.
 */
static void
swap_registry(dg_worker *w, dg_registry *reg)
{
	collect c = {0};
	c.cap = dg_map_count(w->by_id);
	c.v = c.cap ? calloc(c.cap, sizeof(*c.v)) : NULL;
	dg_registry_unref(w->reg);
	w->reg = reg;
	if (c.v == NULL)
		return;
	dg_map_each(w->by_id, collect_cb, &c);
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

/* Closes every session (with close_notify to established ones). */
static void
close_all(dg_worker *w, const char *reason)
{
	collect c = {0};
	if (w->peers == NULL || w->pending == NULL)
		return;
	c.cap = dg_map_count(w->peers) + dg_map_count(w->pending);
	if (c.cap == 0)
		return;
	c.v = calloc(c.cap, sizeof(*c.v));
	if (c.v == NULL)
		return;
	dg_map_each(w->peers, collect_cb, &c);
	dg_map_each(w->pending, collect_cb, &c);
	for (size_t i = 0; i < c.n; i++)
		dg_session_close(c.v[i], reason, 1);
	free(c.v);
}

/* Frees closed sessions; called where no callback is using them. */
static void
reap(dg_worker *w)
{
	for (size_t i = 0; i < w->n_graveyard; i++)
		dg_session_free(w->graveyard[i]);
	w->n_graveyard = 0;
}

/* Closes the worker's handles; messages and completions sent later are dropped. */
static void
close_handles(dg_worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->closed = 1;
	pthread_mutex_unlock(&w->mu);
	for (size_t i = 0; i < w->n_listeners; i++)
		dg_listener_close(w->listeners[i]);
	w->n_listeners = 0;
	uv_close((uv_handle_t *)&w->tick, NULL);
	uv_close((uv_handle_t *)&w->reaper, NULL);
	uv_close((uv_handle_t *)&w->tx_flush, NULL);
	uv_close((uv_handle_t *)&w->wake, NULL);
}

static void
stop(dg_worker *w)
{
	if (w->stopping)
		return;
	w->stopping = 1;
	dg_log(DG_LOG_INFO, "worker.stopping", "worker %zu: closing %zu sessions", w->index,
	       dg_map_count(w->peers) + dg_map_count(w->pending));
	/*
	 * Wait for the writer's queue, then answer what it finished while the
	 * sessions are still open, and only then close them: every write that
	 * is on disk is acknowledged before close_notify, so no device sends it
	 * again. (New datagrams are dropped from here on: w->stopping.) Twice:
	 * a device provisioned by the first pass may have written what it sent
	 * meanwhile; the second pass provisions nothing new.
	 */
	for (int pass = 0; pass < 2; pass++) {
		if (dg_store_flush_timeout(w->sh->store, w->cfg->limits.shutdown_timeout_s *
		                                                 1000) == -ETIMEDOUT) {
			/* Nothing unacknowledged is lost: replies wait for their commit. */
			dg_log(DG_LOG_ERROR, "server.exit",
			       "the store did not flush within limits.shutdown_timeout_s; exiting");
			_exit(0);
		}
		drain_completions(w, NULL);
	}
	close_all(w, "server shutting down");
	reap(w);
	/* The close_notify alerts go out before the sockets close. */
	dg_udpio_flush(w->env.tx);
	/* Nothing completes for this worker any more: it submits nothing new. */
	close_handles(w);
	for (size_t i = 0; i < w->n_refusals; i++)
		dg_log(DG_LOG_INFO, "server.refusals", "%llu handshakes refused: %s",
		       (unsigned long long)w->refusals[i].count, w->refusals[i].reason);
}

static void
handle(dg_worker *w, msg *m)
{
	dg_session *s;
	dg_map_key key;

	switch (m->kind) {
	case MSG_DATAGRAM:
		dg_worker_datagram(w, m->listener, m->data, m->len, (struct sockaddr *)&m->from);
		break;
	case MSG_REGISTRY:
		swap_registry(w, m->reg);
		m->reg = NULL;
		break;
	case MSG_CONFIG:
		w->cfg = m->cfg;
		w->env.cfg = m->cfg;
		break;
	case MSG_CLOSE:
		s = by_id(w, m->session_id);
		if (s != NULL)
			dg_session_close(s, (const char *)m->data, 1);
		break;
	case MSG_STATE:
		/*
		 * A change made elsewhere (the CLI, a write another worker made):
		 * it cannot be ordered with this worker's writes, so the cached
		 * document goes rather than being replaced.
		 */
		dg_statecache_invalidate(w->env.docs, m->device_id);
		dg_map_key_u64(&key, (uint64_t)m->device_id);
		s = dg_map_get(w->devices, &key);
		if (s != NULL)
			dg_session_state_changed(
			        s, (const char *)m->data,
			        m->doc_off != 0 ? (const char *)m->data + m->doc_off : NULL,
			        uv_now(w->loop));
		break;
	case MSG_RESOURCE:
		changed_resource(w, m);
		break;
	case MSG_RPC:
		take_rpc(w, m);
		break;
	case MSG_EVICT:
		evict_stalled(w);
		/* What the newcomer took is published again if more have stalled here. */
		publish_stalled(w, uv_now(w->loop));
		break;
	case MSG_STOP:
		stop(w);
		break;
	}
}

static void
wake_cb(uv_async_t *h)
{
	dg_worker *w = h->data;
	msg *list;

	drain_completions(w, &list);
	while (list != NULL) {
		msg *next = list->next;
		if (!w->stopping || list->kind == MSG_STOP)
			handle(w, list);
		dg_registry_unref(list->reg);
		free(list);
		list = next;
	}
}

static void
reap_cb(uv_check_t *h)
{
	reap(h->data);
}

static void
fire_cb(dg_wheel_entry *e, void *arg)
{
	dg_worker *w = arg;
	dg_session_timer(e, uv_now(w->loop));
}

static void
tx_flush_cb(uv_prepare_t *h)
{
	dg_worker *w = h->data;
	dg_udpio_flush(w->env.tx);
}

static void
tick_cb(uv_timer_t *t)
{
	dg_worker *w = t->data;
	uint64_t now = uv_now(w->loop);

	dg_wheel_advance(&w->wheel, now, fire_cb, w);
	publish_stalled(w, now);
	if (now - w->cookie_rotated_ms >= COOKIE_ROTATE_MS)
		rotate_cookie_secret(w, now);
}

int
dg_worker_new(dg_worker_shared *sh, size_t index, uv_loop_t *loop, const dg_config *cfg,
              const struct sockaddr_storage *addrs, dg_registry *reg, dg_worker **out, char *err,
              size_t errlen)
{
	dg_worker *w = calloc(1, sizeof(*w));
	int rc;

	if (w == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	w->sh = sh;
	w->index = index;
	w->cfg = cfg;
	if (loop == NULL) {
		rc = uv_loop_init(&w->own_loop);
		if (rc != 0) {
			snprintf(err, errlen, "cannot start an event loop: %s", uv_strerror(rc));
			free(w);
			return rc;
		}
		w->loop = &w->own_loop;
		w->threaded = 1;
	} else
		w->loop = loop;
	w->reg = dg_registry_ref(reg);
	w->env = (dg_session_env){
	        .cfg = cfg,
	        .wheel = &w->wheel,
	        .store = sh->store,
	        .psk_secret = sh->psk_secret,
	        .owner = w,
	        .provision = on_provision,
	        .refused = on_refused,
	        .submit = on_submit,
	        .state_changed = state_changed,
	        .established = on_established,
	        .closed = on_closed,
	};
	pthread_mutex_init(&w->mu, NULL);
	dg_wheel_init(&w->wheel, uv_now(w->loop));
	rotate_cookie_secret(w, uv_now(w->loop));
	uv_timer_init(w->loop, &w->tick);
	w->tick.data = w;
	uv_check_init(w->loop, &w->reaper);
	w->reaper.data = w;
	uv_async_init(w->loop, &w->wake, wake_cb);
	w->wake.data = w;
	/*
	 * The pass's datagrams to send go out before the loop waits; the
	 * handle is unreferenced, so it keeps nothing alive.
	 */
	uv_prepare_init(w->loop, &w->tx_flush);
	w->tx_flush.data = w;
	uv_unref((uv_handle_t *)&w->tx_flush);
	if (dg_udpio_new(&w->env.tx) != 0 ||
	    dg_chaincache_new(DG_CHAINCACHE_SLOTS, &w->env.chains) != 0 ||
	    dg_statecache_new(DG_STATECACHE_MAX_DOC, &w->env.docs) != 0) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	if (dg_map_new(&w->peers) != 0 || dg_map_new(&w->pending) != 0 ||
	    dg_map_new(&w->devices) != 0 || dg_map_new(&w->by_id) != 0) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < cfg->n_listen; i++) {
		const struct sockaddr *a = addrs != NULL
		                                   ? (const struct sockaddr *)&addrs[i]
		                                   : (const struct sockaddr *)&cfg->listen[i].addr;
		rc = dg_listener_new(w->loop, a, sh->ctx, w->cookie_secret, admit_cb, w, w, i,
		                     w->env.tx, &w->listeners[i]);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s: %s", cfg->listen[i].text,
			         uv_strerror(rc));
			goto fail;
		}
		w->n_listeners++;
		rc = dg_listener_sockname(w->listeners[i], &w->bound[i]);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s: %s", cfg->listen[i].text,
			         uv_strerror(rc));
			goto fail;
		}
	}
	*out = w;
	return 0;
fail:
	dg_worker_free(w);
	return rc;
}

const struct sockaddr_storage *
dg_worker_bound(const dg_worker *w, size_t i)
{
	return &w->bound[i];
}

size_t
dg_worker_index(const dg_worker *w)
{
	return w->index;
}

static void *
worker_main(void *arg)
{
	dg_worker *w = arg;
	uv_run(w->loop, UV_RUN_DEFAULT);
	return NULL;
}

int
dg_worker_start(dg_worker *w)
{
	int rc;

	w->env.metrics = w->sh->metrics;
	for (size_t i = 0; i < w->n_listeners; i++) {
		dg_listener_set_metrics(w->listeners[i], w->sh->metrics);
		rc = uv_udp_recv_start(dg_listener_udp(w->listeners[i]), alloc_cb, recv_cb);
		if (rc != 0)
			return rc;
	}
	uv_timer_start(&w->tick, tick_cb, DG_WHEEL_TICK_MS, DG_WHEEL_TICK_MS);
	uv_check_start(&w->reaper, reap_cb);
	uv_prepare_start(&w->tx_flush, tx_flush_cb);
	if (w->threaded) {
		rc = -pthread_create(&w->thread, NULL, worker_main, w);
		if (rc != 0)
			return rc;
		w->thread_started = 1;
	}
	return 0;
}

void
dg_worker_join(dg_worker *w)
{
	if (w != NULL && w->thread_started) {
		/* A worker that was never told to stop is told now. */
		dg_worker_stop(w);
		pthread_join(w->thread, NULL);
		w->thread_started = 0;
	}
}

void
dg_worker_free(dg_worker *w)
{
	if (w == NULL)
		return;
	if (!w->closed) {
		/* Never stopped (a start-up that failed): close what it has, without sessions. */
		close_all(w, "server shutting down");
		close_handles(w);
		/* The closes finish on the loop before the memory goes. */
		uv_run(w->loop, UV_RUN_DEFAULT);
	}
	reap(w);
	free(w->graveyard);
	dg_chaincache_free(w->env.chains);
	dg_statecache_free(w->env.docs);
	dg_udpio_free(w->env.tx);
	if (w->threaded)
		uv_loop_close(w->loop);
	dg_map_free(w->peers);
	dg_map_free(w->pending);
	dg_map_free(w->devices);
	dg_map_free(w->by_id);
	free(w->hs_queue);
	for (size_t i = 0; i < w->n_refusals; i++)
		free(w->refusals[i].reason);
	while (w->prov_head != NULL) {
		prov_done *next = w->prov_head->next;
		free(w->prov_head);
		w->prov_head = next;
	}
	while (w->done_head != NULL) {
		dg_deferred *next = w->done_head->next;
		dg_deferred_free(w->done_head);
		w->done_head = next;
	}
	while (w->inbox_head != NULL) {
		msg *next = w->inbox_head->next;
		dg_registry_unref(w->inbox_head->reg);
		free(w->inbox_head);
		w->inbox_head = next;
	}
	pthread_mutex_destroy(&w->mu);
	dg_registry_unref(w->reg);
	explicit_bzero(w->cookie_secret, sizeof(w->cookie_secret));
	free(w);
}
