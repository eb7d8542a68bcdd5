/*
 * LightDB State as a tree: one JSON document per device, addressed by
 * paths of segments (".d/sensor/temp" is {"sensor", "temp"}).
 *
 * Pure functions over cJSON trees; the store persists the document.
 */
#ifndef DEVGATE_STATE_H
#define DEVGATE_STATE_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* A path: `n` segments, each `len` bytes (not NUL-terminated). */
typedef struct dg_path_seg {
	const char *s;
	size_t len;
} dg_path_seg;

/*
 * Sets the value at `path` in *doc (which may be NULL: an empty document).
 * An object merges into the object already there, recursively (its keys
 * are set one by one, each by these same rules); a scalar or an array
 * replaces. Missing intermediate objects are created; a non-object met on
 * the way is replaced by an object. The empty path addresses the root.
 * Takes ownership of `value`. Returns 0 or -ENOMEM (value freed).
 */
int dg_state_set(cJSON **doc, const dg_path_seg *path, size_t n, cJSON *value);

/*
 * Returns the value at `path` in doc (borrowed), or NULL when unset. The
 * empty path returns doc itself.
 */
const cJSON *dg_state_get(const cJSON *doc, const dg_path_seg *path, size_t n);

/*
 * Deletes the value at `path`. Returns 1 when something was deleted, 0
 * when it was not there. Deleting the empty path empties the document
 * (*doc becomes NULL).
 */
int dg_state_delete(cJSON **doc, const dg_path_seg *path, size_t n);

/*
 * Returns 1 when a change at `changed` touches what an observer of
 * `observed` sees: `changed` is at or below `observed`, or above it (a
 * parent replaced or deleted).
 */
int dg_state_path_overlaps(const dg_path_seg *observed, size_t n_obs, const dg_path_seg *changed,
                           size_t n_chg);

/*
 * Parses "a/b/c" (no leading slash; empty segments dropped) into at most
 * max segments, which point into text; returns how many it stored.
 */
size_t dg_state_path_parse(const char *text, dg_path_seg *out, size_t max);

/*
 * Returns how many segments dg_state_path_parse() finds in `text`, so that
 * a caller can refuse a path longer than its array instead of using a
 * truncated one.
 */
size_t dg_state_path_count(const char *text);

#endif
