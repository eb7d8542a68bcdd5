/*
 * `devgate check-config` validates the config and its config directory;
 * `devgate health` asks the running daemon for a DTLS HelloVerifyRequest.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "devgate/cli.h"
#include "devgate/confdir.h"
#include "devgate/dtls.h"

static int
run_check_config(const dg_cli *c)
{
	dg_config *cfg = NULL;
	int bad;

	if (dg_cli_load_config(c, &cfg) != 0) {
		printf("error: %s is not valid\n", c->config);
		return 1;
	}
	printf("%s: ok (%zu listen addresses, database %s, projects %s)\n", c->config,
	       cfg->n_listen, cfg->database, cfg->projects_dir);
	bad = dg_confdir_check(cfg->projects_dir, stdout);
	if (bad > 0)
		printf("%d errors\n", bad);
	dg_config_free(cfg);
	return bad > 0 ? 1 : 0;
}

/*
 * Sends a DTLS ClientHello to the daemon's first listen address (a
 * wildcard address is reached on loopback) and waits up to two seconds for
 * the HelloVerifyRequest that every healthy listener answers with
 * statelessly. Returns 0 when it came.
 */
static int
run_health(const dg_cli *c)
{
	dg_config *cfg = NULL;
	struct sockaddr_storage to;
	uint8_t hello[13 + 12 + 42], reply[1500];
	int fd = -1, rc = 1;

	if (dg_cli_load_config(c, &cfg) != 0)
		return 1;
	memcpy(&to, &cfg->listen[0].addr, sizeof(to));
	if (to.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&to;
		if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
			s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&to;
		if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
			s6->sin6_addr = in6addr_loopback;
	}
	/* Record header, handshake header, then a minimal ClientHello body. */
	static const uint8_t head[] = {22, 0xfe, 0xfd, 0,  0, 0, 0, 0, 0, 0, 0, 0, 54,
	                               1,  0,    0,    42, 0, 0, 0, 0, 0, 0, 0, 42};
	memcpy(hello, head, sizeof(head));
	uint8_t *b = hello + sizeof(head);
	b[0] = 0xfe;
	b[1] = 0xfd;
	if (getrandom(b + 2, 32, 0) != 32)
		goto out;
	static const uint8_t tail[] = {0, 0, 0, 2, 0xc0, 0xa8, 1, 0};
	memcpy(b + 34, tail, sizeof(tail));
	fd = socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	socklen_t tolen =
	        to.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (sendto(fd, hello, sizeof(hello), 0, (struct sockaddr *)&to, tolen) < 0) {
		fprintf(stderr, "devgate health: %s: %s\n", cfg->listen[0].text, strerror(errno));
		goto out;
	}
	ssize_t n = recv(fd, reply, sizeof(reply), 0);
	dg_dtls_record rec;
	if (n > 0 && dg_dtls_peek(reply, (size_t)n, &rec) == 0 && rec.handshake_type == 3) {
		printf("ok: %s answers\n", cfg->listen[0].text);
		rc = 0;
	} else {
		fprintf(stderr, "devgate health: no answer from %s\n", cfg->listen[0].text);
	}
out:
	if (fd >= 0)
		close(fd);
	dg_config_free(cfg);
	return rc;
}

static const dg_cli_cmd check_cmd = {
        "check-config",  "[-c FILE]", "Validates devgate.json and every project directory.",
        DG_CLI_CONFIG,   0,           0,
        run_check_config};

static const dg_cli_cmd health_cmd = {
        "health",      "[-c FILE]", "Exits 0 when the daemon answers a DTLS ClientHello.",
        DG_CLI_CONFIG, 0,           0,
        run_health};

int
dg_cli_check_config(int argc, char **argv)
{
	return dg_cli_run(&check_cmd, argc, argv);
}

int
dg_cli_health(int argc, char **argv)
{
	return dg_cli_run(&health_cmd, argc, argv);
}
