/*
 * One DTLS session: handshake, identity, application data, close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include "devgate/coap.h"
#include "devgate/log.h"
#include "devgate/router.h"
#include "devgate/session.h"

/* The largest datagram devgate reads or answers: one CoAP block and headers. */
#define PLAIN_MAX 2048

struct dg_session {
	uint64_t id;
	dg_session_state state;
	const dg_session_env *env;
	dg_dtls_io io;
	WOLFSSL *ssl;
	dg_registry *reg;
	const dg_psk_cred *cred; /* Borrowed from reg once the PSK callback accepted it. */
	const char *psk_refusal; /* Why the PSK callback refused, or NULL. */
	char psk_identity[DG_PSK_MAX_IDENTITY + 1];
	char peer_text[64];
	dg_coap *coap;
	dg_wheel_entry rtx;  /* DTLS handshake retransmission. */
	dg_wheel_entry life; /* Handshake timeout, then idle timeout. */
	uint64_t created_ms;
	uint64_t last_rx_ms;
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
	if (dg_coap_new(&s->coap) != 0) {
		free(s);
		return -ENOMEM;
	}
	s->id = id;
	s->state = DG_SESSION_HANDSHAKE;
	s->env = env;
	s->ssl = ssl;
	s->io.udp = udp;
	s->io.peer_len = peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                             : sizeof(struct sockaddr_in);
	memcpy(&s->io.peer, peer, s->io.peer_len);
	s->reg = dg_registry_ref(reg);
	s->created_ms = s->last_rx_ms = now_ms;
	format_peer(peer, s->peer_text, sizeof(s->peer_text));
	dg_wheel_entry_init(&s->rtx);
	dg_wheel_entry_init(&s->life);
	s->rtx.tag = DG_TIMER_SESSION_RTX;
	s->life.tag = DG_TIMER_SESSION_LIFE;
	s->io.owner = s;
	dg_dtls_set_io(ssl, &s->io);
	dg_wheel_schedule(env->wheel, &s->life,
	                  now_ms + (uint64_t)env->cfg->limits.handshake_timeout_s * 1000);
	*out = s;
	return 0;
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
	if (s->ssl != NULL)
		wolfSSL_free(s->ssl);
	dg_coap_free(s->coap);
	dg_registry_unref(s->reg);
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
	return s->cred != NULL ? s->cred->device_id : -1;
}

uint64_t
dg_session_id(const dg_session *s)
{
	return s->id;
}

const char *
dg_session_peer_text(const dg_session *s)
{
	return s->peer_text;
}

/* Logs one session event with the session's peer and, once known, its identity. */
static void
log_session(const dg_session *s, dg_log_level level, const char *event, const char *k1,
            const char *v1, const char *k2, const char *v2)
{
	char sid[24];
	const char *kv[14];
	int n = 0;

	if (!dg_log_enabled(level))
		return;
	snprintf(sid, sizeof(sid), "%llu", (unsigned long long)s->id);
	kv[n++] = "session";
	kv[n++] = sid;
	kv[n++] = "peer";
	kv[n++] = s->peer_text;
	if (s->cred != NULL) {
		kv[n++] = "project";
		kv[n++] = s->cred->slug;
		kv[n++] = "device";
		kv[n++] = s->cred->device;
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

unsigned int
dg_session_psk_lookup(WOLFSSL *ssl, const char *identity, unsigned char *key,
                      unsigned int max_key_len)
{
	dg_dtls_io *io = dg_dtls_get_io(ssl);
	dg_session *s = io != NULL ? io->owner : NULL;
	const char *id, *slug;
	size_t id_len, slug_len, len;
	const dg_psk_cred *c;

	if (s == NULL || identity == NULL)
		return 0;
	len = strnlen(identity, DG_PSK_MAX_IDENTITY + 1);
	snprintf(s->psk_identity, sizeof(s->psk_identity), "%.*s", (int)len, identity);
	if (dg_identity_split(identity, len, &id, &id_len, &slug, &slug_len) != 0) {
		s->psk_refusal = "malformed PSK identity";
		return 0;
	}
	c = dg_registry_find_psk(s->reg, identity, len);
	if (c == NULL) {
		s->psk_refusal = dg_registry_has_project(s->reg, slug, slug_len)
		                         ? "unknown PSK identity"
		                         : "unknown project";
		return 0;
	}
	if (!c->project_enabled) {
		s->psk_refusal = "project disabled";
		return 0;
	}
	if (c->device_blocked) {
		s->psk_refusal = "device blocked";
		return 0;
	}
	if (c->key_len > max_key_len) {
		s->psk_refusal = "PSK too long";
		return 0;
	}
	memcpy(key, c->key, c->key_len);
	s->cred = c;
	return (unsigned int)c->key_len;
}

static void
handshake_failed(dg_session *s, const char *reason)
{
	char detail[160];
	const dg_psk_cred *cred = s->cred;

	/* A refused identity is not the device's: log what was claimed instead. */
	s->cred = NULL;
	if (s->psk_identity[0] != '\0' && cred == NULL)
		snprintf(detail, sizeof(detail), "%s", s->psk_identity);
	else if (cred != NULL)
		snprintf(detail, sizeof(detail), "%s", cred->identity);
	else
		detail[0] = '\0';
	log_session(s, DG_LOG_WARN, "session.failed", "reason", reason,
	            detail[0] ? "identity" : NULL, detail);
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

static void
established(dg_session *s, uint64_t now_ms)
{
	if (s->cred == NULL) {
		/*
		 * A handshake on a certificate suite without a client
		 * certificate proves no device. Client certificates are
		 * verified during the handshake once projects carry CAs; until
		 * then such a session is refused.
		 */
		wolfSSL_shutdown(s->ssl);
		handshake_failed(s, "no device identity (no PSK, no client certificate)");
		return;
	}
	s->state = DG_SESSION_ESTABLISHED;
	dg_wheel_cancel(s->env->wheel, &s->rtx);
	s->last_rx_ms = now_ms;
	dg_wheel_schedule(s->env->wheel, &s->life,
	                  now_ms + (uint64_t)s->env->cfg->limits.idle_timeout_s * 1000);
	log_session(s, DG_LOG_INFO, "session.established", "auth", "psk", "cipher",
	            wolfSSL_get_cipher_name(s->ssl));
	s->env->established(s->env->owner, s);
	dg_store_touch_device(s->env->store, s->cred->device_id, dg_now_ms());
}

static void
handle_plaintext(dg_session *s, const uint8_t *msg, size_t len, uint64_t now_ms)
{
	uint8_t out[PLAIN_MAX];
	size_t outlen = 0;
	dg_route_ctx rc = {
	        .project = s->cred->slug,
	        .device = s->cred->device,
	        .device_id = s->cred->device_id,
	};

	if (dg_coap_input(s->coap, msg, len, now_ms, dg_router_handle, &rc, out, sizeof(out),
	                  &outlen) != 0 ||
	    outlen == 0)
		return;
	if (wolfSSL_write(s->ssl, out, (int)outlen) <= 0)
		log_session(s, DG_LOG_DEBUG, "session.write_failed", NULL, NULL, NULL, NULL);
}

static void
read_records(dg_session *s, uint64_t now_ms)
{
	uint8_t plain[PLAIN_MAX];

	/* Bounded: one datagram holds at most a few records. */
	for (int i = 0; i < 64 && s->state == DG_SESSION_ESTABLISHED; i++) {
		int n = wolfSSL_read(s->ssl, plain, sizeof(plain));
		if (n > 0) {
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

void
dg_session_input(dg_session *s, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	if (s->state == DG_SESSION_CLOSED)
		return;
	s->io.rx = buf;
	s->io.rx_len = len;
	s->last_rx_ms = now_ms;

	if (s->state == DG_SESSION_HANDSHAKE) {
		int ret = wolfSSL_accept(s->ssl);
		if (ret == WOLFSSL_SUCCESS) {
			established(s, now_ms);
		} else {
			int err = wolfSSL_get_error(s->ssl, ret);
			if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
				word32 mac_drops = 0, replay_drops = 0;
				wolfSSL_dtls_get_drop_stats(s->ssl, &mac_drops, &replay_drops);
				if (s->cred != NULL && mac_drops > 0) {
					/*
					 * The client's Finished did not decrypt under
					 * the key we hold for its identity.
					 */
					dg_dtls_send_fatal_alert(&s->io, 51 /* decrypt_error */);
					handshake_failed(s, "wrong key");
					return;
				}
				schedule_rtx(s, now_ms);
				return;
			}
			handshake_failed(
			        s, s->psk_refusal != NULL
			                   ? s->psk_refusal
			                   : wolfSSL_ERR_reason_error_string((unsigned long)err));
			return;
		}
	}
	if (s->state == DG_SESSION_ESTABLISHED)
		read_records(s, now_ms);
	s->io.rx = NULL;
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
	s->env->closed(s->env->owner, s, was_established);
}

void
dg_session_timer(dg_wheel_entry *e, uint64_t now_ms)
{
	if (e->tag == DG_TIMER_SESSION_RTX) {
		dg_session *s = dg_container_of(e, dg_session, rtx);
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
	if (s->state == DG_SESSION_HANDSHAKE) {
		handshake_failed(s, "handshake timeout");
		return;
	}
	uint64_t idle_ms = (uint64_t)s->env->cfg->limits.idle_timeout_s * 1000;
	if (now_ms < s->last_rx_ms + idle_ms) {
		/* Traffic came since this deadline was set: look again later. */
		dg_wheel_schedule(s->env->wheel, &s->life, s->last_rx_ms + idle_ms);
		return;
	}
	dg_session_close(s, "idle timeout", 1);
}
