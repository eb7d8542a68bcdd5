/*
 * Development CA and server certificate, made with wolfCrypt.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/random.h>

#include "devgate/devcert.h"

#define DER_MAX 4096
#define PEM_MAX 8192

static int
read_file(const char *path, unsigned char *buf, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return -errno;
	*len = fread(buf, 1, cap, f);
	int bad = ferror(f) || !feof(f);
	fclose(f);
	return bad ? -EFBIG : 0;
}

/* Writes a file atomically (temporary name, then rename) with `mode`. */
static int
write_file(const char *path, const unsigned char *buf, size_t len, mode_t mode)
{
	char tmp[4200];
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, len) != (ssize_t)len || fsync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

static int
write_pem(const char *path, const unsigned char *der, size_t der_len, int type, mode_t mode)
{
	unsigned char pem[PEM_MAX];
	int n = wc_DerToPem(der, (word32)der_len, pem, sizeof(pem), type);
	if (n <= 0)
		return -EINVAL;
	return write_file(path, pem, (size_t)n, mode);
}

/* Loads a PEM EC private key into `key`. */
static int
load_key(const char *path, ecc_key *key)
{
	unsigned char pem[PEM_MAX], der[DER_MAX];
	size_t len;
	word32 idx = 0;
	int rc = read_file(path, pem, sizeof(pem), &len);
	if (rc != 0)
		return rc;
	int n = wc_KeyPemToDer(pem, (int)len, der, sizeof(der), NULL);
	if (n <= 0)
		return -EINVAL;
	return wc_EccPrivateKeyDecode(der, &idx, key, (word32)n) == 0 ? 0 : -EINVAL;
}

static int
make_key(WC_RNG *rng, ecc_key *key, const char *path)
{
	unsigned char der[DER_MAX];
	if (wc_ecc_make_key_ex(rng, 32, key, ECC_SECP256R1) != 0)
		return -EIO;
	int n = wc_EccKeyToDer(key, der, sizeof(der));
	if (n <= 0)
		return -EIO;
	return write_pem(path, der, (size_t)n, ECC_PRIVATEKEY_TYPE, 0600);
}

static void
set_name(CertName *name, const char *cn)
{
	snprintf(name->country, CTC_NAME_SIZE, "%s", "");
	snprintf(name->org, CTC_NAME_SIZE, "%s", "devgate development");
	snprintf(name->commonName, CTC_NAME_SIZE, "%s", cn);
}

static int
make_ca(WC_RNG *rng, ecc_key *key, const char *cert_path)
{
	unsigned char der[DER_MAX];
	Cert cert;
	int n;

	if (wc_InitCert(&cert) != 0)
		return -EIO;
	set_name(&cert.subject, "devgate development CA");
	cert.isCA = 1;
	cert.selfSigned = 1;
	cert.daysValid = 3650;
	cert.sigType = CTC_SHA256wECDSA;
	if (wc_SetKeyUsage(&cert, "keyCertSign,cRLSign") != 0 ||
	    wc_SetSubjectKeyIdFromPublicKey_ex(&cert, ECC_TYPE, key) != 0)
		return -EIO;
	n = wc_MakeCert_ex(&cert, der, sizeof(der), ECC_TYPE, key, rng);
	if (n <= 0)
		return -EIO;
	n = wc_SignCert_ex(cert.bodySz, cert.sigType, der, sizeof(der), ECC_TYPE, key, rng);
	if (n <= 0)
		return -EIO;
	return write_pem(cert_path, der, (size_t)n, CERT_TYPE, 0644);
}

/*
 * The subjectAltName value: GeneralNames { dNSName "localhost",
 * iPAddress 127.0.0.1 }.
 */
static const unsigned char server_alt_names[] = {
        0x30, 0x11, 0x82, 0x09, 'l',  'o', 'c', 'a', 'l', 'h',
        'o',  's',  't',  0x87, 0x04, 127, 0,   0,   1,
};

static int
make_server(WC_RNG *rng, ecc_key *ca_key, const char *ca_path, ecc_key *key, const char *cert_path)
{
	unsigned char pem[PEM_MAX], ca_der[DER_MAX], der[DER_MAX];
	size_t len;
	Cert cert;
	int n, rc;

	rc = read_file(ca_path, pem, sizeof(pem), &len);
	if (rc != 0)
		return rc;
	n = wc_CertPemToDer(pem, (int)len, ca_der, sizeof(ca_der), CERT_TYPE);
	if (n <= 0)
		return -EINVAL;
	if (wc_InitCert(&cert) != 0)
		return -EIO;
	set_name(&cert.subject, "localhost");
	cert.isCA = 0;
	cert.selfSigned = 0;
	cert.daysValid = 825;
	cert.sigType = CTC_SHA256wECDSA;
	memcpy(cert.altNames, server_alt_names, sizeof(server_alt_names));
	cert.altNamesSz = (int)sizeof(server_alt_names);
	if (wc_SetIssuerBuffer(&cert, ca_der, n) != 0 ||
	    wc_SetKeyUsage(&cert, "digitalSignature,keyAgreement") != 0 ||
	    wc_SetExtKeyUsage(&cert, "serverAuth") != 0 ||
	    wc_SetSubjectKeyIdFromPublicKey_ex(&cert, ECC_TYPE, key) != 0 ||
	    wc_SetAuthKeyIdFromPublicKey_ex(&cert, ECC_TYPE, ca_key) != 0)
		return -EIO;
	n = wc_MakeCert_ex(&cert, der, sizeof(der), ECC_TYPE, key, rng);
	if (n <= 0)
		return -EIO;
	n = wc_SignCert_ex(cert.bodySz, cert.sigType, der, sizeof(der), ECC_TYPE, ca_key, rng);
	if (n <= 0)
		return -EIO;
	return write_pem(cert_path, der, (size_t)n, CERT_TYPE, 0644);
}

static int
exists(const char *path)
{
	return access(path, R_OK) == 0;
}

int
dg_devcert_ensure(const char *dir, dg_devcert_paths *p, char *err, size_t errlen)
{
	WC_RNG rng;
	ecc_key ca_key, key;
	int rc = 0, have_rng = 0, have_ca = 0, have_key = 0;

	memset(p, 0, sizeof(*p));
	snprintf(p->ca_cert, sizeof(p->ca_cert), "%s/dev-ca.pem", dir);
	snprintf(p->ca_key, sizeof(p->ca_key), "%s/dev-ca.key", dir);
	snprintf(p->server_cert, sizeof(p->server_cert), "%s/server.pem", dir);
	snprintf(p->server_key, sizeof(p->server_key), "%s/server.key", dir);
	if (exists(p->server_cert) && exists(p->server_key) && exists(p->ca_cert))
		return 0;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
		return rc;
	}
	if (wc_InitRng(&rng) != 0) {
		snprintf(err, errlen, "cannot initialise the random generator");
		return -EIO;
	}
	have_rng = 1;
	wc_ecc_init(&ca_key);
	have_ca = 1;
	wc_ecc_init(&key);
	have_key = 1;

	if (exists(p->ca_cert) && exists(p->ca_key)) {
		rc = load_key(p->ca_key, &ca_key);
		if (rc != 0) {
			snprintf(err, errlen, "%s: cannot load: %s", p->ca_key, strerror(-rc));
			goto out;
		}
	} else {
		rc = make_key(&rng, &ca_key, p->ca_key);
		if (rc == 0)
			rc = make_ca(&rng, &ca_key, p->ca_cert);
		if (rc != 0) {
			snprintf(err, errlen, "%s: cannot create the development CA: %s", dir,
			         strerror(-rc));
			goto out;
		}
	}
	rc = make_key(&rng, &key, p->server_key);
	if (rc == 0)
		rc = make_server(&rng, &ca_key, p->ca_cert, &key, p->server_cert);
	if (rc != 0) {
		snprintf(err, errlen, "%s: cannot create the server certificate: %s", dir,
		         strerror(-rc));
		goto out;
	}
	p->created = 1;
out:
	if (have_key)
		wc_ecc_free(&key);
	if (have_ca)
		wc_ecc_free(&ca_key);
	if (have_rng)
		wc_FreeRng(&rng);
	return rc;
}
