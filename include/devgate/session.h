/*
 * One DTLS peer: its address, its wolfSSL object, its state, its device
 * identity once the handshake proves one, its CoAP message layer and its
 * timers. The server owns sessions and their tables; a session tells the
 * server what happened through the callbacks in its dg_session_env.
 */
#ifndef DEVGATE_SESSION_H
#define DEVGATE_SESSION_H

#include <stdint.h>
#include <sys/socket.h>

#include "devgate/coap.h"
#include "devgate/config.h"
#include "devgate/dtls.h"
#include "devgate/registry.h"
#include "devgate/render.h"
#include "devgate/store.h"
#include "devgate/wheel.h"

typedef struct dg_session dg_session;

/* The length of the server secret that refused PSK identities' decoy keys come from. */
#define DG_SESSION_PSK_SECRET_LEN 32

typedef enum dg_session_state {
	DG_SESSION_HANDSHAKE = 0, /* Cookie verified, handshake under way. */
	DG_SESSION_PROVISIONING,  /* Certificate verified; its device is being found or made. */
	DG_SESSION_ESTABLISHED,   /* Handshake done, identity known. */
	DG_SESSION_CLOSED,        /* Unlinked; freed on the server's next pass. */
} dg_session_state;


/* Timer tags on the wheel entries sessions embed. */
enum {
	DG_TIMER_SESSION_RTX = 1,
	DG_TIMER_SESSION_LIFE = 2,
	DG_TIMER_SESSION_NOTIFY = 3,
	DG_TIMER_SESSION_BLOCK = 4,
	DG_TIMER_SESSION_DEDUP = 6, /* The first CoAP duplicate-detection entry's lifetime. */
	DG_TIMER_SESSION_RPC = 7,   /* The deadline of the RPC call at the head of the queue. */
};

/*
 * A request whose reply waits for a commit on the store's writer thread.
 * The session fills in the exchange; the service fills in the job.
 */
typedef struct dg_deferred {
	uint64_t session_id;
	uint8_t type;
	uint16_t mid;
	uint8_t token[DG_COAP_MAX_TOKEN];
	size_t token_len;
	uint8_t code_ok;                    /* The reply when the job succeeds. */
	int (*run)(sqlite3 *db, void *arg); /* The job, on the writer thread. */
	void *arg;
	void (*free_arg)(void *arg);
	int64_t notify_device; /* >= 0: a state change to notify observers of. */
	char *notify_path;
	int *changed; /* Points into arg: did the state change. */
	/* Points into arg: the document after the change (JSON text), for the notifications. */
	char **notify_doc;
	int read; /* 1: a read, run on the store's reader thread; 0: a write, on the writer. */
	/*
	 * 1: the job rendered a notification (arg is a dg_render) for the
	 * observation with `token`, not the reply to a request.
	 */
	int notification;
	/*
	 * When set, makes the reply of a job that succeeded, on the loop with
	 * the session live: fills `resp`, whose body buffer holds body_cap
	 * bytes (what fits in one message). Else the reply is code_ok alone.
	 */
	void (*reply)(dg_session *s, struct dg_deferred *d, dg_coap_response *resp,
	              uint64_t now_ms);
	int rc;                   /* Set on the writer thread. */
	int service;              /* For metrics: enum dg_metrics_service. */
	void *owner;              /* The server, for the completion. */
	struct dg_deferred *next; /* The owner's completion list. */
} dg_deferred;

void dg_deferred_free(dg_deferred *d);

/* What a session needs from its server; borrowed for the session's life. */
typedef struct dg_session_env {
	const dg_config *cfg;
	dg_wheel *wheel;
	dg_store *store;
	/* Random for the server's life: refused PSK identities get keys made from it. */
	const uint8_t *psk_secret;
	void *owner;
	/*
	 * A verified certificate has no device in the snapshot: find or make
	 * it off the loop, then call dg_session_provisioned() (unless the
	 * session closed meanwhile).
	 */
	void (*provision)(void *owner, dg_session *s, int64_t project_id, const char *cert_id);
	/* Queue a deferred request's job; the owner calls dg_session_deferred_done() later. */
	int (*submit)(void *owner, dg_deferred *d);
	/*
	 * A commit changed the state of `device_id` at `path`, leaving the
	 * document `doc` (JSON text): notify its observers.
	 */
	void (*state_changed)(void *owner, int64_t device_id, const char *path, const char *doc);
	/* A handshake of `s` was refused for `reason`; for counting. */
	void (*refused)(void *owner, dg_session *s, const char *reason);
	struct dg_metrics *metrics; /* Or NULL. */
	/* Accepted chains of this loop, by hash (see chaincache.h); or NULL: none kept. */
	struct dg_chaincache *chains;
	/* The loop's state documents (see statecache.h), or NULL: every GET reads the store. */
	struct dg_statecache *docs;
	/* The loop's batch of datagrams to send (udpio.h), or NULL: each is sent at once. */
	struct dg_udpio *tx;
	/* The handshake completed with a known device; the owner links it. */
	void (*established)(void *owner, dg_session *s);
	/*
	 * The session closed; the owner unlinks it now and frees it later.
	 * `was_established` tells whether it had completed its handshake.
	 */
	void (*closed)(void *owner, dg_session *s, int was_established);
} dg_session_env;

/*
 * Creates a session around `ssl`, a WOLFSSL object that has just verified
 * a ClientHello's cookie (taken over, with ownership, from a listener).
 * Points its I/O at the session, sends from `udp` to `peer`, and takes a
 * reference on `reg`. Returns 0 or -ENOMEM (ssl is then still the
 * caller's).
 */
int dg_session_new(const dg_session_env *env, uint64_t id, WOLFSSL *ssl, uv_udp_t *udp,
                   const struct sockaddr *peer, dg_registry *reg, uint64_t now_ms,
                   dg_session **out);

/*
 * Feeds one datagram to the session (NULL/0 to resume a handshake after
 * the listener handed it over). Runs the handshake or reads application
 * records and answers CoAP. May close the session (the env's closed
 * callback runs before this returns); the session stays allocated.
 */
void dg_session_input(dg_session *s, const uint8_t *buf, size_t len, uint64_t now_ms);

/*
 * Closes the session: sends close_notify when `notify` and it is
 * established, cancels its timers, logs `reason` and calls the env's
 * closed callback. A no-op when already closed.
 */
void dg_session_close(dg_session *s, const char *reason, int notify);

/* Handles a fired wheel entry that a session embeds. */
void dg_session_timer(dg_wheel_entry *e, uint64_t now_ms);

/*
 * Frees a session that never went live (no callback has seen it) without
 * freeing its WOLFSSL object, which stays the caller's.
 */
void dg_session_discard(dg_session *s);

/* Frees a closed session. NULL is a no-op. */
void dg_session_free(dg_session *s);

dg_session_state dg_session_get_state(const dg_session *s);
const struct sockaddr *dg_session_peer(const dg_session *s);
/* The device's ID once the PSK is accepted (kept after close), else -1. */
int64_t dg_session_device_id(const dg_session *s);
uint64_t dg_session_id(const dg_session *s);
/* DG_AUTH_PSK, DG_AUTH_CERT or DG_AUTH_NONE (metrics.h). */
int dg_session_auth(const dg_session *s);
/*
 * Returns 1 when `s` is a handshake that has stalled at `now_ms`: its
 * client's second flight never reached the identity callbacks, or did so
 * limits.handshake_first_flight_s ago or more (a handshake that got that
 * far completes within a round trip). Else 0.
 */
int dg_session_stalled(const dg_session *s, uint64_t now_ms);

/* When the session was created (the loop's clock, ms). */
uint64_t dg_session_created_ms(const dg_session *s);

/*
 * Completes a session in DG_SESSION_PROVISIONING with the device the store
 * found or made; closes it when provisioning failed.
 */
void dg_session_provisioned(dg_session *s, const dg_provision_result *res, uint64_t now_ms);

/*
 * Checks an established session's credentials against a new registry
 * snapshot, and moves the session onto it. Returns NULL when they still
 * hold, else why not ("CA removed", "device blocked" ...); the caller then
 * closes the session.
 */
const char *dg_session_revalidate(dg_session *s, dg_registry *reg);

/* The verify callback of the DTLS context: per-project certificate trust. */
int dg_session_verify_cert(int preverify, WOLFSSL_X509_STORE_CTX *store);

/*
 * Defers the reply to `req` until `d`'s job commits: fills in the exchange,
 * hands `d` to the owner and marks `resp` deferred. On failure answers 5.03
 * at once and frees `d`.
 */
void dg_session_defer(dg_session *s, const dg_coap_request *req, dg_coap_response *resp,
                      dg_deferred *d);

/* The job of `d` finished (d->rc): send the reply. `s` may be NULL (gone). Frees `d`. */
void dg_session_deferred_done(dg_session *s, dg_deferred *d, uint64_t now_ms);

/*
 * Registers (Observe=0) an observation of `kind` (enum dg_obs_kind; for
 * DG_OBS_STATE, of the state at `path`) with the request's token and
 * Accept; an existing one with that token is replaced. Returns the Observe
 * sequence number for the first reply, or -ENOSPC at the cap.
 */
int64_t dg_session_observe(dg_session *s, const dg_coap_request *req, int kind, const char *path,
                           int format);

/* Whether the session observes `kind` (enum dg_obs_kind). */
int dg_session_observes(const dg_session *s, int kind);

/*
 * The resource `kind` (not DG_OBS_STATE) of this session's device changed:
 * each observation of it is notified with a fresh render (render.h) on the
 * store's reader thread, one notification in flight at a time.
 */
void dg_session_resource_changed(dg_session *s, int kind, uint64_t now_ms);

/*
 * Queues an RPC call (`call`: its JSON text {"id", "method", "params"},
 * `id` its id; both copied) for the device's ".rpc" observation: the head
 * of the queue is notified, the next one once the device answers
 * (dg_session_rpc_done()) or the head passes its `deadline_ms` (loop
 * clock). A call with an id already queued is left as it is (0).
 * Returns 0, -ENOENT when the device does not observe ".rpc",
 * -EBUSY when the queue is full, -ENOMEM.
 */
int dg_session_rpc_call(dg_session *s, int64_t row_id, const char *id, const char *call,
                        uint64_t deadline_ms, uint64_t now_ms);

/*
 * The device answered the call `id`: it leaves the queue (the next one is
 * notified). Returns the call's row id, or -ENOENT when no queued call has
 * that id.
 */
int64_t dg_session_rpc_done(dg_session *s, const char *id, uint64_t now_ms);

/* The JSON text of the call at the head of the queue (borrowed), or NULL. */
const char *dg_session_rpc_head(const dg_session *s);

/* The session's project's id in the store. */
int64_t dg_session_project_id(const dg_session *s);

/* Ends the observation with this token (Observe=1, or RST). */
void dg_session_unobserve(dg_session *s, const uint8_t *token, size_t token_len);

/*
 * The state at `path` of this session's device changed and `doc` (JSON
 * text, "" when there is none; borrowed) is its whole document now: notify
 * the observations that overlap, from `doc` (the session keeps a copy while
 * notifications are due, so it never reads the store).
 */
void dg_session_state_changed(dg_session *s, const char *path, const char *doc, uint64_t now_ms);

/*
 * The session's Block1 transfer for a request with this token, made when
 * missing (or when block 0 restarts it). Returns NULL when out of memory.
 */
struct dg_block1 *dg_session_block1(dg_session *s, const dg_coap_request *req, int restart,
                                    uint64_t now_ms);

/*
 * A GET was answered with Block2 block `num`, which has more after it: a
 * GET for the next block (num + 1), within EXCHANGE_LIFETIME, is not
 * counted as a new request by the rate limit. Any other request, a repeat
 * of a block already served included, is counted.
 */
void dg_session_block2_served(dg_session *s, uint32_t num, uint64_t now_ms);

/* Ends the session's Block1 transfer. */
void dg_session_block1_end(dg_session *s);

/* The session's store and config, for the services. */
dg_store *dg_session_store(const dg_session *s);
const dg_config *dg_session_config(const dg_session *s);
/* The loop's cache of state documents, or NULL; borrowed for the session's life. */
struct dg_statecache *dg_session_statecache(const dg_session *s);

/* Used by the server's PSK callback. */
unsigned int dg_session_psk_lookup(WOLFSSL *ssl, const char *identity, unsigned char *key,
                                   unsigned int max_key_len);

#endif
