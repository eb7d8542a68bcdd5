/*
 * One DTLS session: handshake, identity (PSK or certificate), zero-touch
 * provisioning, application data, revalidation on reload, close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/hmac.h>

#include "devgate/block.h"
#include "devgate/coap.h"
#include "devgate/data.h"
#include "devgate/payload.h"
#include "devgate/state.h"
#include "devgate/log.h"
#include "devgate/metrics.h"
#include "devgate/router.h"
#include "devgate/rpc.h"
#include "devgate/session.h"
#include "devgate/chaincache.h"
#include "devgate/trust.h"

/* The largest datagram devgate reads or answers: one CoAP block and headers. */
#define PLAIN_MAX 2048
/* The key length given to an identity that has no credential. */
#define DECOY_KEY_LEN 16
/* Datagrams kept while a first connection's device is being made. */
#define HELD_MAX 4
/* Certificates of a device's chain kept for revalidation: all of an accepted chain. */
#define CHAIN_MAX DG_TRUST_CHAIN_MAX

enum auth { AUTH_NONE = 0, AUTH_PSK, AUTH_CERT };

/* CoAP's ACK_TIMEOUT and MAX_RETRANSMIT (RFC 7252), for notifications. */
#define ACK_TIMEOUT_MS 2000
#define MAX_RETRANSMIT 4
#define OBS_PATH_MAX   256
/* The largest value a state notification encodes (its first block is sent). */
#define NOTIFY_MAX (64u << 20)
/* Max-Age of the 5.03 answered when the store's write queue is full. */
#define STORE_BUSY_MAX_AGE_S 1
/* Max-Age of the 5.03 answered when the disk is full: space takes an operator to come back. */
#define STORE_FULL_MAX_AGE_S 60

typedef struct observer {
	uint8_t token[DG_COAP_MAX_TOKEN];
	size_t token_len;
	int kind;                /* enum dg_obs_kind. */
	char path[OBS_PATH_MAX]; /* DG_OBS_STATE: the state path observed. */
	int format;
	int dirty; /* A change is waiting to be sent. */
} observer;

/* An RPC call waiting for the device's status: the head of the queue is notified. */
typedef struct rpc_call {
	int64_t row_id;       /* In the store's rpc_calls. */
	uint64_t deadline_ms; /* On the loop's clock. */
	char *id;             /* The call's "id". */
	char *call;           /* Its JSON text: {"id", "method", "params"}. */
	int sent;             /* Notified at least once. */
} rpc_call;

/* One call in flight and this many behind it, at most. */
#define RPC_QUEUE_MAX 5

typedef struct held {
	uint8_t *data;
	size_t len;
} held;

/*
 * What a session needs only while its handshake is under way (and while
 * its first connection's device is being made). It is allocated with the
 * session and freed when the session is established or closed, so that an
 * established session keeps nothing of its handshake.
 */
typedef struct handshake {
	const char *refusal; /* Why the handshake was refused, or NULL. */
	int psk_decoy;       /* The PSK callback refused and answered with a decoy key. */
	int cert_checked;    /* The chain was judged (refusal says how). */
	/*
	 * When the client's second flight first reached the identity callbacks
	 * (a whole ClientKeyExchange or Certificate, not just a fragment), or 0.
	 */
	uint64_t progressed_ms;
	dg_dtls_cke cke; /* The ClientKeyExchange's psk_identity, as its exact bytes. */
	char subject[DG_SUBJECT_MAX];         /* The device certificate's, for the log. */
	char reason_buf[DG_SUBJECT_MAX + 96]; /* A refusal that names something (an issuer). */
	held held[HELD_MAX];
	size_t n_held;
	/* The session's identity while it is found out; see pack_names(). */
	char project[DG_SLUG_MAX + 1];
	char device[160]; /* As long as a provisioned name (dg_provision_result). */
	char identity[DG_PSK_MAX_IDENTITY + 1]; /* PSK identity, or certificate ID. */
} handshake;

/*
 * What only a certificate session keeps, allocated when its chain is
 * judged: what revalidation on reload needs.
 */
typedef struct cert_state {
	int64_t not_after_ms; /* Wall clock: the chain's earliest notAfter. */
	uint64_t trust_hash;  /* Of the project's CAs and CRLs the chain was verified with. */
	uint8_t *chain[CHAIN_MAX];
	size_t chain_len[CHAIN_MAX];
	size_t n_chain;
} cert_state;

struct dg_session {
	uint64_t id;
	dg_session_state state;
	const dg_session_env *env;
	dg_dtls_io io;
	WOLFSSL *ssl;
	dg_registry *reg;
	dg_coap *coap;
	dg_wheel_entry rtx; /* DTLS handshake retransmission. */
	/* Handshake timeout, then idle timeout or the certificate's notAfter, the earlier. */
	dg_wheel_entry life;
	dg_wheel_entry dedup; /* When the CoAP layer's first cached exchange expires. */
	uint64_t created_ms;
	uint64_t last_rx_ms;

	/*
	 * Identity, copied so that it outlives any snapshot: the project's
	 * slug, the device's name, the PSK identity or certificate ID. They
	 * point into the handshake while it is under way, then into `names`,
	 * one allocation of their exact size (pack_names()); "" once a session
	 * closes before it is established.
	 */
	const char *project, *device, *identity;
	char *names;
	enum auth auth;
	int64_t project_id;
	int64_t device_id; /* -1 until known. */
	handshake *hs;     /* Until the session is established; NULL after. */
	cert_state *cert;  /* Certificate sessions only; NULL for PSK. */
	char *why_buf;     /* A revalidation refusal that names something; malloc'ed. */
	/* The smallest epoch-1 record this session's cipher makes, and whether it is a block
	 * cipher. */
	uint32_t min_record;
	int block_cipher;

	/* Observations (RFC 7641) and the one notification in flight. */
	observer *obs;
	uint32_t n_obs;
	uint32_t cap_obs; /* Entries allocated in obs: the limit may change under a live session. */
	uint32_t obs_seq;
	uint16_t inflight_mid;
	uint8_t inflight_token_len;
	uint8_t block1_token_len;
	char *notify_doc; /* The state document to notify from, while notifications are due. */
	int rendering;    /* A render for a notification is on the store's reader thread. */
	dg_wheel_entry notify_rtx;
	uint8_t *inflight; /* The CON notification as sent, or NULL. */
	size_t inflight_len;
	uint8_t inflight_token[DG_COAP_MAX_TOKEN];
	int inflight_tries;
	uint32_t inflight_timeout_ms;

	/* RPC calls (allocated with the first one), oldest first. */
	rpc_call *rpcq;
	uint32_t n_rpc;
	dg_wheel_entry rpc_deadline;

	/* The Block1 transfer under way, if any. */
	dg_block1 *block1;
	uint8_t block1_token[DG_COAP_MAX_TOKEN];
	dg_wheel_entry block_expiry;

	/* Requests per second: a token bucket in milli-tokens. */
	int64_t bucket;
	uint64_t bucket_ms;
	/* Until when a Block2 block after the first is part of a transfer under way. */
	uint64_t block2_until_ms;
	uint32_t block2_next; /* The Block2 number the rate limit lets through next. */
};

static void
format_peer(const struct sockaddr *sa, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, ntohs(s4->sin_port));
	}
}

int
dg_session_new(const dg_session_env *env, uint64_t id, WOLFSSL *ssl, uv_udp_t *udp,
               const struct sockaddr *peer, dg_registry *reg, uint64_t now_ms, dg_session **out)
{
	dg_session *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->hs = calloc(1, sizeof(*s->hs));
	if (s->hs == NULL || dg_coap_new(&s->coap) != 0) {
		free(s->hs);
		free(s);
		return -ENOMEM;
	}
	/* No certificate the device sends may reach a store other sessions share. */
	if (dg_dtls_isolate_verify(ssl) != 0) {
		dg_coap_free(s->coap);
		free(s->hs);
		free(s);
		return -ENOMEM;
	}
	s->id = id;
	s->state = DG_SESSION_HANDSHAKE;
	s->env = env;
	s->ssl = ssl;
	s->device_id = -1;
	s->io.udp = udp;
	s->io.tx = env->tx;
	s->io.peer_len = peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                             : sizeof(struct sockaddr_in);
	memcpy(&s->io.peer, peer, s->io.peer_len);
	s->reg = dg_registry_ref(reg);
	s->created_ms = s->last_rx_ms = now_ms;
	s->project = s->hs->project;
	s->device = s->hs->device;
	s->identity = s->hs->identity;
	dg_wheel_entry_init(&s->rtx);
	dg_wheel_entry_init(&s->life);
	s->rtx.tag = DG_TIMER_SESSION_RTX;
	s->life.tag = DG_TIMER_SESSION_LIFE;
	dg_wheel_entry_init(&s->dedup);
	s->dedup.tag = DG_TIMER_SESSION_DEDUP;
	dg_wheel_entry_init(&s->notify_rtx);
	dg_wheel_entry_init(&s->block_expiry);
	s->notify_rtx.tag = DG_TIMER_SESSION_NOTIFY;
	s->block_expiry.tag = DG_TIMER_SESSION_BLOCK;
	s->rpc_deadline.tag = DG_TIMER_SESSION_RPC;
	s->bucket = (int64_t)env->cfg->limits.device_burst * 1000;
	s->bucket_ms = now_ms;
	s->io.owner = s;
	s->io.metrics = env->metrics;
	dg_dtls_set_io(ssl, &s->io);
	wolfSSL_SetCertCbCtx(ssl, s);
	/*
	 * Until the client sends its second flight, a handshake holds a slot
	 * for a short while only: a peer that stalls after the cookie
	 * exchange cannot keep it for the whole handshake timeout.
	 */
	uint32_t first = env->cfg->limits.handshake_first_flight_s;
	if (first > env->cfg->limits.handshake_timeout_s)
		first = env->cfg->limits.handshake_timeout_s;
	dg_wheel_schedule(env->wheel, &s->life, now_ms + (uint64_t)first * 1000);
	*out = s;
	return 0;
}

/*
 * Moves the session's identity out of its handshake into one allocation
 * of its exact size. Returns 0 or -ENOMEM (the identity stays where it was).
 */
static int
pack_names(dg_session *s)
{
	if (s->names != NULL || s->hs == NULL)
		return 0;
	size_t lp = strlen(s->hs->project) + 1, ld = strlen(s->hs->device) + 1;
	size_t li = strlen(s->hs->identity) + 1;
	char *b = malloc(lp + ld + li);
	if (b == NULL)
		return -ENOMEM;
	memcpy(b, s->hs->project, lp);
	memcpy(b + lp, s->hs->device, ld);
	memcpy(b + lp + ld, s->hs->identity, li);
	s->names = b;
	s->project = b;
	s->device = b + lp;
	s->identity = b + lp + ld;
	return 0;
}

/* Frees what only the handshake needed, the datagrams it held included. */
static void
free_handshake(dg_session *s)
{
	if (s->hs == NULL)
		return;
	if (s->names == NULL)
		s->project = s->device = s->identity = "";
	for (size_t i = 0; i < s->hs->n_held; i++)
		free(s->hs->held[i].data);
	free(s->hs);
	s->hs = NULL;
}

/* Frees what a certificate session keeps; a no-op for others. */
static void
free_cert(dg_session *s)
{
	if (s->cert == NULL)
		return;
	for (size_t i = 0; i < s->cert->n_chain; i++)
		free(s->cert->chain[i]);
	free(s->cert);
	s->cert = NULL;
}

void
dg_session_discard(dg_session *s)
{
	s->ssl = NULL;
	dg_session_free(s);
}

void
dg_session_free(dg_session *s)
{
	if (s == NULL)
		return;
	dg_wheel_cancel(s->env->wheel, &s->rtx);
	dg_wheel_cancel(s->env->wheel, &s->life);
	dg_wheel_cancel(s->env->wheel, &s->dedup);
	dg_wheel_cancel(s->env->wheel, &s->notify_rtx);
	dg_wheel_cancel(s->env->wheel, &s->block_expiry);
	dg_wheel_cancel(s->env->wheel, &s->rpc_deadline);
	for (uint32_t i = 0; i < s->n_rpc; i++) {
		free(s->rpcq[i].id);
		free(s->rpcq[i].call);
	}
	free(s->rpcq);
	free(s->obs);
	free(s->inflight);
	free(s->notify_doc);
	dg_block1_free(s->block1);
	if (s->ssl != NULL)
		wolfSSL_free(s->ssl);
	dg_coap_free(s->coap);
	dg_registry_unref(s->reg);
	free_cert(s);
	free_handshake(s);
	free(s->names);
	free(s->why_buf);
	free(s);
}

dg_session_state
dg_session_get_state(const dg_session *s)
{
	return s->state;
}

const struct sockaddr *
dg_session_peer(const dg_session *s)
{
	return (const struct sockaddr *)&s->io.peer;
}

int64_t
dg_session_device_id(const dg_session *s)
{
	return s->device_id;
}

uint64_t
dg_session_id(const dg_session *s)
{
	return s->id;
}

int
dg_session_auth(const dg_session *s)
{
	return s->auth == AUTH_PSK    ? DG_AUTH_PSK
	       : s->auth == AUTH_CERT ? DG_AUTH_CERT
	                              : DG_AUTH_NONE;
}

int
dg_session_stalled(const dg_session *s, uint64_t now_ms)
{
	if (s->state != DG_SESSION_HANDSHAKE || s->hs == NULL)
		return 0;
	uint64_t first_ms = (uint64_t)s->env->cfg->limits.handshake_first_flight_s * 1000;
	return s->hs->progressed_ms == 0 || now_ms - s->hs->progressed_ms >= first_ms;
}

/*
 * The client's second flight reached an identity callback: the handshake
 * gets its whole timeout. Only wolfSSL's whole, in-order message gets
 * here, so a fragment of one does not count.
 */
static void
progress(dg_session *s)
{
	if (s->hs == NULL || s->hs->progressed_ms != 0)
		return;
	s->hs->progressed_ms = s->last_rx_ms != 0 ? s->last_rx_ms : 1;
	dg_wheel_schedule(s->env->wheel, &s->life,
	                  s->created_ms + (uint64_t)s->env->cfg->limits.handshake_timeout_s * 1000);
}

uint64_t
dg_session_created_ms(const dg_session *s)
{
	return s->created_ms;
}

/* Logs one session event with the session's peer and, once known, its identity. */
static void
log_session(const dg_session *s, dg_log_level level, const char *event, const char *k1,
            const char *v1, const char *k2, const char *v2)
{
	char sid[24], peer[64];
	const char *kv[16];
	int n = 0;

	if (!dg_log_enabled(level))
		return;
	snprintf(sid, sizeof(sid), "%llu", (unsigned long long)s->id);
	/* Made when a line is written, not kept: a session logs a few lines in its life. */
	format_peer((const struct sockaddr *)&s->io.peer, peer, sizeof(peer));
	kv[n++] = "session";
	kv[n++] = sid;
	kv[n++] = "peer";
	kv[n++] = peer;
	if (s->project[0] != '\0') {
		kv[n++] = "project";
		kv[n++] = s->project;
	}
	if (s->device_id >= 0) {
		kv[n++] = "device";
		kv[n++] = s->device;
	}
	if (k1 != NULL) {
		kv[n++] = k1;
		kv[n++] = v1;
	}
	if (k2 != NULL) {
		kv[n++] = k2;
		kv[n++] = v2;
	}
	dg_log_kv(level, event, kv, n / 2);
}

/* Records a refusal decided during the handshake. */
static int
refuse(dg_session *s, const char *reason)
{
	if (s->hs != NULL && s->hs->refusal == NULL)
		s->hs->refusal = reason;
	return 0;
}

/* Returns 1 when every byte is printable ASCII (0x20..0x7e). */
static int
printable(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] < 0x20 || b[i] > 0x7e)
			return 0;
	return 1;
}

/*
 * The key for `identity` derived from the server's secret: what a refused
 * identity's handshake runs with, so that it fails where a wrong key
 * fails (the client's Finished does not decrypt) and takes as long.
 */
static void
decoy_key(const dg_session *s, const char *identity, size_t len, unsigned char *key)
{
	Hmac h;
	byte mac[WC_SHA256_DIGEST_SIZE];

	memset(mac, 0, sizeof(mac));
	if (wc_HmacInit(&h, NULL, INVALID_DEVID) == 0) {
		if (wc_HmacSetKey(&h, WC_SHA256, s->env->psk_secret, DG_SESSION_PSK_SECRET_LEN) ==
		            0 &&
		    wc_HmacUpdate(&h, (const byte *)identity, (word32)len) == 0)
			wc_HmacFinal(&h, mac);
		wc_HmacFree(&h);
	}
	memcpy(key, mac, DECOY_KEY_LEN);
	explicit_bzero(mac, sizeof(mac));
}

/* Why the PSK identity is refused, or NULL; fills in the session's identity when not. */
static const char *
judge_psk(dg_session *s, const char *identity, size_t len, const dg_psk_cred **out)
{
	const char *id, *slug;
	size_t id_len, slug_len;
	const dg_psk_cred *c;
	const dg_project *p;

	/*
	 * wolfSSL hands the identity over as a C string: an identity with a
	 * NUL inside would be cut short. The exact bytes come from the
	 * ClientKeyExchange itself.
	 */
	const uint8_t *wire;
	size_t wire_len;
	if (dg_dtls_cke_identity(&s->hs->cke, &wire, &wire_len) != 0 || wire_len != len ||
	    memcmp(wire, identity, len) != 0)
		return "PSK identity not as sent (a NUL inside, or fragments that disagree)";
	if (!printable(wire, wire_len))
		return "PSK identity with a byte outside printable ASCII";
	if (dg_identity_split(identity, len, &id, &id_len, &slug, &slug_len) != 0)
		return "malformed PSK identity";
	p = dg_registry_find_project(s->reg, slug, slug_len);
	if (p == NULL)
		return "unknown project";
	c = dg_registry_find_psk(s->reg, identity, len);
	if (c == NULL)
		return "unknown PSK identity";
	if (!p->enabled)
		return "project disabled";
	if (c->device_blocked)
		return "device blocked";
	*out = c;
	return NULL;
}

unsigned int
dg_session_psk_lookup(WOLFSSL *ssl, const char *identity, unsigned char *key,
                      unsigned int max_key_len)
{
	dg_dtls_io *io = dg_dtls_get_io(ssl);
	dg_session *s = io != NULL ? io->owner : NULL;
	const dg_psk_cred *c = NULL;
	unsigned char decoy[DECOY_KEY_LEN];

	if (s == NULL || s->hs == NULL || identity == NULL || max_key_len < DECOY_KEY_LEN)
		return 0;
	progress(s);
	size_t len = strnlen(identity, DG_PSK_MAX_IDENTITY + 1);
	snprintf(s->hs->identity, sizeof(s->hs->identity), "%.*s", (int)len, identity);
	/* Made for every identity, so that a known one costs the same time. */
	decoy_key(s, identity, len, decoy);
	const char *why = judge_psk(s, identity, len, &c);
	if (why == NULL && c->key_len > max_key_len)
		why = "PSK too long";
	if (why != NULL) {
		/*
		 * No alert now: an unknown identity must look like a wrong key
		 * on the wire. The handshake fails at the client's Finished,
		 * and the log gives this reason.
		 */
		refuse(s, why);
		s->hs->psk_decoy = 1;
		memcpy(key, decoy, DECOY_KEY_LEN);
		explicit_bzero(decoy, sizeof(decoy));
		return DECOY_KEY_LEN;
	}
	explicit_bzero(decoy, sizeof(decoy));
	memcpy(key, c->key, c->key_len);
	s->auth = AUTH_PSK;
	s->project_id = c->project_id;
	s->device_id = c->device_id;
	snprintf(s->hs->project, sizeof(s->hs->project), "%s", c->slug);
	snprintf(s->hs->device, sizeof(s->hs->device), "%s", c->device);
	return (unsigned int)c->key_len;
}

/*
 * The earliest nextUpdate of the project's CRLs (INT64_MAX when it has
 * none): a cached verdict must not outlive it, since a CRL past its
 * nextUpdate refuses its issuer's certificates from that moment on.
 */
static int64_t
crl_deadline(const dg_trust_store *ts, int64_t now_ms)
{
	int64_t min = INT64_MAX;
	size_t n = dg_trust_store_crl_count(ts);

	for (size_t i = 0; i < n; i++) {
		dg_crl_status st;
		if (dg_trust_store_crl_status(ts, i, now_ms, &st) == 0 && st.next_update_ms < min)
			min = st.next_update_ms;
	}
	return min;
}

/*
 * Verifies the chain against project `p`'s trust, or finds the verdict of
 * an identical chain accepted before under the same trust and still in
 * force (chaincache.h says why that is the same answer). Sets the
 * session's trust hash and the chain's earliest notAfter. Returns NULL when
 * the chain is accepted, else the reason, which may be written in `reason` (`cap` bytes).
 */
static const char *
verify_chain(dg_session *s, const dg_project *p, uint8_t *const *certs, const size_t *lens,
             size_t n, char *reason, size_t cap)
{
	const uint8_t *const *chain = (const uint8_t *const *)certs;
	uint8_t key[DG_CHAINCACHE_KEY_LEN];
	dg_chaincache_entry e;
	dg_trust_verdict v;
	int64_t now = dg_now_ms();
	int keyed = s->env->chains != NULL && n <= DG_TRUST_CHAIN_MAX &&
	            dg_chaincache_key(p->id, p->trust_hash, chain, lens, n, key) == 0;

	int hit = keyed && dg_chaincache_get(s->env->chains, key, now, &e);
	if (keyed && s->env->metrics != NULL)
		dg_metrics_chain_cache(s->env->metrics, hit);
	if (hit) {
		s->cert->trust_hash = p->trust_hash;
		s->cert->not_after_ms = e.not_after_ms;
		return NULL;
	}
	if (dg_trust_verify_at(p->trust, chain, lens, n, now, &v) != DG_TRUST_OK) {
		snprintf(reason, cap, "%s", v.reason);
		return reason;
	}
	s->cert->trust_hash = p->trust_hash;
	s->cert->not_after_ms = v.not_after_ms;
	if (keyed) {
		e.not_after_ms = v.not_after_ms;
		e.deadline_ms = crl_deadline(p->trust, now);
		if (v.not_after_ms < e.deadline_ms)
			e.deadline_ms = v.not_after_ms;
		dg_chaincache_put(s->env->chains, key, now, &e);
	}
	return NULL;
}

/*
 * Judges a device certificate chain for session `s` against its snapshot:
 * the subject rules, then the chain against the CAs of the project its O
 * names, and only that project's. Returns NULL when it is accepted (and
 * fills in the session's identity) or the reason it is not, which may be
 * written in `reason` (`cap` bytes). The subject is copied into `subject`
 * (DG_SUBJECT_MAX bytes) unless it is NULL.
 */
static const char *
judge_chain(dg_session *s, const dg_registry *reg, uint8_t *const *certs, const size_t *lens,
            size_t n, int keep_identity, char *subject, char *reason, size_t cap)
{
	dg_subject subj;
	const dg_project *p;

	if (n == 0 || dg_trust_subject(certs[0], lens[0], &subj) != 0)
		return "malformed certificate";
	if (subject != NULL)
		snprintf(subject, DG_SUBJECT_MAX, "%s", subj.text);
	if (subj.n_org == 0)
		return "no organization (O) in subject";
	if (subj.n_org > 1)
		return "more than one organization (O) in subject";
	p = subj.org[0] != '\0' ? dg_registry_find_project(reg, subj.org, strlen(subj.org)) : NULL;
	if (p == NULL)
		return "unknown project";
	if (!keep_identity)
		snprintf(s->hs->project, sizeof(s->hs->project), "%s", p->slug);
	if (!p->enabled)
		return "project disabled";
	if (subj.n_cn == 0)
		return "no common name (CN) in subject";
	if (subj.n_cn > 1)
		return "more than one common name (CN) in subject";
	if (!subj.cn_valid)
		return "invalid common name";
	/* On revalidation, the chain is verified again only when the project's trust changed. */
	if (!keep_identity || p->trust_hash != s->cert->trust_hash) {
		const char *why = verify_chain(s, p, certs, lens, n, reason, cap);
		if (why != NULL)
			return why;
	}
	const dg_cert_device *d = dg_registry_find_cert_device(reg, p->id, subj.cn);
	if (d != NULL && d->blocked)
		return "device blocked";
	if (d == NULL && !p->auto_provision)
		return "unknown device and auto_provision is off";
	if (keep_identity)
		return strcmp(s->identity, subj.cn) == 0 && s->project_id == p->id
		               ? NULL
		               : "certificate identity changed";
	s->auth = AUTH_CERT;
	s->project_id = p->id;
	snprintf(s->hs->identity, sizeof(s->hs->identity), "%s", subj.cn);
	if (d != NULL) {
		s->device_id = d->device_id;
		snprintf(s->hs->device, sizeof(s->hs->device), "%s", d->name);
	}
	return NULL;
}

int
dg_session_verify_cert(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	dg_session *s = store != NULL ? store->userCtx : NULL;

	if (s == NULL || s->state != DG_SESSION_HANDSHAKE || s->hs == NULL)
		return 0;
	/*
	 * wolfSSL's own verdict is never used: the context trusts no CA, and
	 * the session's store holds only what this chain brought. It is
	 * logged at debug, since a certificate wolfSSL verifies on its own
	 * with no intermediate of its chain accepted before it means a CA
	 * reached a store it should not have.
	 */
	if (dg_log_enabled(DG_LOG_DEBUG)) {
		char depth[16];
		snprintf(depth, sizeof(depth), "%d", store->error_depth);
		log_session(s, DG_LOG_DEBUG, "verify.wolfssl", "depth", depth, "preverify",
		            preverify ? "ok" : "failed");
	}
	if (store->certs == NULL || store->totalCerts <= 0)
		return refuse(s, "no client certificate");
	progress(s);
	/*
	 * The whole chain is judged once, at the first call, whichever
	 * certificate that call is about; every later call gets the same
	 * verdict. So wolfSSL only keeps an intermediate it would cache when
	 * the chain it came in was accepted.
	 */
	if (!s->hs->cert_checked) {
		/* One more than may be kept: a longer chain is refused, not cut short. */
		uint8_t *certs[CHAIN_MAX + 1];
		size_t lens[CHAIN_MAX + 1], n = 0;
		s->hs->cert_checked = 1;
		if (s->cert == NULL && (s->cert = calloc(1, sizeof(*s->cert))) == NULL)
			return refuse(s, "out of memory");
		for (int i = 0; i < store->totalCerts && n < CHAIN_MAX + 1; i++) {
			certs[n] = malloc(store->certs[i].length);
			if (certs[n] == NULL)
				break;
			memcpy(certs[n], store->certs[i].buffer, store->certs[i].length);
			lens[n++] = store->certs[i].length;
		}
		const char *why = n > 0 ? judge_chain(s, s->reg, certs, lens, n, 0, s->hs->subject,
		                                      s->hs->reason_buf, sizeof(s->hs->reason_buf))
		                        : "out of memory";
		if (why == NULL && n > CHAIN_MAX)
			why = "certificate chain too long"; /* Unreachable: the judge refuses it. */
		if (why != NULL) {
			refuse(s, why);
			for (size_t i = 0; i < n; i++)
				free(certs[i]);
			free_cert(s);
		} else {
			memcpy(s->cert->chain, certs, n * sizeof(*certs));
			memcpy(s->cert->chain_len, lens, n * sizeof(*lens));
			s->cert->n_chain = n;
		}
	}
	return s->hs->refusal == NULL && s->auth == AUTH_CERT;
}

static void
handshake_failed(dg_session *s, const char *reason)
{
	const char *claimed = s->identity[0] != '\0' && s->auth != AUTH_CERT ? s->identity : NULL;
	/* A refused identity is not the device's: log what was claimed, not a device. */
	s->device_id = -1;
	/* A hostile peer cannot flood the log: repeated failures are counted, not written. */
	if (!dg_log_ratelimit("session.failed", s->last_rx_ms))
		;
	else if (s->hs != NULL && s->hs->subject[0] != '\0')
		log_session(s, DG_LOG_WARN, "session.failed", "reason", reason, "subject",
		            s->hs->subject);
	else
		log_session(s, DG_LOG_WARN, "session.failed", "reason", reason,
		            claimed != NULL ? "identity" : NULL, claimed);
	s->env->refused(s->env->owner, s, reason);
	dg_session_close(s, NULL, 0);
}

static void
schedule_rtx(dg_session *s, uint64_t now_ms)
{
	int t = wolfSSL_dtls_get_current_timeout(s->ssl);
	if (t <= 0)
		t = 1;
	dg_wheel_schedule(s->env->wheel, &s->rtx, now_ms + (uint64_t)t * 1000);
}

static void input_records(dg_session *s, const uint8_t *buf, size_t len, uint64_t now_ms);

/*
 * Arms an established session's one deadline: its idle timeout or, for a
 * certificate session, its chain's earliest notAfter (a wall-clock time,
 * turned into the loop's clock of `now_ms`), whichever comes first.
 */
static void
schedule_life(dg_session *s, uint64_t now_ms)
{
	uint64_t deadline = s->last_rx_ms + (uint64_t)s->env->cfg->limits.idle_timeout_s * 1000;
	if (s->cert != NULL && s->cert->not_after_ms != INT64_MAX) {
		int64_t left = s->cert->not_after_ms - dg_now_ms();
		uint64_t expiry = left > 0 ? now_ms + (uint64_t)left : now_ms;
		if (expiry < deadline)
			deadline = expiry;
	}
	dg_wheel_schedule(s->env->wheel, &s->life, deadline);
}

static void
established(dg_session *s, uint64_t now_ms)
{
	if (pack_names(s) != 0) {
		wolfSSL_shutdown(s->ssl);
		handshake_failed(s, "out of memory");
		return;
	}
	s->state = DG_SESSION_ESTABLISHED;
	s->last_rx_ms = now_ms;
	/*
	 * An established session keeps nothing of its handshake: not ours,
	 * and not wolfSSL's secrets and randoms (its Arrays, 5.4 KB), which
	 * the record layer never reads again. wolfSSL keeps its last flight
	 * and handshake hashes for a client that missed that flight, until
	 * the client's first application record; a client that sends none
	 * has had the handshake timeout to retransmit, and then they go too.
	 */
	free_handshake(s);
	wolfSSL_FreeArrays(s->ssl);
	dg_wheel_schedule(s->env->wheel, &s->rtx,
	                  now_ms + (uint64_t)s->env->cfg->limits.handshake_timeout_s * 1000);
	/*
	 * The record of an empty plaintext is the shortest this cipher makes;
	 * a block cipher pads, so one byte more makes a record no longer.
	 */
	int out0 = wolfSSL_GetOutputSize(s->ssl, 0), out1 = wolfSSL_GetOutputSize(s->ssl, 1);
	s->min_record = out0 > DG_DTLS_HEADER_LEN ? (uint32_t)out0 - DG_DTLS_HEADER_LEN : 0;
	s->block_cipher = out0 > 0 && out1 == out0;
	schedule_life(s, now_ms);
	log_session(s, DG_LOG_INFO, "session.established", "auth",
	            s->auth == AUTH_PSK ? "psk" : "cert", "cipher",
	            wolfSSL_get_cipher_name(s->ssl));
	s->env->established(s->env->owner, s);
	dg_store_touch_device(s->env->store, s->device_id, dg_now_ms());
}

static void
handshake_done(dg_session *s, uint64_t now_ms)
{
	dg_wheel_cancel(s->env->wheel, &s->rtx);
	/* The chain is judged: what wolfSSL kept of it goes with its throw-away store. */
	dg_dtls_end_verify(s->ssl);
	if (s->auth == AUTH_NONE) {
		/*
		 * Not reachable while the context demands a client certificate
		 * on certificate suites; kept so that no path establishes a
		 * session without an identity.
		 */
		wolfSSL_shutdown(s->ssl);
		handshake_failed(s, "no device identity (no PSK, no client certificate)");
		return;
	}
	if (s->device_id < 0) {
		/* First connection of this certificate: find or make its device. */
		s->state = DG_SESSION_PROVISIONING;
		s->env->provision(s->env->owner, s, s->project_id, s->identity);
		return;
	}
	established(s, now_ms);
}

void
dg_session_provisioned(dg_session *s, const dg_provision_result *res, uint64_t now_ms)
{
	if (s->state != DG_SESSION_PROVISIONING)
		return;
	if (res->rc != 0) {
		char why[96];
		snprintf(why, sizeof(why), "provisioning failed: %s", strerror(-res->rc));
		wolfSSL_shutdown(s->ssl);
		handshake_failed(s, why);
		return;
	}
	if (res->blocked) {
		/* A blocked device that had no certificate ID yet, found by its name. */
		wolfSSL_shutdown(s->ssl);
		handshake_failed(s, "device blocked");
		return;
	}
	s->device_id = res->device_id;
	if (s->hs != NULL)
		snprintf(s->hs->device, sizeof(s->hs->device), "%s", res->name);
	if (res->created && s->env->metrics != NULL)
		dg_metrics_provisioned(s->env->metrics);
	if (res->created || res->attached)
		log_session(s, DG_LOG_INFO, "device.provisioned", "certificate_id", s->identity,
		            "how", res->created ? "created" : "attached");
	/* What arrived while the device was being made, taken before established() frees it. */
	held h[HELD_MAX];
	size_t n = s->hs != NULL ? s->hs->n_held : 0;
	if (n > 0)
		memcpy(h, s->hs->held, n * sizeof(*h));
	if (s->hs != NULL)
		s->hs->n_held = 0;
	established(s, now_ms);
	/* Then it is read, in order. */
	for (size_t i = 0; i < n; i++) {
		if (s->state == DG_SESSION_ESTABLISHED)
			input_records(s, h[i].data, h[i].len, now_ms);
		free(h[i].data);
	}
}

static void send_next_notification(dg_session *s, uint64_t now_ms);
static void notify_timeout(dg_session *s, uint64_t now_ms);
static void notify_rpc(dg_session *s, observer *o, uint64_t now_ms);
static void rpc_expired(dg_session *s, uint64_t now_ms);
static void send_notification(dg_session *s, const observer *o, const uint8_t *body, size_t len,
                              int format, uint64_t now_ms);

/* An ACK or RST from the device: the answer to a notification. */
static void
handle_ack(dg_session *s, uint8_t type, uint16_t mid, uint64_t now_ms)
{
	if (s->inflight == NULL || mid != s->inflight_mid)
		return;
	if (type == DG_COAP_RST)
		dg_session_unobserve(s, s->inflight_token, s->inflight_token_len);
	free(s->inflight);
	s->inflight = NULL;
	dg_wheel_cancel(s->env->wheel, &s->notify_rtx);
	send_next_notification(s, now_ms);
}

/*
 * Takes one request from the bucket; returns 0, or the seconds until one
 * is there again (for Max-Age) when it is empty. The bucket holds
 * limits.device_burst requests (full when the session starts, so the burst
 * a device sends on connecting passes) and refills at
 * limits.device_requests_per_s.
 */
static int64_t
rate_limited(dg_session *s, uint64_t now_ms)
{
	int64_t rate = s->env->cfg->limits.device_requests_per_s;
	int64_t cap = (int64_t)s->env->cfg->limits.device_burst * 1000;
	if (cap < 1000)
		cap = 1000;
	s->bucket += (int64_t)(now_ms - s->bucket_ms) * rate;
	s->bucket_ms = now_ms;
	if (s->bucket > cap)
		s->bucket = cap;
	if (s->bucket >= 1000) {
		s->bucket -= 1000;
		return 0;
	}
	int64_t wait_ms = (1000 - s->bucket + rate - 1) / rate;
	return wait_ms / 1000 + 1;
}

/*
 * Whether a request continues a block-wise transfer under way (a Block1
 * block after the first, or a Block2 block after the first served one):
 * those are parts of one request, not new ones, and a 4.29 in the middle
 * would cut the transfer off.
 */
static int
continues_transfer(const dg_session *s, const dg_coap_request *req, uint64_t now_ms)
{
	dg_block_opt b;
	if (req->block1 >= 0 && s->block1 != NULL &&
	    dg_block_decode((uint32_t)req->block1, &b) == 0 && b.num > 0)
		return 1;
	if (req->block2 >= 0 && req->code == DG_COAP_GET && now_ms < s->block2_until_ms &&
	    dg_block_decode((uint32_t)req->block2, &b) == 0 && b.num > 0 && b.num == s->block2_next)
		return 1;
	return 0;
}

void
dg_session_block2_served(dg_session *s, uint32_t num, uint64_t now_ms)
{
	s->block2_until_ms = now_ms + DG_COAP_EXCHANGE_LIFETIME_MS;
	s->block2_next = num + 1;
}

/* Which service a request is for, for metrics. */
static int
service_of(const dg_coap_request *req)
{
	if (req->n_path == 0)
		return req->code == DG_COAP_DELETE ? DG_SVC_KEEPALIVE : DG_SVC_OTHER;
	const dg_coap_str *p = &req->path[0];
	if (p->len == 11 && memcmp(p->s, ".well-known", 11) == 0)
		return DG_SVC_CORE;
	if (p->len == 2 && memcmp(p->s, ".d", 2) == 0)
		return DG_SVC_STATE;
	if ((p->len == 4 && memcmp(p->s, "logs", 4) == 0) ||
	    (p->len == 2 && memcmp(p->s, ".s", 2) == 0 && req->n_path > 1 &&
	     req->path[1].len == 4 && memcmp(req->path[1].s, "logs", 4) == 0))
		return DG_SVC_LOGS;
	if (p->len == 2 && memcmp(p->s, ".s", 2) == 0)
		return DG_SVC_STREAM;
	if (p->len == 2 && memcmp(p->s, ".c", 2) == 0)
		return DG_SVC_SETTINGS;
	if (p->len == 4 && memcmp(p->s, ".rpc", 4) == 0)
		return DG_SVC_RPC;
	if (p->len == 2 && memcmp(p->s, ".u", 2) == 0)
		return DG_SVC_OTA;
	return DG_SVC_OTHER;
}

/* The handler in front of the router: the per-device request rate. */
static void
limit_then_route(void *ctx, const dg_coap_request *req, dg_coap_response *resp)
{
	dg_route_ctx *rc = ctx;
	dg_session *s = rc->session;
	int service = service_of(req);
	/* The keepalive is never refused: an error would make the client reconnect. */
	int keepalive = req->code == DG_COAP_DELETE && req->n_path == 0;
	int64_t wait_s = keepalive || continues_transfer(s, req, rc->now_ms)
	                         ? 0
	                         : rate_limited(s, rc->now_ms);
	if (wait_s > 0 && service == DG_SVC_LOGS) {
		/*
		 * The SDK posts every non-2.xx answer as a log line: a 4.29
		 * here would make another log post, and so on. Over the rate,
		 * log lines are taken (2.04) and dropped, and counted.
		 */
		resp->code = DG_COAP_CHANGED;
		if (s->env->metrics != NULL) {
			dg_metrics_log_dropped(s->env->metrics);
			dg_metrics_coap_request(s->env->metrics, service, resp->code >> 5);
		}
		if (dg_log_ratelimit("logs.dropped", rc->now_ms))
			log_session(s, DG_LOG_WARN, "logs.dropped", "reason",
			            "over limits.device_requests_per_s", NULL, NULL);
		return;
	}
	if (wait_s > 0) {
		static const char msg[] = "too many requests";
		resp->code = DG_COAP_TOO_MANY_REQUESTS;
		resp->max_age = wait_s;
		resp->content_format = DG_COAP_FMT_TEXT;
		memcpy(resp->body, msg, sizeof(msg) - 1);
		resp->body_len = sizeof(msg) - 1;
		if (s->env->metrics != NULL)
			dg_metrics_coap_request(s->env->metrics, service, resp->code >> 5);
		return;
	}
	dg_router_handle(ctx, req, resp);
	if (s->env->metrics != NULL && !resp->deferred)
		dg_metrics_coap_request(s->env->metrics, service, resp->code >> 5);
}

/*
 * The largest CoAP message one DTLS record to this peer carries: wolfSSL
 * refuses a write larger than that, so every reply is sized by it (and what
 * does not fit goes with Block2).
 */
static size_t
max_message(const dg_session *s)
{
	int n = wolfSSL_GetMaxOutputSize(s->ssl);
	if (n <= 0)
		return 1024 + 64; /* Not known: one 1024-byte block and its header. */
	return (size_t)n < PLAIN_MAX ? (size_t)n : PLAIN_MAX;
}

/*
 * Arms the expiry of what the CoAP layer caches for duplicates, when it is
 * not armed already: entries are added in time order, so the armed one is
 * never later than the first to expire (an early firing looks again).
 */
static void
arm_dedup(dg_session *s, uint64_t now_ms)
{
	if (dg_wheel_pending(&s->dedup))
		return;
	uint64_t next = dg_coap_expire(s->coap, now_ms);
	if (next != 0)
		dg_wheel_schedule(s->env->wheel, &s->dedup, next);
}

static void
handle_plaintext(dg_session *s, const uint8_t *msg, size_t len, uint64_t now_ms)
{
	uint8_t out[PLAIN_MAX];
	size_t outlen = 0;
	dg_route_ctx rc = {
	        .project = s->project,
	        .device = s->device,
	        .device_id = s->device_id,
	        .project_id = s->project_id,
	        .session = s,
	        .now_ms = now_ms,
	};

	if (len >= 4 && msg[0] >> 6 == 1 && ((msg[0] >> 4) & 3) >= DG_COAP_ACK) {
		handle_ack(s, (msg[0] >> 4) & 3, (uint16_t)(msg[2] << 8 | msg[3]), now_ms);
		return;
	}
	int in = dg_coap_input(s->coap, msg, len, now_ms, limit_then_route, &rc, out,
	                       max_message(s), &outlen);
	arm_dedup(s, now_ms);
	/* Requests the message layer refused by itself are answered requests too. */
	if (dg_coap_refused(s->coap) != 0 && s->env->metrics != NULL)
		dg_metrics_coap_request(s->env->metrics, DG_SVC_OTHER,
		                        dg_coap_refused(s->coap) >> 5);
	if (in != 0 || outlen == 0)
		return;
	if (wolfSSL_write(s->ssl, out, (int)outlen) <= 0)
		log_session(s, DG_LOG_DEBUG, "session.write_failed", NULL, NULL, NULL, NULL);
}

/*
 * Reads what wolfSSL made of the record at hand. Only what authenticates
 * reaches here as data or an alert: wolfSSL silently drops records whose
 * MAC fails or whose sequence number was seen, and input_records() has
 * already dropped what wolfSSL would take for a fatal error.
 */
static void
read_records(dg_session *s, uint64_t now_ms)
{
	uint8_t plain[DG_DTLS_MAX_PLAINTEXT];

	/* Bounded: one record holds one plaintext. */
	for (int i = 0; i < 4 && s->state == DG_SESSION_ESTABLISHED; i++) {
		int n = wolfSSL_read(s->ssl, plain, sizeof(plain));
		if (n > 0) {
			s->last_rx_ms = now_ms;
			handle_plaintext(s, plain, (size_t)n, now_ms);
			continue;
		}
		int err = wolfSSL_get_error(s->ssl, n);
		if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
			return;
		if (err == WOLFSSL_ERROR_ZERO_RETURN) {
			dg_session_close(s, "close_notify", 1);
			return;
		}
		dg_session_close(s, wolfSSL_ERR_reason_error_string((unsigned long)err), 0);
		return;
	}
}

/* Keeps a datagram that arrives while the device is being provisioned. */
static void
hold(dg_session *s, const uint8_t *buf, size_t len)
{
	if (buf == NULL || len == 0 || s->hs == NULL || s->hs->n_held == HELD_MAX)
		return;
	uint8_t *copy = malloc(len);
	if (copy == NULL)
		return;
	memcpy(copy, buf, len);
	s->hs->held[s->hs->n_held].data = copy;
	s->hs->held[s->hs->n_held++].len = len;
}

static void
drop_record(dg_session *s, const char *reason)
{
	if (s->env->metrics != NULL)
		dg_metrics_dropped(s->env->metrics, reason);
}

/*
 * Runs the handshake on what wolfSSL has (the ClientHello the listener
 * handed over) or on one record. `flight_has_cke` says whether the
 * datagram of this record carries a ClientKeyExchange: only the client's
 * own flight may decide that its key is wrong.
 */
static void
handshake_step(dg_session *s, const dg_dtls_record *r, int flight_has_cke, uint64_t now_ms)
{
	word32 mac_before = 0, mac_after = 0, replay = 0;
	dg_dtls_handshake hs;

	if (r != NULL && r->epoch == 0 && dg_dtls_handshake_header(r, &hs) == 0) {
		dg_dtls_cke_add(&s->hs->cke, &hs);
	}
	wolfSSL_dtls_get_drop_stats(s->ssl, &mac_before, &replay);
	if (r != NULL) {
		s->io.rx = r->raw;
		s->io.rx_len = r->raw_len;
	}
	int ret = wolfSSL_accept(s->ssl);
	s->io.rx = NULL;
	s->io.rx_len = 0;
	if (ret == WOLFSSL_SUCCESS) {
		handshake_done(s, now_ms);
		return;
	}
	int err = wolfSSL_get_error(s->ssl, ret);
	if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
		wolfSSL_dtls_get_drop_stats(s->ssl, &mac_after, &replay);
		if (mac_after > mac_before && r != NULL && r->epoch == 1 && r->content_type == 22 &&
		    flight_has_cke && (s->auth == AUTH_PSK || s->hs->psk_decoy)) {
			/*
			 * The client's Finished, sent with its ClientKeyExchange,
			 * did not decrypt under the key we hold for its identity
			 * (or the decoy of a refused one).
			 */
			dg_dtls_send_fatal_alert(&s->io, 51 /* decrypt_error */);
			handshake_failed(s, s->hs->refusal != NULL ? s->hs->refusal : "wrong key");
			return;
		}
		schedule_rtx(s, now_ms);
		return;
	}
	const char *why = s->hs->refusal;
	if (why == NULL && (err == NO_PEER_CERT || err == -NO_PEER_CERT))
		why = "no client certificate";
	/* wolfSSL's own parser refused the certificate before our judge saw it. */
	if (why == NULL && err <= ASN_PARSE_E && err > ECC_BAD_ARG_E)
		why = "malformed certificate";
	if (why == NULL)
		why = wolfSSL_ERR_reason_error_string((unsigned long)err);
	handshake_failed(s, why);
}

/*
 * Why an established session drops this record before wolfSSL sees it,
 * or NULL. RFC 6347 4.1.2.7: what does not authenticate, is malformed or
 * belongs to no current epoch is discarded silently. These are the
 * records wolfSSL would answer with a fatal error instead: anything of
 * another epoch (epoch 0 is plaintext, so anyone can forge it), and
 * ciphertext too short or misaligned for the session's cipher.
 */
static const char *
screen_record(const dg_session *s, const dg_dtls_record *r)
{
	if (r->epoch != 1 || r->content_type == 20)
		return "epoch";
	if (r->length < s->min_record || r->length > DG_DTLS_MAX_FRAGMENT ||
	    (s->block_cipher && (r->length - s->min_record) % 16 != 0))
		return "bad_record";
	return NULL;
}

/*
 * Splits a datagram into records with bounds checks and gives wolfSSL one
 * record at a time, so that a bad record costs only itself: a length
 * field that lies ends the datagram (nothing after it can be framed), and
 * nothing of one datagram is ever joined to the next.
 */
static void
input_records(dg_session *s, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	dg_dtls_record r;
	size_t off = 0;
	/* Whether a ClientKeyExchange came before, in this datagram: a flight is in order. */
	int rc = 0, cke = 0;

	while (s->state != DG_SESSION_CLOSED &&
	       (rc = dg_dtls_next_record(buf, len, &off, &r)) == 0) {
		if (s->state == DG_SESSION_PROVISIONING) {
			hold(s, r.raw, r.raw_len);
		} else if (s->state == DG_SESSION_HANDSHAKE) {
			if (r.epoch == 0 && r.handshake_type == 16)
				cke = 1;
			handshake_step(s, &r, cke, now_ms);
		} else {
			const char *why = screen_record(s, &r);
			if (why != NULL) {
				drop_record(s, why);
				continue;
			}
			s->io.rx = r.raw;
			s->io.rx_len = r.raw_len;
			read_records(s, now_ms);
			s->io.rx = NULL;
			s->io.rx_len = 0;
		}
	}
	if (rc == -EPROTO && s->state != DG_SESSION_CLOSED)
		drop_record(s, "bad_record");
}

void
dg_session_input(dg_session *s, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	if (s->state == DG_SESSION_CLOSED)
		return;
	if (s->state == DG_SESSION_HANDSHAKE)
		s->last_rx_ms = now_ms;
	if (buf == NULL) {
		/* The listener handed over the ClientHello wolfSSL already holds. */
		if (s->state == DG_SESSION_HANDSHAKE)
			handshake_step(s, NULL, 0, now_ms);
		return;
	}
	input_records(s, buf, len, now_ms);
}

const char *
dg_session_revalidate(dg_session *s, dg_registry *reg)
{
	const char *why = NULL;

	if (s->state != DG_SESSION_ESTABLISHED && s->state != DG_SESSION_PROVISIONING)
		return NULL;
	const dg_project *p = dg_registry_find_project(reg, s->project, strlen(s->project));
	if (p == NULL || !p->enabled) {
		why = "project disabled";
	} else if (s->auth == AUTH_PSK) {
		const dg_psk_cred *c = dg_registry_find_psk(reg, s->identity, strlen(s->identity));
		if (c == NULL || c->device_id != s->device_id)
			why = "PSK removed";
		else if (c->device_blocked)
			why = "device blocked";
	} else if (s->auth == AUTH_CERT) {
		int64_t not_after = s->cert->not_after_ms;
		char reason[DG_SUBJECT_MAX + 96];
		const char *j = judge_chain(s, reg, s->cert->chain, s->cert->chain_len,
		                            s->cert->n_chain, 1, NULL, reason, sizeof(reason));
		if (j == reason) {
			/* It names something: kept with the session, for the caller's log line. */
			free(s->why_buf);
			s->why_buf = strdup(reason);
			j = s->why_buf != NULL ? s->why_buf : "certificate refused";
		}
		/* Verified again against new trust: the chain's path, so its notAfter, may differ.
		 */
		if (j == NULL && s->cert->not_after_ms != not_after &&
		    s->state == DG_SESSION_ESTABLISHED)
			schedule_life(s, s->env->wheel->now_tick * DG_WHEEL_TICK_MS);
		if (j != NULL && strcmp(j, "unknown CA") == 0)
			why = "CA removed";
		else if (j != NULL && strcmp(j, "unknown device and auto_provision is off") != 0)
			why = j;
	}
	if (why != NULL)
		return why;
	if (reg != s->reg) {
		dg_registry_unref(s->reg);
		s->reg = dg_registry_ref(reg);
	}
	return NULL;
}

void
dg_session_close(dg_session *s, const char *reason, int notify)
{
	int was_established = s->state == DG_SESSION_ESTABLISHED;

	if (s->state == DG_SESSION_CLOSED)
		return;
	if (notify && was_established)
		wolfSSL_shutdown(s->ssl);
	if (reason != NULL)
		log_session(s, DG_LOG_INFO, "session.closed", "reason", reason, NULL, NULL);
	s->state = DG_SESSION_CLOSED;
	dg_wheel_cancel(s->env->wheel, &s->rtx);
	dg_wheel_cancel(s->env->wheel, &s->life);
	dg_wheel_cancel(s->env->wheel, &s->dedup);
	dg_wheel_cancel(s->env->wheel, &s->notify_rtx);
	dg_wheel_cancel(s->env->wheel, &s->block_expiry);
	dg_wheel_cancel(s->env->wheel, &s->rpc_deadline);
	free_handshake(s);
	s->env->closed(s->env->owner, s, was_established);
}

void
dg_session_timer(dg_wheel_entry *e, uint64_t now_ms)
{
	if (e->tag == DG_TIMER_SESSION_NOTIFY) {
		notify_timeout(dg_container_of(e, dg_session, notify_rtx), now_ms);
		return;
	}
	if (e->tag == DG_TIMER_SESSION_DEDUP) {
		dg_session *s = dg_container_of(e, dg_session, dedup);
		uint64_t next = dg_coap_expire(s->coap, now_ms);
		if (next != 0 && s->state == DG_SESSION_ESTABLISHED)
			dg_wheel_schedule(s->env->wheel, &s->dedup, next);
		return;
	}
	if (e->tag == DG_TIMER_SESSION_RPC) {
		dg_session *s = dg_container_of(e, dg_session, rpc_deadline);
		if (s->state == DG_SESSION_ESTABLISHED)
			rpc_expired(s, now_ms);
		return;
	}
	if (e->tag == DG_TIMER_SESSION_BLOCK) {
		dg_session_block1_end(dg_container_of(e, dg_session, block_expiry));
		return;
	}
	if (e->tag == DG_TIMER_SESSION_RTX) {
		dg_session *s = dg_container_of(e, dg_session, rtx);
		if (s->state == DG_SESSION_ESTABLISHED) {
			/* Nobody retransmits the last flight now: wolfSSL's copy of it goes. */
			wolfSSL_FreeHandshakeResources(s->ssl);
			return;
		}
		if (s->state != DG_SESSION_HANDSHAKE)
			return;
		if (wolfSSL_dtls_got_timeout(s->ssl) != WOLFSSL_SUCCESS) {
			handshake_failed(s, "handshake retransmissions exhausted");
			return;
		}
		schedule_rtx(s, now_ms);
		return;
	}
	dg_session *s = dg_container_of(e, dg_session, life);
	if (s->state == DG_SESSION_HANDSHAKE || s->state == DG_SESSION_PROVISIONING) {
		handshake_failed(s, s->hs != NULL && s->hs->refusal != NULL ? s->hs->refusal
		                                                            : "handshake timeout");
		return;
	}
	if (s->cert != NULL && dg_now_ms() >= s->cert->not_after_ms) {
		dg_session_close(s, "certificate expired", 1);
		return;
	}
	uint64_t idle_ms = (uint64_t)s->env->cfg->limits.idle_timeout_s * 1000;
	if (now_ms < s->last_rx_ms + idle_ms) {
		/*
		 * Traffic came since this deadline was set, or the wall clock went
		 * back before a certificate's notAfter: look again then.
		 */
		schedule_life(s, now_ms);
		return;
	}
	dg_session_close(s, "idle timeout", 1);
}

/* Deferred replies. */

void
dg_deferred_free(dg_deferred *d)
{
	if (d == NULL)
		return;
	if (d->free_arg != NULL)
		d->free_arg(d->arg);
	free(d->notify_path);
	free(d);
}

void
dg_session_defer(dg_session *s, const dg_coap_request *req, dg_coap_response *resp, dg_deferred *d)
{
	d->session_id = s->id;
	d->service = service_of(req);
	d->type = req->type;
	d->mid = req->mid;
	memcpy(d->token, req->token, req->token_len);
	d->token_len = req->token_len;
	if (s->env->submit(s->env->owner, d) != 0) {
		/* The store's write queue is full (limits.max_write_queue): try again soon. */
		dg_deferred_free(d);
		dg_coap_set_text(resp, DG_COAP_SERVICE_UNAVAILABLE, "store busy");
		resp->max_age = STORE_BUSY_MAX_AGE_S;
		return;
	}
	resp->deferred = 1;
}

static void
send_plain(dg_session *s, const uint8_t *bytes, size_t len)
{
	if (s->state == DG_SESSION_ESTABLISHED && wolfSSL_write(s->ssl, bytes, (int)len) <= 0)
		log_session(s, DG_LOG_DEBUG, "session.write_failed", NULL, NULL, NULL, NULL);
}

/* Makes `msg` (`len` bytes, never written to) the plain-text body of `resp`. */
static void
text_body(dg_coap_response *resp, char *msg, size_t len)
{
	resp->body = (uint8_t *)msg;
	resp->body_len = len;
	resp->body_cap = len;
	resp->content_format = DG_COAP_FMT_TEXT;
}

/*
 * A render for a notification came back: send it to its observation, if
 * that is still there, then whatever else is due.
 */
static void
rendered(dg_session *s, dg_deferred *d, uint64_t now_ms)
{
	const dg_render *r = d->arg;
	s->rendering = 0;
	if (s->state != DG_SESSION_ESTABLISHED)
		return;
	for (size_t i = 0; d->rc == 0 && i < s->n_obs; i++) {
		observer *o = &s->obs[i];
		if (o->token_len == d->token_len && memcmp(o->token, d->token, d->token_len) == 0) {
			send_notification(s, o, r->body, r->len, r->format, now_ms);
			break;
		}
	}
	if (d->rc != 0)
		log_session(s, DG_LOG_ERROR, "store.read_failed", "error", strerror(-d->rc), NULL,
		            NULL);
	send_next_notification(s, now_ms);
}

void
dg_session_deferred_done(dg_session *s, dg_deferred *d, uint64_t now_ms)
{
	if (d->notification) {
		if (s != NULL)
			rendered(s, d, now_ms);
		dg_deferred_free(d);
		return;
	}
	if (s != NULL && s->state == DG_SESSION_ESTABLISHED) {
		dg_coap_response resp;
		uint8_t out[PLAIN_MAX], body[PLAIN_MAX];
		size_t outlen = 0;
		dg_coap_response_init(&resp);
		resp.code = d->rc == 0         ? d->code_ok
		            : d->rc == -EFBIG  ? DG_COAP_REQUEST_TOO_LARGE
		            : d->rc == -ENOSPC ? DG_COAP_SERVICE_UNAVAILABLE
		                               : DG_COAP_INTERNAL_ERROR;
		if (d->rc == 0 && d->reply != NULL) {
			/* The service makes the reply (a read's 2.05 and its body). */
			size_t max = max_message(s);
			resp.body = body;
			resp.body_cap = max > 64 ? max - 64 : 16;
			d->reply(s, d, &resp, now_ms);
			if (resp.code >> 5 < 2 || resp.code >> 5 > 5 ||
			    resp.body_len > resp.body_cap) {
				dg_coap_response_init(&resp);
				resp.code = DG_COAP_INTERNAL_ERROR;
			}
		}
		if (d->rc == -EFBIG) {
			/* The write would make the state document larger than allowed. */
			static char msg[] = "state document over limits.max_state_bytes";
			text_body(&resp, msg, sizeof(msg) - 1);
		}
		if (d->rc == -ENOSPC) {
			/*
			 * The disk is full: nothing was stored; try again much later.
			 * The store logs it once (store.failing), not per request.
			 */
			static char msg[] = "store full";
			text_body(&resp, msg, sizeof(msg) - 1);
			resp.max_age = STORE_FULL_MAX_AGE_S;
		}
		if (s->env->metrics != NULL)
			dg_metrics_coap_request(s->env->metrics, d->service, resp.code >> 5);
		if (d->rc != 0 && d->rc != -EFBIG)
			log_session(s, d->rc == -ENOSPC ? DG_LOG_DEBUG : DG_LOG_ERROR,
			            d->read ? "store.read_failed" : "store.write_failed", "error",
			            strerror(-d->rc), NULL, NULL);
		if (dg_coap_reply(s->coap, d->type, d->mid, d->token, d->token_len, &resp, now_ms,
		                  out, sizeof(out), &outlen) == 0)
			send_plain(s, out, outlen);
		arm_dedup(s, now_ms);
	}
	dg_deferred_free(d);
}

/* Observations. */

int64_t
dg_session_observe(dg_session *s, const dg_coap_request *req, int kind, const char *path,
                   int format)
{
	observer *o = NULL;
	for (size_t i = 0; i < s->n_obs; i++)
		if (s->obs[i].token_len == req->token_len &&
		    memcmp(s->obs[i].token, req->token, req->token_len) == 0)
			o = &s->obs[i];
	if (o == NULL) {
		/*
		 * The limit is read live (SIGHUP may raise or lower it); the
		 * array only ever grows by the session's own capacity, so a
		 * raised limit never lets it write past what it allocated.
		 */
		if (s->n_obs >= s->env->cfg->limits.max_observers)
			return -ENOSPC;
		if (s->n_obs == s->cap_obs) {
			observer *grown = realloc(s->obs, (s->cap_obs + 1) * sizeof(*s->obs));
			if (grown == NULL)
				return -ENOSPC;
			s->obs = grown;
			s->cap_obs++;
		}
		o = &s->obs[s->n_obs++];
	}
	memset(o, 0, sizeof(*o));
	memcpy(o->token, req->token, req->token_len);
	o->token_len = req->token_len;
	o->kind = kind;
	snprintf(o->path, sizeof(o->path), "%s", path != NULL ? path : "");
	o->format = format;
	s->obs_seq = (s->obs_seq + 1) & 0xffffff;
	return s->obs_seq;
}

void
dg_session_unobserve(dg_session *s, const uint8_t *token, size_t token_len)
{
	for (size_t i = 0; i < s->n_obs; i++) {
		if (s->obs[i].token_len == token_len &&
		    memcmp(s->obs[i].token, token, token_len) == 0) {
			s->obs[i] = s->obs[--s->n_obs];
			return;
		}
	}
}

/*
 * Sends `body` (`len` bytes in `format`; NULL: an empty 2.05) as the
 * notification of observer `o`, a CON, and arms its retransmission. A
 * representation larger than one message is notified as its first Block2
 * block (M=1, with ETag and Size2); the device fetches the rest with GET
 * and Block2 (RFC 7959 section 3.4), answered from the resource then.
 */
static void
send_notification(dg_session *s, const observer *o, const uint8_t *body, size_t len, int format,
                  uint64_t now_ms)
{
	uint8_t out[PLAIN_MAX];
	size_t outlen = 0, max = max_message(s);
	dg_coap_response resp;

	dg_coap_response_init(&resp);
	resp.code = DG_COAP_CONTENT;
	s->obs_seq = (s->obs_seq + 1) & 0xffffff;
	resp.observe = s->obs_seq;
	if (body != NULL) {
		dg_block_opt first;
		size_t offset = 0, chunk = len;
		/* Room for the header, as the message layer keeps for replies. */
		size_t room = max > 64 ? max - 64 : 16;
		resp.content_format = format;
		if (dg_block2_slice(len, room, -1, &first, &offset, &chunk) == 1) {
			resp.block2 = dg_block_encode(&first);
			resp.size2 = (uint32_t)len;
			dg_block2_etag(body, len, resp.etag);
			resp.etag_len = sizeof(resp.etag);
			dg_session_block2_served(s, first.num, now_ms);
		}
		resp.body = (uint8_t *)(uintptr_t)body;
		resp.body_len = chunk;
		resp.body_cap = chunk;
	}
	uint16_t mid = dg_coap_next_mid(s->coap);
	if (dg_coap_encode(DG_COAP_CON, mid, o->token, o->token_len, &resp, out,
	                   max < sizeof(out) ? max : sizeof(out), &outlen) != 0)
		return;
	free(s->inflight);
	s->inflight = malloc(outlen);
	if (s->inflight == NULL)
		return;
	memcpy(s->inflight, out, outlen);
	s->inflight_len = outlen;
	s->inflight_mid = mid;
	memcpy(s->inflight_token, o->token, o->token_len);
	s->inflight_token_len = o->token_len;
	s->inflight_tries = 0;
	/* ACK_TIMEOUT times a random factor in [1, 1.5). */
	s->inflight_timeout_ms = ACK_TIMEOUT_MS + (uint32_t)(mid % (ACK_TIMEOUT_MS / 2));
	send_plain(s, out, outlen);
	if (dg_log_enabled(DG_LOG_DEBUG)) {
		char seq[16];
		snprintf(seq, sizeof(seq), "%u", (unsigned)s->obs_seq);
		log_session(s, DG_LOG_DEBUG, "observe.notify", "path", o->path, "observe", seq);
	}
	dg_wheel_schedule(s->env->wheel, &s->notify_rtx, now_ms + s->inflight_timeout_ms);
}

/* Notifies state observer `o` of the value at its path in the session's notify_doc. */
static void
notify_state(dg_session *s, observer *o, uint64_t now_ms)
{
	dg_path_seg path[32];
	size_t n = dg_state_path_parse(o->path, path, 32);
	cJSON *doc = NULL;
	uint8_t *body = NULL;
	size_t body_len = 0;

	o->dirty = 0;
	if (s->notify_doc == NULL)
		return;
	if (s->notify_doc[0] != '\0') {
		doc = cJSON_Parse(s->notify_doc);
		if (doc == NULL)
			return;
	}
	const cJSON *v = dg_state_get(doc, path, n);
	/* The whole value, however large: the first block is cut from it. */
	if (v != NULL)
		dg_payload_encode_alloc(o->format, v, NOTIFY_MAX, &body, &body_len);
	cJSON_Delete(doc);
	if (v == NULL || body != NULL)
		send_notification(s, o, body, body_len, o->format, now_ms);
	free(body);
}

/*
 * Asks the store's reader thread to render the resource of observer `o`
 * for its notification; dg_session_deferred_done() sends it.
 */
static void
notify_rendered(dg_session *s, observer *o)
{
	dg_render_fn fn = dg_router_renderer(o->kind);
	dg_render *r = calloc(1, sizeof(*r));
	dg_deferred *d = calloc(1, sizeof(*d));

	o->dirty = 0;
	if (fn == NULL || r == NULL || d == NULL)
		goto fail;
	r->kind = o->kind;
	r->project_id = s->project_id;
	r->device_id = s->device_id;
	r->format = o->format;
	r->fn = fn;
	d->session_id = s->id;
	d->notification = 1;
	d->read = 1;
	d->run = dg_render_run;
	d->arg = r;
	d->free_arg = dg_render_free;
	d->notify_device = -1;
	d->service = DG_SVC_OTHER;
	memcpy(d->token, o->token, o->token_len);
	d->token_len = o->token_len;
	if (s->env->submit(s->env->owner, d) != 0) {
		/* The reader's queue is full: the next change notifies again. */
		dg_deferred_free(d);
		return;
	}
	s->rendering = 1;
	return;
fail:
	free(r);
	free(d);
}

static void
send_next_notification(dg_session *s, uint64_t now_ms)
{
	if (s->inflight != NULL || s->rendering || s->state != DG_SESSION_ESTABLISHED)
		return;
	for (size_t i = 0; i < s->n_obs; i++) {
		observer *o = &s->obs[i];
		if (!o->dirty)
			continue;
		if (o->kind == DG_OBS_STATE)
			notify_state(s, o, now_ms);
		else if (o->kind == DG_OBS_RPC)
			notify_rpc(s, o, now_ms);
		else
			notify_rendered(s, o);
		if (s->inflight != NULL || s->rendering)
			return;
	}
	/* Nothing is due: the document is not needed any more. */
	free(s->notify_doc);
	s->notify_doc = NULL;
}

void
dg_session_state_changed(dg_session *s, const char *path, const char *doc, uint64_t now_ms)
{
	dg_path_seg changed[32], observed[32];
	size_t n_chg = dg_state_path_parse(path, changed, 32);
	int any = 0;
	for (size_t i = 0; i < s->n_obs; i++) {
		if (s->obs[i].kind != DG_OBS_STATE)
			continue;
		size_t n_obs = dg_state_path_parse(s->obs[i].path, observed, 32);
		if (dg_state_path_overlaps(observed, n_obs, changed, n_chg)) {
			s->obs[i].dirty = 1;
			any = 1;
		}
	}
	if (!any)
		return;
	if (doc != NULL) {
		char *copy = strdup(doc);
		if (copy != NULL) {
			free(s->notify_doc);
			s->notify_doc = copy;
		}
	}
	send_next_notification(s, now_ms);
}

/* Notifies RPC observer `o` of the call at the head of the queue, if any. */
static void
notify_rpc(dg_session *s, observer *o, uint64_t now_ms)
{
	uint8_t *body = NULL;
	size_t len = 0;
	o->dirty = 0;
	if (s->n_rpc == 0)
		return;
	cJSON *v = cJSON_Parse(s->rpcq[0].call);
	if (v == NULL)
		return;
	int rc = dg_payload_encode_alloc(o->format, v, DG_RPC_CALL_MAX, &body, &len);
	cJSON_Delete(v);
	if (rc != 0)
		return;
	s->rpcq[0].sent = 1;
	send_notification(s, o, body, len, o->format, now_ms);
	free(body);
}

/* Arms the deadline of the call at the head of the queue. */
static void
arm_rpc_deadline(dg_session *s)
{
	if (s->n_rpc > 0)
		dg_wheel_schedule(s->env->wheel, &s->rpc_deadline, s->rpcq[0].deadline_ms);
	else
		dg_wheel_cancel(s->env->wheel, &s->rpc_deadline);
}

/* Takes call i out of the queue. */
static void
rpc_remove(dg_session *s, uint32_t i)
{
	free(s->rpcq[i].id);
	free(s->rpcq[i].call);
	memmove(&s->rpcq[i], &s->rpcq[i + 1], (s->n_rpc - i - 1) * sizeof(*s->rpcq));
	s->n_rpc--;
}

/*
 * Drops every call past its deadline, wherever it is in the queue (the
 * CLI that made it marks it timed out in the store), so that no call is
 * notified after it expired; then arms the new head's deadline and
 * notifies it if the head changed.
 */
static void
rpc_sweep(dg_session *s, int head_changed, uint64_t now_ms)
{
	for (uint32_t i = 0; i < s->n_rpc;) {
		if (s->rpcq[i].deadline_ms > now_ms) {
			i++;
			continue;
		}
		log_session(s, DG_LOG_INFO, "rpc.timeout", "id", s->rpcq[i].id, NULL, NULL);
		head_changed |= i == 0;
		rpc_remove(s, i);
	}
	arm_rpc_deadline(s);
	if (head_changed && s->n_rpc > 0)
		dg_session_resource_changed(s, DG_OBS_RPC, now_ms);
}

int
dg_session_rpc_call(dg_session *s, int64_t row_id, const char *id, const char *call,
                    uint64_t deadline_ms, uint64_t now_ms)
{
	if (s->state != DG_SESSION_ESTABLISHED || !dg_session_observes(s, DG_OBS_RPC))
		return -ENOENT;
	/* A call queued already (read back when the device observed again) stays as it is. */
	for (uint32_t i = 0; i < s->n_rpc; i++)
		if (strcmp(s->rpcq[i].id, id) == 0)
			return 0;
	/* Expired calls hold no place in the queue. */
	rpc_sweep(s, 0, now_ms);
	if (s->n_rpc >= RPC_QUEUE_MAX)
		return -EBUSY;
	if (s->rpcq == NULL) {
		s->rpcq = calloc(RPC_QUEUE_MAX, sizeof(*s->rpcq));
		if (s->rpcq == NULL)
			return -ENOMEM;
	}
	rpc_call *c = &s->rpcq[s->n_rpc];
	c->row_id = row_id;
	c->deadline_ms = deadline_ms;
	c->sent = 0;
	c->id = strdup(id);
	c->call = strdup(call);
	if (c->id == NULL || c->call == NULL) {
		free(c->id);
		free(c->call);
		return -ENOMEM;
	}
	if (++s->n_rpc == 1) {
		arm_rpc_deadline(s);
		dg_session_resource_changed(s, DG_OBS_RPC, now_ms);
	}
	return 0;
}

int64_t
dg_session_rpc_done(dg_session *s, const char *id, uint64_t now_ms)
{
	for (uint32_t i = 0; i < s->n_rpc; i++) {
		if (strcmp(s->rpcq[i].id, id) != 0)
			continue;
		/* Answered out of order (a device may): it leaves the queue all the same. */
		int64_t row = s->rpcq[i].row_id;
		rpc_remove(s, i);
		rpc_sweep(s, i == 0, now_ms);
		return row;
	}
	return -ENOENT;
}

/* The call at the head of the queue passed its deadline. */
static void
rpc_expired(dg_session *s, uint64_t now_ms)
{
	rpc_sweep(s, 0, now_ms);
}

const char *
dg_session_rpc_head(const dg_session *s)
{
	return s->n_rpc > 0 ? s->rpcq[0].call : NULL;
}

int
dg_session_observes(const dg_session *s, int kind)
{
	for (size_t i = 0; i < s->n_obs; i++)
		if (s->obs[i].kind == kind)
			return 1;
	return 0;
}

void
dg_session_resource_changed(dg_session *s, int kind, uint64_t now_ms)
{
	int any = 0;
	for (size_t i = 0; i < s->n_obs; i++) {
		if (s->obs[i].kind == kind) {
			s->obs[i].dirty = 1;
			any = 1;
		}
	}
	if (any)
		send_next_notification(s, now_ms);
}

int64_t
dg_session_project_id(const dg_session *s)
{
	return s->project_id;
}

/* A notification went unanswered: send it again, or give up on the device. */
static void
notify_timeout(dg_session *s, uint64_t now_ms)
{
	if (s->inflight == NULL || s->state != DG_SESSION_ESTABLISHED)
		return;
	if (s->inflight_tries >= MAX_RETRANSMIT) {
		/* The device is gone: its observations end with it. */
		log_session(s, DG_LOG_INFO, "observe.dropped", "reason",
		            "notification retransmissions exhausted", NULL, NULL);
		free(s->inflight);
		s->inflight = NULL;
		s->n_obs = 0;
		return;
	}
	s->inflight_tries++;
	s->inflight_timeout_ms *= 2;
	send_plain(s, s->inflight, s->inflight_len);
	dg_wheel_schedule(s->env->wheel, &s->notify_rtx, now_ms + s->inflight_timeout_ms);
}

/* Block1 transfers. */

dg_block1 *
dg_session_block1(dg_session *s, const dg_coap_request *req, int restart, uint64_t now_ms)
{
	/*
	 * One transfer at a time per session. The Golioth SDK keeps its token
	 * for every block; libcoap's clients change it and send a Request-Tag
	 * instead, so a later block continues the transfer whatever its token.
	 */
	int same = s->block1 != NULL;
	if (!same || restart) {
		if (!restart)
			return NULL;
		dg_block1_free(s->block1);
		s->block1 = NULL;
		if (dg_block1_new(s->env->cfg->limits.max_body, 6, &s->block1) != 0)
			return NULL;
		memcpy(s->block1_token, req->token, req->token_len);
		s->block1_token_len = req->token_len;
	}
	/* An abandoned transfer is freed after EXCHANGE_LIFETIME. */
	dg_wheel_schedule(s->env->wheel, &s->block_expiry, now_ms + DG_COAP_EXCHANGE_LIFETIME_MS);
	return s->block1;
}

void
dg_session_block1_end(dg_session *s)
{
	dg_block1_free(s->block1);
	s->block1 = NULL;
	dg_wheel_cancel(s->env->wheel, &s->block_expiry);
}

dg_store *
dg_session_store(const dg_session *s)
{
	return s->env->store;
}

const dg_config *
dg_session_config(const dg_session *s)
{
	return s->env->cfg;
}

struct dg_statecache *
dg_session_statecache(const dg_session *s)
{
	return s->env->docs;
}
