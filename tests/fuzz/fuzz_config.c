/*
 * Fuzz target for the config parser: any bytes go through
 * dg_config_parse(), which must either return a config that satisfies
 * its invariants or fail with a one-line message and no config.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "devgate/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts unless a parsed config is complete and within its limits. */
static void
check_config(const dg_config *cfg)
{
	size_t i;

	if (cfg->n_listen < 1 || cfg->n_listen > DG_CONFIG_MAX_LISTEN)
		abort();
	for (i = 0; i < cfg->n_listen; i++) {
		int family = cfg->listen[i].addr.ss_family;
		if ((family != AF_INET && family != AF_INET6) ||
		    memchr(cfg->listen[i].text, '\0', sizeof(cfg->listen[i].text)) == NULL)
			abort();
	}
	if (cfg->path == NULL || cfg->dir == NULL || cfg->database == NULL ||
	    cfg->projects_dir == NULL || (cfg->server_cert == NULL) != (cfg->server_key == NULL))
		abort();
	if (cfg->limits.max_sessions < 1 || cfg->limits.max_sessions > 10000000 ||
	    cfg->limits.max_handshakes < 1 || cfg->limits.max_handshakes > 1000000 ||
	    cfg->limits.handshake_timeout_s < 1 || cfg->limits.handshake_timeout_s > 600 ||
	    cfg->limits.idle_timeout_s < 10 || cfg->limits.idle_timeout_s > 604800)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	dg_config *cfg = NULL;
	int rc;

	rc = dg_config_parse("fuzz/devgate.json", (const char *)data, size, &cfg, err, sizeof(err));
	if (rc == 0) {
		check_config(cfg);
	} else {
		/* A failure leaves no config and names the file in one line. */
		if (cfg != NULL || rc >= 0 || strncmp(err, "devgate.json: ", 14) != 0 ||
		    strchr(err, '\n') != NULL)
			abort();
	}
	dg_config_free(cfg);
	return 0;
}
