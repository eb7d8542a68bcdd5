/*
 * Batched UDP sends over sendmmsg.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "devgate/udpio.h"

typedef struct slot {
	int fd;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	size_t len;
	uint8_t data[DG_UDPIO_SLOT_BYTES];
} slot;

struct dg_udpio {
	size_t n;
	slot slots[DG_UDPIO_BATCH];
	struct iovec iov[DG_UDPIO_BATCH];
	struct mmsghdr msgs[DG_UDPIO_BATCH];
	dg_udpio_stats stats;
};

int
dg_udpio_new(dg_udpio **out)
{
	dg_udpio *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	*out = b;
	return 0;
}

void
dg_udpio_free(dg_udpio *b)
{
	free(b);
}

size_t
dg_udpio_pending(const dg_udpio *b)
{
	return b->n;
}

void
dg_udpio_get_stats(const dg_udpio *b, dg_udpio_stats *out)
{
	*out = b->stats;
}

/* Sends slots [first, end), all for one socket; returns how many the kernel took. */
static size_t
send_run(dg_udpio *b, size_t first, size_t end)
{
	size_t sent = 0;

	for (size_t i = first; i < end; i++) {
		slot *s = &b->slots[i];
		b->iov[i] = (struct iovec){.iov_base = s->data, .iov_len = s->len};
		memset(&b->msgs[i], 0, sizeof(b->msgs[i]));
		b->msgs[i].msg_hdr.msg_name = &s->peer;
		b->msgs[i].msg_hdr.msg_namelen = s->peer_len;
		b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
		b->msgs[i].msg_hdr.msg_iovlen = 1;
	}
	/* Each pass takes at least one datagram off (sent or dropped): at most end - first passes.
	 */
	for (size_t i = first; i < end;) {
		int rc;
		do
			rc = sendmmsg(b->slots[first].fd, &b->msgs[i], (unsigned)(end - i),
			              MSG_DONTWAIT);
		while (rc < 0 && errno == EINTR);
		b->stats.calls++;
		if (rc > 0) {
			i += (size_t)rc;
			sent += (size_t)rc;
		} else {
			/* The kernel refused the datagram at i: it is lost, the rest still go. */
			b->stats.dropped++;
			i++;
		}
	}
	b->stats.sent += sent;
	return sent;
}

size_t
dg_udpio_flush(dg_udpio *b)
{
	size_t sent = 0, first = 0;

	for (size_t i = 1; i <= b->n; i++) {
		if (i == b->n || b->slots[i].fd != b->slots[first].fd) {
			sent += send_run(b, first, i);
			first = i;
		}
	}
	b->n = 0;
	return sent;
}

int
dg_udpio_queue(dg_udpio *b, int fd, const void *data, size_t len, const struct sockaddr *peer,
               socklen_t peer_len)
{
	if (b == NULL || fd < 0 || (data == NULL && len > 0) || peer == NULL || peer_len == 0 ||
	    peer_len > sizeof(struct sockaddr_storage))
		return -EINVAL;
	if (len > DG_UDPIO_SLOT_BYTES) {
		/* Too large for a slot: after what is queued, on its own. */
		dg_udpio_flush(b);
		ssize_t rc;
		do
			rc = sendto(fd, data, len, MSG_DONTWAIT, peer, peer_len);
		while (rc < 0 && errno == EINTR);
		b->stats.calls++;
		if (rc < 0)
			b->stats.dropped++;
		else
			b->stats.sent++;
		return 0;
	}
	if (b->n == DG_UDPIO_BATCH)
		dg_udpio_flush(b);
	slot *s = &b->slots[b->n++];
	s->fd = fd;
	memcpy(&s->peer, peer, peer_len);
	s->peer_len = peer_len;
	s->len = len;
	if (len > 0)
		memcpy(s->data, data, len);
	return 0;
}
