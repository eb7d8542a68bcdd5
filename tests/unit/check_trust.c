/*
 * Unit tests of certificate trust: reading CA and CRL files, reading the
 * subject of a device certificate, and chain verification. The test PKI
 * is made at test time with `openssl`, with Golioth's recipe where it
 * reaches (a self-signed root, v1 device certificates from `x509 -req`)
 * and `openssl ca` for what it cannot make (chosen dates, CRLs).
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devgate/trust.h"

#define DAY_MS (24LL * 3600 * 1000)

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The PKI lives in one directory, made once by an unchecked fixture in
 * the runner's process (the forked tests inherit its path) and removed by
 * main() after the run.
 */
static char base[512];
static int built;

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Reads base/name (or an absolute path); fails the test when it cannot. */
static uint8_t *
slurp(const char *name, size_t *len)
{
	char path[PATH_MAX];
	uint8_t *buf;
	FILE *f;
	long n;

	if (name[0] == '/')
		snprintf(path, sizeof(path), "%s", name);
	else
		snprintf(path, sizeof(path), "%s/%s", base, name);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "%s: cannot open", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* Runs a shell command in the PKI directory; returns its exit status. */
static int
sh_rc(const char *cmd)
{
	char full[8192];
	int rc;

	snprintf(full, sizeof(full), "cd '%s' && ( %s ) >cmd.log 2>&1", base, cmd);
	rc = system(full);
	return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

/* Runs a shell command in the PKI directory; fails the test with its output when it fails. */
static void __attribute__((format(printf, 1, 2))) sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = sh_rc(cmd);
	if (rc != 0) {
		size_t len;
		char *log = (char *)slurp("cmd.log", &len);
		ck_abort_msg("%s: exit %d: %s", cmd, rc, log);
	}
}

/* Runs a command in the PKI directory and returns its standard output (malloc'ed). */
static char *__attribute__((format(printf, 1, 2))) capture(const char *fmt, ...)
{
	char cmd[4096], full[8192], *out;
	size_t len = 0, n;
	va_list ap;
	FILE *p;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && %s", base, cmd);
	p = popen(full, "r");
	ck_assert_ptr_nonnull(p);
	out = malloc(4096);
	ck_assert_ptr_nonnull(out);
	while ((n = fread(out + len, 1, 4095 - len, p)) > 0)
		len += n;
	out[len] = '\0';
	ck_assert_msg(pclose(p) == 0, "%s failed", cmd);
	return out;
}

/* "YYYYMMDDHHMMSSZ", `now + days`, as `openssl ca -startdate/-enddate` takes it. */
static void
asn1_date(char *out, size_t cap, int days)
{
	time_t t = time(NULL) + (time_t)days * 86400;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, cap, "%Y%m%d%H%M%SZ", &tm);
}

/* The recipe's key. */
static void
genkey(const char *name)
{
	sh("openssl ecparam -name prime256v1 -genkey -noout -out %s.key.pem", name);
}

/*
 * The recipe's device certificate (v1), signed by `ca`: name.crt.pem and
 * name.der. (-utf8 only lets a subject hold UTF-8.)
 */
static void
leaf(const char *name, const char *subj, const char *ca)
{
	genkey(name);
	sh("openssl req -new -utf8 -key %s.key.pem -subj '%s' -out %s.csr.pem", name, subj, name);
	sh("openssl x509 -req -in %s.csr.pem -CA %s.crt.pem -CAkey %s.key.pem -CAcreateserial"
	   " -out %s.crt.pem -days 7 -sha256",
	   name, ca, ca, name);
	sh("openssl x509 -in %s.crt.pem -outform DER -out %s.der", name, name);
}

/* The recipe's root CA. */
static void
root(const char *name, const char *cn)
{
	genkey(name);
	sh("openssl req -x509 -new -nodes -key %s.key.pem -sha256 -subj '/CN=%s' -days 10"
	   " -out %s.crt.pem",
	   name, cn, name);
	sh("openssl x509 -in %s.crt.pem -outform DER -out %s.der", name, name);
}

/* An intermediate CA signed by `parent`, with the extensions of `ext` (a file's text). */
static void
intermediate(const char *name, const char *cn, const char *parent, const char *ext)
{
	genkey(name);
	sh("openssl req -new -key %s.key.pem -subj '/CN=%s' -out %s.csr.pem", name, cn, name);
	sh("printf '%s' > %s.ext", ext, name);
	sh("openssl x509 -req -in %s.csr.pem -CA %s.crt.pem -CAkey %s.key.pem -CAcreateserial"
	   " -out %s.crt.pem -days 9 -sha256 -extfile %s.ext",
	   name, parent, parent, name, name);
	sh("openssl x509 -in %s.crt.pem -outform DER -out %s.der", name, name);
}

/*
 * An `openssl ca` database for `ca`: no extensions section and no
 * copy_extensions, so what it signs comes out v1 like the recipe's.
 */
static void
ca_db(const char *ca)
{
	sh("mkdir %s.db && : > %s.db/index.txt && echo 1000 > %s.db/serial &&"
	   " echo 01 > %s.db/crlnumber",
	   ca, ca, ca, ca);
	sh("printf '[ca]\\ndefault_ca = d\\n[d]\\ndir = %s.db\\ndatabase = $dir/index.txt\\n"
	   "serial = $dir/serial\\ncrlnumber = $dir/crlnumber\\nnew_certs_dir = $dir\\n"
	   "certificate = %s.crt.pem\\nprivate_key = %s.key.pem\\ndefault_md = sha256\\n"
	   "default_days = 7\\ndefault_crl_days = 7\\npolicy = any\\nunique_subject = no\\n"
	   "copy_extensions = none\\n[any]\\norganizationName = optional\\n"
	   "commonName = optional\\n' > %s.cnf",
	   ca, ca, ca, ca);
}

/* A v1 leaf of `ca` valid from now + `from` days to now + `to` days. */
static void
dated_leaf(const char *name, const char *subj, const char *ca, int from, int to)
{
	char start[32], end[32];

	asn1_date(start, sizeof(start), from);
	asn1_date(end, sizeof(end), to);
	genkey(name);
	sh("openssl req -new -key %s.key.pem -subj '%s' -out %s.csr.pem", name, subj, name);
	sh("openssl ca -batch -config %s.cnf -in %s.csr.pem -out %s.crt.pem -notext -preserveDN"
	   " -startdate %s -enddate %s",
	   ca, name, name, start, end);
	sh("openssl x509 -in %s.crt.pem -outform DER -out %s.der", name, name);
}

/* 64 two-byte characters: 128 bytes, as many characters as OpenSSL allows in a CN. */
static void
utf8_cn(char *out, int extra_byte)
{
	size_t n = 0;

	for (int i = 0; i < (extra_byte ? 63 : 64); i++) {
		out[n++] = (char)0xc3;
		out[n++] = (char)0xa9; /* é */
	}
	if (extra_byte) {
		/* €, three bytes: still 64 characters, but 129 bytes. */
		memcpy(out + n, "\xe2\x82\xac", 3);
		n += 3;
	}
	out[n] = '\0';
}

static void
pki_setup(void)
{
	char subj[512], cn[256];

	if (built)
		return;
	snprintf(base, sizeof(base), "%s/check_trust.XXXXXX",
	         getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(base));

	/* Golioth's recipe: a root, and a v1 device certificate signed by it. */
	root("ca", "Root CA");
	leaf("device", "/O=acme/CN=dev-1", "ca");
	/* Another project's root and its device. */
	root("other", "Other Root");
	leaf("dev2", "/O=acme/CN=dev-2", "other");

	/* An intermediate of the root, and a leaf under it. */
	intermediate(
	        "inter", "Acme Intermediate", "ca",
	        "basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n");
	leaf("devi", "/O=acme/CN=dev-i", "inter");
	/* An intermediate of the other root, and its leaf. */
	intermediate(
	        "interx", "Other Intermediate", "other",
	        "basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n");
	leaf("devx", "/O=acme/CN=dev-x", "interx");
	/* A CA:TRUE certificate of the root whose keyUsage does not allow signing certificates. */
	intermediate("nosign", "No Sign", "ca",
	             "basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,digitalSignature\\n");
	leaf("devn", "/O=acme/CN=dev-n", "nosign");

	/* A leaf "signed" by the device's own v1 certificate and key. */
	leaf("forged", "/O=acme/CN=victim", "device");

	/* Dated leaves and a CRL, with `openssl ca`. */
	ca_db("ca");
	dated_leaf("expired", "/O=acme/CN=dev-old", "ca", -30, -1);
	dated_leaf("future", "/O=acme/CN=dev-new", "ca", 1, 5);
	leaf("revoked", "/O=acme/CN=dev-r", "ca");
	sh("openssl ca -batch -config ca.cnf -revoke revoked.crt.pem -crl_reason keyCompromise");
	sh("openssl ca -batch -config ca.cnf -gencrl -crldays 7 -out ca.crl.pem");
	ca_db("other");
	sh("openssl ca -batch -config other.cnf -gencrl -crldays 7 -out other.crl.pem");

	/* A self-signed version 1 root (`x509 -req -signkey`, no extensions). */
	genkey("v1root");
	sh("openssl req -new -key v1root.key.pem -subj '/CN=V1 Root' -out v1root.csr.pem");
	sh("openssl x509 -req -in v1root.csr.pem -signkey v1root.key.pem -days 10 -sha256"
	   " -out v1root.crt.pem");
	leaf("devv1", "/O=acme/CN=dev-v1", "v1root");

	/* Subjects. */
	leaf("two-o", "/O=acme/O=beta/CN=dev-1", "ca");
	leaf("no-o", "/CN=dev-1", "ca");
	leaf("no-cn", "/O=acme", "ca");
	leaf("two-cn", "/O=acme/CN=a/CN=b", "ca");
	leaf("cn-first", "/CN=dev-9/O=acme/OU=ops", "ca");
	leaf("cn-ctl", "/O=acme/CN=a\001b", "ca");
	leaf("cn-del", "/O=acme/CN=a\177b", "ca");
	utf8_cn(cn, 0);
	snprintf(subj, sizeof(subj), "/O=acme/CN=%s", cn);
	leaf("cn128", subj, "ca");
	utf8_cn(cn, 1);
	snprintf(subj, sizeof(subj), "/O=acme/CN=%s", cn);
	leaf("cn129", subj, "ca");
	built = 1;
}

/* --- dg_trust_read_cas --- */

typedef struct cas {
	dg_ca_cert *c;
	size_t n;
	int rc;
	char err[256];
} cas;

static cas
read_cas_at(const char *file, int64_t at_ms)
{
	cas r = {.c = NULL, .n = 0};
	size_t len;
	char *pem = (char *)slurp(file, &len);

	r.rc = dg_trust_read_cas(pem, len, at_ms, &r.c, &r.n, r.err, sizeof(r.err));
	free(pem);
	return r;
}

static cas
read_cas(const char *file)
{
	return read_cas_at(file, now_ms());
}

/* `openssl x509 -fingerprint -sha256`, lowercase and without colons. */
static void
openssl_fingerprint(const char *file, char out[65])
{
	char *text = capture("openssl x509 -in %s -noout -fingerprint -sha256", file);
	char *p = strchr(text, '=');
	size_t n = 0;

	ck_assert_ptr_nonnull(p);
	for (p++; *p != '\0' && *p != '\n'; p++) {
		if (*p == ':')
			continue;
		ck_assert_uint_lt(n, 64);
		out[n++] = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
	}
	out[n] = '\0';
	ck_assert_uint_eq(n, 64);
	free(text);
}

/* `openssl x509 -enddate` (or -startdate), in ms since the epoch. */
static int64_t
openssl_date(const char *file, const char *which)
{
	char *text = capture("openssl x509 -in %s -noout -%s", file, which);
	char *p = strchr(text, '=');
	struct tm tm;
	int64_t ms;

	ck_assert_ptr_nonnull(p);
	memset(&tm, 0, sizeof(tm));
	ck_assert_ptr_nonnull(strptime(p + 1, "%b %d %H:%M:%S %Y GMT", &tm));
	ms = (int64_t)timegm(&tm) * 1000;
	free(text);
	return ms;
}

START_TEST(test_read_cas_root)
{
	cas r = read_cas("ca.crt.pem");
	char fp[65];
	size_t dlen;
	uint8_t *der = slurp("ca.der", &dlen);
	int64_t now = now_ms();

	ck_assert_msg(r.rc == 0, "rc %d: %s", r.rc, r.err);
	ck_assert_uint_eq(r.n, 1);
	openssl_fingerprint("ca.crt.pem", fp);
	ck_assert_str_eq(r.c[0].fingerprint, fp);
	ck_assert_str_eq(r.c[0].subject, "/CN=Root CA");
	ck_assert_int_eq(r.c[0].not_after_ms, openssl_date("ca.crt.pem", "enddate"));
	ck_assert_int_eq(r.c[0].not_before_ms, openssl_date("ca.crt.pem", "startdate"));
	/* -days 10 */
	ck_assert_int_eq(r.c[0].not_after_ms - r.c[0].not_before_ms, 10 * DAY_MS);
	ck_assert_int_le(r.c[0].not_before_ms, now);
	ck_assert_int_gt(r.c[0].not_before_ms, now - DAY_MS);
	/* The DER is the certificate's, as `openssl x509 -outform DER` writes it. */
	ck_assert_uint_eq(r.c[0].der_len, dlen);
	ck_assert_mem_eq(r.c[0].der, der, dlen);
	dg_trust_ca_free(r.c, r.n);
	dg_trust_ca_free(NULL, 0);
	free(der);
}
END_TEST

START_TEST(test_read_cas_two)
{
	char fp1[65], fp2[65];
	cas r;

	sh("cat ca.crt.pem inter.crt.pem > two.pem");
	r = read_cas("two.pem");
	ck_assert_msg(r.rc == 0, "rc %d: %s", r.rc, r.err);
	ck_assert_uint_eq(r.n, 2);
	openssl_fingerprint("ca.crt.pem", fp1);
	openssl_fingerprint("inter.crt.pem", fp2);
	ck_assert_str_eq(r.c[0].fingerprint, fp1);
	ck_assert_str_eq(r.c[0].subject, "/CN=Root CA");
	ck_assert_str_eq(r.c[1].fingerprint, fp2);
	ck_assert_str_eq(r.c[1].subject, "/CN=Acme Intermediate");
	ck_assert_int_eq(r.c[1].not_after_ms, openssl_date("inter.crt.pem", "enddate"));
	dg_trust_ca_free(r.c, r.n);

	/* Text around and between the blocks (as `openssl x509 -text` leaves) is fine. */
	sh("openssl x509 -in other.crt.pem -text > three.pem && echo junk >> three.pem &&"
	   " cat two.pem >> three.pem");
	r = read_cas("three.pem");
	ck_assert_msg(r.rc == 0, "rc %d: %s", r.rc, r.err);
	ck_assert_uint_eq(r.n, 3);
	ck_assert_str_eq(r.c[0].subject, "/CN=Other Root");
	ck_assert_str_eq(r.c[2].fingerprint, fp2);
	dg_trust_ca_free(r.c, r.n);
}
END_TEST

START_TEST(test_read_cas_not_ca)
{
	cas r = read_cas("device.crt.pem");

	ck_assert_int_eq(r.rc, -EINVAL);
	ck_assert_msg(strstr(r.err, "not a CA certificate") != NULL, "%s", r.err);
	ck_assert_msg(strstr(r.err, "/O=acme/CN=dev-1") != NULL, "%s", r.err);

	/* One bad certificate fails the whole file, and says which. */
	sh("cat ca.crt.pem device.crt.pem > mixed.pem");
	r = read_cas("mixed.pem");
	ck_assert_int_eq(r.rc, -EINVAL);
	ck_assert_msg(strncmp(r.err, "certificate 2 ", 14) == 0, "%s", r.err);
	ck_assert_msg(strstr(r.err, "not a CA certificate") != NULL, "%s", r.err);
}
END_TEST

START_TEST(test_read_cas_v1_root)
{
	/* The header accepts a self-signed version 1 root as a CA. */
	cas r = read_cas("v1root.crt.pem");

	ck_assert_msg(r.rc == 0, "rc %d: %s", r.rc, r.err);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.c[0].subject, "/CN=V1 Root");
	dg_trust_ca_free(r.c, r.n);
}
END_TEST

START_TEST(test_read_cas_garbage)
{
	static const char *const bad[] = {
	        "",
	        "hello, world\n",
	        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
	        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	        "-----BEGIN CERTIFICATE-----\nMIIB\n",
	        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	};
	dg_ca_cert *c = (dg_ca_cert *)&c;
	size_t n = 99, len;
	char err[256], *pem;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(dg_trust_read_cas(bad[i], strlen(bad[i]), now_ms(), &c, &n, err,
		                                sizeof(err)) == -EINVAL,
		              "input %zu accepted", i);
		ck_assert_msg(err[0] != '\0', "input %zu: no reason", i);
		/* *out and *n are left alone. */
		ck_assert_ptr_eq(c, (dg_ca_cert *)&c);
		ck_assert_uint_eq(n, 99);
	}
	err[0] = '\0';
	ck_assert_int_eq(dg_trust_read_cas(bad[0], 0, 0, &c, &n, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "no PEM certificate in the file");
	ck_assert_int_eq(dg_trust_read_cas(bad[4], strlen(bad[4]), 0, &c, &n, err, sizeof(err)),
	                 -EINVAL);
	ck_assert_str_eq(err, "a PEM block has no END line");

	/* A CRL file is not a CA file; a DER certificate is not PEM. */
	pem = (char *)slurp("ca.crl.pem", &len);
	ck_assert_int_eq(dg_trust_read_cas(pem, len, 0, &c, &n, err, sizeof(err)), -EINVAL);
	free(pem);
	pem = (char *)slurp("ca.der", &len);
	ck_assert_int_eq(dg_trust_read_cas(pem, len, 0, &c, &n, err, sizeof(err)), -EINVAL);
	free(pem);
	/* A good certificate cut short inside its block. */
	pem = (char *)slurp("ca.crt.pem", &len);
	ck_assert_int_eq(dg_trust_read_cas(pem, len / 2, 0, &c, &n, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "a PEM block has no END line");
	/* A block without its BEGIN line. */
	ck_assert_int_eq(dg_trust_read_cas(pem + 1, len - 1, 0, &c, &n, err, sizeof(err)), -EINVAL);
	free(pem);
	ck_assert_ptr_eq(c, (dg_ca_cert *)&c);
}
END_TEST

START_TEST(test_read_cas_expired)
{
	int64_t not_after = openssl_date("ca.crt.pem", "enddate");
	cas r;

	r = read_cas_at("ca.crt.pem", not_after + 1000);
	ck_assert_int_eq(r.rc, -EINVAL);
	ck_assert_msg(strstr(r.err, "expired") != NULL, "%s", r.err);
	ck_assert_msg(strstr(r.err, "/CN=Root CA") != NULL, "%s", r.err);
	/* One second before its end it is still good. */
	r = read_cas_at("ca.crt.pem", not_after - 1000);
	ck_assert_msg(r.rc == 0, "rc %d: %s", r.rc, r.err);
	dg_trust_ca_free(r.c, r.n);
	/* In a file of two, the one that expired first fails the file. */
	sh("cat other.crt.pem inter.crt.pem > two-b.pem");
	r = read_cas_at("two-b.pem", openssl_date("inter.crt.pem", "enddate") + 1000);
	ck_assert_int_eq(r.rc, -EINVAL);
	ck_assert_msg(strncmp(r.err, "certificate 2 ", 14) == 0, "%s", r.err);
}
END_TEST

/* --- dg_trust_read_crls --- */

/* Splits a blob of dg_trust_read_crls() into its records; returns how many. */
static size_t
crl_records(const uint8_t *b, size_t len, size_t *lens, size_t cap)
{
	size_t n = 0, off = 0;

	while (off < len) {
		ck_assert_uint_ge(len - off, 4);
		size_t l = (size_t)b[off] << 24 | (size_t)b[off + 1] << 16 |
		           (size_t)b[off + 2] << 8 | b[off + 3];
		ck_assert_uint_le(l, len - off - 4);
		ck_assert_uint_lt(n, cap);
		lens[n++] = l;
		off += 4 + l;
	}
	return n;
}

START_TEST(test_read_crls)
{
	uint8_t *blob = NULL, *der;
	size_t blen = 0, dlen, len, lens[4];
	char err[256] = "", *pem;

	sh("openssl crl -in ca.crl.pem -outform DER -out ca.crl.der");
	der = slurp("ca.crl.der", &dlen);
	pem = (char *)slurp("ca.crl.pem", &len);
	ck_assert_int_eq(dg_trust_read_crls(pem, len, &blob, &blen, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(blob);
	ck_assert_uint_eq(blen, 4 + dlen);
	ck_assert_uint_eq(crl_records(blob, blen, lens, 4), 1);
	ck_assert_uint_eq(lens[0], dlen);
	ck_assert_mem_eq(blob + 4, der, dlen);
	free(blob);
	free(pem);

	/* Two CRLs in one file: two records, in file order. */
	sh("cat ca.crl.pem other.crl.pem > two.crl.pem");
	pem = (char *)slurp("two.crl.pem", &len);
	blob = NULL;
	ck_assert_int_eq(dg_trust_read_crls(pem, len, &blob, &blen, err, sizeof(err)), 0);
	ck_assert_uint_eq(crl_records(blob, blen, lens, 4), 2);
	ck_assert_uint_eq(lens[0], dlen);
	ck_assert_mem_eq(blob + 4, der, dlen);
	ck_assert_uint_ne(lens[1], 0);
	free(blob);
	free(pem);
	free(der);
}
END_TEST

START_TEST(test_read_crls_garbage)
{
	static const char *const bad[] = {
	        "",
	        "garbage\n",
	        "-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n",
	        "-----BEGIN X509 CRL-----\nMIIB\n",
	};
	uint8_t *blob = (uint8_t *)&blob;
	size_t blen = 99, len;
	char err[256], *pem;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(dg_trust_read_crls(bad[i], strlen(bad[i]), &blob, &blen, err,
		                                 sizeof(err)) == -EINVAL,
		              "input %zu accepted", i);
		ck_assert_msg(err[0] != '\0', "input %zu: no reason", i);
		ck_assert_ptr_eq(blob, (uint8_t *)&blob);
		ck_assert_uint_eq(blen, 99);
	}
	ck_assert_int_eq(dg_trust_read_crls("", 0, &blob, &blen, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "no PEM CRL in the file");
	/* A certificate file is not a CRL file. */
	pem = (char *)slurp("ca.crt.pem", &len);
	ck_assert_int_eq(dg_trust_read_crls(pem, len, &blob, &blen, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "no PEM CRL in the file");
	free(pem);
	/* A good CRL followed by a bad one fails the file. */
	sh("cat ca.crl.pem > bad.crl.pem && printf '%s' '%s' >> bad.crl.pem", "%s", bad[2]);
	pem = (char *)slurp("bad.crl.pem", &len);
	ck_assert_int_eq(dg_trust_read_crls(pem, len, &blob, &blen, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strncmp(err, "CRL 2:", 6) == 0, "%s", err);
	free(pem);
	ck_assert_ptr_eq(blob, (uint8_t *)&blob);
}
END_TEST

/* --- dg_trust_subject --- */

static dg_subject
subject_of(const char *name)
{
	char file[256];
	dg_subject s;
	size_t len;
	uint8_t *der;

	snprintf(file, sizeof(file), "%s.der", name);
	der = slurp(file, &len);
	memset(&s, 0x55, sizeof(s));
	ck_assert_int_eq(dg_trust_subject(der, len, &s), 0);
	free(der);
	return s;
}

START_TEST(test_subject_device)
{
	dg_subject s = subject_of("device");

	ck_assert_int_eq(s.n_org, 1);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_str_eq(s.org, "acme");
	ck_assert_str_eq(s.cn, "dev-1");
	ck_assert_int_eq(s.cn_valid, 1);
	ck_assert_str_eq(s.text, "/O=acme/CN=dev-1");

	/* Attribute order and other attributes do not matter. */
	s = subject_of("cn-first");
	ck_assert_int_eq(s.n_org, 1);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_str_eq(s.org, "acme");
	ck_assert_str_eq(s.cn, "dev-9");
	ck_assert_int_eq(s.cn_valid, 1);
	ck_assert_str_eq(s.text, "/CN=dev-9/O=acme/OU=ops");
}
END_TEST

START_TEST(test_subject_counts)
{
	dg_subject s = subject_of("two-o");

	ck_assert_int_eq(s.n_org, 2);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_str_eq(s.cn, "dev-1");

	s = subject_of("no-o");
	ck_assert_int_eq(s.n_org, 0);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_str_eq(s.org, "");
	ck_assert_str_eq(s.cn, "dev-1");
	ck_assert_int_eq(s.cn_valid, 1);

	s = subject_of("no-cn");
	ck_assert_int_eq(s.n_org, 1);
	ck_assert_int_eq(s.n_cn, 0);
	ck_assert_str_eq(s.org, "acme");
	ck_assert_str_eq(s.cn, "");
	ck_assert_int_eq(s.cn_valid, 0);
	ck_assert_str_eq(s.text, "/O=acme");

	s = subject_of("two-cn");
	ck_assert_int_eq(s.n_org, 1);
	ck_assert_int_eq(s.n_cn, 2);

	/* A CA's subject reads the same way. */
	s = subject_of("ca");
	ck_assert_int_eq(s.n_org, 0);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_str_eq(s.cn, "Root CA");
	ck_assert_str_eq(s.text, "/CN=Root CA");
}
END_TEST

START_TEST(test_subject_cn_length)
{
	char want[256];
	dg_subject s;

	/* 128 bytes (64 two-byte UTF-8 characters): the longest certificate ID. */
	s = subject_of("cn128");
	utf8_cn(want, 0);
	ck_assert_uint_eq(strlen(want), DG_CERT_ID_MAX);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_int_eq(s.cn_valid, 1);
	ck_assert_str_eq(s.cn, want);
	ck_assert_str_eq(s.org, "acme");

	/* 129 bytes: too long. */
	s = subject_of("cn129");
	utf8_cn(want, 1);
	ck_assert_uint_eq(strlen(want), DG_CERT_ID_MAX + 1);
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_int_eq(s.cn_valid, 0);
	ck_assert_str_eq(s.cn, "");
	ck_assert_int_eq(s.n_org, 1);
}
END_TEST

START_TEST(test_subject_cn_control)
{
	dg_subject s = subject_of("cn-ctl");

	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_int_eq(s.cn_valid, 0);
	ck_assert_str_eq(s.cn, "");
	ck_assert_str_eq(s.org, "acme");
	/* The log text never carries the control character. */
	ck_assert_ptr_null(strchr(s.text, '\001'));
	s = subject_of("cn-del");
	ck_assert_int_eq(s.n_cn, 1);
	ck_assert_int_eq(s.cn_valid, 0);
	ck_assert_ptr_null(strchr(s.text, '\177'));
}
END_TEST

START_TEST(test_subject_garbage)
{
	static const uint8_t junk[] = {0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x00};
	dg_subject s;
	size_t len;
	uint8_t *der = slurp("device.der", &len);

	memset(&s, 0x55, sizeof(s));
	ck_assert_int_eq(dg_trust_subject(junk, sizeof(junk), &s), -EINVAL);
	ck_assert_int_eq(s.n_org, 0);
	ck_assert_int_eq(s.n_cn, 0);
	ck_assert_int_eq(s.cn_valid, 0);
	ck_assert_int_eq(dg_trust_subject(junk, 0, &s), -EINVAL);
	/* A certificate cut short. */
	ck_assert_int_eq(dg_trust_subject(der, len - 10, &s), -EINVAL);
	ck_assert_int_eq(dg_trust_subject(der, len / 2, &s), -EINVAL);
	free(der);
}
END_TEST

/* --- dg_trust_store_new and dg_trust_verify --- */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Builds a store from CA files (each read with dg_trust_read_cas) and CRL
 * files (each read with dg_trust_read_crls).
 */
static dg_trust_store *
store_of(const char *const *ca_files, size_t n_ca_files, const char *const *crl_files,
         size_t n_crl_files, int *bad_crls)
{
	const dg_ca_cert *all[16];
	cas files[8];
	uint8_t *crls[8];
	size_t crl_lens[8], n_all = 0;
	dg_trust_store *ts = NULL;
	char err[256];

	ck_assert_uint_le(n_ca_files, 8);
	ck_assert_uint_le(n_crl_files, 8);
	for (size_t i = 0; i < n_ca_files; i++) {
		files[i] = read_cas(ca_files[i]);
		ck_assert_msg(files[i].rc == 0, "%s: %s", ca_files[i], files[i].err);
		for (size_t j = 0; j < files[i].n; j++) {
			ck_assert_uint_lt(n_all, COUNT(all));
			all[n_all++] = &files[i].c[j];
		}
	}
	for (size_t i = 0; i < n_crl_files; i++) {
		size_t len;
		char *pem = (char *)slurp(crl_files[i], &len);
		ck_assert_int_eq(
		        dg_trust_read_crls(pem, len, &crls[i], &crl_lens[i], err, sizeof(err)), 0);
		free(pem);
	}
	ck_assert_int_eq(dg_trust_store_new(all, n_all, (const uint8_t *const *)crls, crl_lens,
	                                    n_crl_files, &ts, bad_crls),
	                 0);
	ck_assert_ptr_nonnull(ts);
	ck_assert_uint_eq(dg_trust_store_count(ts), n_all);
	/* The store keeps copies: what it was built from can go. */
	for (size_t i = 0; i < n_ca_files; i++)
		dg_trust_ca_free(files[i].c, files[i].n);
	for (size_t i = 0; i < n_crl_files; i++)
		free(crls[i]);
	return ts;
}

/* Verifies the chain of DER files `names` (leaf first). */
static dg_trust_result
verify(const dg_trust_store *ts, const char *const *names, size_t n)
{
	uint8_t *der[8];
	size_t lens[8];
	char file[256];
	dg_trust_result r;

	ck_assert_uint_le(n, 8);
	for (size_t i = 0; i < n; i++) {
		snprintf(file, sizeof(file), "%s.der", names[i]);
		der[i] = slurp(file, &lens[i]);
	}
	r = dg_trust_verify(ts, (const uint8_t *const *)der, lens, n);
	for (size_t i = 0; i < n; i++)
		free(der[i]);
	return r;
}

#define CHAIN(...) (const char *const[]){__VA_ARGS__}, COUNT(((const char *const[]){__VA_ARGS__}))
#define FILES(...) CHAIN(__VA_ARGS__)
#define NO_FILES   NULL, 0

#define ck_assert_trust(got, want)                                                                 \
	do {                                                                                       \
		dg_trust_result got_ = (got), want_ = (want);                                      \
		ck_assert_msg(got_ == want_, "%s: got \"%s\", want \"%s\"", #got,                  \
		              dg_trust_result_text(got_), dg_trust_result_text(want_));            \
	} while (0)

START_TEST(test_verify_v1_leaf)
{
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);

	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_OK);
	/* A leaf of another root. */
	ck_assert_trust(verify(ts, CHAIN("dev2")), DG_TRUST_UNKNOWN_CA);
	/* The root itself, sent as a leaf, is a CA, not a device (issue 8). */
	ck_assert_trust(verify(ts, CHAIN("ca")), DG_TRUST_LEAF_IS_CA);
	dg_trust_store_free(ts);

	/* The other project's store knows only its own root. */
	ts = store_of(FILES("other.crt.pem"), NO_FILES, NULL);
	ck_assert_trust(verify(ts, CHAIN("dev2")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_UNKNOWN_CA);
	/* Sending the right root along does not make it trusted. */
	ck_assert_trust(verify(ts, CHAIN("device", "ca")), DG_TRUST_UNKNOWN_CA);
	dg_trust_store_free(ts);

	/* Both roots, from two files. */
	ts = store_of(FILES("ca.crt.pem", "other.crt.pem"), NO_FILES, NULL);
	ck_assert_uint_eq(dg_trust_store_count(ts), 2);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("dev2")), DG_TRUST_OK);
	dg_trust_store_free(ts);
	dg_trust_store_free(NULL);
}
END_TEST

START_TEST(test_verify_empty_store)
{
	dg_trust_store *ts = NULL;
	int bad = 7;

	ck_assert_int_eq(dg_trust_store_new(NULL, 0, NULL, NULL, 0, &ts, &bad), 0);
	ck_assert_int_eq(bad, 0);
	ck_assert_uint_eq(dg_trust_store_count(ts), 0);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_UNKNOWN_CA);
	ck_assert_trust(verify(ts, CHAIN("devi", "inter")), DG_TRUST_UNKNOWN_CA);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_bad_input)
{
	static const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x00};
	const uint8_t *certs[2] = {junk, junk};
	size_t lens[2] = {sizeof(junk), sizeof(junk)}, len;
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);
	uint8_t *der = slurp("device.der", &len);

	ck_assert_trust(dg_trust_verify(ts, certs, lens, 0), DG_TRUST_BAD_CERT);
	ck_assert_trust(dg_trust_verify(ts, certs, lens, 1), DG_TRUST_BAD_CERT);
	ck_assert_trust(dg_trust_verify(ts, certs, lens, 2), DG_TRUST_BAD_CERT);
	/* A good leaf with junk as its "intermediate". */
	certs[0] = der;
	lens[0] = len;
	ck_assert_trust(dg_trust_verify(ts, certs, lens, 2), DG_TRUST_OK);
	/* The leaf cut short. */
	lens[0] = len - 1;
	ck_assert_int_ne(dg_trust_verify(ts, certs, lens, 1), DG_TRUST_OK);
	/* The leaf with one bit of its signature flipped. */
	lens[0] = len;
	der[len - 3] ^= 0x01;
	ck_assert_int_ne(dg_trust_verify(ts, certs, lens, 1), DG_TRUST_OK);
	free(der);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_intermediate)
{
	dg_trust_store *ts;

	/* The intermediate in the store: the leaf alone verifies. */
	ts = store_of(FILES("inter.crt.pem"), NO_FILES, NULL);
	ck_assert_trust(verify(ts, CHAIN("devi")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_UNKNOWN_CA);
	dg_trust_store_free(ts);

	/* Only the root in the store: the device sends the intermediate. */
	ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);
	ck_assert_trust(verify(ts, CHAIN("devi", "inter")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("devi")), DG_TRUST_UNKNOWN_CA);
	/* In any order, among certificates that do not help. */
	ck_assert_trust(verify(ts, CHAIN("devi", "dev2", "interx", "inter")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("devi", "inter", "ca")), DG_TRUST_OK);
	/* An intermediate of another root does not verify against this one. */
	ck_assert_trust(verify(ts, CHAIN("devx", "interx")), DG_TRUST_UNKNOWN_CA);
	ck_assert_trust(verify(ts, CHAIN("devx", "interx", "other")), DG_TRUST_UNKNOWN_CA);
	/* A CA:TRUE certificate whose keyUsage does not include keyCertSign signs nothing. */
	ck_assert_trust(verify(ts, CHAIN("devn", "nosign")), DG_TRUST_UNKNOWN_CA);
	dg_trust_store_free(ts);

	/* Both roots: the other intermediate's leaf verifies too. */
	ts = store_of(FILES("ca.crt.pem", "other.crt.pem"), NO_FILES, NULL);
	ck_assert_trust(verify(ts, CHAIN("devx", "interx")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("devi", "inter")), DG_TRUST_OK);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_leaf_cannot_sign)
{
	/*
	 * A device holds a valid v1 leaf and its key. It "signs" a certificate
	 * for another CN with them and sends its own leaf as the intermediate:
	 * that must not verify, or any device could claim any certificate ID.
	 */
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);

	/* OpenSSL refuses the chain too. */
	ck_assert_int_ne(sh_rc("openssl verify -CAfile ca.crt.pem -untrusted device.crt.pem"
	                       " forged.crt.pem"),
	                 0);
	ck_assert_int_eq(sh_rc("openssl verify -CAfile ca.crt.pem device.crt.pem"), 0);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("forged", "device")), DG_TRUST_UNKNOWN_CA);
	ck_assert_trust(verify(ts, CHAIN("forged", "device", "ca")), DG_TRUST_UNKNOWN_CA);
	ck_assert_trust(verify(ts, CHAIN("forged")), DG_TRUST_UNKNOWN_CA);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_dates)
{
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);

	ck_assert_trust(verify(ts, CHAIN("expired")), DG_TRUST_EXPIRED);
	ck_assert_trust(verify(ts, CHAIN("future")), DG_TRUST_NOT_YET_VALID);
	/* A leaf of another root is refused for that, whatever its dates. */
	dg_trust_store_free(ts);
	ts = store_of(FILES("other.crt.pem"), NO_FILES, NULL);
	ck_assert_int_ne(verify(ts, CHAIN("expired")), DG_TRUST_OK);
	ck_assert_int_ne(verify(ts, CHAIN("future")), DG_TRUST_OK);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_crl)
{
	dg_trust_store *ts;
	int bad = -1;

	/* With the root's CRL, the revoked leaf is refused and the others are not. */
	ts = store_of(FILES("ca.crt.pem"), FILES("ca.crl.pem"), &bad);
	ck_assert_int_eq(bad, 0);
	ck_assert_trust(verify(ts, CHAIN("revoked")), DG_TRUST_REVOKED);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_OK);
	dg_trust_store_free(ts);

	/* Without it, the same leaf verifies. */
	ts = store_of(FILES("ca.crt.pem"), NO_FILES, &bad);
	ck_assert_int_eq(bad, 0);
	ck_assert_trust(verify(ts, CHAIN("revoked")), DG_TRUST_OK);
	dg_trust_store_free(ts);

	/* A CRL whose issuer is not among the CAs is skipped and counted. */
	bad = -1;
	ts = store_of(FILES("ca.crt.pem"), FILES("ca.crl.pem", "other.crl.pem"), &bad);
	ck_assert_int_eq(bad, 1);
	ck_assert_trust(verify(ts, CHAIN("revoked")), DG_TRUST_REVOKED);
	dg_trust_store_free(ts);

	/* Two CRLs in one file, both issuers in the store. */
	sh("cat other.crl.pem ca.crl.pem > both.crl.pem");
	bad = -1;
	ts = store_of(FILES("ca.crt.pem", "other.crt.pem"), FILES("both.crl.pem"), &bad);
	ck_assert_int_eq(bad, 0);
	ck_assert_trust(verify(ts, CHAIN("revoked")), DG_TRUST_REVOKED);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("dev2")), DG_TRUST_OK);
	/* The revocation holds when the leaf comes with intermediates too. */
	ck_assert_trust(verify(ts, CHAIN("revoked", "inter")), DG_TRUST_REVOKED);
	dg_trust_store_free(ts);

	/*
	 * A blob that is not a CRL is counted bad; bad_crls may be NULL. Its
	 * issuer cannot be read, so it may be the one revoking any of the
	 * project's certificates: all are refused (fail closed).
	 */
	{
		static const uint8_t rec[] = {0, 0, 0, 3, 0x30, 0x01, 0x00};
		const uint8_t *crls[1] = {rec};
		size_t lens[1] = {sizeof(rec)};
		cas r = read_cas("ca.crt.pem");
		const dg_ca_cert *c[1] = {&r.c[0]};

		ck_assert_int_eq(r.rc, 0);
		ck_assert_int_eq(dg_trust_store_new(c, 1, crls, lens, 1, &ts, &bad), 0);
		ck_assert_int_eq(bad, 1);
		ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_CRL_UNUSABLE);
		dg_trust_store_free(ts);
		ck_assert_int_eq(dg_trust_store_new(c, 1, crls, lens, 1, &ts, NULL), 0);
		dg_trust_store_free(ts);
		dg_trust_ca_free(r.c, r.n);
	}
}
END_TEST

START_TEST(test_verify_v1_root)
{
	/*
	 * A store built straight from the DER of a self-signed v1 root (the
	 * kind the header says dg_trust_read_cas accepts) verifies its leaves.
	 */
	dg_ca_cert c;
	const dg_ca_cert *cp[1] = {&c};
	dg_trust_store *ts = NULL;

	memset(&c, 0, sizeof(c));
	sh("openssl x509 -in v1root.crt.pem -outform DER -out v1root.der");
	c.der = slurp("v1root.der", &c.der_len);
	ck_assert_int_eq(dg_trust_store_new(cp, 1, NULL, NULL, 0, &ts, NULL), 0);
	free(c.der);
	ck_assert_trust(verify(ts, CHAIN("devv1")), DG_TRUST_OK);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_UNKNOWN_CA);
	/* The v1 root sent again as an intermediate changes nothing. */
	ck_assert_trust(verify(ts, CHAIN("devv1", "v1root")), DG_TRUST_OK);
	dg_trust_store_free(ts);
}
END_TEST

/* Verifies the chain of DER files `names` at `at_ms`; fills *v. */
static dg_trust_result
verify_at(const dg_trust_store *ts, const char *const *names, size_t n, int64_t at_ms,
          dg_trust_verdict *v)
{
	uint8_t *der[8];
	size_t lens[8];
	char file[256];
	dg_trust_result r;

	ck_assert_uint_le(n, 8);
	for (size_t i = 0; i < n; i++) {
		snprintf(file, sizeof(file), "%s.der", names[i]);
		der[i] = slurp(file, &lens[i]);
	}
	r = dg_trust_verify_at(ts, (const uint8_t *const *)der, lens, n, at_ms, v);
	for (size_t i = 0; i < n; i++)
		free(der[i]);
	return r;
}

START_TEST(test_verify_chain_limit)
{
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);
	dg_trust_verdict v;

	/* Leaf and three more: the limit. */
	ck_assert_trust(verify(ts, CHAIN("devi", "dev2", "interx", "inter")), DG_TRUST_OK);
	/* One more is refused whole, though the chain in its first four would verify. */
	ck_assert_trust(
	        verify_at(ts, CHAIN("devi", "inter", "dev2", "interx", "other"), now_ms(), &v),
	        DG_TRUST_CHAIN_TOO_LONG);
	ck_assert_str_eq(v.reason, "certificate chain too long");
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_leaf_end_entity)
{
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);

	/* A CA:TRUE intermediate of the project's root, sent as the device's leaf. */
	ck_assert_trust(verify(ts, CHAIN("inter")), DG_TRUST_LEAF_IS_CA);
	ck_assert_trust(verify(ts, CHAIN("inter", "ca")), DG_TRUST_LEAF_IS_CA);
	dg_trust_store_free(ts);
	/* A leaf whose keyUsage lacks digitalSignature. */
	genkey("kuleaf");
	sh("openssl req -new -key kuleaf.key.pem -subj '/O=acme/CN=dev-ku' -out kuleaf.csr.pem");
	sh("printf 'keyUsage=critical,keyAgreement\n' > kuleaf.ext");
	sh("openssl x509 -req -in kuleaf.csr.pem -CA ca.crt.pem -CAkey ca.key.pem -CAcreateserial"
	   " -out kuleaf.crt.pem -days 7 -sha256 -extfile kuleaf.ext");
	sh("openssl x509 -in kuleaf.crt.pem -outform DER -out kuleaf.der");
	ts = store_of(FILES("ca.crt.pem"), NO_FILES, NULL);
	ck_assert_trust(verify(ts, CHAIN("kuleaf")), DG_TRUST_LEAF_KEY_USAGE);
	dg_trust_store_free(ts);
	/* The v1 root itself, uploaded and sent as a leaf. */
	sh("openssl x509 -in v1root.crt.pem -outform DER -out v1root.der");
	ts = store_of(FILES("v1root.crt.pem"), NO_FILES, NULL);
	ck_assert_trust(verify(ts, CHAIN("v1root")), DG_TRUST_LEAF_IS_CA);
	ck_assert_trust(verify(ts, CHAIN("devv1")), DG_TRUST_OK);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_verify_crl_dates)
{
	/* ca.crl.pem: nextUpdate in 7 days. */
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), FILES("ca.crl.pem"), NULL);
	dg_trust_verdict v;
	dg_crl_status st;
	int64_t later = now_ms() + 8 * DAY_MS;

	ck_assert_trust(verify_at(ts, CHAIN("device"), now_ms(), &v), DG_TRUST_OK);
	/* The leaf's notAfter (-days 7) is reported for the session's timer. */
	ck_assert_int_gt(v.not_after_ms, now_ms() + 6 * DAY_MS);
	ck_assert_int_le(v.not_after_ms, now_ms() + 7 * DAY_MS + 60000);
	/* Once the CRL is past its nextUpdate, its issuer's certificates are refused. */
	ck_assert_trust(verify_at(ts, CHAIN("device"), later, &v), DG_TRUST_CRL_EXPIRED);
	ck_assert_str_eq(v.reason, "CRL expired for issuer /CN=Root CA");
	ck_assert_trust(verify_at(ts, CHAIN("devi", "inter"), later, &v), DG_TRUST_CRL_EXPIRED);
	/* A leaf of another issuer is not concerned. */
	dg_trust_store_free(ts);
	ts = store_of(FILES("ca.crt.pem", "other.crt.pem"), FILES("ca.crl.pem"), NULL);
	ck_assert_trust(verify_at(ts, CHAIN("dev2"), later, &v), DG_TRUST_OK);
	ck_assert_uint_eq(dg_trust_store_crl_count(ts), 1);
	ck_assert_int_eq(dg_trust_store_crl_status(ts, 0, now_ms(), &st), 0);
	ck_assert_ptr_null(st.problem);
	ck_assert_str_eq(st.issuer, "/CN=Root CA");
	ck_assert_int_eq(dg_trust_store_crl_status(ts, 0, later, &st), 0);
	ck_assert_str_eq(st.problem, "expired");
	ck_assert_int_eq(dg_trust_store_crl_status(ts, 1, later, &st), -ENOENT);
	dg_trust_store_free(ts);

	/* dg_trust_crls_expired, as the import's check uses it. */
	{
		size_t len, blen;
		char *pem = (char *)slurp("ca.crl.pem", &len), why[400] = "", err[256];
		uint8_t *blob = NULL;
		ck_assert_int_eq(dg_trust_read_crls(pem, len, &blob, &blen, err, sizeof(err)), 0);
		ck_assert_uint_eq(dg_trust_crls_expired(blob, blen, now_ms(), why, sizeof(why)), 0);
		ck_assert_str_eq(why, "");
		ck_assert_uint_eq(dg_trust_crls_expired(blob, blen, later, why, sizeof(why)), 1);
		ck_assert_msg(strncmp(why, "CRL 1 (issuer /CN=Root CA): expired at ", 39) == 0,
		              "%s", why);
		free(blob);
		free(pem);
	}
}
END_TEST

START_TEST(test_verify_crl_forged)
{
	/*
	 * A CRL claiming the root's name, signed by another key: the root's
	 * certificates are refused while it is there, not let in as if the
	 * project had no CRL.
	 */
	int bad = -1;
	dg_trust_verdict v;

	root("fake", "Root CA");
	ca_db("fake");
	sh("openssl ca -batch -config fake.cnf -gencrl -crldays 7 -out fake.crl.pem");
	dg_trust_store *ts = store_of(FILES("ca.crt.pem"), FILES("fake.crl.pem"), &bad);
	ck_assert_int_eq(bad, 1);
	ck_assert_trust(verify_at(ts, CHAIN("device"), now_ms(), &v), DG_TRUST_CRL_UNUSABLE);
	ck_assert_str_eq(v.reason, "CRL unusable for issuer /CN=Root CA: its signature does not"
	                           " verify against the project's CA");
	dg_trust_store_free(ts);
	/* Beside the good CRL, still refused: it may be the one revoking the device. */
	ts = store_of(FILES("ca.crt.pem"), FILES("ca.crl.pem", "fake.crl.pem"), &bad);
	ck_assert_trust(verify(ts, CHAIN("device")), DG_TRUST_CRL_UNUSABLE);
	dg_trust_store_free(ts);
}
END_TEST

START_TEST(test_result_text)
{
	ck_assert_str_eq(dg_trust_result_text(DG_TRUST_OK), "ok");
	ck_assert_str_eq(dg_trust_result_text(DG_TRUST_UNKNOWN_CA), "unknown CA");
	ck_assert_str_eq(dg_trust_result_text(DG_TRUST_EXPIRED), "certificate expired");
	ck_assert_str_eq(dg_trust_result_text(DG_TRUST_NOT_YET_VALID), "certificate not yet valid");
	ck_assert_str_eq(dg_trust_result_text(DG_TRUST_REVOKED), "certificate revoked");
	ck_assert_str_eq(dg_trust_result_text(DG_TRUST_BAD_CERT), "malformed certificate");
	ck_assert_str_eq(dg_trust_result_text((dg_trust_result)99), "unknown");
}
END_TEST

static Suite *
trust_suite(void)
{
	Suite *s = suite_create("trust");
	TCase *tc;

	tc = tcase_create("read");
	tcase_add_unchecked_fixture(tc, pki_setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_read_cas_root);
	tcase_add_test(tc, test_read_cas_two);
	tcase_add_test(tc, test_read_cas_not_ca);
	tcase_add_test(tc, test_read_cas_v1_root);
	tcase_add_test(tc, test_read_cas_garbage);
	tcase_add_test(tc, test_read_cas_expired);
	tcase_add_test(tc, test_read_crls);
	tcase_add_test(tc, test_read_crls_garbage);
	suite_add_tcase(s, tc);

	tc = tcase_create("subject");
	tcase_add_unchecked_fixture(tc, pki_setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_subject_device);
	tcase_add_test(tc, test_subject_counts);
	tcase_add_test(tc, test_subject_cn_length);
	tcase_add_test(tc, test_subject_cn_control);
	tcase_add_test(tc, test_subject_garbage);
	suite_add_tcase(s, tc);

	tc = tcase_create("verify");
	tcase_add_unchecked_fixture(tc, pki_setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_verify_v1_leaf);
	tcase_add_test(tc, test_verify_empty_store);
	tcase_add_test(tc, test_verify_bad_input);
	tcase_add_test(tc, test_verify_intermediate);
	tcase_add_test(tc, test_verify_leaf_cannot_sign);
	tcase_add_test(tc, test_verify_dates);
	tcase_add_test(tc, test_verify_crl);
	tcase_add_test(tc, test_verify_v1_root);
	tcase_add_test(tc, test_verify_chain_limit);
	tcase_add_test(tc, test_verify_leaf_end_entity);
	tcase_add_test(tc, test_verify_crl_dates);
	tcase_add_test(tc, test_verify_crl_forged);
	tcase_add_test(tc, test_result_text);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(trust_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (built || base[0] != '\0')
		nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
