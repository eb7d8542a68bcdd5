/*
 * The projects directory: projects_dir/<slug>/ with psk.json (and, with
 * later issues, project.json, cas/ and crls/). Read into the store at
 * start; the registry is then built from the store.
 */
#ifndef DEVGATE_CONFDIR_H
#define DEVGATE_CONFDIR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "devgate/store.h"

/*
 * Parses one psk.json of project `slug` from `text`. `path` is used in
 * messages. On success returns 0 and sets *entries (free with
 * dg_confdir_psk_free) and *n. On failure returns -EINVAL and writes
 * "<path>: [<index>].<key>: <reason>" (or "<path>: <reason>") into err;
 * the file is then rejected whole.
 */
int dg_confdir_parse_psk(const char *path, const char *slug, const char *text, size_t len,
                         dg_psk_entry **entries, size_t *n, char *err, size_t errlen);

/*
 * Parses a project.json: {"name": text, "enabled": bool, "auto_provision":
 * bool}, every key optional, unknown keys rejected. Fills *out (defaults:
 * name NULL = the slug, enabled, auto_provision); a name is copied into
 * `name`. Returns 0, or -EINVAL with "<path>: <key>: <reason>" in err.
 */
int dg_confdir_parse_project(const char *path, const char *text, size_t len,
                             dg_project_settings *out, char *name, size_t name_cap, char *err,
                             size_t errlen);

/*
 * Decodes a PSK given in hex into key (DG_PSK_MAX_KEY bytes). Returns 0 and
 * sets *len; -ERANGE when it is not 2..2*DG_PSK_MAX_KEY digits, even;
 * -EINVAL when a character is not a hex digit (key is wiped then).
 */
int dg_confdir_key_hex(const char *hex, uint8_t *key, size_t *len);

/* Frees what dg_confdir_parse_psk() returned. */
void dg_confdir_psk_free(dg_psk_entry *entries, size_t n);

/*
 * Imports every project directory under `dir` into the store: a project
 * row per valid directory with its project.json settings, its cas/ and
 * crls/ files, and its psk.json; projects whose directory is gone are
 * disabled. A directory or file
 * that cannot be used is logged with its path and reason and skipped; what
 * the store already holds for it stays in force. Sets *n_errors to the
 * number of such problems. Returns 0, or a negative errno when `dir`
 * itself cannot be read or the store fails.
 */
int dg_confdir_import(const char *dir, dg_store *st, int *n_errors);

/*
 * Checks every project directory under `dir` without touching a store:
 * prints to `out` a summary line per project and one "error: <path>: ..."
 * line per unusable file. Returns the number of errors.
 */
int dg_confdir_check(const char *dir, FILE *out);

/*
 * Reads a whole regular file of at most `max` bytes into *text (malloc'ed,
 * NUL-terminated) and *len. Never waits: a FIFO or a device in the file's
 * place is refused (-EINVAL), a directory is -EISDIR, a larger file
 * -EFBIG, a missing one -ENOENT.
 */
int dg_confdir_read_file(const char *path, size_t max, char **text, size_t *len);

#endif
