/*
 * Tests for src/ops/config.c: defaults, every key's accepted values, every
 * error path with its exact message, path resolution and loading files.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "devgate/config.h"

/* Messages are compared whole; any sane line fits. */
#define ERRLEN 512

/* An absolute config path makes every resolved path predictable. */
#define CONF "/etc/devgate/devgate.json"

static int
parse_text(const char *path, const char *json, dg_config **cfg, char *err)
{
	return dg_config_parse(path, json, strlen(json), cfg, err, ERRLEN);
}

/* Parses `json`, which must be valid, and returns the config. */
static dg_config *
parse_ok(const char *json)
{
	char err[ERRLEN];
	dg_config *cfg = NULL;
	int rc = parse_text(CONF, json, &cfg, err);

	ck_assert_msg(rc == 0, "rc %d for %s: %s", rc, json, err);
	ck_assert_ptr_nonnull(cfg);
	return cfg;
}

/*
 * Parses `json`, which must be rejected with -EINVAL, and checks that the
 * message is exactly "devgate.json: <key>: <reason>".
 */
static void
parse_fails(const char *json, const char *key, const char *reason)
{
	char err[ERRLEN], want[ERRLEN], prefix[ERRLEN];
	dg_config *cfg = (dg_config *)&cfg; /* Must be reset to NULL. */
	int rc = parse_text(CONF, json, &cfg, err);

	snprintf(prefix, sizeof(prefix), "devgate.json: %s: ", key);
	snprintf(want, sizeof(want), "%s%s", prefix, reason);
	ck_assert_msg(rc == -EINVAL, "rc %d for %s", rc, json);
	ck_assert_ptr_null(cfg);
	ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "err does not name %s: \"%s\"",
	              key, err);
	ck_assert_str_eq(err, want);
	ck_assert_ptr_null(strchr(err, '\n'));
}

static uint16_t
port_of(const dg_listen_addr *a)
{
	if (a->addr.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->addr)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&a->addr)->sin6_port);
}

/* Formats the address part back to text, for comparison. */
static void
host_of(const dg_listen_addr *a, char *buf, size_t len)
{
	const void *src;

	if (a->addr.ss_family == AF_INET)
		src = &((const struct sockaddr_in *)&a->addr)->sin_addr;
	else
		src = &((const struct sockaddr_in6 *)&a->addr)->sin6_addr;
	ck_assert_ptr_nonnull(inet_ntop(a->addr.ss_family, src, buf, (socklen_t)len));
}

START_TEST(test_defaults)
{
	dg_config *cfg = parse_ok("{}");
	char host[INET6_ADDRSTRLEN];

	ck_assert_str_eq(cfg->path, CONF);
	ck_assert_str_eq(cfg->dir, "/etc/devgate");
	ck_assert_uint_eq(cfg->n_listen, 1);
	ck_assert_str_eq(cfg->listen[0].text, "0.0.0.0:5684");
	ck_assert_int_eq(cfg->listen[0].addr.ss_family, AF_INET);
	host_of(&cfg->listen[0], host, sizeof(host));
	ck_assert_str_eq(host, "0.0.0.0");
	ck_assert_uint_eq(port_of(&cfg->listen[0]), 5684);
	ck_assert_str_eq(cfg->database, "/etc/devgate/devgate.db");
	ck_assert_str_eq(cfg->projects_dir, "/etc/devgate/projects");
	ck_assert_ptr_null(cfg->server_cert);
	ck_assert_ptr_null(cfg->server_key);
	ck_assert_int_eq(cfg->log_level, DG_LOG_INFO);
	ck_assert_int_eq(cfg->log_format, DG_LOG_TEXT);
	ck_assert_uint_eq(cfg->limits.max_sessions, 100000);
	ck_assert_uint_eq(cfg->limits.max_handshakes, 1000);
	ck_assert_uint_eq(cfg->limits.handshake_timeout_s, 30);
	ck_assert_uint_eq(cfg->limits.idle_timeout_s, 10800);
	/* The burst an SDK sends on connecting (20+ requests in 15 ms) passes. */
	ck_assert_uint_eq(cfg->limits.device_burst, 64);
	ck_assert_uint_eq(cfg->limits.device_requests_per_s, 20);
	ck_assert_uint_eq(cfg->limits.max_state_bytes, 65536);
	ck_assert_uint_eq(cfg->workers, 0);
	dg_config_free(cfg);
}
END_TEST

/* Empty objects keep their defaults too. */
START_TEST(test_empty_objects)
{
	dg_config *cfg = parse_ok(" \n{ \"log\": {}, \"limits\": {} }\n");

	ck_assert_int_eq(cfg->log_level, DG_LOG_INFO);
	ck_assert_uint_eq(cfg->limits.max_sessions, 100000);
	dg_config_free(cfg);
}
END_TEST

START_TEST(test_every_key)
{
	dg_config *cfg =
	        parse_ok("{\n"
	                 "  \"listen\": [\"127.0.0.1:5684\", \"[::1]:5685\"],\n"
	                 "  \"database\": \"/var/lib/devgate/dg.db\",\n"
	                 "  \"projects_dir\": \"proj\",\n"
	                 "  \"server_cert\": \"tls/cert.pem\",\n"
	                 "  \"server_key\": \"/etc/ssl/private/dg.key\",\n"
	                 "  \"log\": {\"level\": \"debug\", \"format\": \"json\"},\n"
	                 "  \"limits\": {\"max_sessions\": 5000, \"max_handshakes\": 50,\n"
	                 "             \"handshake_timeout_s\": 10, \"idle_timeout_s\": 3600}\n"
	                 "}\n");
	char host[INET6_ADDRSTRLEN];

	ck_assert_uint_eq(cfg->n_listen, 2);
	ck_assert_str_eq(cfg->listen[0].text, "127.0.0.1:5684");
	ck_assert_str_eq(cfg->listen[1].text, "[::1]:5685");
	ck_assert_int_eq(cfg->listen[1].addr.ss_family, AF_INET6);
	host_of(&cfg->listen[1], host, sizeof(host));
	ck_assert_str_eq(host, "::1");
	ck_assert_uint_eq(port_of(&cfg->listen[1]), 5685);
	ck_assert_str_eq(cfg->database, "/var/lib/devgate/dg.db");
	ck_assert_str_eq(cfg->projects_dir, "/etc/devgate/proj");
	ck_assert_str_eq(cfg->server_cert, "/etc/devgate/tls/cert.pem");
	ck_assert_str_eq(cfg->server_key, "/etc/ssl/private/dg.key");
	ck_assert_int_eq(cfg->log_level, DG_LOG_DEBUG);
	ck_assert_int_eq(cfg->log_format, DG_LOG_JSON);
	ck_assert_uint_eq(cfg->limits.max_sessions, 5000);
	ck_assert_uint_eq(cfg->limits.max_handshakes, 50);
	ck_assert_uint_eq(cfg->limits.handshake_timeout_s, 10);
	ck_assert_uint_eq(cfg->limits.idle_timeout_s, 3600);
	dg_config_free(cfg);
}
END_TEST

static const struct {
	const char *text;
	int family;
	const char *host;
	uint16_t port;
} good_listen[] = {
        {"0.0.0.0:5684", AF_INET, "0.0.0.0", 5684},
        {"127.0.0.1:1", AF_INET, "127.0.0.1", 1},
        {"192.0.2.10:65535", AF_INET, "192.0.2.10", 65535},
        {"10.0.0.1:05684", AF_INET, "10.0.0.1", 5684},
        {"[::]:5684", AF_INET6, "::", 5684},
        {"[::1]:65535", AF_INET6, "::1", 65535},
        {"[2001:db8::17]:5683", AF_INET6, "2001:db8::17", 5683},
        {"[fe80::1:2:3:4]:1", AF_INET6, "fe80::1:2:3:4", 1},
        {"[::ffff:192.0.2.1]:5684", AF_INET6, "::ffff:192.0.2.1", 5684},
        {"[2001:0db8:0000:0000:0000:ff00:0042:8329]:9", AF_INET6, "2001:db8::ff00:42:8329", 9},
};

START_TEST(test_listen_good)
{
	char json[256], host[INET6_ADDRSTRLEN];
	dg_config *cfg;

	snprintf(json, sizeof(json), "{\"listen\": [\"%s\"]}", good_listen[_i].text);
	cfg = parse_ok(json);
	ck_assert_uint_eq(cfg->n_listen, 1);
	ck_assert_str_eq(cfg->listen[0].text, good_listen[_i].text);
	ck_assert_int_eq(cfg->listen[0].addr.ss_family, good_listen[_i].family);
	host_of(&cfg->listen[0], host, sizeof(host));
	ck_assert_str_eq(host, good_listen[_i].host);
	ck_assert_uint_eq(port_of(&cfg->listen[0]), good_listen[_i].port);
	dg_config_free(cfg);
}
END_TEST

START_TEST(test_listen_sixteen)
{
	char json[1024];
	size_t pos, i;
	dg_config *cfg;

	pos = (size_t)snprintf(json, sizeof(json), "{\"listen\": [");
	for (i = 0; i < DG_CONFIG_MAX_LISTEN; i++)
		pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "%s\"127.0.0.1:%zu\"",
		                        i ? ", " : "", 1000 + i);
	snprintf(json + pos, sizeof(json) - pos, "]}");
	cfg = parse_ok(json);
	ck_assert_uint_eq(cfg->n_listen, DG_CONFIG_MAX_LISTEN);
	ck_assert_uint_eq(port_of(&cfg->listen[15]), 1015);
	dg_config_free(cfg);
}
END_TEST

/* The same port on different addresses, and IPv4 next to IPv6, are fine. */
START_TEST(test_listen_distinct)
{
	dg_config *cfg =
	        parse_ok("{\"listen\": [\"127.0.0.1:5684\", \"127.0.0.2:5684\", \"[::1]:5684\"]}");

	ck_assert_uint_eq(cfg->n_listen, 3);
	dg_config_free(cfg);
}
END_TEST

START_TEST(test_log_values)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	static const dg_log_level level_values[] = {DG_LOG_ERROR, DG_LOG_WARN, DG_LOG_INFO,
	                                            DG_LOG_DEBUG};
	static const char *const formats[] = {"text", "json"};
	static const dg_log_format format_values[] = {DG_LOG_TEXT, DG_LOG_JSON};
	char json[128];
	dg_config *cfg;
	size_t i, j;

	for (i = 0; i < 4; i++) {
		for (j = 0; j < 2; j++) {
			snprintf(json, sizeof(json),
			         "{\"log\": {\"level\": \"%s\", \"format\": \"%s\"}}", levels[i],
			         formats[j]);
			cfg = parse_ok(json);
			ck_assert_int_eq(cfg->log_level, level_values[i]);
			ck_assert_int_eq(cfg->log_format, format_values[j]);
			dg_config_free(cfg);
		}
	}
}
END_TEST

static const struct {
	const char *key;
	size_t offset;
	uint32_t min, max;
} limit_keys[] = {
        {"max_sessions", offsetof(dg_limits, max_sessions), 1, 10000000},
        {"max_handshakes", offsetof(dg_limits, max_handshakes), 1, 1000000},
        {"handshake_timeout_s", offsetof(dg_limits, handshake_timeout_s), 1, 600},
        {"idle_timeout_s", offsetof(dg_limits, idle_timeout_s), 10, 604800},
        {"device_burst", offsetof(dg_limits, device_burst), 1, 100000},
        {"max_state_bytes", offsetof(dg_limits, max_state_bytes), 1024, 16777216},
};

#define N_LIMIT_KEYS (sizeof(limit_keys) / sizeof(limit_keys[0]))

static uint32_t
limit_of(const dg_config *cfg, size_t i)
{
	uint32_t v;

	memcpy(&v, (const char *)&cfg->limits + limit_keys[i].offset, sizeof(v));
	return v;
}

/* Each limit takes its minimum and its maximum, also written as 1.0e0-style numbers. */
START_TEST(test_limits_bounds)
{
	char json[128];
	dg_config *cfg;

	snprintf(json, sizeof(json), "{\"limits\": {\"%s\": %" PRIu32 "}}", limit_keys[_i].key,
	         limit_keys[_i].min);
	cfg = parse_ok(json);
	ck_assert_uint_eq(limit_of(cfg, (size_t)_i), limit_keys[_i].min);
	dg_config_free(cfg);

	snprintf(json, sizeof(json), "{\"limits\": {\"%s\": %" PRIu32 "}}", limit_keys[_i].key,
	         limit_keys[_i].max);
	cfg = parse_ok(json);
	ck_assert_uint_eq(limit_of(cfg, (size_t)_i), limit_keys[_i].max);
	dg_config_free(cfg);

	snprintf(json, sizeof(json), "{\"limits\": {\"%s\": %" PRIu32 ".0}}", limit_keys[_i].key,
	         limit_keys[_i].max);
	cfg = parse_ok(json);
	ck_assert_uint_eq(limit_of(cfg, (size_t)_i), limit_keys[_i].max);
	dg_config_free(cfg);
}
END_TEST

/* A number with an integral value counts as an integer, however written. */
START_TEST(test_limits_integral_forms)
{
	dg_config *cfg = parse_ok("{\"limits\": {\"max_sessions\": 1e3, \"max_handshakes\": 20.0,"
	                          " \"handshake_timeout_s\": 0.6e2, \"idle_timeout_s\": 1E+2}}");

	ck_assert_uint_eq(cfg->limits.max_sessions, 1000);
	ck_assert_uint_eq(cfg->limits.max_handshakes, 20);
	ck_assert_uint_eq(cfg->limits.handshake_timeout_s, 60);
	ck_assert_uint_eq(cfg->limits.idle_timeout_s, 100);
	dg_config_free(cfg);
}
END_TEST

/* Each limit rejects values below, above, fractional and of other types. */
static const char *const bad_limit_values[] = {
        "BELOW",  "ABOVE", "1.5",   "100.25", "-1", "1e300", "-1e300",
        "\"10\"", "true",  "false", "null",   "[]", "[10]",  "{}",
};

#define N_BAD_LIMIT_VALUES (sizeof(bad_limit_values) / sizeof(bad_limit_values[0]))

START_TEST(test_limits_bad)
{
	size_t k = (size_t)_i / N_BAD_LIMIT_VALUES, v = (size_t)_i % N_BAD_LIMIT_VALUES;
	char json[256], value[32], key[64], reason[64];

	if (strcmp(bad_limit_values[v], "BELOW") == 0)
		snprintf(value, sizeof(value), "%" PRIu32, limit_keys[k].min - 1);
	else if (strcmp(bad_limit_values[v], "ABOVE") == 0)
		snprintf(value, sizeof(value), "%" PRIu32, limit_keys[k].max + 1);
	else
		snprintf(value, sizeof(value), "%s", bad_limit_values[v]);
	snprintf(json, sizeof(json), "{\"limits\": {\"%s\": %s}}", limit_keys[k].key, value);
	snprintf(key, sizeof(key), "limits.%s", limit_keys[k].key);
	snprintf(reason, sizeof(reason), "must be an integer %" PRIu32 "..%" PRIu32,
	         limit_keys[k].min, limit_keys[k].max);
	parse_fails(json, key, reason);
}
END_TEST

/* workers: 0 (one per CPU) up to DG_CONFIG_MAX_WORKERS; anything else is named precisely. */
START_TEST(test_workers)
{
	static const char *const bad[] = {"65", "-1", "1.5", "\"2\"", "true", "null", "[]", "{}"};
	char json[128];
	dg_config *cfg;

	for (uint32_t n = 0; n <= DG_CONFIG_MAX_WORKERS; n += 16) {
		snprintf(json, sizeof(json), "{\"workers\": %" PRIu32 "}", n);
		cfg = parse_ok(json);
		ck_assert_uint_eq(cfg->workers, n);
		dg_config_free(cfg);
	}
	cfg = parse_ok("{\"workers\": 2.0}");
	ck_assert_uint_eq(cfg->workers, 2);
	dg_config_free(cfg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(json, sizeof(json), "{\"workers\": %s}", bad[i]);
		parse_fails(json, "workers", "must be an integer 0..64");
	}
}
END_TEST

/* Each path key rejects other types and the empty string. */
static const char *const path_keys[] = {"database", "projects_dir", "server_cert", "server_key"};

static const struct {
	const char *value;
	const char *reason;
} bad_path_values[] = {
        {"\"\"", "must not be empty"}, {"5", "must be a string"},  {"true", "must be a string"},
        {"null", "must be a string"},  {"[]", "must be a string"}, {"[\"a\"]", "must be a string"},
        {"{}", "must be a string"},
};

#define N_BAD_PATH_VALUES (sizeof(bad_path_values) / sizeof(bad_path_values[0]))

START_TEST(test_paths_bad)
{
	size_t k = (size_t)_i / N_BAD_PATH_VALUES, v = (size_t)_i % N_BAD_PATH_VALUES;
	char json[256];

	snprintf(json, sizeof(json), "{\"%s\": %s}", path_keys[k], bad_path_values[v].value);
	parse_fails(json, path_keys[k], bad_path_values[v].reason);
}
END_TEST

START_TEST(test_path_too_long)
{
	size_t n = PATH_MAX + 10;
	char *json = malloc(n + 32), err[ERRLEN], want[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_ptr_nonnull(json);
	strcpy(json, "{\"database\": \"/");
	memset(json + strlen(json), 'a', n);
	strcpy(json + 15 + n, "\"}");
	ck_assert_int_eq(parse_text(CONF, json, &cfg, err), -EINVAL);
	ck_assert_ptr_null(cfg);
	snprintf(want, sizeof(want), "devgate.json: database: path is longer than %d bytes",
	         PATH_MAX - 1);
	ck_assert_str_eq(err, want);
	free(json);
}
END_TEST

/* Everything else that must be rejected: JSON, keys, listen, log, pairs. */
static const struct {
	const char *json;
	const char *key;
	const char *reason;
} bad[] = {
        /* Malformed JSON names the line where the parser stopped. */
        {"", "line 1", "malformed JSON: unexpected end of file"},
        {"   \n\n", "line 3", "malformed JSON: unexpected end of file"},
        {"{", "line 1", "malformed JSON: unexpected end of file"},
        {"{\n\"database\": \"a\"\n", "line 3", "malformed JSON: unexpected end of file"},
        {"{\n  \"listen\": [\n    \"1.2.3.4:1\",\n  }\n}", "line 4", "malformed JSON"},
        {"{\n\"database\": 'a'\n}", "line 2", "malformed JSON"},
        {"{\"a\" 1}", "line 1", "malformed JSON"},
        {"{}\n{}", "line 2", "malformed JSON"},
        {"{} x", "line 1", "malformed JSON"},
        {"{\"limits\": {\"max_sessions\": 1,}}", "line 1", "malformed JSON"},
        {"{\"limits\": {\"max_sessions\": 0x10}}", "line 1", "malformed JSON"},
        {"{\"limits\": {\"max_sessions\": NaN}}", "line 1", "malformed JSON"},
        {"{\"limits\": {\"max_sessions\": Infinity}}", "line 1", "malformed JSON"},
        /* The top level must be an object. */
        {"[]", "top level", "must be an object"},
        {"\"{}\"", "top level", "must be an object"},
        {"42", "top level", "must be an object"},
        {"null", "top level", "must be an object"},
        /* Unknown keys, at top level and nested, and repeated keys. */
        {"{\"limitz\": {}}", "limitz", "unknown key"},
        {"{\"Listen\": [\"0.0.0.0:1\"]}", "Listen", "unknown key"},
        {"{\"\": 1}", "\"\"", "unknown key"},
        {"{\"listen\": [\"0.0.0.0:1\"], \"extra\": null}", "extra", "unknown key"},
        {"{\"limits\": {\"max_session\": 10}}", "limits.max_session", "unknown key"},
        {"{\"limits\": {\"level\": \"info\"}}", "limits.level", "unknown key"},
        {"{\"log\": {\"colour\": true}}", "log.colour", "unknown key"},
        {"{\"log\": {\"max_sessions\": 1}}", "log.max_sessions", "unknown key"},
        {"{\"a\\nb\\u001b[31m\": 1}", "a?b?[31m", "unknown key"},
        {"{\"database\": \"a\", \"database\": \"b\"}", "database", "duplicate key"},
        {"{\"limits\": {}, \"limits\": {}}", "limits", "duplicate key"},
        {"{\"limits\": {\"max_sessions\": 1, \"max_sessions\": 1}}", "limits.max_sessions",
         "duplicate key"},
        {"{\"log\": {\"level\": \"info\", \"level\": \"info\"}}", "log.level", "duplicate key"},
        /* Objects must be objects. */
        {"{\"log\": \"info\"}", "log", "must be an object"},
        {"{\"log\": []}", "log", "must be an object"},
        {"{\"log\": null}", "log", "must be an object"},
        {"{\"limits\": 5}", "limits", "must be an object"},
        {"{\"limits\": [{\"max_sessions\": 5}]}", "limits", "must be an object"},
        /* Log values. */
        {"{\"log\": {\"level\": \"verbose\"}}", "log.level",
         "must be one of error, warn, info, debug"},
        {"{\"log\": {\"level\": \"INFO\"}}", "log.level",
         "must be one of error, warn, info, debug"},
        {"{\"log\": {\"level\": \"\"}}", "log.level", "must be one of error, warn, info, debug"},
        {"{\"log\": {\"level\": 2}}", "log.level", "must be one of error, warn, info, debug"},
        {"{\"log\": {\"level\": null}}", "log.level", "must be one of error, warn, info, debug"},
        {"{\"log\": {\"format\": \"xml\"}}", "log.format", "must be one of text, json"},
        {"{\"log\": {\"format\": true}}", "log.format", "must be one of text, json"},
        {"{\"log\": {\"format\": [\"json\"]}}", "log.format", "must be one of text, json"},
        /* The listen array. */
        {"{\"listen\": \"0.0.0.0:5684\"}", "listen", "must be an array of \"host:port\" strings"},
        {"{\"listen\": {}}", "listen", "must be an array of \"host:port\" strings"},
        {"{\"listen\": null}", "listen", "must be an array of \"host:port\" strings"},
        {"{\"listen\": []}", "listen", "must have 1..16 entries"},
        {"{\"listen\": [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:4\","
         " \"127.0.0.1:5\", \"127.0.0.1:6\", \"127.0.0.1:7\", \"127.0.0.1:8\", \"127.0.0.1:9\","
         " \"127.0.0.1:10\", \"127.0.0.1:11\", \"127.0.0.1:12\", \"127.0.0.1:13\", "
         "\"127.0.0.1:14\","
         " \"127.0.0.1:15\", \"127.0.0.1:16\", \"127.0.0.1:17\"]}",
         "listen", "must have 1..16 entries"},
        {"{\"listen\": [5684]}", "listen[0]", "must be a string"},
        {"{\"listen\": [null]}", "listen[0]", "must be a string"},
        {"{\"listen\": [[\"1.2.3.4:5\"]]}", "listen[0]", "must be a string"},
        {"{\"listen\": [\"\"]}", "listen[0]", "must not be empty"},
        {"{\"listen\": [\"1.2.3.4\"]}", "listen[0]", "missing \":port\" in \"1.2.3.4\""},
        {"{\"listen\": [\"1.2.3.4:0\"]}", "listen[0]", "port must be 1..65535 in \"1.2.3.4:0\""},
        {"{\"listen\": [\"1.2.3.4:65536\"]}", "listen[0]",
         "port must be 1..65535 in \"1.2.3.4:65536\""},
        {"{\"listen\": [\"1.2.3.4:99999999999999999999\"]}", "listen[0]",
         "port must be 1..65535 in \"1.2.3.4:99999999999999999999\""},
        {"{\"listen\": [\"1.2.3.4:\"]}", "listen[0]", "port must be 1..65535 in \"1.2.3.4:\""},
        {"{\"listen\": [\"1.2.3.4:-1\"]}", "listen[0]", "port must be 1..65535 in \"1.2.3.4:-1\""},
        {"{\"listen\": [\"1.2.3.4:+80\"]}", "listen[0]",
         "port must be 1..65535 in \"1.2.3.4:+80\""},
        {"{\"listen\": [\"1.2.3.4:80x\"]}", "listen[0]",
         "port must be 1..65535 in \"1.2.3.4:80x\""},
        {"{\"listen\": [\"1.2.3.4: 80\"]}", "listen[0]",
         "port must be 1..65535 in \"1.2.3.4: 80\""},
        {"{\"listen\": [\"1.2.3.4:coap\"]}", "listen[0]",
         "port must be 1..65535 in \"1.2.3.4:coap\""},
        {"{\"listen\": [\"host:5684\"]}", "listen[0]",
         "host must be a numeric IPv4 address in \"host:5684\""},
        {"{\"listen\": [\"localhost:5684\"]}", "listen[0]",
         "host must be a numeric IPv4 address in \"localhost:5684\""},
        {"{\"listen\": [\":5684\"]}", "listen[0]",
         "host must be a numeric IPv4 address in \":5684\""},
        {"{\"listen\": [\"1.2.3:5684\"]}", "listen[0]",
         "host must be a numeric IPv4 address in \"1.2.3:5684\""},
        {"{\"listen\": [\"256.1.1.1:5684\"]}", "listen[0]",
         "host must be a numeric IPv4 address in \"256.1.1.1:5684\""},
        {"{\"listen\": [\" 1.2.3.4:5684\"]}", "listen[0]",
         "host must be a numeric IPv4 address in \" 1.2.3.4:5684\""},
        {"{\"listen\": [\"::1:5684\"]}", "listen[0]",
         "IPv6 address must be in brackets in \"::1:5684\""},
        {"{\"listen\": [\"[::1]\"]}", "listen[0]", "missing \":port\" in \"[::1]\""},
        {"{\"listen\": [\"[::1]5684\"]}", "listen[0]", "missing \":port\" in \"[::1]5684\""},
        {"{\"listen\": [\"[::1:5684\"]}", "listen[0]", "missing \"]\" in \"[::1:5684\""},
        {"{\"listen\": [\"[::1]:70000\"]}", "listen[0]",
         "port must be 1..65535 in \"[::1]:70000\""},
        {"{\"listen\": [\"[::1]:0\"]}", "listen[0]", "port must be 1..65535 in \"[::1]:0\""},
        {"{\"listen\": [\"[::1]:\"]}", "listen[0]", "port must be 1..65535 in \"[::1]:\""},
        {"{\"listen\": [\"[]:5684\"]}", "listen[0]",
         "host must be a numeric IPv6 address in \"[]:5684\""},
        {"{\"listen\": [\"[zz::1]:5684\"]}", "listen[0]",
         "host must be a numeric IPv6 address in \"[zz::1]:5684\""},
        {"{\"listen\": [\"[1.2.3.4]:5684\"]}", "listen[0]",
         "host must be a numeric IPv6 address in \"[1.2.3.4]:5684\""},
        {"{\"listen\": [\"[localhost]:5684\"]}", "listen[0]",
         "host must be a numeric IPv6 address in \"[localhost]:5684\""},
        {"{\"listen\": [\"[fe80::1%eth0]:5684\"]}", "listen[0]",
         "host must be a numeric IPv6 address in \"[fe80::1%eth0]:5684\""},
        {"{\"listen\": [\"[1111:2222:3333:4444:5555:6666:7777:8888:9999]:1\"]}", "listen[0]",
         "host must be a numeric IPv6 address in "
         "\"[1111:2222:3333:4444:5555:6666:7777:8888:9999]:1\""},
        {"{\"listen\": [\"[::1]:5684\\n\"]}", "listen[0]",
         "port must be 1..65535 in \"[::1]:5684?\""},
        {"{\"listen\": [\"12345678901234567890123456789012345678901234567890123456789012:1\"]}",
         "listen[0]", "must be at most 63 characters"},
        {"{\"listen\": [\"127.0.0.1:1\", \"bad\"]}", "listen[1]", "missing \":port\" in \"bad\""},
        {"{\"listen\": [\"127.0.0.1:1\", 2]}", "listen[1]", "must be a string"},
        {"{\"listen\": [\"127.0.0.1:1\", \"127.0.0.1:1\"]}", "listen[1]",
         "same address as listen[0]"},
        {"{\"listen\": [\"[::1]:1\", \"1.2.3.4:5\", \"[0:0::0001]:1\"]}", "listen[2]",
         "same address as listen[0]"},
        /* The certificate and key come as a pair. */
        {"{\"server_cert\": \"cert.pem\"}", "server_key", "required when server_cert is set"},
        {"{\"server_key\": \"key.pem\"}", "server_cert", "required when server_key is set"},
        /* The first error wins: file order, then cross-key checks. */
        {"{\"limitz\": 1, \"log\": 2}", "limitz", "unknown key"},
        {"{\"server_cert\": \"c\", \"log\": 2}", "log", "must be an object"},
};

START_TEST(test_errors)
{
	parse_fails(bad[_i].json, bad[_i].key, bad[_i].reason);
}
END_TEST

START_TEST(test_nul_byte)
{
	static const char text[] = "{\n\"database\": \"a\0b\"\n}";
	char err[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_int_eq(dg_config_parse(CONF, text, sizeof(text) - 1, &cfg, err, sizeof(err)),
	                 -EINVAL);
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err, "devgate.json: line 2: contains a NUL byte");
}
END_TEST

/* The text need not be NUL-terminated: only `len` bytes are read. */
START_TEST(test_not_terminated)
{
	static const char text[] = "{\"database\": \"x.db\"}garbage";
	char err[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_int_eq(dg_config_parse(CONF, text, 20, &cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg->database, "/etc/devgate/x.db");
	dg_config_free(cfg);

	ck_assert_int_eq(dg_config_parse(CONF, text, 0, &cfg, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "devgate.json: line 1: malformed JSON: unexpected end of file");
	ck_assert_int_eq(dg_config_parse(CONF, NULL, 0, &cfg, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "devgate.json: line 1: malformed JSON: unexpected end of file");
}
END_TEST

START_TEST(test_bom)
{
	dg_config *cfg = parse_ok("\xef\xbb\xbf{\"log\": {\"level\": \"warn\"}}");

	ck_assert_int_eq(cfg->log_level, DG_LOG_WARN);
	dg_config_free(cfg);
}
END_TEST

START_TEST(test_parse_too_large)
{
	size_t n = 1024 * 1024 + 1;
	char *text = malloc(n), err[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_ptr_nonnull(text);
	memset(text, ' ', n);
	text[0] = '{';
	text[n - 1] = '}';
	ck_assert_int_eq(dg_config_parse(CONF, text, n, &cfg, err, sizeof(err)), -EFBIG);
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err, "devgate.json: larger than 1 MiB");
	/* Exactly 1 MiB is accepted. */
	text[n - 2] = '}';
	ck_assert_int_eq(dg_config_parse(CONF, text, n - 1, &cfg, err, sizeof(err)), 0);
	dg_config_free(cfg);
	free(text);
}
END_TEST

/* A missing or short error buffer is no problem: the message is cut. */
START_TEST(test_err_buffer)
{
	char err[16];
	dg_config *cfg = NULL;

	ck_assert_int_eq(dg_config_parse(CONF, "{\"x\": 1}", 8, &cfg, NULL, 0), -EINVAL);
	ck_assert_int_eq(dg_config_parse(CONF, "{\"x\": 1}", 8, &cfg, err, 0), -EINVAL);
	ck_assert_int_eq(dg_config_parse(CONF, "{\"x\": 1}", 8, &cfg, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "devgate.json: x");
	ck_assert_int_eq(dg_config_parse(CONF, "{}", 2, &cfg, NULL, 0), 0);
	dg_config_free(cfg);
	dg_config_free(NULL);
}
END_TEST

/* Relative paths resolve against the config's directory; absolute ones stay. */
START_TEST(test_resolution)
{
	static const struct {
		const char *path, *dir, *database, *projects, *cert;
	} cases[] = {
	        {"/etc/devgate/devgate.json", "/etc/devgate", "/etc/devgate/devgate.db",
	         "/etc/devgate/p/q", "/etc/devgate/../tls/c.pem"},
	        {"conf/devgate.json", "conf", "conf/devgate.db", "conf/p/q", "conf/../tls/c.pem"},
	        {"a/b//devgate.json", "a/b", "a/b/devgate.db", "a/b/p/q", "a/b/../tls/c.pem"},
	        {"devgate.json", ".", "./devgate.db", "./p/q", "./../tls/c.pem"},
	        {"./devgate.json", ".", "./devgate.db", "./p/q", "./../tls/c.pem"},
	        {"/devgate.json", "/", "/devgate.db", "/p/q", "/../tls/c.pem"},
	};
	const char *json = "{\"projects_dir\": \"p/q\", \"server_cert\": \"../tls/c.pem\","
	                   " \"server_key\": \"/abs/k.pem\"}";
	char err[ERRLEN];
	dg_config *cfg;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cfg = NULL;
		ck_assert_msg(parse_text(cases[i].path, json, &cfg, err) == 0, "%s: %s",
		              cases[i].path, err);
		ck_assert_str_eq(cfg->path, cases[i].path);
		ck_assert_str_eq(cfg->dir, cases[i].dir);
		ck_assert_str_eq(cfg->database, cases[i].database);
		ck_assert_str_eq(cfg->projects_dir, cases[i].projects);
		ck_assert_str_eq(cfg->server_cert, cases[i].cert);
		ck_assert_str_eq(cfg->server_key, "/abs/k.pem");
		dg_config_free(cfg);
	}
}
END_TEST

/* Messages name the file by its base name. */
START_TEST(test_file_name_in_errors)
{
	char err[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_int_eq(parse_text("/srv/x/gw.json", "{\"limitz\": 1}", &cfg, err), -EINVAL);
	ck_assert_str_eq(err, "gw.json: limitz: unknown key");
	ck_assert_int_eq(parse_text("gw.json", "{\"limitz\": 1}", &cfg, err), -EINVAL);
	ck_assert_str_eq(err, "gw.json: limitz: unknown key");
}
END_TEST

/* Files for the load tests live in a fresh temporary directory. */
static char tmpdir[64];

static void
tmp_setup(void)
{
	strcpy(tmpdir, "/tmp/check_config.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void
tmp_teardown(void)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(tmpdir);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmpdir, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(tmpdir);
}

/* Writes `len` bytes into tmpdir/name and stores the file's path in `path`. */
static void
write_file(const char *name, const char *text, size_t len, char *path, size_t pathlen)
{
	FILE *f;

	snprintf(path, pathlen, "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_load_ok)
{
	static const char text[] = "{\n"
	                           "  \"listen\": [\"[::]:5684\"],\n"
	                           "  \"database\": \"state/dg.db\",\n"
	                           "  \"server_cert\": \"/etc/ssl/dg.pem\",\n"
	                           "  \"server_key\": \"dg.key\"\n"
	                           "}\n";
	char path[PATH_MAX], want[PATH_MAX + 32], err[ERRLEN];
	dg_config *cfg = NULL;

	write_file("devgate.json", text, sizeof(text) - 1, path, sizeof(path));
	ck_assert_msg(dg_config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(cfg->path, path);
	ck_assert_str_eq(cfg->dir, tmpdir);
	snprintf(want, sizeof(want), "%s/state/dg.db", tmpdir);
	ck_assert_str_eq(cfg->database, want);
	snprintf(want, sizeof(want), "%s/projects", tmpdir);
	ck_assert_str_eq(cfg->projects_dir, want);
	ck_assert_str_eq(cfg->server_cert, "/etc/ssl/dg.pem");
	snprintf(want, sizeof(want), "%s/dg.key", tmpdir);
	ck_assert_str_eq(cfg->server_key, want);
	ck_assert_int_eq(cfg->listen[0].addr.ss_family, AF_INET6);
	dg_config_free(cfg);
}
END_TEST

START_TEST(test_load_missing)
{
	char path[PATH_MAX], want[PATH_MAX + 64], err[ERRLEN];
	dg_config *cfg = (dg_config *)&cfg;

	snprintf(path, sizeof(path), "%s/nope.json", tmpdir);
	ck_assert_int_eq(dg_config_load(path, &cfg, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(cfg);
	snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(ENOENT));
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_load_directory)
{
	char want[PATH_MAX + 64], err[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_int_eq(dg_config_load(tmpdir, &cfg, err, sizeof(err)), -EISDIR);
	ck_assert_ptr_null(cfg);
	snprintf(want, sizeof(want), "%s: cannot read: %s", tmpdir, strerror(EISDIR));
	ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_load_too_large)
{
	size_t n = 1024 * 1024 + 1;
	char *text = malloc(n), path[PATH_MAX], want[PATH_MAX + 64], err[ERRLEN];
	dg_config *cfg = NULL;

	ck_assert_ptr_nonnull(text);
	memset(text, ' ', n);
	text[0] = '{';
	text[n - 1] = '}';
	write_file("big.json", text, n, path, sizeof(path));
	ck_assert_int_eq(dg_config_load(path, &cfg, err, sizeof(err)), -EFBIG);
	ck_assert_ptr_null(cfg);
	snprintf(want, sizeof(want), "%s: larger than 1 MiB", path);
	ck_assert_str_eq(err, want);

	/* Exactly 1 MiB still loads. */
	text[n - 2] = '}';
	write_file("big.json", text, n - 1, path, sizeof(path));
	ck_assert_int_eq(dg_config_load(path, &cfg, err, sizeof(err)), 0);
	dg_config_free(cfg);
	free(text);
}
END_TEST

START_TEST(test_load_malformed)
{
	static const char text[] = "{\n"
	                           "  \"database\": \"dg.db\",\n"
	                           "  \"log\": {\"level\": \"info\"\n"
	                           "  \"limits\": {}\n"
	                           "}\n";
	char path[PATH_MAX], err[ERRLEN];
	dg_config *cfg = NULL;

	write_file("gateway.json", text, sizeof(text) - 1, path, sizeof(path));
	ck_assert_int_eq(dg_config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err, "gateway.json: line 4: malformed JSON");
}
END_TEST

START_TEST(test_load_invalid)
{
	static const char text[] = "{\"limits\": {\"max_sessions\": 0}}\n";
	char path[PATH_MAX], err[ERRLEN];
	dg_config *cfg = NULL;

	write_file("devgate.json", text, sizeof(text) - 1, path, sizeof(path));
	ck_assert_int_eq(dg_config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err, "devgate.json: limits.max_sessions: must be an integer 1..10000000");
}
END_TEST

START_TEST(test_load_empty)
{
	char path[PATH_MAX], err[ERRLEN];
	dg_config *cfg = NULL;

	write_file("devgate.json", "", 0, path, sizeof(path));
	ck_assert_int_eq(dg_config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "devgate.json: line 1: malformed JSON: unexpected end of file");
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_empty_objects);
	tcase_add_test(tc, test_every_key);
	tcase_add_loop_test(tc, test_listen_good, 0, N(good_listen));
	tcase_add_test(tc, test_listen_sixteen);
	tcase_add_test(tc, test_listen_distinct);
	tcase_add_test(tc, test_log_values);
	tcase_add_loop_test(tc, test_limits_bounds, 0, N(limit_keys));
	tcase_add_test(tc, test_limits_integral_forms);
	tcase_add_test(tc, test_bom);
	tcase_add_test(tc, test_not_terminated);
	tcase_add_test(tc, test_resolution);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_errors, 0, N(bad));
	tcase_add_loop_test(tc, test_limits_bad, 0, N(limit_keys) * N(bad_limit_values));
	tcase_add_loop_test(tc, test_paths_bad, 0, N(path_keys) * N(bad_path_values));
	tcase_add_test(tc, test_path_too_long);
	tcase_add_test(tc, test_nul_byte);
	tcase_add_test(tc, test_parse_too_large);
	tcase_add_test(tc, test_err_buffer);
	tcase_add_test(tc, test_file_name_in_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
	tcase_add_test(tc, test_load_ok);
	tcase_add_test(tc, test_load_missing);
	tcase_add_test(tc, test_load_directory);
	tcase_add_test(tc, test_load_too_large);
	tcase_add_test(tc, test_workers);
	tcase_add_test(tc, test_load_malformed);
	tcase_add_test(tc, test_load_invalid);
	tcase_add_test(tc, test_load_empty);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
