/*
 * A hashed timer wheel: deadlines for any number of sessions at O(1) per
 * insert, cancel and expiry, driven by one uv_timer tick.
 *
 * Entries are intrusive (embed a dg_wheel_entry, recover the owner with
 * container_of). A deadline further away than one turn of the wheel stays
 * in its slot and is skipped until its turn comes.
 */
#ifndef DEVGATE_WHEEL_H
#define DEVGATE_WHEEL_H

#include <stddef.h>
#include <stdint.h>

#define DG_WHEEL_TICK_MS 100u
#define DG_WHEEL_SLOTS   1024u

typedef struct dg_wheel_entry {
	struct dg_wheel_entry *next, *prev; /* prev == NULL: not scheduled. */
	int tag; /* The owner's: which of its timers this is. Untouched by the wheel. */
	uint64_t deadline_ms;
} dg_wheel_entry;

typedef struct dg_wheel {
	dg_wheel_entry slots[DG_WHEEL_SLOTS]; /* List heads. */
	uint64_t now_tick;                    /* Last tick processed. */
	size_t count;
} dg_wheel;

#define dg_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Initialises an empty wheel whose clock starts at `now_ms`. */
void dg_wheel_init(dg_wheel *w, uint64_t now_ms);

/* Initialises an entry as not scheduled. */
void dg_wheel_entry_init(dg_wheel_entry *e);

/* Returns 1 when the entry is scheduled. */
int dg_wheel_pending(const dg_wheel_entry *e);

/*
 * Schedules (or reschedules) `e` to expire at `deadline_ms`. A deadline in
 * the past expires on the next tick.
 */
void dg_wheel_schedule(dg_wheel *w, dg_wheel_entry *e, uint64_t deadline_ms);

/* Unschedules `e`; a no-op when it is not scheduled. */
void dg_wheel_cancel(dg_wheel *w, dg_wheel_entry *e);

/*
 * Advances the wheel to `now_ms` and calls `fire` for each entry whose
 * deadline has passed, after unscheduling it. `fire` may schedule or
 * cancel any entry, including the one it was called for, and may free the
 * owner of the entry it was called for (but no other entry's owner).
 * Returns the number of entries fired.
 */
size_t dg_wheel_advance(dg_wheel *w, uint64_t now_ms, void (*fire)(dg_wheel_entry *e, void *arg),
                        void *arg);

#endif
