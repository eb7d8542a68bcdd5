"""A minimal DTLS 1.2 ClientHello sender for tests that need a peer to stop
half-way: it does the cookie exchange, so the server makes a session, and
then goes silent."""
import os
import socket
import struct

PSK_AES128_CCM_8 = 0xC0A8
PSK_AES128_GCM_SHA256 = 0x00A8


def client_hello(cookie=b"", random=None, message_seq=0, suites=(PSK_AES128_CCM_8,)):
    random = random or os.urandom(32)
    body = struct.pack("!H", 0xFEFD) + random + b"\x00"
    body += struct.pack("!B", len(cookie)) + cookie
    body += struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites)
    body += b"\x01\x00"
    hs = struct.pack("!B", 1) + len(body).to_bytes(3, "big") + struct.pack("!H", message_seq)
    hs += (0).to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    rec = struct.pack("!BHH", 22, 0xFEFD, 0) + message_seq.to_bytes(6, "big")
    return rec + struct.pack("!H", len(hs)) + hs


def parse_hello_verify(data):
    """Returns the cookie of a HelloVerifyRequest datagram, or None."""
    if len(data) < 13 + 12 + 3 or data[0] != 22 or data[13] != 3:
        return None
    n = data[13 + 12 + 2]
    cookie = data[13 + 12 + 3: 13 + 12 + 3 + n]
    return cookie if len(cookie) == n else None


def stalled_handshake(host, port, timeout=2.0):
    """Performs the cookie exchange and sends the cookie-bearing ClientHello,
    then returns the socket (still open, silent). Returns (sock, got_reply)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    rnd = os.urandom(32)
    s.sendto(client_hello(random=rnd), (host, port))
    data, _ = s.recvfrom(4096)
    cookie = parse_hello_verify(data)
    if cookie is None:
        raise AssertionError("no HelloVerifyRequest: %r" % data[:32])
    s.sendto(client_hello(cookie=cookie, random=rnd, message_seq=1), (host, port))
    try:
        s.recvfrom(4096)  # The ServerHello flight: the server made a session.
        return s, True
    except socket.timeout:
        return s, False
