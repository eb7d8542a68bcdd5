/*
 * The devgate command: `devgate serve` runs the gateway; the other
 * command groups administer its store. Each group lives in src/cli/;
 * adding one is its file and one line in the table below.
 */
#include <stdio.h>
#include <string.h>

#include <uv.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "devgate/cli.h"

/* A command group: its word, its entry point, what it is for. */
typedef struct group {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} group;

static const group groups[] = {
        {"serve", dg_cli_serve, "run the gateway"},
        {"devices", dg_cli_devices, "list devices, block and unblock them"},
        {"psk", dg_cli_psk, "add, list and remove PSK credentials"},
        {"projects", dg_cli_projects, "list projects and their CAs"},
        {"state", dg_cli_state, "get, set and delete values of a device's LightDB State"},
        {"stream", dg_cli_stream, "list a device's LightDB Stream records"},
        {"logs", dg_cli_logs, "list a device's log lines"},
        {"settings", dg_cli_settings, "get, set and delete settings, show what devices applied"},
        {"rpc", dg_cli_rpc, "call a method on a device, list the calls made"},
        {"ota", dg_cli_ota, "OTA artifacts, releases and rollbacks, devices' update status"},
        {"check-config", dg_cli_check_config, "validate the config and its projects"},
        {"health", dg_cli_health, "check that the running daemon answers"},
};

#define N_GROUPS (sizeof(groups) / sizeof(groups[0]))

static void
usage(FILE *f)
{
	fputs("usage: devgate <command> [<subcommand>] [options] [<args>]\n"
	      "       devgate --version\n"
	      "       devgate --help\n\ncommands:\n",
	      f);
	for (size_t i = 0; i < N_GROUPS; i++)
		fprintf(f, "  %-14s %s\n", groups[i].name, groups[i].summary);
	fputs("\nRun `devgate <command> --help` for a command's usage. Every command takes\n"
	      "-c FILE, the daemon's devgate.json; without it $DEVGATE_CONFIG, "
	      "else\n" DG_CLI_DEFAULT_CONFIG ".\n",
	      f);
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("devgate %s (wolfSSL %s, libuv %s)\n", DEVGATE_VERSION,
		       wolfSSL_lib_version(), uv_version_string());
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < N_GROUPS; i++)
		if (strcmp(argv[1], groups[i].name) == 0)
			return groups[i].run(argc - 1, argv + 1);
	fprintf(stderr, "devgate: unknown command %s\n\n", argv[1]);
	usage(stderr);
	return 2;
}
