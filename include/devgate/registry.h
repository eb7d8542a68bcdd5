/*
 * The registry: an in-memory, read-only snapshot of what authentication
 * needs (projects and PSK credentials), built from the store and swapped
 * whole on reload. A snapshot is reference-counted; a handshake holds the
 * one it started with.
 */
#ifndef DEVGATE_REGISTRY_H
#define DEVGATE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "devgate/store.h"
#include "devgate/trust.h"

#define DG_PSK_MAX_KEY      64
#define DG_PSK_MAX_IDENTITY 128
#define DG_SLUG_MAX         63

typedef struct dg_registry dg_registry;

/* A PSK credential as the handshake sees it; owned by the snapshot. */
typedef struct dg_psk_cred {
	char *identity;
	char *slug;
	char *device;
	int64_t project_id;
	int64_t device_id;
	uint8_t key[DG_PSK_MAX_KEY];
	size_t key_len;
	int project_enabled;
	int device_blocked;
} dg_psk_cred;

/*
 * Returns 1 when `slug` is a valid project slug: [a-z0-9][a-z0-9-]{0,62}.
 */
int dg_slug_valid(const char *slug);

/*
 * Splits a PSK identity "<psk-id>@<project-slug>" at its last '@'. On
 * success returns 0 and points *id and *slug into `identity` with their
 * lengths. Returns -EINVAL when there is no '@', either part is empty, the
 * slug is not valid, the identity is longer than DG_PSK_MAX_IDENTITY, or
 * it holds a NUL or control character.
 */
int dg_identity_split(const char *identity, size_t len, const char **id, size_t *id_len,
                      const char **slug, size_t *slug_len);

/* A project as the handshake sees it; owned by the snapshot. */
typedef struct dg_project {
	int64_t id;
	char *slug;
	char *name;
	int enabled;
	int auto_provision;
	dg_trust_store *trust; /* Its CAs and CRLs; never NULL. */
	size_t n_cas;
	uint64_t trust_hash; /* Changes whenever its CAs or CRLs change. */
} dg_project;

/* A device known by its certificate ID; owned by the snapshot. */
typedef struct dg_cert_device {
	int64_t project_id;
	char *cert_id;
	int64_t device_id;
	char *name;
	int blocked;
} dg_cert_device;

/*
 * Builds a snapshot from the store. Returns 0 and sets *out (refcount 1),
 * or a negative errno.
 */
int dg_registry_build(dg_store *st, dg_registry **out);

/* Takes another reference. Safe from any thread. */
dg_registry *dg_registry_ref(dg_registry *reg);

/* Drops a reference; the last one frees the snapshot. NULL is a no-op. */
void dg_registry_unref(dg_registry *reg);

/* Returns the credential with this identity, or NULL. Borrowed from `reg`. */
const dg_psk_cred *dg_registry_find_psk(const dg_registry *reg, const char *identity, size_t len);

/* Returns 1 when the snapshot knows a project with this slug. */
int dg_registry_has_project(const dg_registry *reg, const char *slug, size_t len);

/* Returns the project with this slug, or NULL. Borrowed from `reg`. */
const dg_project *dg_registry_find_project(const dg_registry *reg, const char *slug, size_t len);

/* Returns the device of `project_id` with this certificate ID, or NULL. */
const dg_cert_device *dg_registry_find_cert_device(const dg_registry *reg, int64_t project_id,
                                                   const char *cert_id);

/* Returns the serial of the store the snapshot was built at. */
int64_t dg_registry_serial(const dg_registry *reg);

/* Returns the number of PSK credentials in the snapshot. */
size_t dg_registry_psk_count(const dg_registry *reg);

#endif
