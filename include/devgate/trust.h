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
 * 4-byte big-endian length + DER). Returns 0 and a malloc'ed buffer, or
 * -EINVAL with a reason in err.
 */
int dg_trust_read_crls(const char *pem, size_t len, uint8_t **out, size_t *out_len, char *err,
                       size_t errlen);

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
 * A CRL that does not load (its issuer is not among the CAs, or it does
 * not verify) is skipped and counted in *bad_crls. Returns 0 or a negative
 * errno.
 */
int dg_trust_store_new(const dg_ca_cert *const *cas, size_t n_cas, const uint8_t *const *crls,
                       const size_t *crl_lens, size_t n_crls, dg_trust_store **out, int *bad_crls);

void dg_trust_store_free(dg_trust_store *ts);

/* Number of CAs in the store. */
size_t dg_trust_store_count(const dg_trust_store *ts);

/* Why a chain was refused. */
typedef enum dg_trust_result {
	DG_TRUST_OK = 0,
	DG_TRUST_UNKNOWN_CA,
	DG_TRUST_EXPIRED,
	DG_TRUST_NOT_YET_VALID,
	DG_TRUST_REVOKED,
	DG_TRUST_BAD_CERT,
} dg_trust_result;

/* A short, stable reason for logs and tests. */
const char *dg_trust_result_text(dg_trust_result r);

/*
 * Verifies a chain: certs[0] is the device's leaf, certs[1..n-1] the
 * intermediates it sent (in any order). Intermediates are trusted only
 * when they themselves verify against the store; the leaf must verify
 * against the store's CAs or such an intermediate, with validity dates
 * and CRLs applied.
 */
dg_trust_result dg_trust_verify(const dg_trust_store *ts, const uint8_t *const *certs,
                                const size_t *lens, size_t n);

#endif
