/*
 * The Settings service's data: typed values, settings.json, the
 * representation a device reads, and the store's settings tables (see
 * settings.h and sql/005_settings.sql).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <sqlite3.h>

#include "devgate/coap.h"
#include "devgate/data.h"
#include "devgate/render.h"
#include "devgate/render.h"
#include "devgate/settings.h"

/* Integral doubles in [-2^63, 2^63) convert to int64 exactly. */
#define INT64_LOW  -9223372036854775808.0
#define INT64_HIGH 9223372036854775808.0

int
dg_settings_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > DG_SETTING_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return 1;
}

static const char *const type_names[] = {"int", "float", "bool", "string"};

const char *
dg_settings_type_name(dg_setting_type t)
{
	return (unsigned)t < 4 ? type_names[t] : "?";
}

int
dg_settings_type_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, type_names[i]) == 0)
			return i;
	return -EINVAL;
}

/* The index where `name` is or would go, and whether it is there. */
static size_t
locate(const dg_settings *l, const char *name, int *found)
{
	size_t lo = 0, hi = l->n;
	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(l->v[mid].name, name);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int
dg_settings_put(dg_settings *l, const dg_setting *s)
{
	char *copy = NULL;
	int found;
	size_t at = locate(l, s->name, &found);

	if (s->type == DG_SETTING_STRING) {
		copy = strdup(s->s != NULL ? s->s : "");
		if (copy == NULL)
			return -ENOMEM;
	}
	if (found) {
		free(l->v[at].s);
		l->v[at] = *s;
		l->v[at].s = copy;
		return 0;
	}
	if (l->n == DG_SETTINGS_MAX) {
		free(copy);
		return -E2BIG;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		dg_setting *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL) {
			free(copy);
			return -ENOMEM;
		}
		l->v = v;
		l->cap = cap;
	}
	memmove(&l->v[at + 1], &l->v[at], (l->n - at) * sizeof(*l->v));
	l->v[at] = *s;
	l->v[at].s = copy;
	l->n++;
	return 0;
}

int
dg_settings_remove(dg_settings *l, const char *name)
{
	int found;
	size_t at = locate(l, name, &found);
	if (!found)
		return -ENOENT;
	free(l->v[at].s);
	memmove(&l->v[at], &l->v[at + 1], (l->n - at - 1) * sizeof(*l->v));
	l->n--;
	return 0;
}

const dg_setting *
dg_settings_find(const dg_settings *l, const char *name)
{
	int found;
	size_t at = locate(l, name, &found);
	return found ? &l->v[at] : NULL;
}

void
dg_settings_clear(dg_settings *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].s);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int
setting_equal(const dg_setting *a, const dg_setting *b)
{
	if (strcmp(a->name, b->name) != 0 || a->type != b->type)
		return 0;
	switch (a->type) {
	case DG_SETTING_FLOAT:
		/* Bit for bit: -0.0 and 0.0 are told apart, as a device would see them. */
		return memcmp(&a->f, &b->f, sizeof(a->f)) == 0;
	case DG_SETTING_STRING:
		return strcmp(a->s, b->s) == 0;
	default:
		return a->i == b->i;
	}
}

int
dg_settings_equal(const dg_settings *a, const dg_settings *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (!setting_equal(&a->v[i], &b->v[i]))
			return 0;
	return 1;
}

int
dg_settings_merge(const dg_settings *base, const dg_settings *over, dg_settings *out)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < base->n; i++)
		rc = dg_settings_put(out, &base->v[i]);
	/* Overrides may exceed DG_SETTINGS_MAX together with the base: -E2BIG is not fatal. */
	for (size_t i = 0; rc == 0 && i < over->n; i++)
		rc = dg_settings_put(out, &over->v[i]);
	if (rc != 0)
		dg_settings_clear(out);
	return rc == -E2BIG ? -ENOMEM : rc;
}

/* Values */

/* Sets s from a plain JSON value (not the typed form). */
static int
plain_value(const cJSON *v, dg_setting *s, char *why, size_t whylen)
{
	s->s = NULL;
	if (cJSON_IsBool(v)) {
		s->type = DG_SETTING_BOOL;
		s->i = cJSON_IsTrue(v);
		return 0;
	}
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (!isfinite(d)) {
			snprintf(why, whylen, "must be a finite number");
			return -EINVAL;
		}
		if (d == trunc(d)) {
			if (d < INT64_LOW || d >= INT64_HIGH) {
				snprintf(why, whylen,
				         "an integer beyond int64 (use {\"type\": \"float\", "
				         "\"value\": ...} for a float)");
				return -EINVAL;
			}
			s->type = DG_SETTING_INT;
			s->i = (int64_t)d;
		} else {
			s->type = DG_SETTING_FLOAT;
			s->f = d;
		}
		return 0;
	}
	if (cJSON_IsString(v)) {
		if (strlen(v->valuestring) > DG_SETTING_STRING_MAX) {
			snprintf(why, whylen, "a string of at most %d bytes",
			         DG_SETTING_STRING_MAX);
			return -EINVAL;
		}
		s->type = DG_SETTING_STRING;
		s->s = strdup(v->valuestring);
		return s->s != NULL ? 0 : -ENOMEM;
	}
	snprintf(why, whylen,
	         "must be an int, a float, a bool, a string or {\"type\": ..., \"value\": ...}");
	return -EINVAL;
}

int
dg_settings_from_json(const cJSON *v, dg_setting *s, char *why, size_t whylen)
{
	const cJSON *t, *val, *m;
	int type, rc;

	if (!cJSON_IsObject(v))
		return plain_value(v, s, why, whylen);
	cJSON_ArrayForEach(m, v)
	{
		if (strcmp(m->string, "type") != 0 && strcmp(m->string, "value") != 0) {
			snprintf(why, whylen,
			         "%.32s: unknown key (the typed form has type and value)",
			         m->string);
			return -EINVAL;
		}
	}
	t = cJSON_GetObjectItemCaseSensitive(v, "type");
	val = cJSON_GetObjectItemCaseSensitive(v, "value");
	if (!cJSON_IsString(t) || (type = dg_settings_type_parse(t->valuestring)) < 0) {
		snprintf(why, whylen, "type: must be \"int\", \"float\", \"bool\" or \"string\"");
		return -EINVAL;
	}
	if (val == NULL) {
		snprintf(why, whylen, "value: required");
		return -EINVAL;
	}
	if (type == DG_SETTING_FLOAT) {
		if (!cJSON_IsNumber(val) || !isfinite(val->valuedouble)) {
			snprintf(why, whylen, "value: must be a number for a float");
			return -EINVAL;
		}
		s->type = DG_SETTING_FLOAT;
		s->f = val->valuedouble;
		s->s = NULL;
		return 0;
	}
	rc = plain_value(val, s, why, whylen);
	if (rc == 0 && (int)s->type != type) {
		snprintf(why, whylen, "value: must be %s %s", type == DG_SETTING_INT ? "an" : "a",
		         type == DG_SETTING_INT ? "integer" : type_names[type]);
		free(s->s);
		s->s = NULL;
		return -EINVAL;
	}
	return rc;
}

cJSON *
dg_settings_to_json(const dg_setting *s)
{
	switch (s->type) {
	case DG_SETTING_INT:
		return cJSON_CreateNumber((double)s->i);
	case DG_SETTING_BOOL:
		return cJSON_CreateBool(s->i != 0);
	case DG_SETTING_STRING:
		return cJSON_CreateString(s->s);
	case DG_SETTING_FLOAT:
		if (s->f != trunc(s->f))
			return cJSON_CreateNumber(s->f);
		/* An integral float would read back as an int: say its type. */
		cJSON *o = cJSON_CreateObject();
		if (o != NULL && (cJSON_AddStringToObject(o, "type", "float") == NULL ||
		                  cJSON_AddNumberToObject(o, "value", s->f) == NULL)) {
			cJSON_Delete(o);
			return NULL;
		}
		return o;
	}
	return NULL;
}

int
dg_settings_from_text(const char *text, int type, dg_setting *s, char *why, size_t whylen)
{
	char *end = NULL;

	s->s = NULL;
	if (type < 0) {
		if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0)
			type = DG_SETTING_BOOL;
		else if (text[0] != '\0' && (strtoll(text, &end, 10), *end == '\0'))
			type = DG_SETTING_INT;
		else if (text[0] != '\0' && strpbrk(text, ".eE") != NULL &&
		         (strtod(text, &end), *end == '\0'))
			type = DG_SETTING_FLOAT;
		else
			type = DG_SETTING_STRING;
	}
	s->type = (dg_setting_type)type;
	switch (type) {
	case DG_SETTING_BOOL:
		if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0) {
			snprintf(why, whylen, "a bool is true or false");
			return -EINVAL;
		}
		s->i = strcmp(text, "true") == 0;
		return 0;
	case DG_SETTING_INT:
		errno = 0;
		s->i = strtoll(text, &end, 10);
		if (text[0] == '\0' || *end != '\0' || errno == ERANGE) {
			snprintf(why, whylen, "an int is a whole number within int64");
			return -EINVAL;
		}
		return 0;
	case DG_SETTING_FLOAT:
		errno = 0;
		s->f = strtod(text, &end);
		if (text[0] == '\0' || *end != '\0' || !isfinite(s->f)) {
			snprintf(why, whylen, "a float is a finite number");
			return -EINVAL;
		}
		return 0;
	case DG_SETTING_STRING:
		if (strlen(text) > DG_SETTING_STRING_MAX) {
			snprintf(why, whylen, "a string of at most %d bytes",
			         DG_SETTING_STRING_MAX);
			return -EINVAL;
		}
		s->s = strdup(text);
		return s->s != NULL ? 0 : -ENOMEM;
	}
	snprintf(why, whylen, "unknown type");
	return -EINVAL;
}

int
dg_settings_parse_file(const char *path, const char *text, size_t len, dg_settings *out, char *err,
                       size_t errlen)
{
	const char *end = NULL;
	cJSON *root;
	const cJSON *m;
	int rc = 0;

	/* cJSON would cut a string at an escaped NUL silently. */
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\0' || (text[i] == '\\' && i + 5 < len && text[i + 1] == 'u' &&
		                        memcmp(text + i + 2, "0000", 4) == 0)) {
			snprintf(err, errlen, "%s: NUL is not allowed", path);
			return -EINVAL;
		}
		if (text[i] == '\\')
			i++; /* The escaped character: "\\\\u0000" is not an escaped NUL. */
	}
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL) {
		size_t line = 1;
		if (end != NULL && end >= text && end <= text + len)
			for (const char *p = text; p < end; p++)
				line += *p == '\n';
		snprintf(err, errlen, "%s: line %zu: malformed JSON", path, line);
		return -EINVAL;
	}
	for (; end != NULL && end < text + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
			snprintf(err, errlen, "%s: text after the JSON value", path);
			rc = -EINVAL;
			goto out;
		}
	}
	if (!cJSON_IsObject(root)) {
		snprintf(err, errlen, "%s: must be an object {\"NAME\": value, ...}", path);
		rc = -EINVAL;
		goto out;
	}
	cJSON_ArrayForEach(m, root)
	{
		dg_setting s;
		char why[160];

		memset(&s, 0, sizeof(s));
		if (!dg_settings_name_valid(m->string)) {
			snprintf(err, errlen, "%s: %.80s: a name is 1..%d of A-Z, 0-9 and _", path,
			         m->string, DG_SETTING_NAME_MAX);
			rc = -EINVAL;
			goto out;
		}
		if (dg_settings_find(out, m->string) != NULL) {
			snprintf(err, errlen, "%s: %s: given twice", path, m->string);
			rc = -EINVAL;
			goto out;
		}
		rc = dg_settings_from_json(m, &s, why, sizeof(why));
		if (rc == -EINVAL)
			snprintf(err, errlen, "%s: %s: %s", path, m->string, why);
		if (rc != 0)
			goto out;
		snprintf(s.name, sizeof(s.name), "%s", m->string);
		rc = dg_settings_put(out, &s);
		free(s.s);
		if (rc == -E2BIG) {
			snprintf(err, errlen, "%s: more than %d settings", path, DG_SETTINGS_MAX);
			rc = -EINVAL;
		}
		if (rc != 0)
			goto out;
	}
out:
	cJSON_Delete(root);
	if (rc != 0)
		dg_settings_clear(out);
	return rc;
}

/* Encoding */

/* A growing output buffer. */
typedef struct buf {
	uint8_t *p;
	size_t len, cap;
	int rc;
} buf;

static uint8_t *
room(buf *b, size_t n)
{
	if (b->rc != 0)
		return NULL;
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->len < n)
			cap *= 2;
		uint8_t *p = realloc(b->p, cap);
		if (p == NULL) {
			b->rc = -ENOMEM;
			return NULL;
		}
		b->p = p;
		b->cap = cap;
	}
	return b->p + b->len;
}

static void
put(buf *b, const void *s, size_t n)
{
	uint8_t *p = room(b, n);
	if (p != NULL) {
		memcpy(p, s, n);
		b->len += n;
	}
}

static void
puts_(buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Runs a cbor_encode_*() writer with 9 bytes of room, the most one header takes. */
#define CBOR_PUT(b, call)                                                                          \
	do {                                                                                       \
		uint8_t *p_ = room((b), 9);                                                        \
		if (p_ != NULL)                                                                    \
			(b)->len += call;                                                          \
	} while (0)

static void
cbor_text(buf *b, const char *s)
{
	size_t n = strlen(s);
	CBOR_PUT(b, cbor_encode_string_start(n, p_, 9));
	put(b, s, n);
}

static void
cbor_int(buf *b, int64_t i)
{
	if (i >= 0)
		CBOR_PUT(b, cbor_encode_uint((uint64_t)i, p_, 9));
	else
		CBOR_PUT(b, cbor_encode_negint((uint64_t)(-(i + 1)), p_, 9));
}

static void
encode_cbor(const dg_settings *l, int64_t version, buf *b)
{
	CBOR_PUT(b, cbor_encode_map_start(2, p_, 9));
	cbor_text(b, "version");
	cbor_int(b, version);
	cbor_text(b, "settings");
	CBOR_PUT(b, cbor_encode_map_start(l->n, p_, 9));
	for (size_t i = 0; i < l->n; i++) {
		const dg_setting *s = &l->v[i];
		cbor_text(b, s->name);
		switch (s->type) {
		case DG_SETTING_INT:
			cbor_int(b, s->i);
			break;
		case DG_SETTING_FLOAT:
			CBOR_PUT(b, cbor_encode_double(s->f, p_, 9));
			break;
		case DG_SETTING_BOOL:
			CBOR_PUT(b, cbor_encode_bool(s->i != 0, p_, 9));
			break;
		case DG_SETTING_STRING:
			cbor_text(b, s->s);
			break;
		}
	}
}

/* Writes a JSON string with the escapes JSON requires. */
static void
json_text(buf *b, const char *s)
{
	put(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		char esc[8];
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			put(b, esc, 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			puts_(b, esc);
		} else {
			put(b, p, 1);
		}
	}
	put(b, "\"", 1);
}

/* A double as JSON that reads back the same and always reads as a float. */
static void
json_float(buf *b, double d)
{
	char num[40];
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(num, sizeof(num), "%.*g", prec, d);
		if (strtod(num, NULL) == d)
			break;
	}
	if (strpbrk(num, ".eE") == NULL)
		strncat(num, ".0", sizeof(num) - strlen(num) - 1);
	puts_(b, num);
}

static void
json_value(buf *b, const dg_setting *s)
{
	char num[32];
	switch (s->type) {
	case DG_SETTING_INT:
		snprintf(num, sizeof(num), "%lld", (long long)s->i);
		puts_(b, num);
		break;
	case DG_SETTING_FLOAT:
		json_float(b, s->f);
		break;
	case DG_SETTING_BOOL:
		puts_(b, s->i ? "true" : "false");
		break;
	case DG_SETTING_STRING:
		json_text(b, s->s);
		break;
	}
}

static void
encode_json(const dg_settings *l, int64_t version, buf *b)
{
	char num[32];
	snprintf(num, sizeof(num), "%lld", (long long)version);
	puts_(b, "{\"version\":");
	puts_(b, num);
	puts_(b, ",\"settings\":{");
	for (size_t i = 0; i < l->n; i++) {
		if (i > 0)
			put(b, ",", 1);
		json_text(b, l->v[i].name);
		put(b, ":", 1);
		json_value(b, &l->v[i]);
	}
	puts_(b, "}}");
}

char *
dg_settings_value_text(const dg_setting *s)
{
	buf b = {0};
	json_value(&b, s);
	put(&b, "", 1);
	if (b.rc != 0) {
		free(b.p);
		return NULL;
	}
	return (char *)b.p;
}

int
dg_settings_encode(const dg_settings *l, int64_t version, int format, uint8_t **out, size_t *len)
{
	buf b = {0};

	*out = NULL;
	*len = 0;
	if (format == DG_COAP_FMT_CBOR)
		encode_cbor(l, version, &b);
	else if (format == DG_COAP_FMT_JSON)
		encode_json(l, version, &b);
	else
		return -ENOTSUP;
	if (b.rc != 0) {
		free(b.p);
		return b.rc;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* Store */

static int
sql_errno(sqlite3 *db)
{
	int rc = dg_store_errno(sqlite3_errcode(db));
	return rc != 0 ? rc : -EIO;
}

/* Reads rows of (name, type, value) into l. */
static int
read_rows(sqlite3 *db, const char *sql, int64_t id, dg_settings *l)
{
	sqlite3_stmt *s = dg_store_stmt(db, sql);
	int rc = 0, step;

	if (s == NULL)
		return sql_errno(db);
	sqlite3_bind_int64(s, 1, id);
	while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
		dg_setting v;
		const char *name = (const char *)sqlite3_column_text(s, 0);
		const char *type = (const char *)sqlite3_column_text(s, 1);
		int t = type != NULL ? dg_settings_type_parse(type) : -EINVAL;

		memset(&v, 0, sizeof(v));
		if (name == NULL || t < 0)
			continue;
		snprintf(v.name, sizeof(v.name), "%s", name);
		v.type = (dg_setting_type)t;
		if (t == DG_SETTING_FLOAT)
			v.f = sqlite3_column_double(s, 2);
		else if (t == DG_SETTING_STRING)
			v.s = (char *)(uintptr_t)sqlite3_column_text(s, 2);
		else
			v.i = sqlite3_column_int64(s, 2);
		if (v.type == DG_SETTING_STRING && v.s == NULL)
			v.s = (char *)(uintptr_t) "";
		rc = dg_settings_put(l, &v);
		if (rc == -E2BIG)
			rc = 0; /* More rows than a list holds cannot be made here; keep the first.
			         */
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = sql_errno(db);
	dg_store_stmt_done(s);
	if (rc != 0)
		dg_settings_clear(l);
	return rc;
}

static int64_t
read_version(sqlite3 *db, int64_t project_id, int64_t device_id)
{
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT version FROM settings_versions"
	                                    " WHERE project_id = ?1 AND device_id = ?2");
	int64_t v = 0;
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, project_id);
	sqlite3_bind_int64(s, 2, device_id);
	int step = sqlite3_step(s);
	if (step == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	else if (step != SQLITE_DONE)
		v = -1;
	dg_store_stmt_done(s);
	return v;
}

int
dg_settings_read_project(sqlite3 *db, int64_t project_id, dg_settings *out, int64_t *version)
{
	int rc = read_rows(db,
	                   "SELECT name, type, value FROM project_settings WHERE project_id = ?1",
	                   project_id, out);
	if (rc != 0)
		return rc;
	*version = read_version(db, project_id, 0);
	if (*version < 0) {
		dg_settings_clear(out);
		return sql_errno(db);
	}
	return 0;
}

/* The project of a device; -ENOENT when there is no such device. */
static int
device_project(sqlite3 *db, int64_t device_id, int64_t *project_id)
{
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT project_id FROM devices WHERE id = ?1");
	int rc;
	if (s == NULL)
		return sql_errno(db);
	sqlite3_bind_int64(s, 1, device_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*project_id = sqlite3_column_int64(s, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sql_errno(db);
	}
	dg_store_stmt_done(s);
	return rc;
}

int
dg_settings_read_device(sqlite3 *db, int64_t device_id, dg_settings *out, int64_t *version)
{
	int64_t pid;
	int rc = device_project(db, device_id, &pid);
	if (rc != 0)
		return rc;
	rc = read_rows(db, "SELECT name, type, value FROM device_settings WHERE device_id = ?1",
	               device_id, out);
	if (rc != 0)
		return rc;
	*version = read_version(db, pid, device_id);
	if (*version < 0) {
		dg_settings_clear(out);
		return sql_errno(db);
	}
	return 0;
}

int
dg_settings_effective(sqlite3 *db, int64_t project_id, int64_t device_id, dg_settings *out,
                      int64_t *version)
{
	dg_settings proj = {0}, dev = {0};
	int64_t pv = 0, dv = 0;
	int rc = dg_settings_read_project(db, project_id, &proj, &pv);

	if (rc == 0 && device_id != 0)
		rc = dg_settings_read_device(db, device_id, &dev, &dv);
	if (rc == 0)
		rc = dg_settings_merge(&proj, &dev, out);
	if (rc == 0)
		*version = pv > dv ? pv : dv;
	dg_settings_clear(&proj);
	dg_settings_clear(&dev);
	return rc;
}

int
dg_settings_render_body(sqlite3 *db, int64_t project_id, int64_t device_id, int format,
                        uint8_t **out, size_t *len)
{
	dg_settings l = {0};
	int64_t version = 0;
	int rc = dg_settings_effective(db, project_id, device_id, &l, &version);
	if (rc == 0)
		rc = dg_settings_encode(&l, version, format, out, len);
	dg_settings_clear(&l);
	return rc;
}

int
dg_settings_render(sqlite3 *db, dg_render *r)
{
	return dg_settings_render_body(db, r->project_id, r->device_id, r->format, &r->body,
	                               &r->len);
}

int
dg_settings_project_id(sqlite3 *db, const char *slug, int64_t *id)
{
	sqlite3_stmt *s = dg_store_stmt(db, "SELECT id FROM projects WHERE slug = ?1");
	int rc;
	if (s == NULL)
		return sql_errno(db);
	sqlite3_bind_text(s, 1, slug, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : sql_errno(db);
	}
	dg_store_stmt_done(s);
	return rc;
}

/* Binds a setting's type and value at ?3 and ?4. */
static void
bind_value(sqlite3_stmt *s, const dg_setting *v)
{
	sqlite3_bind_text(s, 3, dg_settings_type_name(v->type), -1, SQLITE_STATIC);
	if (v->type == DG_SETTING_FLOAT)
		sqlite3_bind_double(s, 4, v->f);
	else if (v->type == DG_SETTING_STRING)
		sqlite3_bind_text(s, 4, v->s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(s, 4, v->i);
}

/*
 * Gives (project, device) a new version: now, or above every version of
 * the project when that is not above them, so a device's effective
 * version grows with every change of either. Then records the change.
 */
static int
bump_version(sqlite3 *db, int64_t project_id, int64_t device_id, int64_t *version)
{
	sqlite3_stmt *s = dg_store_stmt(
	        db, "INSERT INTO settings_versions (project_id, device_id, version)"
	            " VALUES (?1, ?2, MAX(?3, COALESCE((SELECT MAX(version) FROM settings_versions"
	            " WHERE project_id = ?1), 0) + 1))"
	            " ON CONFLICT (project_id, device_id) DO UPDATE SET version = excluded.version"
	            " RETURNING version");
	int rc;
	if (s == NULL)
		return sql_errno(db);
	sqlite3_bind_int64(s, 1, project_id);
	sqlite3_bind_int64(s, 2, device_id);
	sqlite3_bind_int64(s, 3, dg_now_ms());
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*version = sqlite3_column_int64(s, 0);
		rc = 0;
	} else {
		rc = sql_errno(db);
	}
	dg_store_stmt_done(s);
	if (rc == 0)
		rc = dg_data_change_record(db, DG_OBS_SETTINGS, project_id, device_id, 0);
	return rc;
}

int
dg_settings_sync_apply(sqlite3 *db, void *arg)
{
	dg_settings_sync *y = arg;
	dg_settings cur = {0};
	int64_t version = 0;
	sqlite3_stmt *s;
	int rc;

	y->changed = 0;
	rc = dg_settings_read_project(db, y->project_id, &cur, &version);
	if (rc != 0)
		return rc;
	y->version = version;
	if (dg_settings_equal(&cur, y->l))
		goto out;
	s = dg_store_stmt(db, "DELETE FROM project_settings WHERE project_id = ?1");
	if (s == NULL) {
		rc = sql_errno(db);
		goto out;
	}
	sqlite3_bind_int64(s, 1, y->project_id);
	rc = dg_store_stmt_run(s);
	for (size_t i = 0; rc == 0 && i < y->l->n; i++) {
		s = dg_store_stmt(db, "INSERT INTO project_settings"
		                      " (project_id, name, type, value, source)"
		                      " VALUES (?1, ?2, ?3, ?4, 'file')");
		if (s == NULL) {
			rc = sql_errno(db);
			break;
		}
		sqlite3_bind_int64(s, 1, y->project_id);
		sqlite3_bind_text(s, 2, y->l->v[i].name, -1, SQLITE_STATIC);
		bind_value(s, &y->l->v[i]);
		rc = dg_store_stmt_run(s);
	}
	if (rc == 0)
		rc = bump_version(db, y->project_id, 0, &y->version);
	if (rc == 0)
		y->changed = 1;
out:
	dg_settings_clear(&cur);
	return rc;
}

/* dg_settings_sync_slug()'s job: the project by slug, then the sync. */
typedef struct slug_sync {
	const char *slug;
	dg_settings_sync y;
} slug_sync;

static int
slug_sync_run(sqlite3 *db, void *arg)
{
	slug_sync *j = arg;
	int rc = dg_settings_project_id(db, j->slug, &j->y.project_id);
	return rc != 0 ? rc : dg_settings_sync_apply(db, &j->y);
}

int
dg_settings_sync_slug(dg_store *st, const char *slug, const dg_settings *l, int *changed)
{
	slug_sync j = {.slug = slug, .y = {.l = l}};
	int rc = dg_store_run(st, slug_sync_run, &j);
	if (changed != NULL)
		*changed = rc == 0 && j.y.changed;
	return rc;
}

int
dg_settings_override_apply(sqlite3 *db, void *arg)
{
	dg_settings_override *o = arg;
	dg_settings cur = {0};
	int64_t version = 0;
	sqlite3_stmt *s;
	int rc;

	o->changed = 0;
	rc = dg_settings_read_device(db, o->device_id, &cur, &version);
	if (rc != 0)
		return rc;
	o->version = version;
	const dg_setting *had = dg_settings_find(&cur, o->name);
	if (o->del) {
		if (had == NULL) {
			rc = -ENOENT;
			goto out;
		}
		s = dg_store_stmt(db,
		                  "DELETE FROM device_settings WHERE device_id = ?1 AND name = ?2");
	} else {
		snprintf(o->value.name, sizeof(o->value.name), "%s", o->name);
		if (had != NULL && setting_equal(had, &o->value))
			goto out;
		if (had == NULL && cur.n == DG_SETTINGS_MAX) {
			rc = -E2BIG;
			goto out;
		}
		s = dg_store_stmt(db,
		                  "INSERT INTO device_settings (device_id, name, type, value)"
		                  " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device_id, name)"
		                  " DO UPDATE SET type = excluded.type, value = excluded.value");
	}
	if (s == NULL) {
		rc = sql_errno(db);
		goto out;
	}
	sqlite3_bind_int64(s, 1, o->device_id);
	sqlite3_bind_text(s, 2, o->name, -1, SQLITE_STATIC);
	if (!o->del)
		bind_value(s, &o->value);
	rc = dg_store_stmt_run(s);
	if (rc == 0)
		rc = bump_version(db, o->project_id, o->device_id, &o->version);
	if (rc == 0)
		o->changed = 1;
out:
	dg_settings_clear(&cur);
	return rc;
}

/* Reports */

/* Whether a JSON number is an integer that fits int64. */
static int
json_int(const cJSON *v, int64_t *out)
{
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
	    v->valuedouble != trunc(v->valuedouble) || v->valuedouble < INT64_LOW ||
	    v->valuedouble >= INT64_HIGH)
		return 0;
	*out = (int64_t)v->valuedouble;
	return 1;
}

int
dg_settings_report_parse(const cJSON *v, dg_settings_report *r, char *why, size_t whylen)
{
	const cJSON *ver, *errs, *e;
	cJSON *out = NULL;
	size_t idx = 0;

	r->errors = NULL;
	if (!cJSON_IsObject(v)) {
		snprintf(why, whylen, "status must be a map");
		return -EINVAL;
	}
	ver = cJSON_GetObjectItemCaseSensitive(v, "version");
	if (!json_int(ver, &r->version) || r->version < 0) {
		snprintf(why, whylen, "version: must be a non-negative integer");
		return -EINVAL;
	}
	errs = cJSON_GetObjectItemCaseSensitive(v, "errors");
	if (errs != NULL && !cJSON_IsArray(errs) && !cJSON_IsNull(errs)) {
		snprintf(why, whylen, "errors: must be an array");
		return -EINVAL;
	}
	out = cJSON_CreateArray();
	if (out == NULL)
		return -ENOMEM;
	const cJSON *list = cJSON_IsArray(errs) ? errs : NULL;
	cJSON_ArrayForEach(e, list)
	{
		const cJSON *key = cJSON_GetObjectItemCaseSensitive(e, "setting_key");
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "error_code");
		const cJSON *details = cJSON_GetObjectItemCaseSensitive(e, "details");
		int64_t c;
		if (idx == DG_SETTINGS_MAX) {
			snprintf(why, whylen, "errors: more than %d", DG_SETTINGS_MAX);
			goto bad;
		}
		if (!cJSON_IsObject(e) || !cJSON_IsString(key) ||
		    strlen(key->valuestring) > DG_SETTING_NAME_MAX) {
			snprintf(why, whylen,
			         "errors[%zu].setting_key: must be text of 1..%d bytes", idx,
			         DG_SETTING_NAME_MAX);
			goto bad;
		}
		if (!json_int(code, &c) || c < 0 || c > DG_SETTINGS_ERROR_MAX) {
			snprintf(why, whylen, "errors[%zu].error_code: must be 0..%d", idx,
			         DG_SETTINGS_ERROR_MAX);
			goto bad;
		}
		if (details != NULL && !cJSON_IsString(details)) {
			snprintf(why, whylen, "errors[%zu].details: must be text", idx);
			goto bad;
		}
		cJSON *item = cJSON_CreateObject();
		if (item == NULL)
			goto nomem;
		cJSON_AddItemToArray(out, item);
		if (cJSON_AddStringToObject(item, "setting_key", key->valuestring) == NULL ||
		    cJSON_AddNumberToObject(item, "error_code", (double)c) == NULL ||
		    (details != NULL &&
		     cJSON_AddStringToObject(item, "details", details->valuestring) == NULL))
			goto nomem;
		idx++;
	}
	r->errors = cJSON_PrintUnformatted(out);
	cJSON_Delete(out);
	return r->errors != NULL ? 0 : -ENOMEM;
bad:
	cJSON_Delete(out);
	return -EINVAL;
nomem:
	cJSON_Delete(out);
	return -ENOMEM;
}

int
dg_settings_report_apply(sqlite3 *db, void *arg)
{
	dg_settings_report *r = arg;
	sqlite3_stmt *s = dg_store_stmt(
	        db, "INSERT INTO settings_status (device_id, version, errors, reported_at)"
	            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device_id) DO UPDATE SET"
	            " version = excluded.version, errors = excluded.errors,"
	            " reported_at = excluded.reported_at");
	if (s == NULL)
		return sql_errno(db);
	sqlite3_bind_int64(s, 1, r->device_id);
	sqlite3_bind_int64(s, 2, r->version);
	sqlite3_bind_text(s, 3, r->errors != NULL ? r->errors : "[]", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, dg_now_ms());
	return dg_store_stmt_run(s);
}

void
dg_settings_report_clear(dg_settings_report *r)
{
	free(r->errors);
	r->errors = NULL;
}

int
dg_settings_status_each(sqlite3 *db, int64_t project_id,
                        int (*cb)(void *arg, const dg_settings_status_row *row), void *arg)
{
	/* Not a cached statement: the callback may use the cache (it reads the versions). */
	sqlite3_stmt *s = NULL;
	int64_t pv = read_version(db, project_id, 0);
	int rc = 0, step;

	if (pv < 0)
		return sql_errno(db);
	if (sqlite3_prepare_v2(db,
	                       "SELECT d.name, COALESCE(v.version, 0), st.version, st.errors,"
	                       " st.reported_at FROM devices d"
	                       " LEFT JOIN settings_versions v ON v.project_id = d.project_id"
	                       " AND v.device_id = d.id"
	                       " LEFT JOIN settings_status st ON st.device_id = d.id"
	                       " WHERE d.project_id = ?1 ORDER BY d.name",
	                       -1, &s, NULL) != SQLITE_OK)
		return sql_errno(db);
	sqlite3_bind_int64(s, 1, project_id);
	while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
		dg_settings_status_row row;
		int64_t dv = sqlite3_column_int64(s, 1);
		row.device = (const char *)sqlite3_column_text(s, 0);
		row.current = dv > pv ? dv : pv;
		row.applied =
		        sqlite3_column_type(s, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 2);
		row.errors = (const char *)sqlite3_column_text(s, 3);
		row.reported_at =
		        sqlite3_column_type(s, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 4);
		rc = cb(arg, &row);
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = sql_errno(db);
	sqlite3_finalize(s);
	return rc;
}
