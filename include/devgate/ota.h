/*
 * OTA updates in the store (Golioth's ".u" service): artifacts (a
 * package at a version, its bytes stored once per sha256 as an SQLite
 * BLOB that is written and read in chunks, never whole), releases (a set
 * of artifacts for all of a project's devices or for a list of them, that
 * a rollback withdraws), the desired manifest a device is served, and the
 * devices' state reports.
 *
 * The functions shaped `int fn(sqlite3 *db, void *arg)` are `run`
 * functions for dg_store_run() (the CLI), dg_store_job() (the daemon's
 * writer) or dg_store_read() (the daemon's reader), as each says.
 */
#ifndef DEVGATE_OTA_H
#define DEVGATE_OTA_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "devgate/render.h"
#include "devgate/store.h"

/*
 * The longest package name and version taken: the Golioth SDK's defaults
 * (CONFIG_GOLIOTH_OTA_MAX_PACKAGE_NAME_LEN, _MAX_VERSION_LEN), into whose
 * fixed buffers it copies them.
 */
#define DG_OTA_PACKAGE_MAX 16
#define DG_OTA_VERSION_MAX 16
/* A sha256 in lowercase hex. */
#define DG_OTA_SHA256_HEX 64
/* The largest artifact taken: the SDK keeps a component's size in an int32_t. */
#define DG_OTA_SIZE_MAX INT32_MAX

/* The states and reasons of a device's report: golioth_ota_state, golioth_ota_reason. */
#define DG_OTA_STATE_MAX  3
#define DG_OTA_REASON_MAX 11

/* The name of a golioth_ota_state ("IDLE" ...) or "?" when out of range. */
const char *dg_ota_state_name(int64_t state);

/* The name of a golioth_ota_reason ("READY" ...) or "?" when out of range. */
const char *dg_ota_reason_name(int64_t reason);

/*
 * Checks a package name or a version (`what` "package" or "version", for
 * the message): 1 to `max` printable ASCII bytes, none of them '/', '@'
 * or a space. Returns 0, or -EINVAL with why in `err`.
 */
int dg_ota_name_check(const char *what, const char *name, size_t max, char *err, size_t errlen);

/* An artifact to add from a file, for dg_ota_artifact_add(). */
typedef struct dg_ota_add {
	const char *project; /* Slug; the project must exist. */
	const char *package;
	const char *version;
	const char *path; /* The file, read twice in chunks, never whole. */
	/* Out. */
	char sha256[DG_OTA_SHA256_HEX + 1];
	int64_t size;
	char bootloader[8]; /* "mcuboot" when the image starts with MCUboot's magic, else "". */
	int blob_reused;    /* 1: the same bytes were stored already (for another artifact). */
	char err[160];      /* Why it failed, for the user. */
	/* Set by dg_ota_artifact_open(): the file, open and hashed. */
	int fd;
	int opened;
} dg_ota_add;

/*
 * Opens a->path and hashes it (size, sha256, bootloader) before any
 * transaction, so that a large file is read once without holding the
 * store's write lock. Never waits on a FIFO: anything but a regular file
 * is refused. Returns 0 (the file stays open in a->fd until
 * dg_ota_artifact_close()); -EINVAL for a file that is not regular, empty
 * or too large; or a negative errno. a->err says why.
 */
int dg_ota_artifact_open(dg_ota_add *a);

/* Closes what dg_ota_artifact_open() opened; a no-op when nothing is open. */
void dg_ota_artifact_close(dg_ota_add *a);

/*
 * Adds artifact `a` (a dg_store_run() function: one transaction, on the
 * caller's connection): hashes the file unless dg_ota_artifact_open() did
 * (in which case the file stays open for the caller to close), stores its bytes unless a blob
 * with that sha256 exists (a zeroblob filled in 64 KB chunks, hashed again
 * on the way to catch a file that changed meanwhile), then the artifact's
 * row. Returns 0; -EINVAL for a bad package or version, an empty or too
 * large file; -ENOENT for an unknown project or a missing file; -EEXIST
 * when the project has that package@version already; -ESTALE when the
 * file changed while being stored; or a negative errno. a->err says why.
 */
int dg_ota_artifact_add(sqlite3 *db, void *arg);

/* One artifact as stored. */
typedef struct dg_ota_artifact {
	int64_t id;
	char package[DG_OTA_PACKAGE_MAX + 1];
	char version[DG_OTA_VERSION_MAX + 1];
	char sha256[DG_OTA_SHA256_HEX + 1];
	int64_t size;
	char bootloader[8];
	int64_t created_at;
} dg_ota_artifact;

/*
 * Calls cb for each artifact of project `slug`, by package and creation;
 * a non-zero return from cb stops the walk. Returns 0, -ENOENT for an
 * unknown project, or a negative errno.
 */
int dg_ota_artifact_each(dg_store *st, const char *slug,
                         int (*cb)(void *arg, const dg_ota_artifact *a), void *arg);

/* A release to create, for dg_ota_release_create(). */
typedef struct dg_ota_new_release {
	const char *project;
	const char *const *artifacts; /* "package@version", each of the project. */
	size_t n_artifacts;
	const char *const *devices; /* Device names; none with all_devices. */
	size_t n_devices;
	int all_devices;
	int64_t id; /* Out. */
	char err[160];
} dg_ota_new_release;

/*
 * A dg_store_run() function: creates release `arg` (a
 * dg_ota_new_release) with a change feed row per targeted device (one for
 * device 0 with all_devices) in the same transaction, so the daemon
 * notifies the devices that observe ".u/desired". Returns 0; -ENOENT for
 * an unknown project, artifact or device; -EINVAL for two artifacts of one
 * package, or no artifact; or a negative errno. err says why.
 */
int dg_ota_release_create(sqlite3 *db, void *arg);

/* A rollback, for dg_ota_release_rollback(). */
typedef struct dg_ota_rollback {
	const char *project;
	int64_t id; /* In: the release, or 0 for the newest not rolled back; out: the one rolled
	               back. */
	char err[160];
} dg_ota_rollback;

/*
 * A dg_store_run() function: marks release `arg` rolled back (so the
 * newest release before it that targets a device is that device's desired
 * one again), with change feed rows for its targets. Returns 0; -ENOENT
 * when the project has no such release (or none left to roll back);
 * -EALREADY when it is rolled back already; or a negative errno.
 */
int dg_ota_release_rollback(sqlite3 *db, void *arg);

/* One release as stored. */
typedef struct dg_ota_release {
	int64_t id;
	int64_t created_at;
	int rolled_back;
	int all_devices;
	char *artifacts; /* "main@1.2.3, model@2", owned. */
	char *devices;   /* "dev1, dev2" ("" with all_devices), owned. */
} dg_ota_release;

/*
 * Calls cb for each release of project `slug`, oldest first (the release
 * is borrowed for the call). Returns 0, -ENOENT for an unknown project, or
 * a negative errno.
 */
int dg_ota_release_each(dg_store *st, const char *slug,
                        int (*cb)(void *arg, const dg_ota_release *r), void *arg);

/*
 * The dg_render_fn of DG_OBS_OTA (a dg_store_read() function): the desired
 * manifest of r->device_id, the newest release of r->project_id that
 * targets it and is not rolled back. CBOR: {1: sequence (the release's
 * id), 2: hash (sha256 hex over the components), 3: [{1: package, 2:
 * version, 3: sha256 hex, 4: size, 5: "/.u/c/<package>@<version>", 6:
 * bootloader}]}, every key present and in that order (the SDK's decoder
 * fails on a map with some of its keys); no release: the empty map {},
 * which the SDK reads as "nothing to do". JSON: Golioth's names
 * {"sequenceNumber", "hash", "components": [{"package", "version", "hash",
 * "size", "uri", "bootloader"}]}, or {}. Returns 0 or a negative errno.
 */
int dg_ota_render_manifest(sqlite3 *db, dg_render *r);

/*
 * The length of a download block buffer: the largest Block2 block, 1024
 * bytes.
 */
#define DG_OTA_BLOCK_MAX 1024

/* One block of an artifact to read, for dg_ota_block_read(). */
typedef struct dg_ota_block {
	int64_t project_id;                   /* In. */
	char package[DG_OTA_PACKAGE_MAX + 1]; /* In. */
	char version[DG_OTA_VERSION_MAX + 1]; /* In. */
	int64_t offset;                       /* In. */
	size_t want;                          /* In: at most DG_OTA_BLOCK_MAX. */
	int found;                            /* Out: 1 when the project has that artifact. */
	int64_t size;                         /* Out: the artifact's size. */
	char sha256[DG_OTA_SHA256_HEX + 1];   /* Out. */
	uint8_t data[DG_OTA_BLOCK_MAX];       /* Out: the bytes at offset. */
	size_t len;                           /* Out: min(want, size - offset), 0 past the end. */
} dg_ota_block;

/*
 * A dg_store_read() function: reads block `arg` (a dg_ota_block) from the
 * stored artifact as it is now, by offset (sqlite3_blob_read). An unknown
 * artifact is found = 0 and returns 0. Returns 0 or a negative errno.
 */
int dg_ota_block_read(sqlite3 *db, void *arg);

/* A device's state report, for dg_ota_report_apply(). */
typedef struct dg_ota_report {
	int64_t device_id;
	int64_t state;
	int64_t reason;
	char package[DG_OTA_PACKAGE_MAX + 1];
	char *version; /* Or NULL; owned. */
	char *target;  /* Or NULL; owned. */
	int64_t at;    /* ms since the epoch. */
} dg_ota_report;

/* A writer job (arg: dg_ota_report): stores the device's last report for the package. */
int dg_ota_report_apply(sqlite3 *db, void *arg);

/* Frees a dg_ota_report made with malloc, and what it owns. */
void dg_ota_report_free(void *arg);

/* One device's last report for a package, as `devgate ota status` shows it. */
typedef struct dg_ota_status {
	const char *device;
	const char *package;
	int64_t state, reason;
	const char *version; /* NULL when the device did not say. */
	const char *target;
	int64_t at;
} dg_ota_status;

/*
 * Calls cb for each device report of project `slug`, by device and
 * package (borrowed for the call). Returns 0, -ENOENT for an unknown
 * project, or a negative errno.
 */
int dg_ota_status_each(dg_store *st, const char *slug, int (*cb)(void *arg, const dg_ota_status *s),
                       void *arg);

#endif
