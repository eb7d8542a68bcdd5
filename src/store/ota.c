/*
 * OTA artifacts, releases, manifests and device reports in the store.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cbor.h>
#include <cjson/cJSON.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "devgate/coap.h"
#include "devgate/data.h"
#include "devgate/ota.h"
#include "devgate/render.h"

/* The chunk an artifact's file is read and its blob written in. */
#define CHUNK (64 * 1024)

/* MCUboot's image header magic, IMAGE_MAGIC, as its first four bytes (little-endian). */
static const uint8_t mcuboot_magic[4] = {0x3d, 0xb8, 0xf3, 0x96};

static const char *const state_names[] = {"IDLE", "DOWNLOADING", "DOWNLOADED", "UPDATING"};

static const char *const reason_names[] = {
        "READY",
        "FIRMWARE_UPDATED_SUCCESSFULLY",
        "NOT_ENOUGH_FLASH_MEMORY",
        "OUT_OF_RAM",
        "CONNECTION_LOST",
        "INTEGRITY_CHECK_FAILURE",
        "UNSUPPORTED_PACKAGE_TYPE",
        "INVALID_URI",
        "FIRMWARE_UPDATE_FAILED",
        "UNSUPPORTED_PROTOCOL",
        "IO",
        "AWAIT_RETRY",
};

const char *
dg_ota_state_name(int64_t state)
{
	if (state >= 0 && state < (int64_t)(sizeof(state_names) / sizeof(state_names[0])))
		return state_names[state];
	return "?";
}

const char *
dg_ota_reason_name(int64_t reason)
{
	if (reason >= 0 && reason < (int64_t)(sizeof(reason_names) / sizeof(reason_names[0])))
		return reason_names[reason];
	return "?";
}

static void __attribute__((format(printf, 3, 4)))
say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int
dg_ota_name_check(const char *what, const char *name, size_t max, char *err, size_t errlen)
{
	size_t n = strlen(name);
	if (n == 0 || n > max) {
		say(err, errlen, "%s: 1 to %zu bytes (the Golioth SDK's buffer)", what, max);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '@') {
			say(err, errlen, "%s: printable ASCII without spaces, '/' or '@'", what);
			return -EINVAL;
		}
	}
	return 0;
}

/* The id of project `slug` on `db`. Returns 0, -ENOENT or a negative errno. */
static int
project_id(sqlite3 *db, const char *slug, int64_t *id)
{
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT id FROM projects WHERE slug = ?1");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(s, 0);
	dg_store_stmt_done(s);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : dg_store_errno(rc);
}

static void
hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/*
 * Reads the whole of `fd` from its start in CHUNK pieces into `buf`,
 * hashing it and, when `blob` is not NULL, writing each piece there at its
 * offset. Sets *total and the hex digest. Returns 0 or a negative errno.
 */
static int
stream_file(int fd, uint8_t *buf, sqlite3_blob *blob, int64_t limit, int64_t *total,
            char digest_hex[DG_OTA_SHA256_HEX + 1], uint8_t first[4])
{
	wc_Sha256 sha;
	uint8_t digest[WC_SHA256_DIGEST_SIZE];
	int64_t at = 0;
	int rc = 0;

	if (lseek(fd, 0, SEEK_SET) != 0)
		return -errno;
	if (wc_InitSha256(&sha) != 0)
		return -EIO;
	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (at + n > limit) {
			rc = -EFBIG;
			goto out;
		}
		if (first != NULL)
			for (ssize_t i = 0; i < n && at + i < 4; i++)
				first[at + i] = buf[i];
		if (wc_Sha256Update(&sha, buf, (word32)n) != 0) {
			rc = -EIO;
			goto out;
		}
		if (blob != NULL) {
			int brc = sqlite3_blob_write(blob, buf, (int)n, (int)at);
			if (brc != SQLITE_OK) {
				rc = dg_store_errno(brc);
				goto out;
			}
		}
		at += n;
	}
	if (wc_Sha256Final(&sha, digest) != 0) {
		rc = -EIO;
		goto out;
	}
	hex(digest, sizeof(digest), digest_hex);
	*total = at;
out:
	wc_Sha256Free(&sha);
	return rc;
}

/* Stores the bytes of `fd` (size a->size, digest a->sha256) as a new blob; sets *blob_id. */
static int
store_blob(sqlite3 *db, int fd, uint8_t *buf, dg_ota_add *a, int64_t *blob_id)
{
	sqlite3_blob *blob = NULL;
	char again[DG_OTA_SHA256_HEX + 1];
	int64_t size2 = 0;
	sqlite3_stmt *s =
	        dg_store_stmt(db, "INSERT INTO ota_blobs (sha256, size, data) VALUES (?1, ?2, ?3)");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_text(s, 1, a->sha256, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, a->size);
	sqlite3_bind_zeroblob64(s, 3, (sqlite3_uint64)a->size);
	int rc = dg_store_stmt_run(s);
	if (rc != 0) {
		say(a->err, sizeof(a->err), "cannot store %lld bytes: %s", (long long)a->size,
		    sqlite3_errmsg(db));
		return rc;
	}
	*blob_id = sqlite3_last_insert_rowid(db);
	int brc = sqlite3_blob_open(db, "main", "ota_blobs", "data", *blob_id, 1, &blob);
	if (brc != SQLITE_OK)
		return dg_store_errno(brc);
	rc = stream_file(fd, buf, blob, a->size, &size2, again, NULL);
	sqlite3_blob_close(blob);
	if (rc == -EFBIG || (rc == 0 && (size2 != a->size || strcmp(again, a->sha256) != 0))) {
		/* Grown past its first size (-EFBIG), shrunk or rewritten. */
		say(a->err, sizeof(a->err), "%s changed while it was being stored", a->path);
		rc = -ESTALE;
	}
	return rc;
}

int
dg_ota_artifact_open(dg_ota_add *a)
{
	uint8_t *buf = NULL;
	uint8_t first[4] = {0};
	struct stat st;
	int rc;

	a->err[0] = '\0';
	a->fd = -1;
	a->opened = 0;
	/*
	 * O_NONBLOCK: opening a FIFO without a writer would wait forever; the
	 * file type is checked before anything is read.
	 */
	int fd = open(a->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		say(a->err, sizeof(a->err), "%s: %s", a->path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		say(a->err, sizeof(a->err), "%s: not a regular file", a->path);
		goto out;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
		rc = -errno;
		goto out;
	}
	buf = malloc(CHUNK);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = stream_file(fd, buf, NULL, DG_OTA_SIZE_MAX, &a->size, a->sha256, first);
	if (rc == -EFBIG || (rc == 0 && a->size == 0)) {
		say(a->err, sizeof(a->err), "%s: %s", a->path,
		    rc == -EFBIG ? "larger than 2 GiB - 1 (the SDK's int32 size)" : "empty");
		rc = -EINVAL;
		goto out;
	}
	if (rc != 0) {
		say(a->err, sizeof(a->err), "%s: %s", a->path, strerror(-rc));
		goto out;
	}
	snprintf(a->bootloader, sizeof(a->bootloader), "%s",
	         a->size >= 4 && memcmp(first, mcuboot_magic, 4) == 0 ? "mcuboot" : "");
	a->fd = fd;
	a->opened = 1;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

void
dg_ota_artifact_close(dg_ota_add *a)
{
	if (a->opened && a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	a->opened = 0;
}

int
dg_ota_artifact_add(sqlite3 *db, void *arg)
{
	dg_ota_add *a = arg;
	uint8_t *buf = NULL;
	int64_t pid = 0, blob_id = 0;
	int opened_here = 0;
	int rc;

	a->blob_reused = 0;
	if (!a->opened)
		a->err[0] = '\0';
	if ((rc = dg_ota_name_check("package", a->package, DG_OTA_PACKAGE_MAX, a->err,
	                            sizeof(a->err))) != 0 ||
	    (rc = dg_ota_name_check("version", a->version, DG_OTA_VERSION_MAX, a->err,
	                            sizeof(a->err))) != 0)
		return rc;
	if ((rc = project_id(db, a->project, &pid)) != 0) {
		say(a->err, sizeof(a->err), "no project %s", a->project);
		return rc;
	}
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT 1 FROM ota_artifacts WHERE project_id = ?1"
	                                    " AND package = ?2 AND version = ?3");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_text(s, 2, a->package, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, a->version, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	dg_store_stmt_done(s);
	if (rc == SQLITE_ROW) {
		say(a->err, sizeof(a->err), "%s has %s@%s already", a->project, a->package,
		    a->version);
		return -EEXIST;
	}
	if (!a->opened) {
		if ((rc = dg_ota_artifact_open(a)) != 0)
			return rc;
		opened_here = 1;
	}
	buf = malloc(CHUNK);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	s = dg_store_stmt(db, "SELECT id, size FROM ota_blobs WHERE sha256 = ?1");
	if (s == NULL) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_text(s, 1, a->sha256, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_int64(s, 1) == a->size) {
		blob_id = sqlite3_column_int64(s, 0);
		a->blob_reused = 1;
	}
	dg_store_stmt_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		rc = dg_store_errno(rc);
		goto out;
	}
	rc = a->blob_reused ? 0 : store_blob(db, a->fd, buf, a, &blob_id);
	if (rc != 0)
		goto out;
	s = dg_store_stmt(db, "INSERT INTO ota_artifacts (project_id, package, version, blob_id,"
	                      " sha256, size, bootloader, created_at) VALUES (?1, ?2, ?3, ?4, ?5,"
	                      " ?6, ?7, ?8)");
	if (s == NULL) {
		rc = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_text(s, 2, a->package, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, a->version, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, blob_id);
	sqlite3_bind_text(s, 5, a->sha256, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, a->size);
	sqlite3_bind_text(s, 7, a->bootloader, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 8, dg_now_ms());
	rc = dg_store_stmt_run(s);
out:
	if (opened_here)
		dg_ota_artifact_close(a);
	free(buf);
	return rc;
}

static const char *
text_or(sqlite3_stmt *s, int col, const char *dflt)
{
	const char *t = (const char *)sqlite3_column_text(s, col);
	return t != NULL ? t : dflt;
}

/*
 * Prepares `sql` on the caller's connection with ?1 bound to the id of
 * project `slug`. Returns 0, -ENOENT for an unknown project, or a negative
 * errno.
 */
static int
prepare_for_project(dg_store *st, const char *slug, const char *sql, sqlite3_stmt **out)
{
	sqlite3 *db = dg_store_reader(st);
	int64_t pid = 0;
	int rc = project_id(db, slug, &pid);
	*out = NULL;
	if (rc != 0)
		return rc;
	rc = sqlite3_prepare_v2(db, sql, -1, out, NULL);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	sqlite3_bind_int64(*out, 1, pid);
	return 0;
}

int
dg_ota_artifact_each(dg_store *st, const char *slug, int (*cb)(void *arg, const dg_ota_artifact *a),
                     void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = prepare_for_project(st, slug,
	                             "SELECT id, package, version, sha256, size, bootloader,"
	                             " created_at FROM ota_artifacts WHERE project_id = ?1"
	                             " ORDER BY package, created_at, id",
	                             &s);
	int step;
	if (rc != 0)
		return rc;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		dg_ota_artifact a;
		memset(&a, 0, sizeof(a));
		a.id = sqlite3_column_int64(s, 0);
		snprintf(a.package, sizeof(a.package), "%s", text_or(s, 1, ""));
		snprintf(a.version, sizeof(a.version), "%s", text_or(s, 2, ""));
		snprintf(a.sha256, sizeof(a.sha256), "%s", text_or(s, 3, ""));
		a.size = sqlite3_column_int64(s, 4);
		snprintf(a.bootloader, sizeof(a.bootloader), "%s", text_or(s, 5, ""));
		a.created_at = sqlite3_column_int64(s, 6);
		if ((rc = cb(arg, &a)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = dg_store_errno(step);
	sqlite3_finalize(s);
	return rc > 0 ? 0 : rc;
}

/* Appends the change feed rows of release `id`'s targets. */
static int
record_targets(sqlite3 *db, int64_t pid, int64_t id, int all_devices)
{
	if (all_devices)
		return dg_data_change_record(db, DG_OBS_OTA, pid, 0, id);
	sqlite3_stmt *s = dg_store_stmt(
	        db, "SELECT device_id FROM ota_release_devices WHERE release_id = ?1");
	int rc = 0, step;
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	/* The feed is another table: writing it while this read steps is safe. */
	while ((step = sqlite3_step(s)) == SQLITE_ROW && rc == 0)
		rc = dg_data_change_record(db, DG_OBS_OTA, pid, sqlite3_column_int64(s, 0), id);
	if (rc == 0 && step != SQLITE_DONE)
		rc = dg_store_errno(step);
	dg_store_stmt_done(s);
	return rc;
}

/* Finds artifact "package@version" of project `pid`; sets *id and *pkg_len. */
static int
find_artifact(sqlite3 *db, int64_t pid, const char *spec, int64_t *id, size_t *pkg_len)
{
	const char *at = strchr(spec, '@');
	if (at == NULL || at == spec || at[1] == '\0')
		return -EINVAL;
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT id FROM ota_artifacts WHERE project_id = ?1"
	                                    " AND package = ?2 AND version = ?3");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_text(s, 2, spec, (int)(at - spec), SQLITE_STATIC);
	sqlite3_bind_text(s, 3, at + 1, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(s, 0);
	dg_store_stmt_done(s);
	*pkg_len = (size_t)(at - spec);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : dg_store_errno(rc);
}

int
dg_ota_release_create(sqlite3 *db, void *arg)
{
	dg_ota_new_release *n = arg;
	int64_t pid = 0;
	int rc;

	n->err[0] = '\0';
	if (n->n_artifacts == 0) {
		say(n->err, sizeof(n->err), "a release needs at least one --artifact");
		return -EINVAL;
	}
	if (!n->all_devices && n->n_devices == 0) {
		say(n->err, sizeof(n->err), "a release targets --all or one --device or more");
		return -EINVAL;
	}
	if ((rc = project_id(db, n->project, &pid)) != 0) {
		say(n->err, sizeof(n->err), "no project %s", n->project);
		return rc;
	}
	sqlite3_stmt *s = dg_store_stmt(db, "INSERT INTO ota_releases (project_id, all_devices,"
	                                    " created_at) VALUES (?1, ?2, ?3)");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_int(s, 2, n->all_devices ? 1 : 0);
	sqlite3_bind_int64(s, 3, dg_now_ms());
	if ((rc = dg_store_stmt_run(s)) != 0)
		return rc;
	n->id = sqlite3_last_insert_rowid(db);
	for (size_t i = 0; i < n->n_artifacts; i++) {
		int64_t aid = 0;
		size_t plen = 0;
		rc = find_artifact(db, pid, n->artifacts[i], &aid, &plen);
		if (rc != 0) {
			say(n->err, sizeof(n->err),
			    rc == -EINVAL ? "--artifact %s: PACKAGE@VERSION"
			                  : "%s has no artifact %s",
			    rc == -EINVAL ? n->artifacts[i] : n->project, n->artifacts[i]);
			return rc;
		}
		for (size_t j = 0; j < i; j++)
			if (strncmp(n->artifacts[j], n->artifacts[i], plen + 1) == 0) {
				say(n->err, sizeof(n->err), "two artifacts of package %.*s",
				    (int)plen, n->artifacts[i]);
				return -EINVAL;
			}
		s = dg_store_stmt(db, "INSERT INTO ota_release_artifacts (release_id, position,"
		                      " artifact_id) VALUES (?1, ?2, ?3)");
		if (s == NULL)
			return -EIO;
		sqlite3_bind_int64(s, 1, n->id);
		sqlite3_bind_int64(s, 2, (int64_t)i);
		sqlite3_bind_int64(s, 3, aid);
		if ((rc = dg_store_stmt_run(s)) != 0)
			return rc;
	}
	for (size_t i = 0; !n->all_devices && i < n->n_devices; i++) {
		s = dg_store_stmt(db, "INSERT OR IGNORE INTO ota_release_devices (release_id,"
		                      " device_id) SELECT ?1, id FROM devices WHERE project_id = ?2"
		                      " AND name = ?3");
		if (s == NULL)
			return -EIO;
		sqlite3_bind_int64(s, 1, n->id);
		sqlite3_bind_int64(s, 2, pid);
		sqlite3_bind_text(s, 3, n->devices[i], -1, SQLITE_STATIC);
		if ((rc = dg_store_stmt_run(s)) != 0)
			return rc;
		if (sqlite3_changes(db) == 0) {
			/* Not there, or named twice: which one is told by a lookup. */
			s = dg_store_stmt(db, "SELECT 1 FROM devices WHERE project_id = ?1 AND"
			                      " name = ?2");
			if (s == NULL)
				return -EIO;
			sqlite3_bind_int64(s, 1, pid);
			sqlite3_bind_text(s, 2, n->devices[i], -1, SQLITE_STATIC);
			int step = sqlite3_step(s);
			dg_store_stmt_done(s);
			if (step != SQLITE_ROW) {
				say(n->err, sizeof(n->err), "%s has no device %s", n->project,
				    n->devices[i]);
				return -ENOENT;
			}
		}
	}
	return record_targets(db, pid, n->id, n->all_devices);
}

int
dg_ota_release_rollback(sqlite3 *db, void *arg)
{
	dg_ota_rollback *r = arg;
	int64_t pid = 0;
	int rc;

	r->err[0] = '\0';
	if ((rc = project_id(db, r->project, &pid)) != 0) {
		say(r->err, sizeof(r->err), "no project %s", r->project);
		return rc;
	}
	sqlite3_stmt *s = dg_store_stmt(
	        db, "SELECT id, rolled_back, all_devices FROM ota_releases WHERE project_id = ?1"
	            " AND (?2 = 0 AND rolled_back = 0 OR id = ?2) ORDER BY id DESC LIMIT 1");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_int64(s, 2, r->id);
	rc = sqlite3_step(s);
	int rolled = 0, all = 0;
	if (rc == SQLITE_ROW) {
		r->id = sqlite3_column_int64(s, 0);
		rolled = sqlite3_column_int(s, 1);
		all = sqlite3_column_int(s, 2);
	}
	dg_store_stmt_done(s);
	if (rc != SQLITE_ROW) {
		if (rc != SQLITE_DONE)
			return dg_store_errno(rc);
		say(r->err, sizeof(r->err),
		    r->id == 0 ? "%s has no release to roll back" : "%s has no release %lld",
		    r->project, (long long)r->id);
		return -ENOENT;
	}
	if (rolled) {
		say(r->err, sizeof(r->err), "release %lld is rolled back already",
		    (long long)r->id);
		return -EALREADY;
	}
	s = dg_store_stmt(db, "UPDATE ota_releases SET rolled_back = 1 WHERE id = ?1");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, r->id);
	if ((rc = dg_store_stmt_run(s)) != 0)
		return rc;
	return record_targets(db, pid, r->id, all);
}

int
dg_ota_release_each(dg_store *st, const char *slug, int (*cb)(void *arg, const dg_ota_release *r),
                    void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = prepare_for_project(
	        st, slug,
	        "SELECT r.id, r.created_at, r.rolled_back, r.all_devices,"
	        " (SELECT group_concat(spec, ', ') FROM (SELECT a.package || '@' || a.version AS"
	        " spec FROM ota_release_artifacts ra JOIN ota_artifacts a ON a.id ="
	        " ra.artifact_id WHERE ra.release_id = r.id ORDER BY ra.position)),"
	        " (SELECT group_concat(name, ', ') FROM (SELECT d.name FROM ota_release_devices rd"
	        " JOIN devices d ON d.id = rd.device_id WHERE rd.release_id = r.id ORDER BY"
	        " d.name)) FROM ota_releases r WHERE r.project_id = ?1 ORDER BY r.id",
	        &s);
	int step;
	if (rc != 0)
		return rc;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		dg_ota_release r = {
		        .id = sqlite3_column_int64(s, 0),
		        .created_at = sqlite3_column_int64(s, 1),
		        .rolled_back = sqlite3_column_int(s, 2),
		        .all_devices = sqlite3_column_int(s, 3),
		        .artifacts = strdup(text_or(s, 4, "")),
		        .devices = strdup(text_or(s, 5, "")),
		};
		rc = r.artifacts != NULL && r.devices != NULL ? cb(arg, &r) : -ENOMEM;
		free(r.artifacts);
		free(r.devices);
		if (rc != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = dg_store_errno(step);
	sqlite3_finalize(s);
	return rc > 0 ? 0 : rc;
}

/* One component of a manifest being rendered. */
typedef struct component {
	char package[DG_OTA_PACKAGE_MAX + 1];
	char version[DG_OTA_VERSION_MAX + 1];
	char sha256[DG_OTA_SHA256_HEX + 1];
	int64_t size;
	char bootloader[8];
	char uri[DG_OTA_PACKAGE_MAX + DG_OTA_VERSION_MAX + 8];
} component;

/* The most components a manifest carries (the SDK's default takes one). */
#define MAX_COMPONENTS 64

/*
 * Reads the components of the desired release of a device: *n of them
 * (0 when none targets it) and the release's id. Returns 0 or a negative errno.
 */
static int
desired(sqlite3 *db, int64_t pid, int64_t device_id, component *c, size_t *n, int64_t *release)
{
	sqlite3_stmt *s = dg_store_stmt(
	        db, "SELECT r.id FROM ota_releases r WHERE r.project_id = ?1 AND r.rolled_back = 0"
	            " AND (r.all_devices = 1 OR EXISTS (SELECT 1 FROM ota_release_devices rd"
	            " WHERE rd.release_id = r.id AND rd.device_id = ?2)) ORDER BY r.id DESC"
	            " LIMIT 1");
	int rc;
	*n = 0;
	*release = 0;
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, pid);
	sqlite3_bind_int64(s, 2, device_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*release = sqlite3_column_int64(s, 0);
	dg_store_stmt_done(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? 0 : dg_store_errno(rc);
	s = dg_store_stmt(db, "SELECT a.package, a.version, a.sha256, a.size, a.bootloader FROM"
	                      " ota_release_artifacts ra JOIN ota_artifacts a ON a.id ="
	                      " ra.artifact_id WHERE ra.release_id = ?1 ORDER BY ra.position");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, *release);
	while (*n < MAX_COMPONENTS && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		component *x = &c[(*n)++];
		snprintf(x->package, sizeof(x->package), "%s", text_or(s, 0, ""));
		snprintf(x->version, sizeof(x->version), "%s", text_or(s, 1, ""));
		snprintf(x->sha256, sizeof(x->sha256), "%s", text_or(s, 2, ""));
		x->size = sqlite3_column_int64(s, 3);
		snprintf(x->bootloader, sizeof(x->bootloader), "%s", text_or(s, 4, ""));
		snprintf(x->uri, sizeof(x->uri), "/.u/c/%s@%s", x->package, x->version);
	}
	dg_store_stmt_done(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : dg_store_errno(rc);
}

/*
 * The manifest's hash: sha256 hex over "package@version sha256 size\n" of
 * each component in order, so the same components always hash the same.
 */
static int
manifest_hash(const component *c, size_t n, char out[DG_OTA_SHA256_HEX + 1])
{
	wc_Sha256 sha;
	uint8_t digest[WC_SHA256_DIGEST_SIZE];
	int rc = 0;
	if (wc_InitSha256(&sha) != 0)
		return -EIO;
	for (size_t i = 0; i < n && rc == 0; i++) {
		char line[160];
		int len = snprintf(line, sizeof(line), "%s@%s %s %lld\n", c[i].package,
		                   c[i].version, c[i].sha256, (long long)c[i].size);
		if (wc_Sha256Update(&sha, (const uint8_t *)line, (word32)len) != 0)
			rc = -EIO;
	}
	if (rc == 0 && wc_Sha256Final(&sha, digest) != 0)
		rc = -EIO;
	wc_Sha256Free(&sha);
	if (rc == 0)
		hex(digest, sizeof(digest), out);
	return rc;
}

/* Adds key `k` and `v` (taken over) to CBOR map `m`. Returns 0 or -ENOMEM. */
static int
cbor_put(cbor_item_t *m, uint8_t k, cbor_item_t *v)
{
	cbor_item_t *key = cbor_build_uint8(k);
	int ok = key != NULL && v != NULL &&
	         cbor_map_add(m, (struct cbor_pair){.key = key, .value = v});
	if (key != NULL)
		cbor_decref(&key);
	if (v != NULL)
		cbor_decref(&v);
	return ok ? 0 : -ENOMEM;
}

static int
render_cbor(const component *c, size_t n, int64_t seq, const char *hash, dg_render *r)
{
	cbor_item_t *root = cbor_new_definite_map(n > 0 ? 3 : 0);
	cbor_item_t *arr = NULL;
	int rc = -ENOMEM;
	if (root == NULL)
		return -ENOMEM;
	if (n > 0) {
		arr = cbor_new_definite_array(n);
		if (arr == NULL)
			goto out;
		for (size_t i = 0; i < n; i++) {
			cbor_item_t *m = cbor_new_definite_map(6);
			if (m == NULL)
				goto out;
			int ok = cbor_put(m, 1, cbor_build_string(c[i].package)) == 0 &&
			         cbor_put(m, 2, cbor_build_string(c[i].version)) == 0 &&
			         cbor_put(m, 3, cbor_build_string(c[i].sha256)) == 0 &&
			         cbor_put(m, 4, cbor_build_uint32((uint32_t)c[i].size)) == 0 &&
			         cbor_put(m, 5, cbor_build_string(c[i].uri)) == 0 &&
			         cbor_put(m, 6, cbor_build_string(c[i].bootloader)) == 0 &&
			         cbor_array_push(arr, m);
			cbor_decref(&m);
			if (!ok)
				goto out;
		}
		if (cbor_put(root, 1, cbor_build_uint32((uint32_t)seq)) != 0 ||
		    cbor_put(root, 2, cbor_build_string(hash)) != 0)
			goto out;
		rc = cbor_put(root, 3, arr);
		arr = NULL;
		if (rc != 0)
			goto out;
		rc = -ENOMEM;
	}
	size_t cap = 0;
	r->len = cbor_serialize_alloc(root, &r->body, &cap);
	if (r->len > 0)
		rc = 0;
out:
	if (arr != NULL)
		cbor_decref(&arr);
	cbor_decref(&root);
	return rc;
}

static int
render_json(const component *c, size_t n, int64_t seq, const char *hash, dg_render *r)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = NULL;
	int rc = -ENOMEM;
	if (root == NULL)
		return -ENOMEM;
	if (n > 0) {
		cJSON_AddNumberToObject(root, "sequenceNumber", (double)seq);
		cJSON_AddStringToObject(root, "hash", hash);
		arr = cJSON_AddArrayToObject(root, "components");
		if (arr == NULL)
			goto out;
		for (size_t i = 0; i < n; i++) {
			cJSON *o = cJSON_CreateObject();
			if (o == NULL || !cJSON_AddItemToArray(arr, o))
				goto out;
			cJSON_AddStringToObject(o, "package", c[i].package);
			cJSON_AddStringToObject(o, "version", c[i].version);
			cJSON_AddStringToObject(o, "hash", c[i].sha256);
			cJSON_AddNumberToObject(o, "size", (double)c[i].size);
			cJSON_AddStringToObject(o, "uri", c[i].uri);
			cJSON_AddStringToObject(o, "bootloader", c[i].bootloader);
		}
	}
	char *text = cJSON_PrintUnformatted(root);
	if (text == NULL)
		goto out;
	r->body = (uint8_t *)text;
	r->len = strlen(text);
	rc = 0;
out:
	cJSON_Delete(root);
	return rc;
}

int
dg_ota_render_manifest(sqlite3 *db, dg_render *r)
{
	component *c = calloc(MAX_COMPONENTS, sizeof(*c));
	char hash[DG_OTA_SHA256_HEX + 1] = "";
	size_t n = 0;
	int64_t seq = 0;
	int rc;

	if (c == NULL)
		return -ENOMEM;
	rc = desired(db, r->project_id, r->device_id, c, &n, &seq);
	if (rc == 0 && n > 0)
		rc = manifest_hash(c, n, hash);
	if (rc == 0)
		rc = r->format == DG_COAP_FMT_CBOR ? render_cbor(c, n, seq, hash, r)
		                                   : render_json(c, n, seq, hash, r);
	free(c);
	return rc;
}

int
dg_ota_block_read(sqlite3 *db, void *arg)
{
	dg_ota_block *b = arg;
	sqlite3_blob *blob = NULL;
	int64_t blob_id = 0;

	b->found = 0;
	b->len = 0;
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT blob_id, size, sha256 FROM ota_artifacts"
	                                    " WHERE project_id = ?1 AND package = ?2 AND"
	                                    " version = ?3");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, b->project_id);
	sqlite3_bind_text(s, 2, b->package, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, b->version, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		b->found = 1;
		blob_id = sqlite3_column_int64(s, 0);
		b->size = sqlite3_column_int64(s, 1);
		snprintf(b->sha256, sizeof(b->sha256), "%s", text_or(s, 2, ""));
	}
	dg_store_stmt_done(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? 0 : dg_store_errno(rc);
	if (b->offset < 0 || b->offset >= b->size || b->want == 0)
		return 0;
	size_t want = b->want < sizeof(b->data) ? b->want : sizeof(b->data);
	if ((int64_t)want > b->size - b->offset)
		want = (size_t)(b->size - b->offset);
	rc = sqlite3_blob_open(db, "main", "ota_blobs", "data", blob_id, 0, &blob);
	if (rc == SQLITE_OK)
		rc = sqlite3_blob_read(blob, b->data, (int)want, (int)b->offset);
	sqlite3_blob_close(blob);
	if (rc != SQLITE_OK)
		return dg_store_errno(rc);
	b->len = want;
	return 0;
}

int
dg_ota_report_apply(sqlite3 *db, void *arg)
{
	const dg_ota_report *r = arg;
	sqlite3_stmt *s = dg_store_stmt(db, "INSERT OR REPLACE INTO ota_reports (device_id,"
	                                    " package, state, reason, version, target, at)"
	                                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
	if (s == NULL)
		return -EIO;
	sqlite3_bind_int64(s, 1, r->device_id);
	sqlite3_bind_text(s, 2, r->package, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, r->state);
	sqlite3_bind_int64(s, 4, r->reason);
	if (r->version != NULL)
		sqlite3_bind_text(s, 5, r->version, -1, SQLITE_STATIC);
	if (r->target != NULL)
		sqlite3_bind_text(s, 6, r->target, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 7, r->at);
	return dg_store_stmt_run(s);
}

void
dg_ota_report_free(void *arg)
{
	dg_ota_report *r = arg;
	if (r == NULL)
		return;
	free(r->version);
	free(r->target);
	free(r);
}

int
dg_ota_status_each(dg_store *st, const char *slug, int (*cb)(void *arg, const dg_ota_status *s),
                   void *arg)
{
	sqlite3_stmt *s = NULL;
	int rc = prepare_for_project(st, slug,
	                             "SELECT d.name, r.package, r.state, r.reason, r.version,"
	                             " r.target, r.at FROM ota_reports r JOIN devices d ON d.id ="
	                             " r.device_id WHERE d.project_id = ?1 ORDER BY d.name,"
	                             " r.package",
	                             &s);
	int step;
	if (rc != 0)
		return rc;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		dg_ota_status x = {
		        .device = text_or(s, 0, ""),
		        .package = text_or(s, 1, ""),
		        .state = sqlite3_column_int64(s, 2),
		        .reason = sqlite3_column_int64(s, 3),
		        .version = (const char *)sqlite3_column_text(s, 4),
		        .target = (const char *)sqlite3_column_text(s, 5),
		        .at = sqlite3_column_int64(s, 6),
		};
		if ((rc = cb(arg, &x)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = dg_store_errno(step);
	sqlite3_finalize(s);
	return rc > 0 ? 0 : rc;
}
