/*
 * Unit tests of batched UDP sends, over real sockets on 127.0.0.1: queued
 * datagrams arrive whole and in order after one flush, in one sendmmsg per
 * socket run; a full batch flushes itself; a datagram larger than a slot
 * goes out after what was queued before it; sends the kernel refuses are
 * dropped and counted, and the rest of the batch still goes.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devgate/udpio.h"

static int
bound(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	socklen_t len = sizeof(*addr);
	int big = 4 << 20;

	ck_assert_int_ge(fd, 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	return fd;
}

/* Receives one datagram (waiting at most 2 s); returns its length, -1 when none came. */
static ssize_t
recv_one(int fd, uint8_t *buf, size_t cap, struct sockaddr_in *from)
{
	struct timeval tv = {2, 0};
	socklen_t fl = sizeof(*from);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return recvfrom(fd, buf, cap, 0, (struct sockaddr *)from, &fl);
}

/* Nothing more is waiting on fd. */
static void
assert_empty(int fd)
{
	uint8_t b[16];
	ck_assert_int_lt(recv(fd, b, sizeof(b), MSG_DONTWAIT), 0);
}

START_TEST(test_order_and_one_call)
{
	dg_udpio *b;
	struct sockaddr_in rx_addr, tx_addr, from;
	int rx = bound(&rx_addr), tx = bound(&tx_addr);
	dg_udpio_stats st;
	uint8_t buf[4096];

	ck_assert_int_eq(dg_udpio_new(&b), 0);
	for (unsigned i = 0; i < 10; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "datagram %u", i);
		ck_assert_int_eq(dg_udpio_queue(b, tx, msg, (size_t)n, (struct sockaddr *)&rx_addr,
		                                sizeof(rx_addr)),
		                 0);
	}
	/* Nothing leaves before the flush. */
	assert_empty(rx);
	ck_assert_uint_eq(dg_udpio_pending(b), 10);
	ck_assert_uint_eq(dg_udpio_flush(b), 10);
	ck_assert_uint_eq(dg_udpio_pending(b), 0);
	dg_udpio_get_stats(b, &st);
	ck_assert_uint_eq(st.calls, 1);
	ck_assert_uint_eq(st.sent, 10);
	ck_assert_uint_eq(st.dropped, 0);
	for (unsigned i = 0; i < 10; i++) {
		char want[32];
		int n = snprintf(want, sizeof(want), "datagram %u", i);
		ssize_t got = recv_one(rx, buf, sizeof(buf), &from);
		ck_assert_int_eq(got, n);
		ck_assert_mem_eq(buf, want, (size_t)n);
		ck_assert_uint_eq(from.sin_port, tx_addr.sin_port);
	}
	assert_empty(rx);
	/* An empty flush sends nothing and makes no call. */
	ck_assert_uint_eq(dg_udpio_flush(b), 0);
	dg_udpio_get_stats(b, &st);
	ck_assert_uint_eq(st.calls, 1);
	dg_udpio_free(b);
	close(rx);
	close(tx);
}
END_TEST

START_TEST(test_two_sockets_full_batch_and_large)
{
	dg_udpio *b;
	struct sockaddr_in rx_addr, t1_addr, t2_addr, from;
	int rx = bound(&rx_addr), t1 = bound(&t1_addr), t2 = bound(&t2_addr);
	dg_udpio_stats st;
	static uint8_t big[DG_UDPIO_SLOT_BYTES + 100];
	uint8_t buf[8192];
	unsigned total = DG_UDPIO_BATCH + 3;

	ck_assert_int_eq(dg_udpio_new(&b), 0);
	/* More than a batch, alternating sockets in runs of 8, then one large datagram. */
	for (unsigned i = 0; i < total; i++) {
		uint8_t v[2] = {(uint8_t)(i >> 8), (uint8_t)i};
		int fd = (i / 8) % 2 ? t2 : t1;
		ck_assert_int_eq(dg_udpio_queue(b, fd, v, sizeof(v), (struct sockaddr *)&rx_addr,
		                                sizeof(rx_addr)),
		                 0);
	}
	/* The batch filled once and flushed itself: what is left is the remainder. */
	ck_assert_uint_eq(dg_udpio_pending(b), total - DG_UDPIO_BATCH);
	memset(big, 0xab, sizeof(big));
	ck_assert_int_eq(dg_udpio_queue(b, t1, big, sizeof(big), (struct sockaddr *)&rx_addr,
	                                sizeof(rx_addr)),
	                 0);
	/* The large one went at once, after the queued ones. */
	ck_assert_uint_eq(dg_udpio_pending(b), 0);
	for (unsigned i = 0; i < total; i++) {
		ssize_t got = recv_one(rx, buf, sizeof(buf), &from);
		ck_assert_int_eq(got, 2);
		ck_assert_uint_eq((unsigned)(buf[0] << 8 | buf[1]), i);
		ck_assert_uint_eq(from.sin_port, ((i / 8) % 2 ? t2_addr : t1_addr).sin_port);
	}
	ck_assert_int_eq(recv_one(rx, buf, sizeof(buf), &from), (ssize_t)sizeof(big));
	ck_assert_mem_eq(buf, big, sizeof(big));
	dg_udpio_get_stats(b, &st);
	ck_assert_uint_eq(st.sent, total + 1);
	ck_assert_uint_eq(st.dropped, 0);
	dg_udpio_free(b);
	close(rx);
	close(t1);
	close(t2);
}
END_TEST

START_TEST(test_refused_dropped_rest_sent)
{
	dg_udpio *b;
	struct sockaddr_in rx_addr, tx_addr, from;
	int rx = bound(&rx_addr), tx = bound(&tx_addr);
	int dead = bound(&from);
	dg_udpio_stats st;
	uint8_t buf[64];

	close(dead); /* A socket that is gone: every send on it fails (EBADF). */
	ck_assert_int_eq(dg_udpio_new(&b), 0);
	ck_assert_int_eq(
	        dg_udpio_queue(b, tx, "a", 1, (struct sockaddr *)&rx_addr, sizeof(rx_addr)), 0);
	ck_assert_int_eq(
	        dg_udpio_queue(b, dead, "x", 1, (struct sockaddr *)&rx_addr, sizeof(rx_addr)), 0);
	ck_assert_int_eq(
	        dg_udpio_queue(b, dead, "y", 1, (struct sockaddr *)&rx_addr, sizeof(rx_addr)), 0);
	ck_assert_int_eq(
	        dg_udpio_queue(b, tx, "b", 1, (struct sockaddr *)&rx_addr, sizeof(rx_addr)), 0);
	ck_assert_uint_eq(dg_udpio_flush(b), 2);
	dg_udpio_get_stats(b, &st);
	ck_assert_uint_eq(st.sent, 2);
	ck_assert_uint_eq(st.dropped, 2);
	ck_assert_int_eq(recv_one(rx, buf, sizeof(buf), &from), 1);
	ck_assert_int_eq(buf[0], 'a');
	ck_assert_int_eq(recv_one(rx, buf, sizeof(buf), &from), 1);
	ck_assert_int_eq(buf[0], 'b');
	/* Bad arguments queue nothing. */
	ck_assert_int_eq(
	        dg_udpio_queue(b, -1, "a", 1, (struct sockaddr *)&rx_addr, sizeof(rx_addr)),
	        -EINVAL);
	ck_assert_int_eq(dg_udpio_queue(b, tx, "a", 1, NULL, 0), -EINVAL);
	ck_assert_uint_eq(dg_udpio_pending(b), 0);
	dg_udpio_free(b);
	dg_udpio_free(NULL);
	close(rx);
	close(tx);
}
END_TEST

static Suite *
udpio_suite(void)
{
	Suite *s = suite_create("udpio");
	TCase *tc = tcase_create("udpio");

	tcase_add_test(tc, test_order_and_one_call);
	tcase_add_test(tc, test_two_sockets_full_batch_and_large);
	tcase_add_test(tc, test_refused_dropped_rest_sent);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(udpio_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
