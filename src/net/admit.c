/*
 * Admission limits shared by the worker loops.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "devgate/admit.h"
#include "devgate/map.h"

struct dg_admit {
	_Atomic size_t sessions;
	_Atomic size_t handshakes;
	pthread_mutex_t mu;
	dg_map *sources; /* Source network -> its half-open handshakes (a count). */
};

int
dg_admit_new(dg_admit **out)
{
	dg_admit *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	if (dg_map_new(&a->sources) != 0) {
		free(a);
		return -ENOMEM;
	}
	atomic_init(&a->sessions, 0);
	atomic_init(&a->handshakes, 0);
	pthread_mutex_init(&a->mu, NULL);
	*out = a;
	return 0;
}

void
dg_admit_free(dg_admit *a)
{
	if (a == NULL)
		return;
	dg_map_free(a->sources);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

size_t
dg_admit_sessions(const dg_admit *a)
{
	return atomic_load_explicit(&a->sessions, memory_order_relaxed);
}

/* Adds one to *n unless it is `max` already; returns 1 when it did. */
static int
take(_Atomic size_t *n, size_t max)
{
	size_t cur = atomic_load_explicit(n, memory_order_relaxed);
	while (cur < max)
		if (atomic_compare_exchange_weak_explicit(n, &cur, cur + 1, memory_order_relaxed,
		                                          memory_order_relaxed))
			return 1;
	return 0;
}

int
dg_admit_session(dg_admit *a, uint32_t max)
{
	return take(&a->sessions, max);
}

void
dg_admit_session_end(dg_admit *a)
{
	atomic_fetch_sub_explicit(&a->sessions, 1, memory_order_relaxed);
}

int
dg_admit_handshake(dg_admit *a, const struct sockaddr *from, uint32_t per_source, uint32_t max,
                   const char **limit)
{
	dg_map_key key;
	int rc = 0;

	dg_map_key_source(&key, from);
	pthread_mutex_lock(&a->mu);
	size_t n = (size_t)(uintptr_t)dg_map_get(a->sources, &key);
	if (n >= per_source) {
		*limit = "limits.max_handshakes_per_source";
		rc = -EAGAIN;
		goto out;
	}
	if (!take(&a->handshakes, max)) {
		*limit = "limits.max_handshakes";
		rc = -EAGAIN;
		goto out;
	}
	if (dg_map_put(a->sources, &key, (void *)(uintptr_t)(n + 1), NULL) != 0) {
		atomic_fetch_sub_explicit(&a->handshakes, 1, memory_order_relaxed);
		rc = -ENOMEM;
	}
out:
	pthread_mutex_unlock(&a->mu);
	return rc;
}

void
dg_admit_handshake_end(dg_admit *a, const struct sockaddr *from)
{
	dg_map_key key;

	dg_map_key_source(&key, from);
	pthread_mutex_lock(&a->mu);
	size_t n = (size_t)(uintptr_t)dg_map_get(a->sources, &key);
	if (n <= 1)
		dg_map_del(a->sources, &key);
	else
		dg_map_put(a->sources, &key, (void *)(uintptr_t)(n - 1), NULL);
	pthread_mutex_unlock(&a->mu);
	atomic_fetch_sub_explicit(&a->handshakes, 1, memory_order_relaxed);
}

size_t
dg_admit_handshakes(const dg_admit *a)
{
	return atomic_load_explicit(&a->handshakes, memory_order_relaxed);
}

size_t
dg_admit_source(dg_admit *a, const struct sockaddr *from)
{
	dg_map_key key;

	dg_map_key_source(&key, from);
	pthread_mutex_lock(&a->mu);
	size_t n = (size_t)(uintptr_t)dg_map_get(a->sources, &key);
	pthread_mutex_unlock(&a->mu);
	return n;
}
