/*
 * Unit tests of the timer wheel: expiry never before the deadline and in
 * the tick the deadline rounds up to, cancel, reschedule, deadlines past
 * one turn of the wheel, callbacks that reschedule, cancel or free, and
 * 100000 entries.
 */
#include <check.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devgate/wheel.h"

#define TICK DG_WHEEL_TICK_MS
#define TURN ((uint64_t)DG_WHEEL_SLOTS * DG_WHEEL_TICK_MS)
/* A start time that is not a multiple of the tick. */
#define T0 1000037u

typedef struct timer {
	dg_wheel_entry e;
	int fired;
	uint64_t fired_at; /* The now_ms of the advance that fired it. */
	int period;        /* > 0: reschedules itself this many ms later, `repeat` times. */
	int repeat;
	struct timer *victim; /* Cancelled from this one's callback when not NULL. */
	int free_self;
} timer;

static dg_wheel w;
static uint64_t now;

/* The time of the tick an entry with deadline d fires in, if scheduled early enough. */
static uint64_t
due_time(uint64_t d)
{
	return (d + TICK - 1) / TICK * TICK;
}

static void
on_fire(dg_wheel_entry *e, void *arg)
{
	timer *t = dg_container_of(e, timer, e);
	int *calls = arg;

	if (calls != NULL)
		(*calls)++;
	if (dg_wheel_pending(e))
		ck_abort_msg("entry still pending in its callback");
	t->fired++;
	t->fired_at = now;
	if (t->victim != NULL)
		dg_wheel_cancel(&w, &t->victim->e);
	if (t->period > 0 && t->repeat > 0) {
		t->repeat--;
		dg_wheel_schedule(&w, &t->e, now + (uint64_t)t->period);
	}
	if (t->free_self)
		free(t);
}

static size_t
advance(uint64_t to)
{
	now = to;
	return dg_wheel_advance(&w, to, on_fire, NULL);
}

static void
timer_init(timer *t)
{
	memset(t, 0, sizeof(*t));
	dg_wheel_entry_init(&t->e);
}

static void
setup(void)
{
	now = T0;
	dg_wheel_init(&w, T0);
}

START_TEST(test_init)
{
	timer t;

	ck_assert_uint_eq(w.count, 0);
	timer_init(&t);
	ck_assert_int_eq(dg_wheel_pending(&t.e), 0);
	/* Cancelling what is not scheduled is a no-op. */
	dg_wheel_cancel(&w, &t.e);
	ck_assert_uint_eq(w.count, 0);
	ck_assert_uint_eq(advance(T0 + 10 * TURN), 0);
}
END_TEST

START_TEST(test_never_early_right_tick)
{
	/* Deadlines on, just before and just after tick boundaries, advanced one ms at a time. */
	static const uint64_t offs[] = {1,   2,   62,  63,  64,  99,   100,  101, 163,
	                                199, 200, 201, 250, 999, 1000, 1001, 4321};
	enum { N = sizeof(offs) / sizeof(offs[0]) };
	timer t[N];
	uint64_t end = T0 + 5000;

	for (size_t i = 0; i < N; i++) {
		timer_init(&t[i]);
		dg_wheel_schedule(&w, &t[i].e, T0 + offs[i]);
		ck_assert_int_eq(dg_wheel_pending(&t[i].e), 1);
		ck_assert_uint_eq(t[i].e.deadline_ms, T0 + offs[i]);
	}
	ck_assert_uint_eq(w.count, N);
	for (uint64_t ms = T0 + 1; ms <= end; ms++) {
		advance(ms);
		for (size_t i = 0; i < N; i++) {
			uint64_t d = T0 + offs[i];
			if (ms < due_time(d) && t[i].fired)
				ck_abort_msg("deadline %" PRIu64 " fired at %" PRIu64, d, ms);
		}
	}
	for (size_t i = 0; i < N; i++) {
		uint64_t d = T0 + offs[i];
		ck_assert_int_eq(t[i].fired, 1);
		ck_assert_uint_ge(t[i].fired_at, d);
		ck_assert_uint_eq(t[i].fired_at, due_time(d));
		ck_assert_uint_lt(t[i].fired_at - d, TICK);
		ck_assert_int_eq(dg_wheel_pending(&t[i].e), 0);
	}
	ck_assert_uint_eq(w.count, 0);
}
END_TEST

START_TEST(test_coarse_advance)
{
	/* One advance past several deadlines fires exactly the due ones. */
	timer a, b, c;

	timer_init(&a);
	timer_init(&b);
	timer_init(&c);
	dg_wheel_schedule(&w, &a.e, T0 + 150);
	dg_wheel_schedule(&w, &b.e, T0 + 700);
	dg_wheel_schedule(&w, &c.e, T0 + 764); /* 1 ms past b's tick. */
	ck_assert_uint_eq(advance(T0 + 100), 0);
	ck_assert_uint_eq(advance(T0 + 699), 1);
	ck_assert_int_eq(a.fired, 1);
	ck_assert_int_eq(b.fired, 0);
	/* T0 + 700 = 1000737 is not yet the tick 10008 that 1000737 rounds up to. */
	ck_assert_uint_eq(advance(T0 + 700), 0);
	ck_assert_uint_eq(advance(due_time(T0 + 700)), 1);
	ck_assert_int_eq(b.fired, 1);
	ck_assert_int_eq(c.fired, 0);
	ck_assert_uint_eq(w.count, 1);
	ck_assert_uint_eq(advance(T0 + 100000), 1);
	ck_assert_int_eq(c.fired, 1);
	ck_assert_uint_eq(w.count, 0);
}
END_TEST

START_TEST(test_past_deadline)
{
	timer a, b;

	timer_init(&a);
	timer_init(&b);
	advance(T0 + 1000);
	dg_wheel_schedule(&w, &a.e, 0);
	dg_wheel_schedule(&w, &b.e, T0 + 1000);
	/* Not in the same tick: on the next one. */
	ck_assert_uint_eq(advance(T0 + 1000), 0);
	ck_assert_uint_eq(advance(due_time(T0 + 1001) - 1), 0);
	ck_assert_uint_eq(advance(due_time(T0 + 1001)), 2);
	ck_assert_int_eq(a.fired, 1);
	ck_assert_int_eq(b.fired, 1);
}
END_TEST

START_TEST(test_cancel)
{
	timer a, b, c;

	timer_init(&a);
	timer_init(&b);
	timer_init(&c);
	dg_wheel_schedule(&w, &a.e, T0 + 500);
	dg_wheel_schedule(&w, &b.e, T0 + 500);
	dg_wheel_schedule(&w, &c.e, T0 + 500);
	ck_assert_uint_eq(w.count, 3);
	dg_wheel_cancel(&w, &b.e);
	ck_assert_int_eq(dg_wheel_pending(&b.e), 0);
	ck_assert_uint_eq(w.count, 2);
	dg_wheel_cancel(&w, &b.e);
	ck_assert_uint_eq(w.count, 2);
	ck_assert_uint_eq(advance(T0 + 10000), 2);
	ck_assert_int_eq(a.fired, 1);
	ck_assert_int_eq(b.fired, 0);
	ck_assert_int_eq(c.fired, 1);
	/* Cancel after firing is a no-op too. */
	dg_wheel_cancel(&w, &a.e);
	ck_assert_uint_eq(w.count, 0);
}
END_TEST

START_TEST(test_reschedule)
{
	timer a, b;

	timer_init(&a);
	timer_init(&b);
	dg_wheel_schedule(&w, &a.e, T0 + 300);
	dg_wheel_schedule(&w, &b.e, T0 + 300);
	/* Later and earlier: the count does not grow, the old deadline is forgotten. */
	dg_wheel_schedule(&w, &a.e, T0 + 2000);
	dg_wheel_schedule(&w, &b.e, T0 + 120);
	ck_assert_uint_eq(w.count, 2);
	ck_assert_uint_eq(a.e.deadline_ms, T0 + 2000);
	for (uint64_t ms = T0 + 1; ms <= T0 + 3000; ms++) {
		advance(ms);
		if (a.fired && a.fired_at < T0 + 2000)
			ck_abort_msg("rescheduled entry fired at its old deadline");
	}
	ck_assert_int_eq(a.fired, 1);
	ck_assert_uint_eq(a.fired_at, due_time(T0 + 2000));
	ck_assert_int_eq(b.fired, 1);
	ck_assert_uint_eq(b.fired_at, due_time(T0 + 120));
	ck_assert_uint_eq(w.count, 0);
}
END_TEST

START_TEST(test_beyond_one_turn)
{
	/*
	 * Entries that share a slot with nearer ones, one to three turns out,
	 * advanced tick by tick with a keep-alive entry so the wheel never
	 * skips ahead.
	 */
	timer near, far1, far2, far3, odd, keep;
	uint64_t end = T0 + 3 * TURN + 2000;

	timer_init(&near);
	timer_init(&far1);
	timer_init(&far2);
	timer_init(&far3);
	timer_init(&odd);
	timer_init(&keep);
	dg_wheel_schedule(&w, &near.e, T0 + 250);
	dg_wheel_schedule(&w, &far1.e, T0 + 250 + TURN);
	dg_wheel_schedule(&w, &far2.e, T0 + 250 + 2 * TURN);
	dg_wheel_schedule(&w, &far3.e, T0 + 250 + 3 * TURN);
	dg_wheel_schedule(&w, &odd.e, T0 + TURN + 1);
	dg_wheel_schedule(&w, &keep.e, end + TURN);
	for (uint64_t ms = (T0 / TICK + 1) * TICK; ms <= end; ms += TICK) {
		advance(ms);
		if ((far1.fired && far1.fired_at < far1.e.deadline_ms) ||
		    (far2.fired && far2.fired_at < far2.e.deadline_ms) ||
		    (far3.fired && far3.fired_at < far3.e.deadline_ms) ||
		    (odd.fired && odd.fired_at < odd.e.deadline_ms))
			ck_abort_msg("a far entry fired a turn early at %" PRIu64, ms);
	}
	ck_assert_int_eq(near.fired, 1);
	ck_assert_uint_eq(near.fired_at, due_time(T0 + 250));
	ck_assert_int_eq(far1.fired, 1);
	ck_assert_uint_eq(far1.fired_at, due_time(T0 + 250 + TURN));
	ck_assert_int_eq(far2.fired, 1);
	ck_assert_uint_eq(far2.fired_at, due_time(T0 + 250 + 2 * TURN));
	ck_assert_int_eq(far3.fired, 1);
	ck_assert_uint_eq(far3.fired_at, due_time(T0 + 250 + 3 * TURN));
	ck_assert_int_eq(odd.fired, 1);
	ck_assert_uint_eq(odd.fired_at, due_time(T0 + TURN + 1));
	ck_assert_int_eq(keep.fired, 0);
	ck_assert_uint_eq(w.count, 1);
}
END_TEST

START_TEST(test_far_with_jumps)
{
	/* A far entry alone, the clock jumping across turns in large steps. */
	timer far;
	uint64_t d = T0 + 5 * TURN + 777;

	timer_init(&far);
	dg_wheel_schedule(&w, &far.e, d);
	ck_assert_uint_eq(advance(T0 + TURN + 250), 0);
	ck_assert_uint_eq(advance(T0 + 3 * TURN), 0);
	ck_assert_uint_eq(advance(d - 1), 0);
	ck_assert_uint_eq(w.count, 1);
	ck_assert_uint_eq(advance(due_time(d)), 1);
	ck_assert_int_eq(far.fired, 1);
}
END_TEST

START_TEST(test_idle_then_schedule)
{
	/* After a long idle stretch the wheel's clock follows the caller's. */
	timer a;
	uint64_t t = T0 + 50 * TURN + 3;

	timer_init(&a);
	ck_assert_uint_eq(advance(t), 0);
	dg_wheel_schedule(&w, &a.e, t + 150);
	ck_assert_uint_eq(advance(due_time(t + 150) - 1), 0);
	ck_assert_uint_eq(advance(due_time(t + 150)), 1);
	ck_assert_uint_eq(a.fired_at, due_time(t + 150));
}
END_TEST

START_TEST(test_self_reschedule)
{
	/* A periodic timer: each firing schedules the next one 250 ms after itself. */
	timer p;
	int calls = 0, seen = 0;
	uint64_t last = T0;

	timer_init(&p);
	p.period = 250;
	p.repeat = 9;
	dg_wheel_schedule(&w, &p.e, T0 + 250);
	for (uint64_t ms = T0 + 1; ms <= T0 + 10000; ms++) {
		now = ms;
		dg_wheel_advance(&w, ms, on_fire, &calls);
		if (p.fired != seen) {
			ck_assert_int_eq(p.fired, seen + 1);
			ck_assert_uint_ge(p.fired_at - last, 250);
			ck_assert_uint_lt(p.fired_at - last, 250 + TICK);
			last = p.fired_at;
			seen = p.fired;
		}
	}
	ck_assert_int_eq(p.fired, 10);
	ck_assert_int_eq(calls, 10);
	ck_assert_int_eq(dg_wheel_pending(&p.e), 0);
	ck_assert_uint_eq(w.count, 0);
}
END_TEST

static void
rearm_now(dg_wheel_entry *e, void *arg)
{
	size_t *calls = arg;

	(*calls)++;
	/* Rescheduled to a deadline already passed: the next tick, not this one. */
	if (*calls < 1000)
		dg_wheel_schedule(&w, e, e->deadline_ms);
}

START_TEST(test_rearm_in_callback_terminates)
{
	timer t;
	size_t calls = 0;

	timer_init(&t);
	dg_wheel_schedule(&w, &t.e, T0 + 1);
	now = T0 + 10 * TICK;
	/* Ten ticks pass in this call: the entry fires in the first and once in each after. */
	ck_assert_uint_eq(dg_wheel_advance(&w, now, rearm_now, &calls), 10);
	ck_assert_uint_eq(calls, 10);
	ck_assert_int_eq(dg_wheel_pending(&t.e), 1);
	ck_assert_uint_eq(w.count, 1);
}
END_TEST

START_TEST(test_cancel_other_due_in_callback)
{
	/* Two entries due in the same tick; the first to fire cancels the other. */
	timer a, b;

	timer_init(&a);
	timer_init(&b);
	a.victim = &b;
	b.victim = &a;
	dg_wheel_schedule(&w, &a.e, T0 + 150);
	dg_wheel_schedule(&w, &b.e, T0 + 160);
	ck_assert_uint_eq(advance(T0 + 1000), 1);
	ck_assert_int_eq(a.fired + b.fired, 1);
	ck_assert_uint_eq(w.count, 0);
	ck_assert_int_eq(dg_wheel_pending(&a.e), 0);
	ck_assert_int_eq(dg_wheel_pending(&b.e), 0);
}
END_TEST

START_TEST(test_free_in_callback)
{
	/* Owners freed from their own callback (ASan reports any later touch). */
	for (int i = 0; i < 10; i++) {
		timer *t = malloc(sizeof(*t));
		ck_assert_ptr_nonnull(t);
		timer_init(t);
		t->free_self = 1;
		dg_wheel_schedule(&w, &t->e, T0 + 150);
	}
	ck_assert_uint_eq(w.count, 10);
	ck_assert_uint_eq(advance(T0 + 1000), 10);
	ck_assert_uint_eq(w.count, 0);
}
END_TEST

static uint64_t
rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

typedef struct big_ctx {
	uint64_t now;
	size_t fired;
	size_t early;
} big_ctx;

static void
big_fire(dg_wheel_entry *e, void *arg)
{
	big_ctx *c = arg;
	timer *t = dg_container_of(e, timer, e);

	t->fired++;
	t->fired_at = c->now;
	c->fired++;
	if (c->now < e->deadline_ms)
		c->early++;
}

START_TEST(test_100000_entries)
{
	enum { N = 100000 };
	timer *t = calloc(N, sizeof(*t));
	uint64_t s = 0x2545f4914f6cdd1dull;
	uint64_t horizon = 3 * TURN; /* Some deadlines wrap the wheel up to three times. */
	big_ctx c = {T0, 0, 0};
	size_t cancelled = 0;

	ck_assert_ptr_nonnull(t);
	for (size_t i = 0; i < N; i++) {
		dg_wheel_entry_init(&t[i].e);
		dg_wheel_schedule(&w, &t[i].e, T0 + 1 + rng(&s) % horizon);
	}
	ck_assert_uint_eq(w.count, N);
	/* Cancel every tenth, reschedule every seventh. */
	for (size_t i = 0; i < N; i += 10) {
		dg_wheel_cancel(&w, &t[i].e);
		cancelled++;
	}
	for (size_t i = 3; i < N; i += 7)
		if (dg_wheel_pending(&t[i].e))
			dg_wheel_schedule(&w, &t[i].e, T0 + 1 + rng(&s) % horizon);
	ck_assert_uint_eq(w.count, N - cancelled);
	/* Advance in uneven steps of 1..250 ms. */
	while (c.now < T0 + horizon + 2 * TICK) {
		c.now += 1 + rng(&s) % 250;
		dg_wheel_advance(&w, c.now, big_fire, &c);
	}
	ck_assert_uint_eq(w.count, 0);
	ck_assert_uint_eq(c.fired, N - cancelled);
	ck_assert_uint_eq(c.early, 0);
	for (size_t i = 0; i < N; i++) {
		int want = i % 10 == 0 ? 0 : 1;
		if (t[i].fired != want)
			ck_abort_msg("entry %zu fired %d times", i, t[i].fired);
		/* Fired in the first advance that reached the tick its deadline rounds up to. */
		if (want && t[i].fired_at < due_time(t[i].e.deadline_ms))
			ck_abort_msg("entry %zu fired early", i);
		if (want && t[i].fired_at >= due_time(t[i].e.deadline_ms) + 250)
			ck_abort_msg("entry %zu fired late", i);
	}
	free(t);
}
END_TEST

static Suite *
wheel_suite(void)
{
	Suite *s = suite_create("wheel");
	TCase *tc = tcase_create("wheel");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_init);
	tcase_add_test(tc, test_never_early_right_tick);
	tcase_add_test(tc, test_coarse_advance);
	tcase_add_test(tc, test_past_deadline);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_reschedule);
	tcase_add_test(tc, test_beyond_one_turn);
	tcase_add_test(tc, test_far_with_jumps);
	tcase_add_test(tc, test_idle_then_schedule);
	tcase_add_test(tc, test_self_reschedule);
	tcase_add_test(tc, test_rearm_in_callback_terminates);
	tcase_add_test(tc, test_cancel_other_due_in_callback);
	tcase_add_test(tc, test_free_in_callback);
	tcase_add_test(tc, test_100000_entries);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(wheel_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
