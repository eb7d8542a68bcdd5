/*
 * Hashed timer wheel; see wheel.h.
 */
#include "devgate/wheel.h"

void
dg_wheel_init(dg_wheel *w, uint64_t now_ms)
{
	for (size_t i = 0; i < DG_WHEEL_SLOTS; i++)
		w->slots[i].next = w->slots[i].prev = &w->slots[i];
	w->now_tick = now_ms / DG_WHEEL_TICK_MS;
	w->count = 0;
}

void
dg_wheel_entry_init(dg_wheel_entry *e)
{
	e->next = e->prev = NULL;
	e->deadline_ms = 0;
}

int
dg_wheel_pending(const dg_wheel_entry *e)
{
	return e->prev != NULL;
}

void
dg_wheel_cancel(dg_wheel *w, dg_wheel_entry *e)
{
	if (e->prev == NULL)
		return;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->next = e->prev = NULL;
	w->count--;
}

void
dg_wheel_schedule(dg_wheel *w, dg_wheel_entry *e, uint64_t deadline_ms)
{
	uint64_t tick = deadline_ms / DG_WHEEL_TICK_MS;
	dg_wheel_entry *head;

	dg_wheel_cancel(w, e);
	/* Round up so that an entry never fires before its deadline. */
	if (deadline_ms % DG_WHEEL_TICK_MS != 0)
		tick++;
	if (tick <= w->now_tick)
		tick = w->now_tick + 1;
	e->deadline_ms = deadline_ms;
	head = &w->slots[tick % DG_WHEEL_SLOTS];
	e->prev = head->prev;
	e->next = head;
	head->prev->next = e;
	head->prev = e;
	w->count++;
}

size_t
dg_wheel_advance(dg_wheel *w, uint64_t now_ms, void (*fire)(dg_wheel_entry *e, void *arg),
                 void *arg)
{
	uint64_t target = now_ms / DG_WHEEL_TICK_MS;
	size_t fired = 0;

	while (w->now_tick < target) {
		w->now_tick++;
		dg_wheel_entry *head = &w->slots[w->now_tick % DG_WHEEL_SLOTS];
		/*
		 * Move the due entries onto a private list first, so that
		 * whatever `fire` schedules lands in the wheel proper and is
		 * not visited again in this pass.
		 */
		dg_wheel_entry due = {&due, &due, 0, 0};
		for (dg_wheel_entry *e = head->next, *next; e != head; e = next) {
			next = e->next;
			if (e->deadline_ms / DG_WHEEL_TICK_MS > w->now_tick)
				continue; /* A later turn of the wheel. */
			e->prev->next = e->next;
			e->next->prev = e->prev;
			e->prev = due.prev;
			e->next = &due;
			due.prev->next = e;
			due.prev = e;
		}
		while (due.next != &due) {
			dg_wheel_entry *e = due.next;
			due.next = e->next;
			e->next->prev = &due;
			e->next = e->prev = NULL;
			w->count--;
			fire(e, arg);
			fired++;
		}
		if (w->count == 0)
			w->now_tick = target;
	}
	return fired;
}
