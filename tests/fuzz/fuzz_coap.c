/*
 * Fuzz target for the CoAP message layer: the input goes through
 * dg_coap_input() whole, then again split into several messages (each
 * prefixed by a length byte and a clock-advance byte) on the same
 * session, so duplicates, expiry and the dedup rings get exercised.
 * Every reply must fit its buffer and parse as CoAP again.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <coap3/coap.h>

#include "devgate/coap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_request(const dg_coap_request *req)
{
	if ((req->type != DG_COAP_CON && req->type != DG_COAP_NON) || req->code == 0 ||
	    req->code >> 5 != 0 || req->token_len > DG_COAP_MAX_TOKEN ||
	    req->n_path > DG_COAP_MAX_PATH || req->n_query > DG_COAP_MAX_QUERY ||
	    (req->payload == NULL) != (req->payload_len == 0))
		abort();
	if (req->content_format < -1 || req->content_format > 0xffff || req->accept < -1 ||
	    req->accept > 0xffff || req->observe < -1 || req->observe > 0xffffff ||
	    req->block1 < -1 || req->block1 > 0xffffff || req->block2 < -1 ||
	    req->block2 > 0xffffff || req->size1 < -1 || req->size1 > 0xffffffff)
		abort();
}

/* Answers with the path segments and the payload, echoing the request's options. */
static void
handler(void *ctx, const dg_coap_request *req, dg_coap_response *resp)
{
	size_t i, n = 0, k;

	(void)ctx;
	check_request(req);
	resp->code = dg_coap_path_is(req, (const char *[]){".well-known", "core", NULL})
	                     ? DG_COAP_CONTENT
	                     : DG_COAP_NOT_FOUND;
	resp->content_format = req->accept;
	resp->max_age = req->content_format;
	resp->observe = req->observe;
	resp->block1 = req->block1;
	resp->block2 = req->block2;
	resp->size1 = req->size1;
	for (i = 0; i < req->n_path; i++) {
		k = req->path[i].len < resp->body_cap - n ? req->path[i].len : resp->body_cap - n;
		if (k > 0)
			memcpy(resp->body + n, req->path[i].s, k);
		n += k;
	}
	for (i = 0; i < req->n_query; i++) {
		k = req->query[i].len < resp->body_cap - n ? req->query[i].len : resp->body_cap - n;
		if (k > 0)
			memcpy(resp->body + n, req->query[i].s, k);
		n += k;
	}
	k = req->payload_len < resp->body_cap - n ? req->payload_len : resp->body_cap - n;
	if (k > 0)
		memcpy(resp->body + n, req->payload, k);
	resp->body_len = n + k;
}

/* Feeds one message from its own allocation, so over-reads show, and checks the reply. */
static void
feed(dg_coap *c, const uint8_t *data, size_t len, uint64_t now_ms, size_t outcap)
{
	uint8_t out[4096];
	uint8_t *msg;
	size_t outlen = 0;
	coap_pdu_t *pdu;
	int rc;

	msg = malloc(len ? len : 1);
	if (msg == NULL)
		return;
	if (len > 0)
		memcpy(msg, data, len);
	rc = dg_coap_input(c, msg, len, now_ms, handler, NULL, out, outcap, &outlen);
	if ((rc != 0 && rc != -ENOBUFS && rc != -ENOMEM) || outlen > outcap ||
	    (rc != 0 && outlen != 0))
		abort();
	if (outlen > 0) {
		pdu = coap_pdu_init(0, 0, 0, outlen);
		if (pdu == NULL)
			abort();
		if (!coap_pdu_parse(COAP_PROTO_UDP, out, outlen, pdu) ||
		    coap_pdu_get_type(pdu) == COAP_MESSAGE_CON ||
		    (coap_pdu_get_type(pdu) != COAP_MESSAGE_NON &&
		     coap_pdu_get_mid(pdu) != (msg[2] << 8 | msg[3])))
			abort();
		coap_delete_pdu(pdu);
	}
	free(msg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dg_coap *c;
	uint64_t now = 1000;
	size_t i = 0, len;

	if (dg_coap_new(&c) != 0)
		return 0;
	feed(c, data, size, now, 4096);
	feed(c, data, size, now + 1, 4096);
	feed(c, data, size, now + 2, 64);
	while (i < size) {
		len = data[i++];
		if (i < size)
			now += (uint64_t)data[i++] * 1000;
		if (len > size - i)
			len = size - i;
		feed(c, data + i, len, now, len & 1 ? 64 : 4096);
		i += len;
	}
	dg_coap_free(c);
	return 0;
}
