/*
 * The device table: device ID -> the worker and session that hold it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "devgate/devtab.h"
#include "devgate/map.h"

struct dg_devtab {
	pthread_mutex_t mu;
	dg_map *map; /* Device ID -> a malloc'ed dg_devtab_owner. */
};

static void
free_entry(void *v, void *arg)
{
	(void)arg;
	free(v);
}

int
dg_devtab_new(dg_devtab **out)
{
	dg_devtab *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	if (dg_map_new(&t->map) != 0) {
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->mu, NULL);
	*out = t;
	return 0;
}

void
dg_devtab_free(dg_devtab *t)
{
	if (t == NULL)
		return;
	dg_map_each(t->map, free_entry, NULL);
	dg_map_free(t->map);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

static int
same(const dg_devtab_owner *a, const dg_devtab_owner *b)
{
	return a->worker == b->worker && a->session_id == b->session_id;
}

int
dg_devtab_claim(dg_devtab *t, int64_t device_id, dg_devtab_owner owner, dg_devtab_owner *old)
{
	dg_map_key key;
	int rc = 0;

	dg_map_key_u64(&key, (uint64_t)device_id);
	pthread_mutex_lock(&t->mu);
	dg_devtab_owner *e = dg_map_get(t->map, &key);
	if (e != NULL) {
		if (!same(e, &owner)) {
			*old = *e;
			*e = owner;
			rc = 1;
		}
		goto out;
	}
	e = malloc(sizeof(*e));
	if (e == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	*e = owner;
	if (dg_map_put(t->map, &key, e, NULL) != 0) {
		free(e);
		rc = -ENOMEM;
	}
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

void
dg_devtab_release(dg_devtab *t, int64_t device_id, dg_devtab_owner owner)
{
	dg_map_key key;

	dg_map_key_u64(&key, (uint64_t)device_id);
	pthread_mutex_lock(&t->mu);
	dg_devtab_owner *e = dg_map_get(t->map, &key);
	if (e != NULL && same(e, &owner)) {
		dg_map_del(t->map, &key);
		free(e);
	}
	pthread_mutex_unlock(&t->mu);
}

int
dg_devtab_lookup(dg_devtab *t, int64_t device_id, dg_devtab_owner *out)
{
	dg_map_key key;
	int rc = -ENOENT;

	dg_map_key_u64(&key, (uint64_t)device_id);
	pthread_mutex_lock(&t->mu);
	const dg_devtab_owner *e = dg_map_get(t->map, &key);
	if (e != NULL) {
		*out = *e;
		rc = 0;
	}
	pthread_mutex_unlock(&t->mu);
	return rc;
}

size_t
dg_devtab_count(dg_devtab *t)
{
	pthread_mutex_lock(&t->mu);
	size_t n = dg_map_count(t->map);
	pthread_mutex_unlock(&t->mu);
	return n;
}
