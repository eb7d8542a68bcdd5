/*
 * Development certificates: when devgate.json names no server certificate,
 * devgate makes a development CA and a P-256 server certificate signed by
 * it (subjectAltName localhost and 127.0.0.1) in a directory beside the
 * database, and reuses them on later starts.
 */
#ifndef DEVGATE_DEVCERT_H
#define DEVGATE_DEVCERT_H

#include <stddef.h>

typedef struct dg_devcert_paths {
	char ca_cert[4096];     /* dev-ca.pem: what devices should trust. */
	char ca_key[4096];      /* dev-ca.key */
	char server_cert[4096]; /* server.pem */
	char server_key[4096];  /* server.key */
	int created;            /* 1 when this call made the files. */
} dg_devcert_paths;

/*
 * Makes sure the four files exist in `dir` (created with mode 0700 if
 * missing; keys are written with mode 0600). Files already there are
 * reused; a missing server pair is issued again from an existing CA.
 * Returns 0 and fills *paths, or a negative errno with a reason in err.
 */
int dg_devcert_ensure(const char *dir, dg_devcert_paths *paths, char *err, size_t errlen);

#endif
