/*
 * Per-project certificate trust with wolfSSL's certificate manager: one
 * manager per project, holding only that project's CAs and CRLs.
 */
#include <errno.h>
#include <stdint.h>
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

/* What the store knows of one CRL, judged once when the store is built. */
typedef struct crl_info {
	WOLFSSL_X509_NAME *issuer; /* NULL: the CRL does not parse. */
	char issuer_text[DG_SUBJECT_MAX];
	int64_t next_update_ms; /* INT64_MAX: no nextUpdate. */
	int loaded;             /* Verified against the CAs and loaded into cm. */
	int issuer_known;       /* A CA of the store has its issuer's name. */
	size_t file, index;     /* Where it came from, for logs. */
} crl_info;

struct dg_trust_store {
	WOLFSSL_CERT_MANAGER *cm;
	uint8_t **ca;
	size_t *ca_len;
	size_t n_ca;
	uint8_t **crl;
	size_t *crl_len;
	crl_info *crl_info;
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
		WOLFSSL_X509_CRL *parsed =
		        wolfSSL_d2i_X509_CRL(NULL, der->buffer, (int)der->length);
		if (parsed == NULL || wolfSSL_X509_CRL_get_issuer_name(parsed) == NULL) {
			snprintf(err, errlen, "CRL %zu: cannot be parsed as an X.509 CRL",
			         count + 1);
			wolfSSL_X509_CRL_free(parsed);
			wc_FreeDer(&der);
			free(buf);
			return -EINVAL;
		}
		wolfSSL_X509_CRL_free(parsed);
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

/* Reads the record at *off of a CRL blob; returns 1 and sets der/len, or 0 at the end. */
static int
next_record(const uint8_t *blob, size_t blob_len, size_t *off, const uint8_t **der, size_t *len)
{
	if (*off + 4 > blob_len)
		return 0;
	size_t l = (size_t)blob[*off] << 24 | (size_t)blob[*off + 1] << 16 |
	           (size_t)blob[*off + 2] << 8 | blob[*off + 3];
	if (l > blob_len - *off - 4)
		return 0;
	*der = blob + *off + 4;
	*len = l;
	*off += 4 + l;
	return 1;
}

static void
iso_time(int64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (ms == INT64_MAX || gmtime_r(&t, &tm) == NULL)
		snprintf(out, cap, "never");
	else
		strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Reads a CRL's issuer and nextUpdate without verifying it; returns 0 or -EINVAL. */
static int
crl_read(const uint8_t *der, size_t len, crl_info *ci)
{
	WOLFSSL_X509_CRL *crl = wolfSSL_d2i_X509_CRL(NULL, der, (int)len);
	WOLFSSL_X509_NAME *name = crl != NULL ? wolfSSL_X509_CRL_get_issuer_name(crl) : NULL;

	ci->issuer = NULL;
	ci->next_update_ms = INT64_MAX;
	snprintf(ci->issuer_text, sizeof(ci->issuer_text), "?");
	if (name == NULL) {
		wolfSSL_X509_CRL_free(crl);
		return -EINVAL;
	}
	ci->issuer = wolfSSL_X509_NAME_dup(name);
	name_text(name, ci->issuer_text, sizeof(ci->issuer_text));
	WOLFSSL_ASN1_TIME *next = wolfSSL_X509_CRL_get_nextUpdate(crl);
	if (next != NULL && next->length > 0) {
		int64_t ms = asn1_time_ms(next);
		/* A nextUpdate that cannot be read cannot be trusted to lie ahead. */
		ci->next_update_ms = ms > 0 ? ms : 0;
	}
	wolfSSL_X509_CRL_free(crl);
	return ci->issuer != NULL ? 0 : -ENOMEM;
}

size_t
dg_trust_crls_expired(const uint8_t *blob, size_t len, int64_t now_ms, char *why, size_t cap)
{
	const uint8_t *der;
	size_t off = 0, dlen, index = 0, expired = 0;

	while (next_record(blob, len, &off, &der, &dlen)) {
		crl_info ci;
		index++;
		if (crl_read(der, dlen, &ci) == 0 && ci.next_update_ms <= now_ms) {
			if (expired++ == 0) {
				char when[32];
				iso_time(ci.next_update_ms, when, sizeof(when));
				snprintf(why, cap,
				         "CRL %zu (issuer %s): expired at %s (its nextUpdate)",
				         index, ci.issuer_text, when);
			}
		}
		wolfSSL_X509_NAME_free(ci.issuer);
	}
	return expired;
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

/*
 * A manager holding the store's CAs, with CRL checking on when the store
 * has CRLs (none loaded yet: see load_crls).
 */
static WOLFSSL_CERT_MANAGER *
manager_new(const dg_trust_store *ts)
{
	WOLFSSL_CERT_MANAGER *cm = wolfSSL_CertManagerNew();
	if (cm == NULL)
		return NULL;
	for (size_t i = 0; i < ts->n_ca; i++)
		wolfSSL_CertManagerLoadCABuffer(cm, ts->ca[i], (long)ts->ca_len[i],
		                                WOLFSSL_FILETYPE_ASN1);
	if (ts->n_crl > 0 && wolfSSL_CertManagerEnableCRL(cm, 0) != WOLFSSL_SUCCESS) {
		wolfSSL_CertManagerFree(cm);
		return NULL;
	}
	return cm;
}

/*
 * Loads into `cm` each CRL not loaded yet (loaded[i] == 0) that verifies
 * against the signers `cm` holds now and is within its dates. Returns the
 * number loaded by this call.
 */
static size_t
load_crls(const dg_trust_store *ts, WOLFSSL_CERT_MANAGER *cm, uint8_t *loaded)
{
	size_t n = 0;
	for (size_t i = 0; i < ts->n_crl; i++) {
		if (loaded[i] || ts->crl_info[i].issuer == NULL)
			continue;
		if (wolfSSL_CertManagerLoadCRLBuffer(cm, ts->crl[i], (long)ts->crl_len[i],
		                                     WOLFSSL_FILETYPE_ASN1) == WOLFSSL_SUCCESS) {
			loaded[i] = 1;
			n++;
		}
	}
	return n;
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
	ts->crl_info = calloc(n_crl_items + 1, sizeof(*ts->crl_info));
	if (ts->crl == NULL || ts->crl_len == NULL || ts->crl_info == NULL)
		goto nomem;
	for (size_t i = 0; i < n_crls; i++) {
		const uint8_t *der;
		size_t off = 0, l, index = 0;
		while (ts->n_crl < n_crl_items &&
		       next_record(crls[i], crl_lens[i], &off, &der, &l)) {
			crl_info *ci = &ts->crl_info[ts->n_crl];
			ts->crl[ts->n_crl] = malloc(l ? l : 1);
			if (ts->crl[ts->n_crl] == NULL)
				goto nomem;
			memcpy(ts->crl[ts->n_crl], der, l);
			ts->crl_len[ts->n_crl++] = l;
			ci->file = i;
			ci->index = ++index;
			if (crl_read(der, l, ci) == -ENOMEM)
				goto nomem;
			for (size_t j = 0; ci->issuer != NULL && j < ts->n_ca && !ci->issuer_known;
			     j++) {
				WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_buffer(
				        ts->ca[j], (int)ts->ca_len[j], WOLFSSL_FILETYPE_ASN1);
				ci->issuer_known =
				        x != NULL &&
				        wolfSSL_X509_NAME_cmp(wolfSSL_X509_get_subject_name(x),
				                              ci->issuer) == 0;
				wolfSSL_X509_free(x);
			}
		}
	}
	ts->cm = manager_new(ts);
	if (ts->cm == NULL)
		goto nomem;
	if (ts->n_crl > 0) {
		uint8_t *loaded = calloc(ts->n_crl, 1);
		if (loaded == NULL)
			goto nomem;
		load_crls(ts, ts->cm, loaded);
		for (size_t i = 0; i < ts->n_crl; i++)
			ts->crl_info[i].loaded = loaded[i];
		free(loaded);
	}
	if (bad_crls != NULL) {
		int64_t now = (int64_t)time(NULL) * 1000;
		for (size_t i = 0; i < ts->n_crl; i++) {
			dg_crl_status st;
			if (dg_trust_store_crl_status(ts, i, now, &st) == 0 && st.problem != NULL)
				(*bad_crls)++;
		}
	}
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
	for (size_t i = 0; i < ts->n_crl; i++) {
		free(ts->crl[i]);
		if (ts->crl_info != NULL)
			wolfSSL_X509_NAME_free(ts->crl_info[i].issuer);
	}
	free(ts->crl_info);
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

size_t
dg_trust_store_crl_count(const dg_trust_store *ts)
{
	return ts->n_crl;
}

/* Why CRL `ci`, loaded or not into the manager at hand, cannot be used at `now_ms`; NULL if it can.
 */
static const char *
crl_problem(const crl_info *ci, int loaded, int64_t now_ms)
{
	if (ci->issuer == NULL)
		return "cannot be parsed";
	if (ci->next_update_ms <= now_ms)
		return "expired";
	if (loaded)
		return NULL;
	return ci->issuer_known ? "its signature does not verify against the project's CA"
	                        : "its issuer is not among the project's CAs";
}

int
dg_trust_store_crl_status(const dg_trust_store *ts, size_t i, int64_t now_ms, dg_crl_status *out)
{
	if (i >= ts->n_crl)
		return -ENOENT;
	const crl_info *ci = &ts->crl_info[i];
	out->file = ci->file;
	out->index = ci->index;
	snprintf(out->issuer, sizeof(out->issuer), "%s", ci->issuer_text);
	out->next_update_ms = ci->next_update_ms;
	out->problem = crl_problem(ci, ci->loaded, now_ms);
	return 0;
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
	case DG_TRUST_CHAIN_TOO_LONG:
		return "certificate chain too long";
	case DG_TRUST_LEAF_IS_CA:
		return "certificate is a CA certificate, not a device certificate";
	case DG_TRUST_LEAF_KEY_USAGE:
		return "certificate keyUsage does not allow digitalSignature";
	case DG_TRUST_CRL_EXPIRED:
		return "CRL expired";
	case DG_TRUST_CRL_UNUSABLE:
		return "CRL unusable";
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

/*
 * Judges the CRLs of the issuer of `x` (a certificate of the chain that
 * verified): refused while a CRL of that issuer cannot be used (it does
 * not verify, it does not parse) or every CRL of it is past its
 * nextUpdate. Fills v->reason. Returns DG_TRUST_OK or the refusal.
 */
static dg_trust_result
crl_policy(const dg_trust_store *ts, const uint8_t *loaded, WOLFSSL_X509 *x, int64_t now_ms,
           dg_trust_verdict *v)
{
	WOLFSSL_X509_NAME *issuer = wolfSSL_X509_get_issuer_name(x);
	const crl_info *expired = NULL;
	int current = 0;

	for (size_t i = 0; i < ts->n_crl; i++) {
		const crl_info *ci = &ts->crl_info[i];
		if (ci->issuer != NULL &&
		    (issuer == NULL || wolfSSL_X509_NAME_cmp(ci->issuer, issuer) != 0))
			continue;
		const char *why = crl_problem(ci, loaded[i], now_ms);
		if (why == NULL) {
			current = 1;
		} else if (strcmp(why, "expired") == 0) {
			expired = ci;
		} else {
			/* A CRL that cannot be read may be the one revoking this certificate. */
			snprintf(v->reason, sizeof(v->reason), "CRL unusable for issuer %s: %s",
			         ci->issuer_text, why);
			return DG_TRUST_CRL_UNUSABLE;
		}
	}
	if (expired != NULL && !current) {
		snprintf(v->reason, sizeof(v->reason), "CRL expired for issuer %s",
		         expired->issuer_text);
		return DG_TRUST_CRL_EXPIRED;
	}
	return DG_TRUST_OK;
}

static int64_t
not_after_ms(WOLFSSL_X509 *x)
{
	int64_t ms = asn1_time_ms(wolfSSL_X509_get_notAfter(x));
	return ms > 0 ? ms : 0;
}

/* Refuses a leaf that is not an end-entity certificate. */
static dg_trust_result
leaf_policy(const dg_trust_store *ts, WOLFSSL_X509 *leaf, const uint8_t *der, size_t len)
{
	unsigned int ku = wolfSSL_X509_get_keyUsage(leaf);

	if (wolfSSL_X509_get_isCA(leaf) == 1)
		return DG_TRUST_LEAF_IS_CA;
	/* A version 1 root uploaded as a CA, presented as a device. */
	for (size_t i = 0; i < ts->n_ca; i++)
		if (ts->ca_len[i] == len && memcmp(ts->ca[i], der, len) == 0)
			return DG_TRUST_LEAF_IS_CA;
	if (ku != 0 && (ku & KEYUSE_DIGITAL_SIG) == 0)
		return DG_TRUST_LEAF_KEY_USAGE;
	return DG_TRUST_OK;
}

dg_trust_result
dg_trust_verify_at(const dg_trust_store *ts, const uint8_t *const *certs, const size_t *lens,
                   size_t n, int64_t now_ms, dg_trust_verdict *v)
{
	dg_trust_verdict local;
	WOLFSSL_CERT_MANAGER *cm = NULL;
	WOLFSSL_X509 *x[DG_TRUST_CHAIN_MAX] = {NULL};
	uint8_t *loaded = NULL;
	int added[DG_TRUST_CHAIN_MAX] = {0};
	dg_trust_result r;

	if (v == NULL)
		v = &local;
	v->reason[0] = '\0';
	v->not_after_ms = INT64_MAX;
	if (n == 0) {
		r = DG_TRUST_BAD_CERT;
		goto out;
	}
	if (n > DG_TRUST_CHAIN_MAX) {
		r = DG_TRUST_CHAIN_TOO_LONG;
		goto out;
	}
	x[0] = wolfSSL_X509_load_certificate_buffer(certs[0], (int)lens[0], WOLFSSL_FILETYPE_ASN1);
	if (x[0] == NULL) {
		r = DG_TRUST_BAD_CERT;
		goto out;
	}
	r = leaf_policy(ts, x[0], certs[0], lens[0]);
	if (r != DG_TRUST_OK)
		goto out;
	if (ts->n_ca == 0) {
		r = DG_TRUST_UNKNOWN_CA;
		goto out;
	}
	loaded = calloc(ts->n_crl + 1, 1);
	if (loaded == NULL) {
		r = DG_TRUST_BAD_CERT;
		goto out;
	}
	if (n == 1) {
		cm = ts->cm;
		for (size_t i = 0; i < ts->n_crl; i++)
			loaded[i] = (uint8_t)ts->crl_info[i].loaded;
	} else {
		/*
		 * The device sent intermediates. They are added, in a manager
		 * of this verification alone, only once each verifies against
		 * what is already trusted there; order does not matter. A CRL
		 * that an added intermediate issued can then load too.
		 */
		cm = manager_new(ts);
		if (cm == NULL) {
			r = DG_TRUST_BAD_CERT;
			goto out;
		}
		load_crls(ts, cm, loaded);
		for (int progress = 1; progress;) {
			progress = 0;
			for (size_t i = 1; i < n; i++) {
				if (added[i] || !may_sign(certs[i], lens[i]) ||
				    verify_one(cm, certs[i], lens[i]) != DG_TRUST_OK)
					continue;
				added[i] = 1;
				if (wolfSSL_CertManagerLoadCABuffer(cm, certs[i], (long)lens[i],
				                                    WOLFSSL_FILETYPE_ASN1) ==
				    WOLFSSL_SUCCESS) {
					progress = 1;
					load_crls(ts, cm, loaded);
				}
			}
		}
	}
	r = verify_one(cm, certs[0], lens[0]);
	if (r != DG_TRUST_OK)
		goto out;
	v->not_after_ms = not_after_ms(x[0]);
	r = crl_policy(ts, loaded, x[0], now_ms, v);
	for (size_t i = 1; i < n && r == DG_TRUST_OK; i++) {
		if (!added[i])
			continue;
		x[i] = wolfSSL_X509_load_certificate_buffer(certs[i], (int)lens[i],
		                                            WOLFSSL_FILETYPE_ASN1);
		if (x[i] == NULL) {
			r = DG_TRUST_BAD_CERT;
			break;
		}
		int64_t na = not_after_ms(x[i]);
		if (na < v->not_after_ms)
			v->not_after_ms = na;
		r = crl_policy(ts, loaded, x[i], now_ms, v);
	}
out:
	if (cm != NULL && cm != ts->cm)
		wolfSSL_CertManagerFree(cm);
	for (size_t i = 0; i < DG_TRUST_CHAIN_MAX; i++)
		wolfSSL_X509_free(x[i]);
	free(loaded);
	v->result = r;
	if (r != DG_TRUST_OK)
		v->not_after_ms = INT64_MAX;
	if (v->reason[0] == '\0')
		snprintf(v->reason, sizeof(v->reason), "%s", dg_trust_result_text(r));
	return r;
}

dg_trust_result
dg_trust_verify(const dg_trust_store *ts, const uint8_t *const *certs, const size_t *lens, size_t n)
{
	return dg_trust_verify_at(ts, certs, lens, n, (int64_t)time(NULL) * 1000, NULL);
}
