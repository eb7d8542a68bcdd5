/*
 * devgate.json: parsed with cJSON and checked against one table per JSON
 * object, so that each key's type, limits, default and destination field
 * are written down once, in the tables below.
 *
 * Every error is one line, "<file>: <key path>: <reason>", and nothing is
 * logged from here: the caller decides what to do with the message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devgate/config.h"

/* The largest file accepted; a real config is a few hundred bytes. */
#define MAX_FILE_SIZE (1024 * 1024)

/* Key paths and values quoted in messages are cut to these sizes. */
#define MAX_KEY_PATH 128
#define MAX_SHOWN    64

enum kind {
	KIND_OBJECT, /* A nested object, checked against `sub`. */
	KIND_LISTEN, /* The array of listen addresses. */
	KIND_PATH,   /* A non-empty string, resolved against the config's directory. */
	KIND_ENUM,   /* One of `names`, stored as its index in an enum field. */
	KIND_UINT,   /* A JSON number with an integral value in min..max, as uint32_t. */
	KIND_ADDR,   /* One "host:port", or "" for off (metrics_listen). */
};

typedef struct key_spec {
	const char *name; /* NULL ends a table. */
	enum kind kind;
	size_t offset;              /* Of the field in dg_config. */
	uint32_t min, max;          /* KIND_UINT: the accepted range. */
	uint32_t def;               /* KIND_UINT, KIND_ENUM: the default. */
	const char *def_text;       /* KIND_PATH, KIND_LISTEN: the default, or NULL. */
	const char *const *names;   /* KIND_ENUM: NULL-terminated, indexed by value. */
	const char *names_text;     /* KIND_ENUM: the names, for messages. */
	const struct key_spec *sub; /* KIND_OBJECT: the nested table. */
} key_spec;

typedef struct parse_ctx {
	dg_config *cfg;
	const char *file; /* The file's base name, for messages. */
	char *err;
	size_t errlen;
} parse_ctx;

/* Enum fields are written as int; the names are indexed by the enum's values. */
_Static_assert(sizeof(dg_log_level) == sizeof(int), "dg_log_level is not int-sized");
_Static_assert(sizeof(dg_log_format) == sizeof(int), "dg_log_format is not int-sized");
_Static_assert(DG_LOG_ERROR == 0 && DG_LOG_WARN == 1 && DG_LOG_INFO == 2 && DG_LOG_DEBUG == 3,
               "level_names is out of order");
_Static_assert(DG_LOG_TEXT == 0 && DG_LOG_JSON == 1, "format_names is out of order");

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const format_names[] = {"text", "json", NULL};

static const key_spec log_keys[] = {
        {.name = "level",
         .kind = KIND_ENUM,
         .offset = offsetof(dg_config, log_level),
         .def = DG_LOG_INFO,
         .names = level_names,
         .names_text = "error, warn, info, debug"},
        {.name = "format",
         .kind = KIND_ENUM,
         .offset = offsetof(dg_config, log_format),
         .def = DG_LOG_TEXT,
         .names = format_names,
         .names_text = "text, json"},
        {.name = NULL},
};

static const key_spec limit_keys[] = {
        {.name = "max_sessions",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_sessions),
         .min = 1,
         .max = 10000000,
         .def = 100000},
        {.name = "max_handshakes",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_handshakes),
         .min = 1,
         .max = 1000000,
         .def = 1000},
        {.name = "handshake_timeout_s",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.handshake_timeout_s),
         .min = 1,
         .max = 600,
         .def = 30},
        {.name = "handshake_first_flight_s",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.handshake_first_flight_s),
         .min = 1,
         .max = 600,
         .def = 5},
        {.name = "max_handshakes_per_source",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_handshakes_per_source),
         .min = 1,
         .max = 1000000,
         .def = 32},
        {.name = "idle_timeout_s",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.idle_timeout_s),
         .min = 10,
         .max = 604800,
         .def = 10800},
        {.name = "max_body",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_body),
         .min = 1024,
         .max = 16777216,
         .def = 65536},
        {.name = "device_requests_per_s",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.device_requests_per_s),
         .min = 1,
         .max = 100000,
         .def = 20},
        {.name = "shutdown_timeout_s",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.shutdown_timeout_s),
         .min = 1,
         .max = 300,
         .def = 5},
        {.name = "max_observers",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_observers),
         .min = 1,
         .max = 1024,
         .def = 16},
        {.name = "max_write_queue",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_write_queue),
         .min = 1,
         .max = 10000000,
         .def = 10000},
        {.name = "device_burst",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.device_burst),
         .min = 1,
         .max = 100000,
         .def = 64},
        {.name = "max_state_bytes",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, limits.max_state_bytes),
         .min = 1024,
         .max = 16777216,
         .def = 65536},
        {.name = NULL},
};

static const key_spec top_keys[] = {
        {.name = "listen",
         .kind = KIND_LISTEN,
         .offset = offsetof(dg_config, listen),
         .def_text = "0.0.0.0:5684"},
        {.name = "database",
         .kind = KIND_PATH,
         .offset = offsetof(dg_config, database),
         .def_text = "devgate.db"},
        {.name = "projects_dir",
         .kind = KIND_PATH,
         .offset = offsetof(dg_config, projects_dir),
         .def_text = "projects"},
        {.name = "server_cert", .kind = KIND_PATH, .offset = offsetof(dg_config, server_cert)},
        {.name = "server_key", .kind = KIND_PATH, .offset = offsetof(dg_config, server_key)},
        {.name = "workers",
         .kind = KIND_UINT,
         .offset = offsetof(dg_config, workers),
         .min = 0,
         .max = DG_CONFIG_MAX_WORKERS,
         .def = 0},
        {.name = "log", .kind = KIND_OBJECT, .sub = log_keys},
        {.name = "limits", .kind = KIND_OBJECT, .sub = limit_keys},
        {.name = "metrics_listen",
         .kind = KIND_ADDR,
         .offset = offsetof(dg_config, metrics_listen),
         .def_text = "127.0.0.1:9684"},
        {.name = NULL},
};

static int set_value(parse_ctx *c, const key_spec *spec, const cJSON *item, const char *key);

/*
 * Writes "<file>: <key>: <reason>" (or "<file>: <reason>" when key is
 * NULL) into the caller's buffer and returns rc, so that callers can say
 * `return fail(...)`.
 */
static int fail(parse_ctx *c, int rc, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int
fail(parse_ctx *c, int rc, const char *key, const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	if (c->err == NULL || c->errlen == 0)
		return rc;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (key != NULL)
		snprintf(c->err, c->errlen, "%s: %s: %s", c->file, key, reason);
	else
		snprintf(c->err, c->errlen, "%s: %s", c->file, reason);
	return rc;
}

/*
 * Copies `s` into dst for quoting in a message: cut to fit, with every
 * byte that is not printable ASCII replaced by '?', so that a message
 * stays one line whatever the file holds.
 */
static void
show(char *dst, size_t cap, const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];
		dst[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	dst[i] = '\0';
}

/* Builds "prefix.name" (or "name" at top level) for messages; "" shows as such. */
static void
key_path(char *dst, size_t cap, const char *prefix, const char *name)
{
	char shown[MAX_SHOWN];

	show(shown, sizeof(shown), name != NULL && name[0] != '\0' ? name : "\"\"");
	if (prefix[0] == '\0')
		snprintf(dst, cap, "%s", shown);
	else
		snprintf(dst, cap, "%s.%s", prefix, shown);
}

/* Returns the part of `path` after its last slash, or `path` if that is empty. */
static const char *
base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL || slash[1] == '\0')
		return path;
	return slash + 1;
}

/* Sets cfg->path and cfg->dir ("." when the path has no directory part). */
static int
set_file(dg_config *cfg, const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t dirlen;

	cfg->path = strdup(path);
	if (slash == NULL) {
		cfg->dir = strdup(".");
	} else {
		/* Trailing slashes of the directory go, except the root's own. */
		dirlen = (size_t)(slash - path);
		while (dirlen > 1 && path[dirlen - 1] == '/')
			dirlen--;
		if (dirlen == 0)
			dirlen = 1;
		cfg->dir = strndup(path, dirlen);
	}
	if (cfg->path == NULL || cfg->dir == NULL)
		return -ENOMEM;
	return 0;
}

/*
 * Resolves `p` against `dir`: absolute paths stay, relative ones get the
 * directory in front. Stores a new string in *out; returns -ENAMETOOLONG
 * when the result would not fit in PATH_MAX.
 */
static int
resolve(const char *dir, const char *p, char **out)
{
	size_t dlen = strlen(dir), plen = strlen(p), n;
	int sep = dlen > 0 && dir[dlen - 1] != '/';
	char *s;

	*out = NULL;
	if (p[0] == '/') {
		if (plen >= PATH_MAX)
			return -ENAMETOOLONG;
		s = strdup(p);
	} else {
		n = dlen + (size_t)sep + plen;
		if (n >= PATH_MAX)
			return -ENAMETOOLONG;
		s = malloc(n + 1);
		if (s != NULL) {
			memcpy(s, dir, dlen);
			if (sep)
				s[dlen] = '/';
			memcpy(s + dlen + (size_t)sep, p, plen + 1);
		}
	}
	if (s == NULL)
		return -ENOMEM;
	*out = s;
	return 0;
}

/* Parses a decimal port 1..65535: digits only, no sign, no spaces. */
static int
parse_port(const char *s, uint16_t *port)
{
	uint32_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint32_t)(*s - '0');
		if (v > 65535)
			return -EINVAL;
	}
	if (v == 0)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/*
 * Parses "a.b.c.d:port" or "[v6]:port", numeric addresses only, into
 * *out. `key` names the entry in messages.
 */
static int
parse_listen_addr(parse_ctx *c, const char *key, const char *s, dg_listen_addr *out)
{
	char host[INET6_ADDRSTRLEN];
	char shown[MAX_SHOWN];
	const char *host_start, *host_end, *port_text;
	size_t len = strlen(s), hlen;
	uint16_t port;
	int v6 = s[0] == '[';

	if (len == 0)
		return fail(c, -EINVAL, key, "must not be empty");
	if (len >= sizeof(out->text))
		return fail(c, -EINVAL, key, "must be at most %zu characters",
		            sizeof(out->text) - 1);
	show(shown, sizeof(shown), s);

	if (v6) {
		host_start = s + 1;
		host_end = strchr(host_start, ']');
		if (host_end == NULL)
			return fail(c, -EINVAL, key, "missing \"]\" in \"%s\"", shown);
		if (host_end[1] != ':')
			return fail(c, -EINVAL, key, "missing \":port\" in \"%s\"", shown);
		port_text = host_end + 2;
	} else {
		host_start = s;
		host_end = strrchr(s, ':');
		if (host_end == NULL)
			return fail(c, -EINVAL, key, "missing \":port\" in \"%s\"", shown);
		if (memchr(s, ':', (size_t)(host_end - s)) != NULL)
			return fail(c, -EINVAL, key, "IPv6 address must be in brackets in \"%s\"",
			            shown);
		port_text = host_end + 1;
	}

	hlen = (size_t)(host_end - host_start);
	if (hlen >= sizeof(host))
		hlen = sizeof(host) - 1; /* Too long for an address; inet_pton rejects it. */
	memcpy(host, host_start, hlen);
	host[hlen] = '\0';

	memset(out, 0, sizeof(*out));
	if (v6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->addr;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return fail(c, -EINVAL, key,
			            "host must be a numeric IPv6 address in \"%s\"", shown);
		sin6->sin6_family = AF_INET6;
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->addr;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return fail(c, -EINVAL, key,
			            "host must be a numeric IPv4 address in \"%s\"", shown);
		sin->sin_family = AF_INET;
	}
	if (parse_port(port_text, &port) != 0)
		return fail(c, -EINVAL, key, "port must be 1..65535 in \"%s\"", shown);
	if (v6)
		((struct sockaddr_in6 *)&out->addr)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)&out->addr)->sin_port = htons(port);
	memcpy(out->text, s, len + 1);
	return 0;
}

/* Returns nonzero when two parsed listen addresses are the same. */
static int
same_addr(const dg_listen_addr *a, const dg_listen_addr *b)
{
	if (a->addr.ss_family != b->addr.ss_family)
		return 0;
	if (a->addr.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)&a->addr;
		const struct sockaddr_in *y = (const struct sockaddr_in *)&b->addr;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	} else {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->addr;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->addr;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
}

static int
set_listen(parse_ctx *c, const key_spec *spec, const cJSON *item, const char *key)
{
	dg_listen_addr *addrs = (dg_listen_addr *)((char *)c->cfg + spec->offset);
	char elem_key[MAX_KEY_PATH + 32]; /* The key, "[", an index and "]". */
	const cJSON *elem;
	size_t n = 0, i;
	int rc;

	if (!cJSON_IsArray(item))
		return fail(c, -EINVAL, key, "must be an array of \"host:port\" strings");
	cJSON_ArrayForEach(elem, item)
	{
		if (++n > DG_CONFIG_MAX_LISTEN)
			break;
	}
	if (n < 1 || n > DG_CONFIG_MAX_LISTEN)
		return fail(c, -EINVAL, key, "must have 1..%d entries", DG_CONFIG_MAX_LISTEN);

	n = 0;
	cJSON_ArrayForEach(elem, item)
	{
		snprintf(elem_key, sizeof(elem_key), "%s[%zu]", key, n);
		if (!cJSON_IsString(elem))
			return fail(c, -EINVAL, elem_key, "must be a string");
		rc = parse_listen_addr(c, elem_key, elem->valuestring, &addrs[n]);
		if (rc != 0)
			return rc;
		for (i = 0; i < n; i++) {
			if (same_addr(&addrs[i], &addrs[n]))
				return fail(c, -EINVAL, elem_key, "same address as %s[%zu]", key,
				            i);
		}
		n++;
	}
	c->cfg->n_listen = n;
	return 0;
}

static int
set_path(parse_ctx *c, const key_spec *spec, const cJSON *item, const char *key)
{
	char **slot = (char **)((char *)c->cfg + spec->offset);
	char *resolved;
	int rc;

	if (!cJSON_IsString(item))
		return fail(c, -EINVAL, key, "must be a string");
	if (item->valuestring[0] == '\0')
		return fail(c, -EINVAL, key, "must not be empty");
	rc = resolve(c->cfg->dir, item->valuestring, &resolved);
	if (rc == -ENAMETOOLONG)
		return fail(c, -EINVAL, key, "path is longer than %d bytes", PATH_MAX - 1);
	if (rc != 0)
		return fail(c, rc, NULL, "out of memory");
	free(*slot);
	*slot = resolved;
	return 0;
}

static int
set_enum(parse_ctx *c, const key_spec *spec, const cJSON *item, const char *key)
{
	int i;

	if (cJSON_IsString(item)) {
		for (i = 0; spec->names[i] != NULL; i++) {
			if (strcmp(item->valuestring, spec->names[i]) == 0) {
				memcpy((char *)c->cfg + spec->offset, &i, sizeof(i));
				return 0;
			}
		}
	}
	return fail(c, -EINVAL, key, "must be one of %s", spec->names_text);
}

static int
set_uint(parse_ctx *c, const key_spec *spec, const cJSON *item, const char *key)
{
	uint32_t *slot = (uint32_t *)((char *)c->cfg + spec->offset);
	double d;

	/* The range test comes first, so that the cast below is defined. */
	if (cJSON_IsNumber(item)) {
		d = item->valuedouble;
		if (d >= spec->min && d <= spec->max && (double)(uint32_t)d == d) {
			*slot = (uint32_t)d;
			return 0;
		}
	}
	return fail(c, -EINVAL, key, "must be an integer %" PRIu32 "..%" PRIu32, spec->min,
	            spec->max);
}

/*
 * Checks every member of `obj` against `table`: unknown and repeated keys
 * are errors, and each known key is stored by its kind's setter. `prefix`
 * is the object's key path ("" at top level).
 */
static int
parse_object(parse_ctx *c, const key_spec *table, const cJSON *obj, const char *prefix)
{
	char key[MAX_KEY_PATH];
	const cJSON *item;
	uint32_t seen = 0; /* One bit per table entry; no table has 32 keys. */
	size_t i;
	int rc;

	cJSON_ArrayForEach(item, obj)
	{
		key_path(key, sizeof(key), prefix, item->string);
		for (i = 0; table[i].name != NULL; i++) {
			if (item->string != NULL && strcmp(item->string, table[i].name) == 0)
				break;
		}
		if (table[i].name == NULL)
			return fail(c, -EINVAL, key, "unknown key");
		if (seen & (UINT32_C(1) << i))
			return fail(c, -EINVAL, key, "duplicate key");
		seen |= UINT32_C(1) << i;
		rc = set_value(c, &table[i], item, key);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int
set_value(parse_ctx *c, const key_spec *spec, const cJSON *item, const char *key)
{
	switch (spec->kind) {
	case KIND_OBJECT:
		if (!cJSON_IsObject(item))
			return fail(c, -EINVAL, key, "must be an object");
		return parse_object(c, spec->sub, item, key);
	case KIND_LISTEN:
		return set_listen(c, spec, item, key);
	case KIND_PATH:
		return set_path(c, spec, item, key);
	case KIND_ENUM:
		return set_enum(c, spec, item, key);
	case KIND_UINT:
		return set_uint(c, spec, item, key);
	case KIND_ADDR:
		if (!cJSON_IsString(item))
			return fail(c, -EINVAL, key,
			            "must be a string: \"host:port\", or \"\" for off");
		c->cfg->metrics_enabled = item->valuestring[0] != '\0';
		if (!c->cfg->metrics_enabled)
			return 0;
		return parse_listen_addr(c, key, item->valuestring,
		                         (dg_listen_addr *)((char *)c->cfg + spec->offset));
	}
	return fail(c, -EINVAL, key, "unhandled kind of key");
}

/* Stores every default of `table` (and of its nested tables) in c->cfg. */
static int
apply_defaults(parse_ctx *c, const key_spec *table)
{
	const key_spec *spec;
	char *field;
	int rc = 0;

	for (spec = table; spec->name != NULL && rc == 0; spec++) {
		field = (char *)c->cfg + spec->offset;
		switch (spec->kind) {
		case KIND_OBJECT:
			rc = apply_defaults(c, spec->sub);
			break;
		case KIND_LISTEN:
			rc = parse_listen_addr(c, spec->name, spec->def_text,
			                       (dg_listen_addr *)field);
			c->cfg->n_listen = 1;
			break;
		case KIND_PATH:
			if (spec->def_text != NULL) {
				rc = resolve(c->cfg->dir, spec->def_text, (char **)field);
				if (rc != 0)
					rc = fail(c, rc, spec->name, "cannot resolve the default");
			}
			break;
		case KIND_ENUM:
			memcpy(field, &spec->def, sizeof(int));
			break;
		case KIND_UINT:
			*(uint32_t *)field = spec->def;
			break;
		case KIND_ADDR:
			rc = parse_listen_addr(c, spec->name, spec->def_text,
			                       (dg_listen_addr *)field);
			c->cfg->metrics_enabled = 1;
			break;
		}
	}
	return rc;
}

/* Checks what involves more than one key. */
static int
check_config(parse_ctx *c)
{
	const dg_config *cfg = c->cfg;

	if (cfg->server_cert != NULL && cfg->server_key == NULL)
		return fail(c, -EINVAL, "server_key", "required when server_cert is set");
	if (cfg->server_key != NULL && cfg->server_cert == NULL)
		return fail(c, -EINVAL, "server_cert", "required when server_key is set");
	return 0;
}

/*
 * Reports a problem at `at` in the text, by its line counted from 1;
 * `at` is where cJSON gave up, so the line is approximate.
 */
static int
json_error(parse_ctx *c, const char *text, size_t len, const char *at, const char *reason)
{
	char where[32];
	size_t line = 1, i, pos = len;

	if (at != NULL && at >= text && at <= text + len)
		pos = (size_t)(at - text);
	for (i = 0; i < pos; i++) {
		if (text[i] == '\n')
			line++;
	}
	snprintf(where, sizeof(where), "line %zu", line);
	if (pos >= len)
		return fail(c, -EINVAL, where, "%s: unexpected end of file", reason);
	return fail(c, -EINVAL, where, "%s", reason);
}

int
dg_config_parse(const char *path, const char *text, size_t len, dg_config **out, char *err,
                size_t errlen)
{
	parse_ctx c = {.file = "config", .err = err, .errlen = errlen};
	dg_config *cfg = NULL;
	cJSON *root = NULL;
	char *buf = NULL;
	const char *start, *end = NULL, *nul;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL || path == NULL || (text == NULL && len > 0)) {
		rc = fail(&c, -EINVAL, NULL, "invalid arguments");
		goto out;
	}
	*out = NULL;
	c.file = base_name(path);
	if (len > MAX_FILE_SIZE) {
		rc = fail(&c, -EFBIG, NULL, "larger than 1 MiB");
		goto out;
	}

	cfg = calloc(1, sizeof(*cfg));
	buf = malloc(len + 1);
	if (cfg == NULL || buf == NULL) {
		rc = fail(&c, -ENOMEM, NULL, "out of memory");
		goto out;
	}
	c.cfg = cfg;
	rc = set_file(cfg, path);
	if (rc != 0) {
		rc = fail(&c, rc, NULL, "out of memory");
		goto out;
	}
	rc = apply_defaults(&c, top_keys);
	if (rc != 0)
		goto out;

	/* cJSON reads up to a NUL, so a NUL inside the text would hide the rest. */
	if (len > 0)
		memcpy(buf, text, len);
	buf[len] = '\0';
	nul = memchr(buf, '\0', len);
	if (nul != NULL) {
		rc = json_error(&c, buf, len, nul, "contains a NUL byte");
		goto out;
	}
	start = buf;
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		start += 3; /* A UTF-8 byte order mark, as some editors write. */
	root = cJSON_ParseWithOpts(start, &end, 1);
	if (root == NULL) {
		rc = json_error(&c, buf, len, end, "malformed JSON");
		goto out;
	}
	if (!cJSON_IsObject(root)) {
		rc = fail(&c, -EINVAL, "top level", "must be an object");
		goto out;
	}
	rc = parse_object(&c, top_keys, root, "");
	if (rc != 0)
		goto out;
	rc = check_config(&c);
	if (rc != 0)
		goto out;

	*out = cfg;
	cfg = NULL;
out:
	cJSON_Delete(root);
	free(buf);
	dg_config_free(cfg);
	return rc;
}

/*
 * Reads all of fd into a new buffer (not NUL-terminated) and stores it in
 * *out and its length in *outlen; -EFBIG past MAX_FILE_SIZE bytes.
 */
static int
read_all(int fd, char **out, size_t *outlen)
{
	size_t cap = 16384, len = 0;
	char *buf = NULL, *grown;
	ssize_t n;
	int rc;

	buf = malloc(cap);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		if (len == cap) {
			if (cap > MAX_FILE_SIZE) {
				rc = -EFBIG;
				goto out;
			}
			cap *= 2;
			grown = realloc(buf, cap);
			if (grown == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			buf = grown;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > MAX_FILE_SIZE) {
			rc = -EFBIG;
			goto out;
		}
	}
	*out = buf;
	*outlen = len;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	return rc;
}

int
dg_config_load(const char *path, dg_config **out, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int fd = -1, rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL || path == NULL)
		return -EINVAL;
	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	rc = fd < 0 ? -errno : read_all(fd, &text, &len);
	if (rc == 0) {
		rc = dg_config_parse(path, text, len, out, err, errlen);
	} else if (err != NULL && errlen > 0) {
		if (rc == -EFBIG)
			snprintf(err, errlen, "%s: larger than 1 MiB", path);
		else
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
	}
	if (fd >= 0)
		close(fd);
	free(text);
	return rc;
}

void
dg_config_free(dg_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->dir);
	free(cfg->database);
	free(cfg->projects_dir);
	free(cfg->server_cert);
	free(cfg->server_key);
	free(cfg);
}
