/*
 * Per-project certificate trust: reading CA and CRL files, the subject
 * rules for device certificates (exactly one O, the project slug; exactly
 * one usable CN, the certificate ID), and verification of a device's chain
 * against one project's CAs only.
 */
#ifndef DEVGATE_TRUST_H
#define DEVGATE_TRUST_H

#include <stddef.h>
#include <stdint.h>

#define DG_CERT_ID_MAX 128
#define DG_SUBJECT_MAX 256
/*
 * The most certificates a device may send: its leaf and up to three CA
 * certificates. A longer chain is refused whole ("certificate chain too
 * long"), never cut short.
 */
#define DG_TRUST_CHAIN_MAX 4

/* One CA certificate read from a file. */
typedef struct dg_ca_cert {
	uint8_t *der;
	size_t der_len;
	char fingerprint[65]; /* SHA-256 of the DER, lowercase hex. */
	char subject[DG_SUBJECT_MAX];
	int64_t not_before_ms;
	int64_t not_after_ms;
} dg_ca_cert;

/*
 * Reads every certificate of a PEM file. Each must be a CA certificate
 * (basicConstraints CA:TRUE, or a self-signed version 1 root) valid at
 * `now_ms`. On success returns 0 with *out (free with dg_trust_ca_free)
 * and *n >= 1; otherwise -EINVAL with a reason (no path) in err.
 */
int dg_trust_read_cas(const char *pem, size_t len, int64_t now_ms, dg_ca_cert **out, size_t *n,
                      char *err, size_t errlen);

/* Frees what dg_trust_read_cas() returned. */
void dg_trust_ca_free(dg_ca_cert *cas, size_t n);

/*
 * Reads every CRL of a PEM file into DER blobs (concatenated records of
 * 4-byte big-endian length + DER). Each must parse as a CRL (its issuer
 * and dates readable); its signature and dates are judged later, against
 * the project's CAs (dg_trust_store_new) and the clock of each
 * verification. Returns 0 and a malloc'ed buffer, or -EINVAL with a
 * reason (no path) in err.
 */
int dg_trust_read_crls(const char *pem, size_t len, uint8_t **out, size_t *out_len, char *err,
                       size_t errlen);

/*
 * Looks for CRLs in a blob of dg_trust_read_crls() that are past their
 * nextUpdate at `now_ms`. Returns how many there are, and describes the
 * first in `why` ("CRL 1 (issuer /CN=Root CA): expired at
 * 2026-01-01T00:00:00Z"); `why` is untouched when there is none.
 */
size_t dg_trust_crls_expired(const uint8_t *blob, size_t len, int64_t now_ms, char *why,
                             size_t cap);

/* The subject of a device certificate, as the identity rules read it. */
typedef struct dg_subject {
	int n_org; /* Number of O attributes. */
	int n_cn;  /* Number of CN attributes. */
	char org[64];
	char cn[DG_CERT_ID_MAX + 1];
	int cn_valid; /* 1: non-empty, at most 128 bytes, no NUL or control character. */
	char text[DG_SUBJECT_MAX]; /* "/O=acme/CN=dev1", for logs. */
} dg_subject;

/* Reads the subject of a DER certificate. Returns 0 or -EINVAL. */
int dg_trust_subject(const uint8_t *der, size_t len, dg_subject *out);

/*
 * A project's verification store: its CAs and CRLs, ready to verify
 * chains against. Immutable once built; owned by a registry snapshot.
 */
typedef struct dg_trust_store dg_trust_store;

/*
 * Builds a store from CA DERs and CRL blobs (as dg_trust_read_crls makes).
 * A CRL that cannot be used now (past its nextUpdate, its signature does
 * not verify against the CAs, its issuer is not among them, it does not
 * parse) is counted in *bad_crls (dg_trust_store_crl_status says why).
 * Such a CRL is not skipped: while no usable CRL of its issuer is there,
 * certificates of that issuer are refused (fail closed). Returns 0 or a
 * negative errno.
 */
int dg_trust_store_new(const dg_ca_cert *const *cas, size_t n_cas, const uint8_t *const *crls,
                       const size_t *crl_lens, size_t n_crls, dg_trust_store **out, int *bad_crls);

void dg_trust_store_free(dg_trust_store *ts);

/* Number of CAs in the store. */
size_t dg_trust_store_count(const dg_trust_store *ts);

/* What a store made of one of its CRLs. */
typedef struct dg_crl_status {
	size_t file;  /* Which blob (crls[file] of dg_trust_store_new) it came from. */
	size_t index; /* Its position in that blob, from 1. */
	char issuer[DG_SUBJECT_MAX];
	int64_t next_update_ms; /* INT64_MAX when it has none. */
	const char *problem;    /* Why it cannot be used at now_ms, or NULL. */
} dg_crl_status;

/* Number of CRLs in the store (every record of every blob). */
size_t dg_trust_store_crl_count(const dg_trust_store *ts);

/*
 * Fills *out for CRL `i` (0..dg_trust_store_crl_count()-1) as judged at
 * `now_ms`. Returns 0, or -ENOENT when there is no such CRL.
 */
int dg_trust_store_crl_status(const dg_trust_store *ts, size_t i, int64_t now_ms,
                              dg_crl_status *out);

/* Why a chain was refused. */
typedef enum dg_trust_result {
	DG_TRUST_OK = 0,
	DG_TRUST_UNKNOWN_CA,
	DG_TRUST_EXPIRED,
	DG_TRUST_NOT_YET_VALID,
	DG_TRUST_REVOKED,
	DG_TRUST_CHAIN_TOO_LONG, /* More than DG_TRUST_CHAIN_MAX certificates. */
	DG_TRUST_LEAF_IS_CA,     /* The leaf is a CA certificate (basicConstraints CA:TRUE). */
	DG_TRUST_LEAF_KEY_USAGE, /* The leaf's keyUsage does not allow digitalSignature. */
	DG_TRUST_CRL_EXPIRED,    /* Its issuer's CRL is past its nextUpdate. */
	DG_TRUST_CRL_UNUSABLE,   /* Its issuer's CRL does not verify or does not parse. */
	DG_TRUST_BAD_CERT,       /* Kept last. */
} dg_trust_result;

/* A short, stable reason for logs and tests. */
const char *dg_trust_result_text(dg_trust_result r);

/*
 * Verifies a chain: certs[0] is the device's leaf, certs[1..n-1] the
 * intermediates it sent (in any order). Intermediates are trusted only
 * when they themselves verify against the store; the leaf must verify
 * against the store's CAs or such an intermediate, with validity dates
 * and CRLs applied. Same as dg_trust_verify_at() at the current time.
 */
dg_trust_result dg_trust_verify(const dg_trust_store *ts, const uint8_t *const *certs,
                                const size_t *lens, size_t n);

/* The outcome of dg_trust_verify_at(). */
typedef struct dg_trust_verdict {
	dg_trust_result result;
	/* For logs: the result's text, or a precise one ("CRL expired for issuer /CN=Root CA"). */
	char reason[DG_SUBJECT_MAX + 96];
	/* When accepted: the earliest notAfter of the leaf and the intermediates used. */
	int64_t not_after_ms;
} dg_trust_verdict;

/*
 * As dg_trust_verify(), and also: more than DG_TRUST_CHAIN_MAX
 * certificates are refused; the leaf must be an end-entity certificate
 * (not CA:TRUE, and digitalSignature where it has a keyUsage); for the
 * leaf and each intermediate used, a CRL of its issuer that is past its
 * nextUpdate at `now_ms` (and no current one beside it), or one that does
 * not verify or parse, refuses it. Fills *v (may be NULL) and returns its
 * result. The store is not changed; nothing the device sent outlives the
 * call.
 */
dg_trust_result dg_trust_verify_at(const dg_trust_store *ts, const uint8_t *const *certs,
                                   const size_t *lens, size_t n, int64_t now_ms,
                                   dg_trust_verdict *v);

#endif
