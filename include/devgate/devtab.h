/*
 * The device table: which worker holds each device's one live session.
 * Shared by every worker loop under one mutex; touched once per
 * established or closed session, never per datagram. It records, it does
 * not act: a caller told that another worker holds the device's old
 * session asks that worker to close it.
 */
#ifndef DEVGATE_DEVTAB_H
#define DEVGATE_DEVTAB_H

#include <stdint.h>

typedef struct dg_devtab dg_devtab;

/* A session, named by its worker and its ID on that worker. */
typedef struct dg_devtab_owner {
	uint32_t worker;
	uint64_t session_id;
} dg_devtab_owner;

/* Creates an empty table. Returns 0 or -ENOMEM. */
int dg_devtab_new(dg_devtab **out);

/* Frees the table. NULL is a no-op. */
void dg_devtab_free(dg_devtab *t);

/*
 * Makes `owner` the live session of `device_id`. Returns 1 and sets *old
 * when another session held it (the caller closes that one), 0 when none
 * did or `owner` already held it, -ENOMEM when it cannot be recorded.
 */
int dg_devtab_claim(dg_devtab *t, int64_t device_id, dg_devtab_owner owner,
                    dg_devtab_owner *old);

/* Forgets `device_id`'s entry if `owner` still holds it (a newer claim stays). */
void dg_devtab_release(dg_devtab *t, int64_t device_id, dg_devtab_owner owner);

/* Sets *out to the session that holds `device_id` and returns 0, or returns -ENOENT. */
int dg_devtab_lookup(dg_devtab *t, int64_t device_id, dg_devtab_owner *out);

/* The number of devices with a live session. */
size_t dg_devtab_count(dg_devtab *t);

#endif
