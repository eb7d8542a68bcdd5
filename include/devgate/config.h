/*
 * devgate.json: typed, validated settings with defaults.
 *
 * The struct is plain data, read by every module and never changed after
 * dg_config_load() returns; a reload builds a new one.
 */
#ifndef DEVGATE_CONFIG_H
#define DEVGATE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "devgate/log.h"

#define DG_CONFIG_MAX_LISTEN 16
/* The most worker loops `workers` may ask for. */
#define DG_CONFIG_MAX_WORKERS 64

typedef struct dg_listen_addr {
	struct sockaddr_storage addr; /* AF_INET or AF_INET6, port set. */
	char text[64];                /* As written in the file. */
} dg_listen_addr;

typedef struct dg_limits {
	uint32_t max_sessions;        /* 1..10000000, default 100000. */
	uint32_t max_handshakes;      /* 1..1000000, default 1000. */
	uint32_t handshake_timeout_s; /* 1..600, default 30. */
	/* 1..600, default 5: until the client's second flight (capped by handshake_timeout_s). */
	uint32_t handshake_first_flight_s;
	uint32_t max_handshakes_per_source; /* 1..1000000, default 32: per IPv4 /32 or IPv6 /64. */
	uint32_t idle_timeout_s;            /* 10..604800, default 10800. */
	uint32_t max_body;              /* 1024..16777216, default 65536: a Block1 body's limit. */
	uint32_t device_requests_per_s; /* 1..100000, default 20; over it 4.29. */
	uint32_t shutdown_timeout_s;    /* 1..300, default 5: SIGTERM to exit at the latest. */
	uint32_t max_observers;         /* 1..1024, default 16: observations per device. */
	uint32_t max_write_queue;       /* 1..10000000, default 10000: the store's queued writes. */
	uint32_t device_burst;    /* 1..100000, default 64: requests a session may make at once. */
	uint32_t max_state_bytes; /* 1024..16777216, default 65536: a state document's size. */
} dg_limits;

typedef struct dg_config {
	char *path; /* The file, as given. */
	char *dir;  /* Its directory; relative paths resolve here. */
	dg_listen_addr listen[DG_CONFIG_MAX_LISTEN];
	size_t n_listen;          /* Default: one, 0.0.0.0:5684. */
	char *database;           /* Absolute or config-relative, resolved. */
	char *projects_dir;       /* Resolved; default "projects" beside the file. */
	char *server_cert;        /* Resolved, or NULL: generate a development one. */
	char *server_key;         /* Resolved, or NULL (then server_cert is NULL). */
	dg_log_level log_level;   /* Default info. */
	dg_log_format log_format; /* Default text. */
	dg_limits limits;
	/* 0..DG_CONFIG_MAX_WORKERS, default 0: one worker loop per online CPU. */
	uint32_t workers;
	dg_listen_addr metrics_listen; /* Default 127.0.0.1:9684. */
	int metrics_enabled;           /* 0 when metrics_listen is "". */
} dg_config;

/*
 * Reads and validates the file at `path`. On success stores a new config
 * in *out (free with dg_config_free) and returns 0. On failure returns a
 * negative errno and writes one line into err (e.g.
 * "devgate.json: limits.max_sessions: must be an integer 1..10000000").
 */
int dg_config_load(const char *path, dg_config **out, char *err, size_t errlen);

/*
 * As dg_config_load(), from text already in memory; `path` is used in
 * messages and to resolve relative paths. `text` need not be
 * NUL-terminated.
 */
int dg_config_parse(const char *path, const char *text, size_t len, dg_config **out, char *err,
                    size_t errlen);

/* Frees a config; NULL is a no-op. */
void dg_config_free(dg_config *cfg);

#endif
