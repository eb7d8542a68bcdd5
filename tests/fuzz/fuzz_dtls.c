/*
 * Fuzz target for the DTLS record-header reader: every record of the
 * datagram is peeked in turn, as well as every prefix of it, each from an
 * allocation of its exact size so that over-reads show. What the reader
 * accepts must be consistent with the bytes it read.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/dtls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Peeks at an exact-size copy and checks the result against the bytes. */
static int
peek(const uint8_t *data, size_t len, dg_dtls_record *rec)
{
	uint8_t *buf = calloc(1, len ? len : 1);
	int rc, ch;

	if (buf == NULL)
		return -ENOMEM;
	if (len > 0)
		memcpy(buf, data, len);
	rc = dg_dtls_peek(buf, len, rec);
	ch = dg_dtls_is_client_hello(buf, len);
	free(buf);
	if (rc != 0) {
		if (rc != -EPROTO || ch)
			abort();
		return rc;
	}
	if (len < 13 || rec->content_type != data[0] ||
	    (rec->version != 0xfefd && rec->version != 0xfeff) ||
	    rec->version != (data[1] << 8 | data[2]) || rec->epoch != (data[3] << 8 | data[4]))
		abort();
	switch (rec->content_type) {
	case 20:
	case 21:
	case 22:
	case 23:
		if (rec->length != (data[11] << 8 | data[12]) || rec->length > len - 13)
			abort();
		break;
	case 25:
		if (rec->length != 0)
			abort();
		break;
	default:
		abort();
	}
	if (rec->handshake_type != -1 && (rec->content_type != 22 || rec->epoch != 0 ||
	                                  rec->length < 12 || rec->handshake_type != data[13]))
		abort();
	if (rec->handshake_type == -1 && rec->content_type == 22 && rec->epoch == 0 &&
	    rec->length >= 12)
		abort();
	if (ch != (rec->handshake_type == 1))
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dg_dtls_record rec;
	size_t off = 0;

	/* Record by record, as long as the lengths hold. */
	while (off < size && peek(data + off, size - off, &rec) == 0 && rec.content_type != 25)
		off += 13 + (size_t)rec.length;
	/* The record walker, handshake headers and PSK identities on an exact-size copy. */
	uint8_t *copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	dg_dtls_cke cke;
	memset(&cke, 0, sizeof(cke));
	off = 0;
	for (int i = 0; i < 1024 && dg_dtls_next_record(copy, size, &off, &rec) == 0; i++) {
		dg_dtls_handshake hs;
		const uint8_t *id;
		size_t id_len;
		if (rec.raw + rec.raw_len > copy + size || rec.raw_len != 13 + (size_t)rec.length)
			abort();
		if (dg_dtls_handshake_header(&rec, &hs) != 0)
			continue;
		if (hs.body + hs.fragment_length > rec.fragment + rec.length)
			abort();
		dg_dtls_cke_add(&cke, &hs);
		if (dg_dtls_cke_identity(&cke, &id, &id_len) == 0 &&
		    (id < cke.bytes || id + id_len > cke.bytes + sizeof(cke.bytes)))
			abort();
	}
	free(copy);
	/* Every prefix of a short datagram. */
	if (size <= 256)
		for (size_t n = 0; n < size; n++)
			peek(data, n, &rec);
	return 0;
}
