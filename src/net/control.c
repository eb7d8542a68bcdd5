/*
 * The control loop: signals, reload, watches, polls and the watchdog.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "devgate/confdir.h"
#include "devgate/rpc.h"
#include "devgate/session.h"
#include "devgate/control.h"
#include "devgate/data.h"
#include "devgate/log.h"
#include "devgate/metrics.h"
#include "devgate/wheel.h"

/* Changes under projects_dir are taken in after this much quiet. */
#define RELOAD_DEBOUNCE_MS 250
/* How often the store is asked whether the CLI changed what the registry holds. */
#define SERIAL_POLL_MS 500
#define MAX_WATCHES    1024
/* How often the store is asked for state changes the CLI made. */
#define CHANGES_POLL_MS 250

typedef struct watch {
	uv_fs_event_t h;
	dg_control *c;
	char only[256]; /* Non-empty: react only to events about this entry (the parent's watch). */
} watch;

struct dg_control {
	uv_loop_t *loop;
	dg_server *srv;
	dg_store *store;
	dg_metrics *metrics; /* Borrowed, or NULL. */
	uv_timer_t watchdog;
	uv_timer_t changes_poll;
	/*
	 * The CLI's state changes are read on the store's reader thread, one
	 * read at a time: changes_inflight is set here and cleared by the
	 * reader's completion, which also advances changes_seen.
	 */
	_Atomic int64_t changes_seen;
	atomic_int changes_inflight;
	uv_timer_t debounce;
	uv_timer_t serial_poll;
	watch *watches[MAX_WATCHES];
	size_t n_watches;
	uv_signal_t sigterm, sigint, sighup;
	int stopping;
};

static void rewatch(dg_control *c);
static void unwatch(dg_control *c);

/* Closes the control loop's handles; they finish closing on the loop's next run. */
static void
close_handles(dg_control *c)
{
	uv_close((uv_handle_t *)&c->sigterm, NULL);
	uv_close((uv_handle_t *)&c->sigint, NULL);
	uv_close((uv_handle_t *)&c->sighup, NULL);
	uv_close((uv_handle_t *)&c->debounce, NULL);
	uv_close((uv_handle_t *)&c->serial_poll, NULL);
	uv_close((uv_handle_t *)&c->changes_poll, NULL);
	uv_close((uv_handle_t *)&c->watchdog, NULL);
	unwatch(c);
}

static void
shutdown_all(dg_control *c, int signum)
{
	if (c->stopping) {
		dg_log(DG_LOG_WARN, "server.exit", "second signal %d: exiting at once", signum);
		_exit(0);
	}
	c->stopping = 1;
	sd_notify(0, "STOPPING=1");
	dg_log(DG_LOG_INFO, "server.stopping", "signal %d: stopping %zu workers", signum,
	       dg_server_workers(c->srv));
	/* Waits for workers on threads; one on this loop stops when the loop runs on. */
	dg_server_stop(c->srv);
	close_handles(c);
}

/* Logs a setting SIGHUP cannot change; returns 1 when it differs. */
static int
needs_restart(const char *key, int differs)
{
	if (differs)
		dg_log(DG_LOG_WARN, "reload.restart_needed",
		       "%s changed; it takes effect at the next restart", key);
	return differs;
}

static int
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * SIGHUP: reads devgate.json again. A bad file keeps the running
 * configuration. Log settings and limits take effect now; listen
 * addresses, the database, the server certificate, metrics_listen and
 * workers are logged as needing a restart. Returns 0 or a negative errno.
 */
static int
reload_config(dg_control *c)
{
	char err[512];
	dg_config *cfg = NULL;
	const dg_config *old = dg_server_config(c->srv);
	int rc = dg_config_load(old->path, &cfg, err, sizeof(err));

	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "reload.failed", "%s; keeping the running configuration", err);
		return rc;
	}
	int differs = cfg->n_listen != old->n_listen;
	for (size_t i = 0; !differs && i < cfg->n_listen; i++)
		differs = strcmp(cfg->listen[i].text, old->listen[i].text) != 0;
	needs_restart("listen", differs);
	needs_restart("database", !same_str(cfg->database, old->database));
	needs_restart("server_cert", !same_str(cfg->server_cert, old->server_cert) ||
	                                     !same_str(cfg->server_key, old->server_key));
	needs_restart("metrics_listen",
	              cfg->metrics_enabled != old->metrics_enabled ||
	                      strcmp(cfg->metrics_listen.text, old->metrics_listen.text) != 0);
	needs_restart("workers", cfg->workers != old->workers);
	dg_log_init(cfg->log_level, cfg->log_format);
	dg_store_set_max_queue(c->store, cfg->limits.max_write_queue);
	/* Sessions read limits through their worker's config on every use: they follow at once. */
	dg_server_set_config(c->srv, cfg);
	return 0;
}

/*
 * Re-reads the projects directory into the store (full) or only rebuilds
 * the snapshot from the store (after a CLI change), then hands it to the
 * server, which sends it to every worker.
 */
static void
reload(dg_control *c, int full, const char *why, int config_ok)
{
	int n_errors = 0, rc = 0;
	dg_registry *reg = NULL;

	if (full)
		rc = dg_confdir_import(dg_server_config(c->srv)->projects_dir, c->store, &n_errors);
	if (rc == 0 || rc == -ENOENT)
		rc = dg_registry_build(c->store, &reg);
	if (rc != 0) {
		dg_log(DG_LOG_ERROR, "reload.failed", "%s: keeping the running configuration: %s",
		       why, strerror(-rc));
		if (c->metrics != NULL)
			dg_metrics_reload(c->metrics, 0);
		return;
	}
	if (c->metrics != NULL)
		dg_metrics_reload(c->metrics, config_ok);
	size_t n_psk = dg_registry_psk_count(reg);
	dg_server_set_registry(c->srv, reg);
	if (full)
		rewatch(c);
	dg_log(DG_LOG_INFO, "reload.done", "%s: %zu PSK credentials, %d files skipped", why, n_psk,
	       n_errors);
}

static void
debounce_cb(uv_timer_t *t)
{
	reload(t->data, 1, "projects directory changed", 1);
}

static void
fs_event_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	watch *w = dg_container_of(h, watch, h);
	(void)events;
	(void)status;
	/* The parent of projects_dir may hold the database: only projects_dir itself counts. */
	if (w->only[0] != '\0' && (filename == NULL || strcmp(filename, w->only) != 0))
		return;
	/* Restarted by every event: the reload runs once things are quiet. */
	uv_timer_start(&w->c->debounce, debounce_cb, RELOAD_DEBOUNCE_MS, 0);
}

static void
watch_close_cb(uv_handle_t *h)
{
	free(dg_container_of((uv_fs_event_t *)(void *)h, watch, h));
}

static void
add_watch(dg_control *c, const char *path)
{
	watch *w;
	if (c->n_watches == MAX_WATCHES)
		return;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return;
	w->c = c;
	if (uv_fs_event_init(c->loop, &w->h) != 0) {
		free(w);
		return;
	}
	if (uv_fs_event_start(&w->h, fs_event_cb, path, 0) != 0) {
		uv_close((uv_handle_t *)&w->h, watch_close_cb);
		return;
	}
	c->watches[c->n_watches++] = w;
}

static void
unwatch(dg_control *c)
{
	for (size_t i = 0; i < c->n_watches; i++)
		uv_close((uv_handle_t *)&c->watches[i]->h, watch_close_cb);
	c->n_watches = 0;
}

/*
 * Watches projects_dir, each project directory and its cas/ and crls/:
 * inotify is not recursive, so each directory gets its own watch, made
 * again after every reload.
 */
static void
rewatch(dg_control *c)
{
	const char *dir = dg_server_config(c->srv)->projects_dir;
	size_t before = c->n_watches;
	uv_dirent_t de;
	uv_fs_t req;

	unwatch(c);
	add_watch(c, dir);
	/*
	 * And its parent, for projects_dir itself: removed (rm -rf) and made
	 * again, or replaced by a rename, it is watched anew on the reload
	 * that follows, instead of never again.
	 */
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dir);
	for (size_t n = strlen(parent); n > 1 && parent[n - 1] == '/'; n--)
		parent[n - 1] = '\0';
	char *slash = strrchr(parent, '/');
	const char *base = slash != NULL ? slash + 1 : parent;
	if (*base != '\0' && strlen(base) < sizeof(c->watches[0]->only)) {
		char name[256];
		memcpy(name, base, strlen(base) + 1); /* Its length was checked above. */
		if (slash == NULL)
			snprintf(parent, sizeof(parent), ".");
		else if (slash == parent)
			parent[1] = '\0';
		else
			*slash = '\0';
		size_t had = c->n_watches;
		add_watch(c, parent);
		if (c->n_watches > had)
			snprintf(c->watches[had]->only, sizeof(c->watches[had]->only), "%s", name);
	}
	if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0) {
		uv_fs_req_cleanup(&req);
		return;
	}
	while (uv_fs_scandir_next(&req, &de) != UV_EOF) {
		char path[4096];
		struct stat sb;
		if (de.name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de.name);
		if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
			continue;
		add_watch(c, path);
		snprintf(path, sizeof(path), "%s/%s/cas", dir, de.name);
		if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
			add_watch(c, path);
		snprintf(path, sizeof(path), "%s/%s/crls", dir, de.name);
		if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
			add_watch(c, path);
	}
	uv_fs_req_cleanup(&req);
	/*
	 * A directory that appeared since the last reload (a new project, its
	 * cas/) may have been filled before its watch existed: read once more.
	 */
	if (before != 0 && c->n_watches != before)
		uv_timer_start(&c->debounce, debounce_cb, RELOAD_DEBOUNCE_MS, 0);
}

/* The CLI changed the store (a block, a PSK added or removed): rebuild the snapshot. */
static void
serial_poll_cb(uv_timer_t *t)
{
	dg_control *c = t->data;
	int64_t serial = dg_store_registry_serial(c->store);
	if (serial >= 0 && serial != dg_registry_serial(dg_server_registry(c->srv)))
		reload(c, 0, "store changed", 1);
}

static void
free_mark(void *arg, int rc)
{
	(void)rc;
	free(arg);
}

/*
 * One change of the feed, to the workers: a state change with its
 * document, settings and OTA manifest changes of a device or a project, an
 * RPC call (a call for a device with no session is answered "offline" at
 * once, in the store, for the CLI that waits on it).
 */
static void
dispatch_change(dg_control *c, const dg_change_item *it)
{
	switch (it->kind) {
	case DG_OBS_STATE:
		dg_server_state_changed(c->srv, it->device_id, it->path, it->doc);
		break;
	case DG_OBS_RPC:
		if (it->doc == NULL)
			break; /* Gone, or no longer pending (the CLI gave up). */
		if (dg_server_rpc(c->srv, it->device_id, it->ref, it->path, it->doc,
		                  it->deadline_ms) == -ENOENT) {
			dg_rpc_mark *m = calloc(1, sizeof(*m));
			if (m == NULL)
				break;
			m->row_id = it->ref;
			m->status = "offline";
			if (dg_store_job(c->store, dg_rpc_mark_apply, free_mark, m) != 0)
				free(m);
		}
		break;
	default:
		dg_server_resource_changed(c->srv, it->kind, it->project_id, it->device_id);
		break;
	}
}

/*
 * Runs on the store's reader thread once the CLI's changes are read: each
 * goes, with the document as it is now, to the worker that holds the
 * device (a message; routing is safe from any thread).
 */
static void
changes_read_done(void *arg, int rc)
{
	dg_changes *ch = arg;
	dg_control *c = ch->owner;
	if (rc == 0) {
		for (size_t i = 0; i < ch->n; i++)
			dispatch_change(c, &ch->items[i]);
		atomic_store(&c->changes_seen, ch->last_id);
	}
	dg_data_changes_clear(ch);
	free(ch);
	atomic_store(&c->changes_inflight, 0);
}

/* The CLI may have changed some state: read its changes off the loop, one read at a time. */
static void
changes_poll_cb(uv_timer_t *t)
{
	dg_control *c = t->data;
	if (c->stopping || atomic_load(&c->changes_inflight))
		return;
	dg_changes *ch = calloc(1, sizeof(*ch));
	if (ch == NULL)
		return;
	ch->after_id = atomic_load(&c->changes_seen);
	ch->owner = c;
	atomic_store(&c->changes_inflight, 1);
	if (dg_store_read(c->store, dg_data_changes_read, changes_read_done, ch) != 0) {
		atomic_store(&c->changes_inflight, 0);
		free(ch);
	}
}

/* systemd's watchdog: a ping from the loop at half the interval proves the loop turns. */
static void
watchdog_cb(uv_timer_t *t)
{
	(void)t;
	sd_notify(0, "WATCHDOG=1");
}

static void
signal_cb(uv_signal_t *h, int signum)
{
	dg_control *c = h->data;
	if (signum == SIGHUP) {
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		           (unsigned long long)uv_hrtime() / 1000);
		int config_ok = reload_config(c) == 0;
		reload(c, 1, "SIGHUP", config_ok);
		sd_notify(0, "READY=1");
	} else
		shutdown_all(c, signum);
}

int
dg_control_new(uv_loop_t *loop, dg_server *srv, dg_store *store, dg_control **out)
{
	dg_control *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->loop = loop;
	c->srv = srv;
	c->store = store;
	uv_signal_init(loop, &c->sigterm);
	uv_signal_init(loop, &c->sigint);
	uv_signal_init(loop, &c->sighup);
	c->sigterm.data = c->sigint.data = c->sighup.data = c;
	uv_timer_init(loop, &c->debounce);
	c->debounce.data = c;
	uv_timer_init(loop, &c->serial_poll);
	c->serial_poll.data = c;
	uv_timer_init(loop, &c->watchdog);
	c->watchdog.data = c;
	uv_timer_init(loop, &c->changes_poll);
	c->changes_poll.data = c;
	c->changes_seen = dg_data_changes_max(store);
	*out = c;
	return 0;
}

void
dg_control_set_metrics(dg_control *c, dg_metrics *m)
{
	c->metrics = m;
}

int
dg_control_start(dg_control *c)
{
	uv_signal_start(&c->sigterm, signal_cb, SIGTERM);
	uv_signal_start(&c->sigint, signal_cb, SIGINT);
	uv_signal_start(&c->sighup, signal_cb, SIGHUP);
	uv_timer_start(&c->serial_poll, serial_poll_cb, SERIAL_POLL_MS, SERIAL_POLL_MS);
	uv_timer_start(&c->changes_poll, changes_poll_cb, CHANGES_POLL_MS, CHANGES_POLL_MS);
	uint64_t wd_usec = 0;
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec >= 2000)
		uv_timer_start(&c->watchdog, watchdog_cb, wd_usec / 2000, wd_usec / 2000);
	rewatch(c);
	sd_notifyf(0, "READY=1\nSTATUS=serving %zu addresses with %zu workers",
	           dg_server_config(c->srv)->n_listen, dg_server_workers(c->srv));
	return 0;
}

void
dg_control_free(dg_control *c)
{
	if (c == NULL)
		return;
	if (!c->stopping) {
		/* Never stopped (a start-up that failed): its handles close on the caller's run. */
		c->stopping = 1;
		close_handles(c);
		uv_run(c->loop, UV_RUN_DEFAULT);
	}
	free(c);
}
