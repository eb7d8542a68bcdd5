/*
 * Per-project certificate trust with wolfSSL's certificate manager: one
 * manager per project, holding only that project's CAs and CRLs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "devgate/trust.h"

#define DER_MAX 8192
/* wolfSSL's own NIDs (wolfcrypt/asn.h), not OpenSSL's numbers. */
#define NID_CN  NID_commonName
#define NID_ORG NID_organizationName

struct dg_trust_store {
	WOLFSSL_CERT_MANAGER *cm;
	uint8_t **ca;
	size_t *ca_len;
	size_t n_ca;
	uint8_t **crl;
	size_t *crl_len;
	size_t n_crl;
};

/* Finds the next PEM block of `label` in [*p, end); sets its bounds and advances *p. */
static int
next_pem_block(const char **p, const char *end, const char *label, const char **start, size_t *len)
{
	char begin[64], fin[64];
	snprintf(begin, sizeof(begin), "-----BEGIN %s-----", label);
	snprintf(fin, sizeof(fin), "-----END %s-----", label);
	const char *b = memmem(*p, (size_t)(end - *p), begin, strlen(begin));
	if (b == NULL)
		return 0;
	const char *e = memmem(b, (size_t)(end - b), fin, strlen(fin));
	if (e == NULL)
		return -1;
	e += strlen(fin);
	*start = b;
	*len = (size_t)(e - b);
	*p = e;
	return 1;
}

static int64_t
asn1_time_ms(const WOLFSSL_ASN1_TIME *t)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (t == NULL || wolfSSL_ASN1_TIME_to_tm(t, &tm) != WOLFSSL_SUCCESS)
		return 0;
	return (int64_t)timegm(&tm) * 1000;
}

static void
hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Writes "/K=V/K=V" of a name into out. */
static void
name_text(WOLFSSL_X509_NAME *name, char *out, size_t cap)
{
	char *s = wolfSSL_X509_NAME_oneline(name, NULL, 0);
	snprintf(out, cap, "%s", s != NULL ? s : "?");
	for (char *c = out; *c != '\0'; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	if (s != NULL)
		XFREE(s, NULL, DYNAMIC_TYPE_OPENSSL);
}

/*
 * Returns 1 when an uploaded certificate can serve as a CA: basicConstraints
 * CA:TRUE, or a self-signed version 1 root (as old tooling makes them); -1
 * when it is a CA whose keyUsage forbids signing certificates; 0 otherwise.
 */
static int
ca_usable(WOLFSSL_X509 *x)
{
	unsigned int ku = wolfSSL_X509_get_keyUsage(x);
	if (wolfSSL_X509_get_isCA(x) == 1)
		return ku == 0 || (ku & KEYUSE_KEY_CERT_SIGN) != 0 ? 1 : -1;
	if (wolfSSL_X509_get_version(x) != 0 ||
	    wolfSSL_X509_NAME_cmp(wolfSSL_X509_get_subject_name(x),
	                          wolfSSL_X509_get_issuer_name(x)) != 0)
		return 0;
	WOLFSSL_EVP_PKEY *pk = wolfSSL_X509_get_pubkey(x);
	int ok = pk != NULL && wolfSSL_X509_verify(x, pk) == WOLFSSL_SUCCESS;
	wolfSSL_EVP_PKEY_free(pk);
	return ok;
}

void
dg_trust_ca_free(dg_ca_cert *cas, size_t n)
{
	if (cas == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(cas[i].der);
	free(cas);
}

int
dg_trust_read_cas(const char *pem, size_t len, int64_t now_ms, dg_ca_cert **out, size_t *n,
                  char *err, size_t errlen)
{
	const char *p = pem, *end = pem + len, *blk;
	size_t blen, count = 0, cap = 0;
	dg_ca_cert *cas = NULL;
	uint8_t der[DER_MAX];
	int rc = -EINVAL, r;

	while ((r = next_pem_block(&p, end, "CERTIFICATE", &blk, &blen)) == 1) {
		WOLFSSL_X509 *x = NULL;
		int dlen = wc_CertPemToDer((const unsigned char *)blk, (int)blen, der, sizeof(der),
		                           CERT_TYPE);
		if (dlen <= 0) {
			snprintf(err, errlen, "certificate %zu: not a valid PEM certificate",
			         count + 1);
			goto out;
		}
		x = wolfSSL_X509_load_certificate_buffer(der, dlen, WOLFSSL_FILETYPE_ASN1);
		if (x == NULL) {
			snprintf(err, errlen, "certificate %zu: cannot be parsed", count + 1);
			goto out;
		}
		if (count == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			dg_ca_cert *g = realloc(cas, ncap * sizeof(*g));
			if (g == NULL) {
				wolfSSL_X509_free(x);
				rc = -ENOMEM;
				goto out;
			}
			cas = g;
			cap = ncap;
		}
		dg_ca_cert *c = &cas[count];
		memset(c, 0, sizeof(*c));
		name_text(wolfSSL_X509_get_subject_name(x), c->subject, sizeof(c->subject));
		c->not_before_ms = asn1_time_ms(wolfSSL_X509_get_notBefore(x));
		c->not_after_ms = asn1_time_ms(wolfSSL_X509_get_notAfter(x));
		int is_ca = ca_usable(x);
		wolfSSL_X509_free(x);
		if (is_ca < 0) {
			snprintf(err, errlen,
			         "certificate %zu (%s): its keyUsage does not allow keyCertSign",
			         count + 1, c->subject);
			goto out;
		}
		if (!is_ca) {
			snprintf(err, errlen, "certificate %zu (%s): not a CA certificate",
			         count + 1, c->subject);
			goto out;
		}
		if (c->not_after_ms <= now_ms) {
			snprintf(err, errlen, "certificate %zu (%s): expired", count + 1,
			         c->subject);
			goto out;
		}
		uint8_t digest[WC_SHA256_DIGEST_SIZE];
		if (wc_Sha256Hash(der, (word32)dlen, digest) != 0) {
			rc = -EIO;
			goto out;
		}
		hex(digest, sizeof(digest), c->fingerprint);
		c->der = malloc((size_t)dlen);
		if (c->der == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		memcpy(c->der, der, (size_t)dlen);
		c->der_len = (size_t)dlen;
		count++;
	}
	if (r < 0) {
		snprintf(err, errlen, "a PEM block has no END line");
		goto out;
	}
	if (count == 0) {
		snprintf(err, errlen, "no PEM certificate in the file");
		goto out;
	}
	*out = cas;
	*n = count;
	cas = NULL;
	rc = 0;
out:
	dg_trust_ca_free(cas, count);
	return rc;
}

int
dg_trust_read_crls(const char *pem, size_t len, uint8_t **out, size_t *out_len, char *err,
                   size_t errlen)
{
	const char *p = pem, *end = pem + len, *blk;
	size_t blen, used = 0, count = 0;
	uint8_t *buf = NULL;
	int r;

	while ((r = next_pem_block(&p, end, "X509 CRL", &blk, &blen)) == 1) {
		DerBuffer *der = NULL;
		if (wc_PemToDer((const unsigned char *)blk, (long)blen, CRL_TYPE, &der, NULL, NULL,
		                NULL) != 0 ||
		    der == NULL) {
			snprintf(err, errlen, "CRL %zu: not a valid PEM CRL", count + 1);
			wc_FreeDer(&der);
			free(buf);
			return -EINVAL;
		}
		uint8_t *g = realloc(buf, used + 4 + der->length);
		if (g == NULL) {
			wc_FreeDer(&der);
			free(buf);
			return -ENOMEM;
		}
		buf = g;
		buf[used] = (uint8_t)(der->length >> 24);
		buf[used + 1] = (uint8_t)(der->length >> 16);
		buf[used + 2] = (uint8_t)(der->length >> 8);
		buf[used + 3] = (uint8_t)der->length;
		memcpy(buf + used + 4, der->buffer, der->length);
		used += 4 + der->length;
		wc_FreeDer(&der);
		count++;
	}
	if (r < 0 || count == 0) {
		snprintf(err, errlen,
		         r < 0 ? "a PEM block has no END line" : "no PEM CRL in the file");
		free(buf);
		return -EINVAL;
	}
	*out = buf;
	*out_len = used;
	return 0;
}

int
dg_trust_subject(const uint8_t *der, size_t len, dg_subject *out)
{
	WOLFSSL_X509 *x =
	        wolfSSL_X509_load_certificate_buffer(der, (int)len, WOLFSSL_FILETYPE_ASN1);
	WOLFSSL_X509_NAME *name;

	memset(out, 0, sizeof(*out));
	if (x == NULL)
		return -EINVAL;
	name = wolfSSL_X509_get_subject_name(x);
	name_text(name, out->text, sizeof(out->text));
	int n = name != NULL ? wolfSSL_X509_NAME_entry_count(name) : 0;
	for (int i = 0; i < n; i++) {
		WOLFSSL_X509_NAME_ENTRY *e = wolfSSL_X509_NAME_get_entry(name, i);
		if (e == NULL)
			continue;
		int nid = wolfSSL_OBJ_obj2nid(wolfSSL_X509_NAME_ENTRY_get_object(e));
		WOLFSSL_ASN1_STRING *v = wolfSSL_X509_NAME_ENTRY_get_data(e);
		const unsigned char *data = v != NULL ? wolfSSL_ASN1_STRING_data(v) : NULL;
		int vlen = v != NULL ? wolfSSL_ASN1_STRING_length(v) : 0;
		if (data == NULL || vlen < 0)
			vlen = 0;
		if (nid == NID_ORG) {
			out->n_org++;
			snprintf(out->org, sizeof(out->org), "%.*s", vlen, (const char *)data);
			if ((size_t)vlen >= sizeof(out->org) ||
			    (vlen > 0 && memchr(data, '\0', (size_t)vlen)))
				out->org[0] = '\0'; /* Cannot name a project. */
		} else if (nid == NID_CN) {
			out->n_cn++;
			out->cn_valid = vlen > 0 && vlen <= DG_CERT_ID_MAX;
			for (int j = 0; j < vlen && out->cn_valid; j++)
				if (data[j] < 0x20 || data[j] == 0x7f)
					out->cn_valid = 0;
			if (out->cn_valid)
				snprintf(out->cn, sizeof(out->cn), "%.*s", vlen,
				         (const char *)data);
		}
	}
	wolfSSL_X509_free(x);
	return 0;
}

static WOLFSSL_CERT_MANAGER *
manager_new(uint8_t *const *ca, const size_t *ca_len, size_t n_ca, uint8_t *const *crl,
            const size_t *crl_len, size_t n_crl, int *bad_crls)
{
	WOLFSSL_CERT_MANAGER *cm = wolfSSL_CertManagerNew();
	if (cm == NULL)
		return NULL;
	for (size_t i = 0; i < n_ca; i++)
		wolfSSL_CertManagerLoadCABuffer(cm, ca[i], (long)ca_len[i], WOLFSSL_FILETYPE_ASN1);
	if (n_crl > 0 && wolfSSL_CertManagerEnableCRL(cm, 0) == WOLFSSL_SUCCESS) {
		for (size_t i = 0; i < n_crl; i++) {
			if (wolfSSL_CertManagerLoadCRLBuffer(cm, crl[i], (long)crl_len[i],
			                                     WOLFSSL_FILETYPE_ASN1) !=
			            WOLFSSL_SUCCESS &&
			    bad_crls != NULL)
				(*bad_crls)++;
		}
	}
	return cm;
}

int
dg_trust_store_new(const dg_ca_cert *const *cas, size_t n_cas, const uint8_t *const *crls,
                   const size_t *crl_lens, size_t n_crls, dg_trust_store **out, int *bad_crls)
{
	dg_trust_store *ts = calloc(1, sizeof(*ts));
	size_t n_crl_items = 0;

	if (ts == NULL)
		return -ENOMEM;
	if (bad_crls != NULL)
		*bad_crls = 0;
	ts->ca = calloc(n_cas + 1, sizeof(*ts->ca));
	ts->ca_len = calloc(n_cas + 1, sizeof(*ts->ca_len));
	if (ts->ca == NULL || ts->ca_len == NULL)
		goto nomem;
	for (size_t i = 0; i < n_cas; i++) {
		ts->ca[i] = malloc(cas[i]->der_len);
		if (ts->ca[i] == NULL)
			goto nomem;
		memcpy(ts->ca[i], cas[i]->der, cas[i]->der_len);
		ts->ca_len[i] = cas[i]->der_len;
		ts->n_ca++;
	}
	/* Split the length-prefixed CRL blobs into single DERs. */
	for (size_t i = 0; i < n_crls; i++)
		for (size_t off = 0; off + 4 <= crl_lens[i];) {
			size_t l = (size_t)crls[i][off] << 24 | (size_t)crls[i][off + 1] << 16 |
			           (size_t)crls[i][off + 2] << 8 | crls[i][off + 3];
			if (l > crl_lens[i] - off - 4)
				break;
			n_crl_items++;
			off += 4 + l;
		}
	ts->crl = calloc(n_crl_items + 1, sizeof(*ts->crl));
	ts->crl_len = calloc(n_crl_items + 1, sizeof(*ts->crl_len));
	if (ts->crl == NULL || ts->crl_len == NULL)
		goto nomem;
	for (size_t i = 0; i < n_crls; i++)
		for (size_t off = 0; off + 4 <= crl_lens[i];) {
			size_t l = (size_t)crls[i][off] << 24 | (size_t)crls[i][off + 1] << 16 |
			           (size_t)crls[i][off + 2] << 8 | crls[i][off + 3];
			if (l > crl_lens[i] - off - 4 || ts->n_crl == n_crl_items)
				break;
			ts->crl[ts->n_crl] = malloc(l ? l : 1);
			if (ts->crl[ts->n_crl] == NULL)
				goto nomem;
			memcpy(ts->crl[ts->n_crl], crls[i] + off + 4, l);
			ts->crl_len[ts->n_crl++] = l;
			off += 4 + l;
		}
	ts->cm = manager_new(ts->ca, ts->ca_len, ts->n_ca, ts->crl, ts->crl_len, ts->n_crl,
	                     bad_crls);
	if (ts->cm == NULL)
		goto nomem;
	*out = ts;
	return 0;
nomem:
	dg_trust_store_free(ts);
	return -ENOMEM;
}

void
dg_trust_store_free(dg_trust_store *ts)
{
	if (ts == NULL)
		return;
	if (ts->cm != NULL)
		wolfSSL_CertManagerFree(ts->cm);
	for (size_t i = 0; i < ts->n_ca; i++)
		free(ts->ca[i]);
	for (size_t i = 0; i < ts->n_crl; i++)
		free(ts->crl[i]);
	free(ts->ca);
	free(ts->ca_len);
	free(ts->crl);
	free(ts->crl_len);
	free(ts);
}

size_t
dg_trust_store_count(const dg_trust_store *ts)
{
	return ts->n_ca;
}

const char *
dg_trust_result_text(dg_trust_result r)
{
	switch (r) {
	case DG_TRUST_OK:
		return "ok";
	case DG_TRUST_UNKNOWN_CA:
		return "unknown CA";
	case DG_TRUST_EXPIRED:
		return "certificate expired";
	case DG_TRUST_NOT_YET_VALID:
		return "certificate not yet valid";
	case DG_TRUST_REVOKED:
		return "certificate revoked";
	case DG_TRUST_BAD_CERT:
		return "malformed certificate";
	}
	return "unknown";
}

/*
 * Returns 1 when a certificate may sign others: basicConstraints CA:TRUE
 * and, when it has a keyUsage, keyCertSign. wolfSSL's manager would take
 * any certificate loaded as a trust anchor, so a device's own leaf sent as
 * an "intermediate" must be stopped here or it could sign for any CN.
 */
static int
may_sign(const uint8_t *der, size_t len)
{
	WOLFSSL_X509 *x =
	        wolfSSL_X509_load_certificate_buffer(der, (int)len, WOLFSSL_FILETYPE_ASN1);
	int ok;
	if (x == NULL)
		return 0;
	unsigned int ku = wolfSSL_X509_get_keyUsage(x);
	ok = wolfSSL_X509_get_isCA(x) == 1 && (ku == 0 || (ku & KEYUSE_KEY_CERT_SIGN) != 0);
	wolfSSL_X509_free(x);
	return ok;
}

static dg_trust_result
verify_one(WOLFSSL_CERT_MANAGER *cm, const uint8_t *der, size_t len)
{
	int rc = wolfSSL_CertManagerVerifyBuffer(cm, der, (long)len, WOLFSSL_FILETYPE_ASN1);
	switch (rc) {
	case WOLFSSL_SUCCESS:
	case CRL_MISSING: /* Signature and dates verified; no CRL for this issuer. */
		return DG_TRUST_OK;
	case ASN_AFTER_DATE_E:
		return DG_TRUST_EXPIRED;
	case ASN_BEFORE_DATE_E:
		return DG_TRUST_NOT_YET_VALID;
	case CRL_CERT_REVOKED:
		return DG_TRUST_REVOKED;
	case ASN_NO_SIGNER_E:
	case ASN_SIG_CONFIRM_E:
	case ASN_SIG_KEY_E:
	case ASN_SIG_HASH_E:
	case ASN_SIG_OID_E:
		return DG_TRUST_UNKNOWN_CA;
	default:
		return DG_TRUST_BAD_CERT;
	}
}

dg_trust_result
dg_trust_verify(const dg_trust_store *ts, const uint8_t *const *certs, const size_t *lens, size_t n)
{
	WOLFSSL_CERT_MANAGER *tmp;
	dg_trust_result r;
	int added[16] = {0};

	if (n == 0)
		return DG_TRUST_BAD_CERT;
	if (n == 1 || ts->n_ca == 0)
		return ts->n_ca == 0 ? DG_TRUST_UNKNOWN_CA : verify_one(ts->cm, certs[0], lens[0]);
	if (n > 16)
		n = 16;
	/*
	 * The device sent intermediates. They are added, in a manager of this
	 * verification alone, only once each verifies against what is already
	 * trusted there; order does not matter.
	 */
	tmp = manager_new(ts->ca, ts->ca_len, ts->n_ca, ts->crl, ts->crl_len, ts->n_crl, NULL);
	if (tmp == NULL)
		return DG_TRUST_BAD_CERT;
	for (int progress = 1; progress;) {
		progress = 0;
		for (size_t i = 1; i < n; i++) {
			if (added[i] || !may_sign(certs[i], lens[i]) ||
			    verify_one(tmp, certs[i], lens[i]) != DG_TRUST_OK)
				continue;
			added[i] = 1;
			if (wolfSSL_CertManagerLoadCABuffer(tmp, certs[i], (long)lens[i],
			                                    WOLFSSL_FILETYPE_ASN1) ==
			    WOLFSSL_SUCCESS)
				progress = 1;
		}
	}
	r = verify_one(tmp, certs[0], lens[0]);
	wolfSSL_CertManagerFree(tmp);
	return r;
}
