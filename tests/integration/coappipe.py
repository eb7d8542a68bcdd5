"""One long CoAP-over-DTLS session to the daemon, through openssl s_client.

openssl s_client -dtls1_2 -quiet -nocommands is a DTLS pipe: what is written
to its stdin in one write becomes one record, and the application data it
receives is copied to its stdout. This module encodes CoAP requests (RFC
7252) and finds each answer in that stream by its 8-byte random token, so a
test can make many requests in one session (several observations, a burst
of posts) without a CoAP library. Every wait is bounded in time.
"""
import os
import select
import subprocess
import time

GET, POST, PUT, DELETE = 1, 2, 3, 4
CON, NON, ACK, RST = 0, 1, 2, 3


def _opt(delta, value):
    """Encodes one option with its delta from the previous option number."""
    out = bytearray()
    length = len(value)

    def nib(n):
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, (n - 269).to_bytes(2, "big")

    dn, dext = nib(delta)
    ln, lext = nib(length)
    out.append(dn << 4 | ln)
    out += dext + lext + value
    return bytes(out)


def uint_bytes(v):
    return b"" if v == 0 else v.to_bytes((v.bit_length() + 7) // 8, "big")


def encode(code, mid, token, path="", observe=None, content_format=None, payload=b"",
           mtype=CON, block1=None):
    """A CoAP request: options Observe (6), Uri-Path (11), Content-Format (12),
    Block1 (27, given as its (num, more, szx))."""
    opts = []
    if observe is not None:
        opts.append((6, uint_bytes(observe)))
    for seg in [s for s in path.split("/") if s]:
        opts.append((11, seg.encode()))
    if content_format is not None:
        opts.append((12, uint_bytes(content_format)))
    if block1 is not None:
        num, more, szx = block1
        opts.append((27, uint_bytes(num << 4 | (8 if more else 0) | szx)))
    msg = bytearray([0x40 | mtype << 4 | len(token), code]) + mid.to_bytes(2, "big") + token
    last = 0
    for num, val in opts:
        msg += _opt(num - last, val)
        last = num
    if payload:
        msg += b"\xff" + payload
    return bytes(msg)


class CoapPipe:
    """A PSK session held open by openssl s_client."""

    def __init__(self, port, identity, key, cipher="PSK-AES128-CCM8", gap=0.02):
        """gap: seconds to wait after each write, so that s_client reads it alone."""
        self.gap = gap
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-dtls1_2", "-quiet", "-nocommands", "-connect",
             "127.0.0.1:%d" % port, "-psk_identity", identity, "-psk", key.encode().hex(),
             "-cipher", cipher],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.rx = bytearray()
        self.mid = int.from_bytes(os.urandom(2), "big")

    def send(self, code, path="", **kw):
        """Sends one CON request; returns its token."""
        token = os.urandom(8)
        self.mid = (self.mid + 1) & 0xffff
        self.proc.stdin.write(encode(code, self.mid, token, path, **kw))
        self.proc.stdin.flush()
        # One write is one record only if s_client reads it alone.
        time.sleep(self.gap)
        return token

    def pump(self, timeout):
        """Reads what s_client printed within `timeout` seconds."""
        fd = self.proc.stdout.fileno()
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self.rx += chunk

    def answers(self, token):
        """Every (type, code, mid) seen with this token: responses and notifications."""
        out, i = [], 0
        while True:
            i = self.rx.find(token, i)
            if i < 0:
                return out
            if i >= 4 and self.rx[i - 4] >> 6 == 1 and self.rx[i - 4] & 15 == 8:
                c = self.rx[i - 3]
                mid = self.rx[i - 2] << 8 | self.rx[i - 1]
                out.append(((self.rx[i - 4] >> 4) & 3, "%d.%02d" % (c >> 5, c & 31), mid))
            i += 1

    def options(self, token):
        """The options {number: [bytes]} of the first message seen with this token."""
        i = self.rx.find(token)
        if i < 4:
            return {}
        pos, num, out = i + len(token), 0, {}
        while pos < len(self.rx) and self.rx[pos] != 0xff:
            b = self.rx[pos]
            pos += 1
            vals = []
            for n in (b >> 4, b & 15):
                if n == 13:
                    n = self.rx[pos] + 13
                    pos += 1
                elif n == 14:
                    n = (self.rx[pos] << 8 | self.rx[pos + 1]) + 269
                    pos += 2
                elif n == 15:
                    return out
                vals.append(n)
            num += vals[0]
            out.setdefault(num, []).append(bytes(self.rx[pos:pos + vals[1]]))
            pos += vals[1]
        return out

    def wait_answer(self, token, timeout=5.0):
        """The first response code seen with this token, or None after `timeout`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            a = self.answers(token)
            if a:
                return a[0][1]
            self.pump(0.05)
        return None

    def ack(self, mid):
        msg = bytes([0x60, 0]) + mid.to_bytes(2, "big")
        self.proc.stdin.write(msg)
        self.proc.stdin.flush()
        time.sleep(0.02)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
