/*
 * Fuzz target for certificate input: the bytes are read as a DER
 * certificate by dg_trust_subject(), and as the text of a cas/ and a
 * crls/ file by dg_trust_read_cas() and dg_trust_read_crls(). None may
 * crash; what they accept must be usable: a subject's strings are
 * terminated and a valid CN is 1..128 bytes without control characters;
 * CAs have a DER and a 64-digit fingerprint; a CRL blob is a sequence of
 * length-prefixed records. What is accepted also goes through
 * dg_trust_store_new() and dg_trust_verify(), with the input as a leaf.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/trust.h"

/* 2024-01-01T00:00:00Z: fixed, so that a run does not depend on the day. */
#define NOW_MS 1704067200000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_string(const char *s, size_t cap)
{
	if (memchr(s, '\0', cap) == NULL)
		abort();
}

static void
check_subject(const uint8_t *data, size_t size)
{
	dg_subject s;
	size_t n;

	if (dg_trust_subject(data, size, &s) != 0)
		return;
	check_string(s.org, sizeof(s.org));
	check_string(s.cn, sizeof(s.cn));
	check_string(s.text, sizeof(s.text));
	if (s.n_org < 0 || s.n_cn < 0 || (s.cn_valid != 0 && s.cn_valid != 1))
		abort();
	if (s.cn_valid) {
		n = strlen(s.cn);
		if (s.n_cn == 0 || n == 0 || n > DG_CERT_ID_MAX)
			abort();
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s.cn[i] < 0x20 || s.cn[i] == 0x7f)
				abort();
	}
	for (const char *p = s.text; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
}

static void
check_cas(const dg_ca_cert *cas, size_t n)
{
	if (cas == NULL || n == 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (cas[i].der == NULL || cas[i].der_len == 0)
			abort();
		if (strlen(cas[i].fingerprint) != 64 ||
		    strspn(cas[i].fingerprint, "0123456789abcdef") != 64)
			abort();
		check_string(cas[i].subject, sizeof(cas[i].subject));
		if (cas[i].not_after_ms <= NOW_MS)
			abort();
	}
}

static void
check_crls(const uint8_t *b, size_t len)
{
	size_t off = 0, l;

	if (b == NULL || len == 0)
		abort();
	while (off < len) {
		if (len - off < 4)
			abort();
		l = (size_t)b[off] << 24 | (size_t)b[off + 1] << 16 | (size_t)b[off + 2] << 8 |
		    b[off + 3];
		if (l > len - off - 4)
			abort();
		off += 4 + l;
	}
}

static void
check_result(dg_trust_result r)
{
	if (r < DG_TRUST_OK || r > DG_TRUST_BAD_CERT || dg_trust_result_text(r) == NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const dg_ca_cert *ptrs[16];
	dg_ca_cert *cas = NULL;
	uint8_t *crl = NULL;
	size_t n_cas = 0, crl_len = 0, n_ptrs = 0;
	dg_trust_store *ts = NULL;
	char err[256];
	int rc, bad = 0;

	check_subject(data, size);

	memset(err, 0, sizeof(err));
	rc = dg_trust_read_cas(text, size, NOW_MS, &cas, &n_cas, err, sizeof(err));
	if (rc == 0)
		check_cas(cas, n_cas);
	else if (rc != -EINVAL || err[0] == '\0')
		abort();

	memset(err, 0, sizeof(err));
	rc = dg_trust_read_crls(text, size, &crl, &crl_len, err, sizeof(err));
	if (rc == 0)
		check_crls(crl, crl_len);
	else if (rc != -EINVAL || err[0] == '\0')
		abort();

	/* What was accepted builds a store, which the input is verified against. */
	for (size_t i = 0; i < n_cas && n_ptrs < 16; i++)
		ptrs[n_ptrs++] = &cas[i];
	if (n_ptrs > 0 || crl != NULL) {
		const uint8_t *crls[1] = {crl};
		size_t lens[1] = {crl_len};
		const uint8_t *certs[2] = {data, n_cas > 0 ? cas[0].der : data};
		size_t cert_lens[2] = {size, n_cas > 0 ? cas[0].der_len : size};

		if (dg_trust_store_new(ptrs, n_ptrs, crls, lens, crl != NULL, &ts, &bad) == 0) {
			if (dg_trust_store_count(ts) != n_ptrs || bad < 0 ||
			    bad > (crl != NULL ? (int)crl_len : 0))
				abort();
			for (size_t i = 0; i < n_ptrs; i++) {
				const uint8_t *ca = cas[i].der;
				check_result(dg_trust_verify(ts, &ca, &cas[i].der_len, 1));
			}
			check_result(dg_trust_verify(ts, certs, cert_lens, 1));
			check_result(dg_trust_verify(ts, certs, cert_lens, 2));
			dg_trust_store_free(ts);
		}
	}
	dg_trust_ca_free(cas, n_cas);
	free(crl);
	return 0;
}
