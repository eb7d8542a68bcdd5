/*
 * Fuzz target for certificate chains through the whole judgement a
 * device's chain gets in the handshake: a registry is built once, through
 * the store and the config-directory import, from three projects:
 *
 *   acme  its own root CA and a CRL of it (auto_provision on);
 *   beta  another root CA, auto_provision off;
 *   off   disabled, trusting acme's root.
 *
 * (The CAs and the CRL are in fuzz_chain_pki.h, made with the seeds by
 * tests/fuzz/make-seeds.py.) The input is a list of DER certificates,
 * each a 2-byte big-endian length and its bytes, the device's leaf first;
 * each is copied into its own allocation, so that a read past one is
 * caught. The chain is judged as src/net/session.c's verify callback does it
 * (judge_chain: dg_trust_subject, the O and CN rules, the project of O
 * from the registry, dg_trust_verify against that project's CAs only, and
 * the certificate device's state), from the public functions of trust.c
 * and registry.c, with at most the 4 certificates the callback passes.
 *
 * Invariants, a violation aborts:
 *  - an accepted chain has exactly one O, naming an enabled project, and
 *    exactly one valid CN (1..128 bytes, no control character);
 *  - a chain accepted by acme's CAs is refused by beta's and the other way
 *    round (their roots are unrelated keys);
 *  - the order of the intermediates does not change whether it verifies;
 *  - every string dg_trust_subject returns is terminated.
 */
#include <errno.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/confdir.h"
#include "devgate/log.h"
#include "devgate/registry.h"
#include "devgate/store.h"
#include "devgate/trust.h"

#include "fuzz_chain_pki.h"

#define CHAIN_MAX 4 /* What src/net/session.c's verify callback passes on. */
#define LIST_MAX  20

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct harness {
	char dir[96];
	dg_store *store;
	dg_registry *reg;
	const dg_project *acme, *beta;
} harness;

static harness *H;

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_chain: %s\n", what);
	abort();
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
teardown(void)
{
	if (H == NULL)
		return;
	dg_registry_unref(H->reg);
	dg_store_close(H->store);
	if (H->dir[0] != '\0')
		nftw(H->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(H);
	H = NULL;
}

static void
write_file(const char *dir, const char *rel, const char *text)
{
	char path[256], sub[256];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	/* Make each directory on the way. */
	for (char *p = strchr(path + strlen(dir) + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
		snprintf(sub, sizeof(sub), "%.*s", (int)(p - path), path);
		mkdir(sub, 0700);
	}
	FILE *f = fopen(path, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
		die(path);
}

static void
setup(void)
{
	char projects[160], db[160], err[256];
	int n_errors = 0;

	H = calloc(1, sizeof(*H));
	if (H == NULL)
		die("out of memory");
	snprintf(H->dir, sizeof(H->dir), "%s/dg-fuzz-chain-XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(H->dir) == NULL)
		die("mkdtemp");
	atexit(teardown);
	dg_log_init(getenv("DG_FUZZ_LOG") != NULL ? DG_LOG_DEBUG : DG_LOG_ERROR, DG_LOG_TEXT);
	wolfSSL_Init();
	snprintf(projects, sizeof(projects), "%s/projects", H->dir);
	mkdir(projects, 0700);
	write_file(projects, "acme/cas/root.pem", ACME_ROOT_PEM);
	write_file(projects, "acme/crls/acme.pem", ACME_CRL_PEM);
	write_file(projects, "beta/cas/root.pem", BETA_ROOT_PEM);
	write_file(projects, "beta/project.json", "{\"auto_provision\": false}\n");
	write_file(projects, "off/cas/root.pem", ACME_ROOT_PEM);
	write_file(projects, "off/project.json", "{\"enabled\": false}\n");
	snprintf(db, sizeof(db), "%s/devgate.db", H->dir);
	if (dg_store_open(db, DG_STORE_WRITER, &H->store, err, sizeof(err)) != 0)
		die(err);
	if (dg_confdir_import(projects, H->store, &n_errors) != 0 || n_errors != 0)
		die("cannot import the projects (expired seeds? run tests/fuzz/make-seeds.py)");
	if (dg_registry_build(H->store, &H->reg) != 0)
		die("cannot build the registry");
	H->acme = dg_registry_find_project(H->reg, "acme", 4);
	H->beta = dg_registry_find_project(H->reg, "beta", 4);
	if (H->acme == NULL || H->beta == NULL || H->acme->n_cas != 1 || H->beta->n_cas != 1 ||
	    dg_registry_find_project(H->reg, "off", 3) == NULL)
		die("the registry lacks a project or a CA");
}

static void
check_subject(const dg_subject *s)
{
	if (memchr(s->org, '\0', sizeof(s->org)) == NULL ||
	    memchr(s->cn, '\0', sizeof(s->cn)) == NULL ||
	    memchr(s->text, '\0', sizeof(s->text)) == NULL)
		die("an unterminated subject string");
	if (s->n_org < 0 || s->n_cn < 0)
		die("a negative attribute count");
}

/*
 * The judgement of src/net/session.c's judge_chain() for a first connection.
 * Returns NULL when accepted (with *proj set), else the reason.
 */
static const char *
judge(const uint8_t *const *certs, const size_t *lens, size_t n, const dg_project **proj)
{
	dg_subject subj;
	const dg_project *p;
	dg_trust_result r;

	*proj = NULL;
	if (n == 0 || dg_trust_subject(certs[0], lens[0], &subj) != 0)
		return "malformed certificate";
	check_subject(&subj);
	if (subj.n_org != 1)
		return "not exactly one organization (O) in subject";
	p = subj.org[0] != '\0' ? dg_registry_find_project(H->reg, subj.org, strlen(subj.org))
	                        : NULL;
	if (p == NULL)
		return "unknown project";
	if (!p->enabled)
		return "project disabled";
	if (subj.n_cn != 1)
		return "not exactly one common name (CN) in subject";
	if (!subj.cn_valid)
		return "invalid common name";
	r = dg_trust_verify(p->trust, certs, lens, n);
	if (r < DG_TRUST_OK || r > DG_TRUST_BAD_CERT || dg_trust_result_text(r) == NULL)
		die("an unknown trust result");
	if (r != DG_TRUST_OK)
		return dg_trust_result_text(r);
	const dg_cert_device *d = dg_registry_find_cert_device(H->reg, p->id, subj.cn);
	if (d != NULL && d->blocked)
		return "device blocked";
	if (d == NULL && !p->auto_provision)
		return "unknown device and auto_provision is off";

	/* Accepted: what the rules promise. */
	size_t cn_len = strlen(subj.cn);
	if (strcmp(subj.org, p->slug) != 0 || cn_len == 0 || cn_len > DG_CERT_ID_MAX)
		die("accepted a chain whose subject breaks the rules");
	for (size_t i = 0; i < cn_len; i++)
		if ((unsigned char)subj.cn[i] < 0x20 || subj.cn[i] == 0x7f)
			die("accepted a CN with a control character");
	*proj = p;
	return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *certs[LIST_MAX];
	size_t lens[LIST_MAX], n = 0, off = 0;
	const dg_project *p;
	dg_subject subj;

	if (H == NULL)
		setup();
	while (n < LIST_MAX && size - off >= 2) {
		size_t len = (size_t)data[off] << 8 | data[off + 1];
		off += 2;
		if (len > size - off)
			len = size - off;
		certs[n] = malloc(len ? len : 1);
		if (certs[n] == NULL)
			break;
		memcpy(certs[n], data + off, len);
		lens[n++] = len;
		off += len;
	}
	const uint8_t *const *cc = (const uint8_t *const *)certs;

	for (size_t i = 0; i < n; i++)
		if (dg_trust_subject(certs[i], lens[i], &subj) == 0)
			check_subject(&subj);

	size_t m = n < CHAIN_MAX ? n : CHAIN_MAX;
	const char *why = judge(cc, lens, m, &p);
	if (getenv("DG_FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "fuzz_chain: %zu certificates: %s\n", n, why ? why : "accepted");
	if (why == NULL) {
		const dg_project *other = p == H->acme ? H->beta : p == H->beta ? H->acme : NULL;
		if (other != NULL && dg_trust_verify(other->trust, cc, lens, m) == DG_TRUST_OK)
			die("a chain verified against two unrelated projects' CAs");
	}

	/* The intermediates in reverse order: the same verdict from each store. */
	if (m > 2) {
		const uint8_t *rev[CHAIN_MAX];
		size_t rev_lens[CHAIN_MAX];
		rev[0] = certs[0];
		rev_lens[0] = lens[0];
		for (size_t i = 1; i < m; i++) {
			rev[i] = certs[m - i];
			rev_lens[i] = lens[m - i];
		}
		const dg_project *stores[2] = {H->acme, H->beta};
		for (int s = 0; s < 2; s++)
			if ((dg_trust_verify(stores[s]->trust, cc, lens, m) == DG_TRUST_OK) !=
			    (dg_trust_verify(stores[s]->trust, rev, rev_lens, m) == DG_TRUST_OK))
				die("the order of the intermediates changed the verdict");
	}

	/* Longer lists than the callback passes: dg_trust_verify caps them itself. */
	if (n > m) {
		dg_trust_result r = dg_trust_verify(H->acme->trust, cc, lens, n);
		if (r < DG_TRUST_OK || r > DG_TRUST_BAD_CERT)
			die("an unknown trust result");
	}

	for (size_t i = 0; i < n; i++)
		free(certs[i]);
	return 0;
}
