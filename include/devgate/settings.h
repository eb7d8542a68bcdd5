/*
 * The Settings service's data: typed settings (int, float, bool, string)
 * of a project and per-device overrides, their versions, the devices'
 * reported status, and the representation a device GETs from ".c".
 *
 * A project's settings come from projects_dir/<slug>/settings.json:
 *
 *     {"NAME": value, ...}
 *
 * NAME is 1..63 of [A-Z0-9_]. A value is an int (an integral JSON
 * number), a float (a number with a fraction or an exponent that leaves
 * one, such as 2.5 or 1e-3), a bool or a string. The typed form
 * {"type": "int"|"float"|"bool"|"string", "value": ...} says the type
 * outright and is needed for a float with an integral value
 * ({"type": "float", "value": 2}); its value must fit the type (an int
 * must be integral and within int64, a float any number, a bool true or
 * false, a string a string).
 *
 * The effective settings of a device are its project's merged with its
 * overrides (an override wins); their version is the larger of the
 * project's and the device's versions, 0 when neither was ever set. A
 * version is the ms since the epoch of the latest change, and always
 * above every earlier version of the project, so it grows with every
 * change. Every change writes a change feed row (DG_OBS_SETTINGS) in its
 * transaction, for the daemon to notify the observing devices.
 */
#ifndef DEVGATE_SETTINGS_H
#define DEVGATE_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "devgate/store.h"

#define DG_SETTING_NAME_MAX 63
/* The largest string value, in bytes. */
#define DG_SETTING_STRING_MAX 1024
/* The most settings a project or a device may hold. */
#define DG_SETTINGS_MAX 1024
/* The error codes a device reports (golioth_settings_status): 0 success .. 6 general error. */
#define DG_SETTINGS_ERROR_MAX 6

typedef enum dg_setting_type {
	DG_SETTING_INT = 0,
	DG_SETTING_FLOAT,
	DG_SETTING_BOOL,
	DG_SETTING_STRING,
} dg_setting_type;

/* One setting. */
typedef struct dg_setting {
	char name[DG_SETTING_NAME_MAX + 1];
	dg_setting_type type;
	int64_t i; /* INT; BOOL as 0 or 1. */
	double f;  /* FLOAT. */
	char *s;   /* STRING, owned by the list that holds the setting. */
} dg_setting;

/* A list of settings, sorted by name, each name once. Zero-initialise; free with
 * dg_settings_clear(). */
typedef struct dg_settings {
	dg_setting *v;
	size_t n, cap;
} dg_settings;

/* Returns 1 when `name` is 1..63 characters of [A-Z0-9_], else 0. */
int dg_settings_name_valid(const char *name);

/* Returns "int", "float", "bool" or "string". */
const char *dg_settings_type_name(dg_setting_type t);

/* Returns the type named `s` ("int", "float", "bool", "string"), or -EINVAL. */
int dg_settings_type_parse(const char *s);

/*
 * Adds `s` to the list, or replaces the setting of that name; a string
 * is copied. Returns 0, -ENOMEM, or -E2BIG when the list holds
 * DG_SETTINGS_MAX settings already.
 */
int dg_settings_put(dg_settings *l, const dg_setting *s);

/* Removes the setting `name`. Returns 0, or -ENOENT when there is none. */
int dg_settings_remove(dg_settings *l, const char *name);

/* Returns the setting `name`, borrowed from the list, or NULL. */
const dg_setting *dg_settings_find(const dg_settings *l, const char *name);

/* Frees what the list holds and empties it. NULL is a no-op. */
void dg_settings_clear(dg_settings *l);

/* Returns 1 when two lists hold the same names with the same types and values. */
int dg_settings_equal(const dg_settings *a, const dg_settings *b);

/*
 * Sets *out (empty on entry) to `base` with every setting of `over` put
 * over it. Returns 0 or -ENOMEM (out is cleared then).
 */
int dg_settings_merge(const dg_settings *base, const dg_settings *over, dg_settings *out);

/*
 * Reads one value of a settings.json (plain or typed form, see above)
 * into s->type and its value; s->s is malloc'ed for a string. Returns 0,
 * or -EINVAL with a reason ("must be an int, a float, a bool or a string")
 * in why.
 */
int dg_settings_from_json(const cJSON *v, dg_setting *s, char *why, size_t whylen);

/*
 * The JSON of a setting's value as settings.json holds it: the plain
 * form when reading it back gives the same type, else the typed form (a
 * float with an integral value). Returns a new item, or NULL (no memory).
 */
cJSON *dg_settings_to_json(const dg_setting *s);

/*
 * Reads a value given as text (the CLI's): with `type` -1 it is inferred
 * (true/false a bool, an integer an int, a number with '.', 'e' or 'E' a
 * float, anything else a string); else it must be of that type. Returns
 * 0, or -EINVAL with a reason in why.
 */
int dg_settings_from_text(const char *text, int type, dg_setting *s, char *why, size_t whylen);

/*
 * Parses a settings.json. `path` is used in messages. Returns 0 and fills
 * *out (empty on entry), or -EINVAL with "<path>: <NAME>: <reason>" (or
 * "<path>: <reason>") in err, out cleared; -ENOMEM.
 */
int dg_settings_parse_file(const char *path, const char *text, size_t len, dg_settings *out,
                           char *err, size_t errlen);

/*
 * Encodes `{"version": version, "settings": {NAME: value, ...}}` in
 * content-format `format` (DG_COAP_FMT_JSON or DG_COAP_FMT_CBOR) into a
 * malloc'ed *out. Each value keeps its type: in CBOR an int is an
 * integer, a float a double (2.0 stays a float), a bool a simple value;
 * in JSON a float always has a decimal point or an exponent. An empty
 * list gives "settings": {}. Returns 0, -ENOTSUP for another format, or
 * -ENOMEM.
 */
int dg_settings_encode(const dg_settings *l, int64_t version, int format, uint8_t **out,
                       size_t *len);

/*
 * A setting's value as JSON text, as dg_settings_encode() writes it (a
 * malloc'ed string), or NULL when out of memory.
 */
char *dg_settings_value_text(const dg_setting *s);

/* Store: reads. Each runs on the caller's connection `db`. */

/* Reads a project's settings (empty when none) and version (0 when never set). */
int dg_settings_read_project(sqlite3 *db, int64_t project_id, dg_settings *out, int64_t *version);

/* Reads a device's overrides (empty when none) and version (0 when never set). */
int dg_settings_read_device(sqlite3 *db, int64_t device_id, dg_settings *out, int64_t *version);

/*
 * Reads a device's effective settings and version (device_id 0: the
 * project's alone). Returns 0 or a negative errno.
 */
int dg_settings_effective(sqlite3 *db, int64_t project_id, int64_t device_id, dg_settings *out,
                          int64_t *version);

/*
 * Reads and encodes a device's effective settings (as dg_settings_encode
 * does). Returns 0 or a negative errno.
 */
int dg_settings_render_body(sqlite3 *db, int64_t project_id, int64_t device_id, int format,
                            uint8_t **out, size_t *len);

struct dg_render;

/*
 * The renderer of DG_OBS_SETTINGS (a dg_render_fn): r->body is the
 * effective settings of r->device_id in r->format, as
 * dg_settings_render_body() makes them.
 */
int dg_settings_render(sqlite3 *db, struct dg_render *r);

/* Finds a project's id by slug. Returns 0, -ENOENT, or a negative errno. */
int dg_settings_project_id(sqlite3 *db, const char *slug, int64_t *id);

/* Store: writes, in the caller's transaction (dg_store_job / dg_store_run `run` functions). */

/* Makes a project's settings equal a list (a settings.json). */
typedef struct dg_settings_sync {
	int64_t project_id;   /* In. */
	const dg_settings *l; /* In, borrowed. */
	int changed;          /* Out: 1 when the settings changed (and the version with them). */
	int64_t version;      /* Out: the project's version after the sync. */
} dg_settings_sync;

/*
 * A `run` function (arg: a dg_settings_sync): replaces the project's
 * settings with the list when they differ, then bumps the project's
 * version and records a change (device 0). An equal list changes
 * nothing. Returns 0 or a negative errno.
 */
int dg_settings_sync_apply(sqlite3 *db, void *arg);

/*
 * As dg_settings_sync_apply() for project `slug`, in a transaction of its
 * own on the caller's connection (the import of the projects directory,
 * the CLI). Sets *changed (NULL: not wanted). Returns 0, -ENOENT when
 * there is no such project, or a negative errno.
 */
int dg_settings_sync_slug(dg_store *st, const char *slug, const dg_settings *l, int *changed);

/* Sets or deletes one override of a device. */
typedef struct dg_settings_override {
	int64_t project_id, device_id; /* In. */
	const char *name;              /* In. */
	int del;                       /* In: 1 deletes the override `name`. */
	dg_setting value;              /* In, for a set (value.s borrowed). */
	int changed;                   /* Out: 1 when the overrides changed. */
	int64_t version;               /* Out: the device's version after it. */
} dg_settings_override;

/*
 * A `run` function (arg: a dg_settings_override): sets or deletes one
 * override; when that changed anything, bumps the device's version and
 * records a change for the device. Deleting an override that is not
 * there returns -ENOENT. Returns 0 or a negative errno.
 */
int dg_settings_override_apply(sqlite3 *db, void *arg);

/* What a device reported on ".c/status". */
typedef struct dg_settings_report {
	int64_t device_id;
	int64_t version;
	char *errors; /* JSON array text, owned ("[]" when none). */
} dg_settings_report;

/*
 * Decodes a ".c/status" payload already turned into JSON by the payload
 * decoder: {"version": int, "errors"?: [{"setting_key": text,
 * "error_code": 0..6, "details"?: text}]}; other members are ignored.
 * Fills r->version and r->errors. Returns 0, or -EINVAL with a short
 * reason in why; -ENOMEM.
 */
int dg_settings_report_parse(const cJSON *v, dg_settings_report *r, char *why, size_t whylen);

/* A `run` function (arg: a dg_settings_report): stores the report. */
int dg_settings_report_apply(sqlite3 *db, void *arg);

/* Frees a report's errors (not the struct). */
void dg_settings_report_clear(dg_settings_report *r);

/* One device of a project with its settings status, for `devgate settings status`. */
typedef struct dg_settings_status_row {
	const char *device;
	int64_t current;     /* The device's effective version now. */
	int64_t applied;     /* What it reported, -1 when it never did. */
	const char *errors;  /* JSON array text, NULL when it never reported. */
	int64_t reported_at; /* ms since the epoch, -1 when never. */
} dg_settings_status_row;

/*
 * Calls cb for every device of a project, by name; the row is borrowed
 * until cb returns, whose nonzero return stops the walk and is returned.
 * Returns 0 or a negative errno.
 */
int dg_settings_status_each(sqlite3 *db, int64_t project_id,
                            int (*cb)(void *arg, const dg_settings_status_row *row), void *arg);

#endif
