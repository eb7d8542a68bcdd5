/*
 * What every devgate subcommand shares: one table-driven argument parser
 * with generated usage texts, the group dispatch, loading the config and
 * opening its store, and the printers of times and JSON.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devgate/cli.h"
#include "devgate/data.h"
#include "devgate/log.h"

/* One option: its names, the bit a subcommand takes it by, where it goes. */
typedef struct opt {
	const char *name;
	char letter;     /* Short form, or 0. */
	unsigned bit;    /* 0: every subcommand takes it. */
	const char *arg; /* The value's name, or NULL for a flag. */
	size_t off;      /* Of a const char * (value) or an int (flag) in dg_cli. */
	const char *help;
} opt;

/*
 * Where the count of a repeatable option (whose off is that of an array of
 * DG_CLI_MAX_MULTI values) is kept, or 0 for an option given once.
 */
static size_t
count_off(const opt *o)
{
	if (o->off == offsetof(dg_cli, devices))
		return offsetof(dg_cli, n_devices);
	if (o->off == offsetof(dg_cli, artifacts))
		return offsetof(dg_cli, n_artifacts);
	return 0;
}

#define HELP_OFF ((size_t)-1)

static const opt opts[] = {
        {"config", 'c', DG_CLI_CONFIG, "FILE", offsetof(dg_cli, config),
         "the daemon's devgate.json"},
        {"json", 0, DG_CLI_JSON, NULL, offsetof(dg_cli, json), "print JSON"},
        {"identity", 0, DG_CLI_IDENTITY, "ID", offsetof(dg_cli, identity),
         "<psk-id>@<project> (default: <device>-<UTC time>@<project>)"},
        {"key", 0, DG_CLI_KEY, "K", offsetof(dg_cli, key), "the key, as text"},
        {"key-hex", 0, DG_CLI_KEY_HEX, "HEX", offsetof(dg_cli, key_hex), "the key, in hex"},
        {"generate", 0, DG_CLI_GENERATE, NULL, offsetof(dg_cli, generate),
         "make a random 16-byte key and print it once"},
        {"path", 0, DG_CLI_PATH, "P", offsetof(dg_cli, path), "only records at this path"},
        {"since", 0, DG_CLI_SINCE, "T", offsetof(dg_cli, since),
         "only records since T: ms or s since the epoch, or ISO 8601"},
        {"limit", 0, DG_CLI_LIMIT, "N", offsetof(dg_cli, limit), "at most the N newest records"},
        {"level", 0, DG_CLI_LEVEL, "L", offsetof(dg_cli, level), "only lines of this level"},
        {"timeout", 0, DG_CLI_TIMEOUT, "S", offsetof(dg_cli, timeout), "give up after S seconds"},
        {"device", 0, DG_CLI_DEVICE, "D", offsetof(dg_cli, devices), "the device D (repeatable)"},
        {"type", 0, DG_CLI_TYPE, "T", offsetof(dg_cli, type), "int, float, bool or string"},
        {"artifact", 0, DG_CLI_ARTIFACT, "P@V", offsetof(dg_cli, artifacts),
         "the artifact of package P, version V (repeatable)"},
        {"all", 0, DG_CLI_ALL, NULL, offsetof(dg_cli, all), "every device of the project"},
        {"help", 'h', 0, NULL, HELP_OFF, "print this help and exit"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static int
takes(const dg_cli_cmd *cmd, const opt *o)
{
	return o->bit == 0 || (cmd->opts & o->bit) != 0;
}

static const opt *
find_long(const dg_cli_cmd *cmd, const char *name, size_t len)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
			return takes(cmd, &opts[i]) ? &opts[i] : NULL;
	return NULL;
}

static const opt *
find_short(const dg_cli_cmd *cmd, char letter)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (opts[i].letter == letter)
			return takes(cmd, &opts[i]) ? &opts[i] : NULL;
	return NULL;
}

void
dg_cli_usage(const dg_cli_cmd *cmd, FILE *f)
{
	fprintf(f, "usage: devgate %s%s%s\n\n%s\n\noptions:\n", cmd->name,
	        cmd->synopsis[0] != '\0' ? " " : "", cmd->synopsis, cmd->summary);
	for (size_t i = 0; i < N_OPTS; i++) {
		const opt *o = &opts[i];
		char names[48];
		if (!takes(cmd, o))
			continue;
		if (o->letter != 0)
			snprintf(names, sizeof(names), "-%c, --%s%s%s", o->letter, o->name,
			         o->arg != NULL ? " " : "", o->arg != NULL ? o->arg : "");
		else
			snprintf(names, sizeof(names), "    --%s%s%s", o->name,
			         o->arg != NULL ? " " : "", o->arg != NULL ? o->arg : "");
		fprintf(f, "  %-20s %s\n", names, o->help);
	}
	if ((cmd->opts & DG_CLI_CONFIG) != 0)
		fputs("\nWithout -c: $DEVGATE_CONFIG when set, else " DG_CLI_DEFAULT_CONFIG ".\n",
		      f);
	fputs("\nAn argument that starts with '-' and a digit or '.' is a value, not an option;\n"
	      "`--` ends the options.\n",
	      f);
}

/* Stores an option's value (or sets its flag); returns 0 or -ECANCELED for help. */
static int
apply(const dg_cli_cmd *cmd, const opt *o, const char *value, dg_cli *c)
{
	if (o->off == HELP_OFF) {
		dg_cli_usage(cmd, stdout);
		return -ECANCELED;
	}
	if (o->arg == NULL) {
		*(int *)(void *)((char *)c + o->off) = 1;
	} else if (count_off(o) != 0) {
		int *n = (int *)(void *)((char *)c + count_off(o));
		if (*n == DG_CLI_MAX_MULTI) {
			fprintf(stderr, "devgate %s: --%s at most %d times\n", cmd->name, o->name,
			        DG_CLI_MAX_MULTI);
			return -EINVAL;
		}
		((const char **)(void *)((char *)c + o->off))[(*n)++] = value;
	} else {
		*(const char **)(void *)((char *)c + o->off) = value;
	}
	if (o->off == offsetof(dg_cli, config))
		c->config_from = DG_CLI_FROM_OPTION;
	return 0;
}

/* Whether a word is an option (or a cluster of short ones), not a value. */
static int
is_option(const char *a)
{
	if (a[0] != '-' || a[1] == '\0')
		return 0;
	if (a[1] == '-')
		return 1;
	return !(a[1] >= '0' && a[1] <= '9') && a[1] != '.';
}

int
dg_cli_parse(const dg_cli_cmd *cmd, int argc, char **argv, dg_cli *c)
{
	int i, only_pos = 0, rc;

	memset(c, 0, sizeof(*c));
	c->cmd = cmd;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const opt *o;

		if (only_pos || !is_option(a)) {
			if (c->n_pos == cmd->max_pos) {
				fprintf(stderr, "devgate %s: unexpected argument %s\n", cmd->name,
				        a);
				goto bad;
			}
			c->pos[c->n_pos++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_pos = 1;
			continue;
		}
		if (a[1] == '-') {
			const char *eq = strchr(a + 2, '=');
			size_t len = eq != NULL ? (size_t)(eq - (a + 2)) : strlen(a + 2);
			const char *value = eq != NULL ? eq + 1 : NULL;

			o = find_long(cmd, a + 2, len);
			if (o == NULL) {
				fprintf(stderr, "devgate %s: unknown option %.*s\n", cmd->name,
				        (int)len + 2, a);
				goto bad;
			}
			if (o->arg == NULL && value != NULL) {
				fprintf(stderr, "devgate %s: --%s takes no value\n", cmd->name,
				        o->name);
				goto bad;
			}
			if (o->arg != NULL && value == NULL) {
				if (i + 1 == argc) {
					fprintf(stderr, "devgate %s: --%s needs a value\n",
					        cmd->name, o->name);
					goto bad;
				}
				value = argv[++i];
			}
			if ((rc = apply(cmd, o, value, c)) != 0)
				return rc;
			continue;
		}
		/* One or more short options; one with a value takes the rest or the next word. */
		for (const char *p = a + 1; *p != '\0'; p++) {
			const char *value = NULL;
			o = find_short(cmd, *p);
			if (o == NULL) {
				fprintf(stderr, "devgate %s: unknown option -%c\n", cmd->name, *p);
				goto bad;
			}
			if (o->arg != NULL) {
				if (p[1] != '\0') {
					value = p + 1;
				} else if (i + 1 < argc) {
					value = argv[++i];
				} else {
					fprintf(stderr, "devgate %s: -%c needs a value\n",
					        cmd->name, *p);
					goto bad;
				}
			}
			if ((rc = apply(cmd, o, value, c)) != 0)
				return rc;
			if (value != NULL)
				break;
		}
	}
	if (c->n_pos < cmd->min_pos) {
		fprintf(stderr, "devgate %s: missing arguments\n", cmd->name);
		goto bad;
	}
	if ((cmd->opts & DG_CLI_CONFIG) != 0 && c->config == NULL) {
		const char *env = getenv("DEVGATE_CONFIG");
		if (env != NULL && env[0] != '\0') {
			c->config = env;
			c->config_from = DG_CLI_FROM_ENV;
		} else {
			c->config = DG_CLI_DEFAULT_CONFIG;
			c->config_from = DG_CLI_FROM_DEFAULT;
		}
	}
	return 0;
bad:
	fputc('\n', stderr);
	dg_cli_usage(cmd, stderr);
	return -EINVAL;
}

int
dg_cli_exit(int rc)
{
	return rc == -ECANCELED ? 0 : 2;
}

int
dg_cli_run(const dg_cli_cmd *cmd, int argc, char **argv)
{
	dg_cli c;
	int rc = dg_cli_parse(cmd, argc, argv, &c);
	return rc != 0 ? dg_cli_exit(rc) : cmd->run(&c);
}

static void
group_usage(const char *group, const dg_cli_cmd *cmds, size_t n, FILE *f)
{
	size_t skip = strlen(group) + 1;

	fprintf(f, "usage: devgate %s <subcommand> [options] [<args>]\n\nsubcommands:\n", group);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name + skip, cmds[i].summary);
	fprintf(f, "\nRun `devgate %s <subcommand> --help` for its usage.\n", group);
}

int
dg_cli_group(const char *group, const dg_cli_cmd *cmds, size_t n, int argc, char **argv)
{
	size_t skip = strlen(group) + 1;

	if (argc < 2) {
		fprintf(stderr, "devgate %s: missing subcommand\n\n", group);
		group_usage(group, cmds, n, stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		group_usage(group, cmds, n, stdout);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(cmds[i].name + skip, argv[1]) == 0)
			return dg_cli_run(&cmds[i], argc - 1, argv + 1);
	fprintf(stderr, "devgate %s: unknown subcommand %s\n\n", group, argv[1]);
	group_usage(group, cmds, n, stderr);
	return 2;
}

int
dg_cli_load_config(const dg_cli *c, dg_config **cfg)
{
	char err[512];
	int rc = dg_config_load(c->config, cfg, err, sizeof(err));

	if (rc == 0)
		return 0;
	fprintf(stderr, "devgate: %s\n", err);
	if (c->config_from == DG_CLI_FROM_ENV)
		fprintf(stderr, "devgate: (the config named by DEVGATE_CONFIG; -c FILE gives "
		                "another)\n");
	else if (c->config_from == DG_CLI_FROM_DEFAULT)
		fprintf(stderr, "devgate: (the default config; give -c FILE or set "
		                "DEVGATE_CONFIG)\n");
	return rc;
}

int
dg_cli_open(const dg_cli *c, dg_config **cfg, dg_store **store)
{
	char err[512];

	*store = NULL;
	if (dg_cli_load_config(c, cfg) != 0)
		return -EINVAL;
	dg_log_init(DG_LOG_WARN, DG_LOG_TEXT);
	if (dg_store_open((*cfg)->database, 0, store, err, sizeof(err)) != 0) {
		fprintf(stderr, "devgate: %s\n", err);
		dg_config_free(*cfg);
		*cfg = NULL;
		return -EIO;
	}
	return 0;
}

void
dg_cli_close(dg_config *cfg, dg_store *store)
{
	dg_store_close(store);
	dg_config_free(cfg);
}

void
dg_cli_iso8601(int64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int
dg_cli_print_json(cJSON *v)
{
	char *text = cJSON_Print(v);
	cJSON_Delete(v);
	if (text == NULL)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

int
dg_cli_find_device(dg_store *store, const char *slug, const char *name, int64_t *id)
{
	int rc = dg_data_device_id(store, slug, name, id);
	if (rc == -ENOENT)
		fprintf(stderr, "devgate: no device %s in project %s\n", name, slug);
	else if (rc != 0)
		fprintf(stderr, "devgate: %s\n", strerror(-rc));
	return rc;
}
