/*
 * The devgate command line: the argument parser every subcommand shares,
 * loading the config and opening its store, printing helpers, and one
 * entry point per command group (src/cli/<group>.c).
 *
 * A command group is `int dg_cli_<group>(int argc, char **argv)` with
 * argv[0] the group's own word ("state"); it returns the process exit
 * status: 0 on success (and after --help), 1 when the work failed, 2 on a
 * usage error, after printing the usage to stderr.
 */
#ifndef DEVGATE_CLI_H
#define DEVGATE_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "devgate/config.h"
#include "devgate/store.h"

#define DEVGATE_VERSION "0.1.0"

/* The config file used when neither -c nor $DEVGATE_CONFIG names one. */
#define DG_CLI_DEFAULT_CONFIG "/etc/devgate/devgate.json"

/* The options a subcommand can take; -h and --help are always taken. */
enum {
	DG_CLI_CONFIG = 1u << 0,    /* -c, --config FILE */
	DG_CLI_JSON = 1u << 1,      /* --json */
	DG_CLI_IDENTITY = 1u << 2,  /* --identity ID */
	DG_CLI_KEY = 1u << 3,       /* --key K */
	DG_CLI_KEY_HEX = 1u << 4,   /* --key-hex HEX */
	DG_CLI_GENERATE = 1u << 5,  /* --generate */
	DG_CLI_PATH = 1u << 6,      /* --path P */
	DG_CLI_SINCE = 1u << 7,     /* --since T */
	DG_CLI_LIMIT = 1u << 8,     /* --limit N */
	DG_CLI_LEVEL = 1u << 9,     /* --level L */
	DG_CLI_TIMEOUT = 1u << 10,  /* --timeout S */
	DG_CLI_DEVICE = 1u << 11,   /* --device D, repeatable */
	DG_CLI_TYPE = 1u << 12,     /* --type T */
	DG_CLI_ARTIFACT = 1u << 13, /* --artifact PACKAGE@VERSION, repeatable */
	DG_CLI_ALL = 1u << 14,      /* --all */
};

/* How many times a repeatable option (--device, --artifact) may be given. */
#define DG_CLI_MAX_MULTI 64

/* Where the config path of a command line came from. */
typedef enum dg_cli_config_from {
	DG_CLI_FROM_OPTION,  /* -c FILE */
	DG_CLI_FROM_ENV,     /* $DEVGATE_CONFIG */
	DG_CLI_FROM_DEFAULT, /* DG_CLI_DEFAULT_CONFIG */
} dg_cli_config_from;

#define DG_CLI_MAX_POS 4

typedef struct dg_cli dg_cli;

/*
 * One subcommand: its full name as typed after `devgate` ("state set"),
 * the rest of its synopsis, a one-line description, the options it takes
 * (DG_CLI_* bits), how many positional arguments, and what runs it. run
 * gets the parsed command line and returns the exit status.
 */
typedef struct dg_cli_cmd {
	const char *name;
	const char *synopsis;
	const char *summary;
	unsigned opts;
	int min_pos, max_pos;
	int (*run)(const dg_cli *c);
} dg_cli_cmd;

/* A parsed command line. Strings point into argv. */
struct dg_cli {
	const dg_cli_cmd *cmd;
	const char *config;
	dg_cli_config_from config_from;
	int json;
	const char *identity;
	const char *key;
	const char *key_hex;
	int generate;
	const char *path;
	const char *since;
	const char *limit;
	const char *level;
	const char *timeout;
	const char *type;
	int all;
	const char *devices[DG_CLI_MAX_MULTI]; /* Every --device, in order. */
	int n_devices;
	const char *artifacts[DG_CLI_MAX_MULTI]; /* Every --artifact, in order. */
	int n_artifacts;
	const char *pos[DG_CLI_MAX_POS];
	int n_pos;
};

/*
 * Parses a subcommand's arguments, argv[0] being its last word, into c.
 * Options and positional arguments may come in any order; an argument
 * that starts with '-' followed by a digit or '.' ("-234.25") is a
 * positional value, and everything after `--` is positional. An option's
 * value is the rest of the word (-cFILE, --config=FILE) or the next
 * argument, whatever it looks like. Without -c, the config is
 * $DEVGATE_CONFIG when set and not empty, else DG_CLI_DEFAULT_CONFIG.
 * Returns 0 when the command should run; -ECANCELED after printing the
 * usage to stdout for -h or --help; -EINVAL after printing what is wrong
 * and the usage to stderr. dg_cli_exit() maps the errors to exit statuses.
 */
int dg_cli_parse(const dg_cli_cmd *cmd, int argc, char **argv, dg_cli *c);

/* Returns the exit status for a dg_cli_parse() error: 0 after help, else 2. */
int dg_cli_exit(int rc);

/* Prints a subcommand's synopsis, description and options to f. */
void dg_cli_usage(const dg_cli_cmd *cmd, FILE *f);

/* Parses argv for cmd (argv[0] being its last word) and runs it; returns the exit status. */
int dg_cli_run(const dg_cli_cmd *cmd, int argc, char **argv);

/*
 * Runs the subcommand of a group named by argv[1] (argv[0] is the
 * group's word) among the n in cmds, whose names all start with the
 * group's. With -h or --help instead, prints the group's usage (its
 * subcommands and their descriptions) to stdout and returns 0; with none
 * or an unknown one, prints why and the usage to stderr and returns 2.
 */
int dg_cli_group(const char *group, const dg_cli_cmd *cmds, size_t n, int argc, char **argv);

/*
 * Loads c's config into *cfg. Returns 0, or a negative errno after
 * printing why to stderr, with the path tried and where it came from.
 */
int dg_cli_load_config(const dg_cli *c, dg_config **cfg);

/*
 * Loads c's config and opens its store for an admin command (logging at
 * warn and above, as text). Returns 0, or a negative errno after printing
 * why; release both with dg_cli_close().
 */
int dg_cli_open(const dg_cli *c, dg_config **cfg, dg_store **store);

/* Closes what dg_cli_open() opened; NULLs are no-ops. */
void dg_cli_close(dg_config *cfg, dg_store *store);

/* Formats ms since the epoch as ISO 8601 UTC ("2024-01-02T03:04:05Z") into out. */
void dg_cli_iso8601(int64_t ms, char *out, size_t cap);

/* Prints a JSON value and a newline to stdout; takes ownership of v. Returns 0 or -ENOMEM. */
int dg_cli_print_json(cJSON *v);

/*
 * Looks up the id of device `name` in project `slug`. Returns 0, or a
 * negative errno (-ENOENT when there is no such device) after printing why.
 */
int dg_cli_find_device(dg_store *store, const char *slug, const char *name, int64_t *id);

/* The command groups, one per file in src/cli/. */
int dg_cli_serve(int argc, char **argv);
int dg_cli_devices(int argc, char **argv);
int dg_cli_psk(int argc, char **argv);
int dg_cli_projects(int argc, char **argv);
int dg_cli_state(int argc, char **argv);
int dg_cli_stream(int argc, char **argv);
int dg_cli_logs(int argc, char **argv);
int dg_cli_check_config(int argc, char **argv);
int dg_cli_health(int argc, char **argv);
int dg_cli_rpc(int argc, char **argv);
int dg_cli_settings(int argc, char **argv);
int dg_cli_ota(int argc, char **argv);

#endif
