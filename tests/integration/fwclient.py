"""A small PSK DTLS 1.2 CoAP client for the firmware tests, over the system's
libssl (ctypes), for what coap-client cannot do: many requests on one
session, at a chosen pace, with every answer seen.

    c = FwClient("127.0.0.1", port, "dev1@acme", key)
    c.request(GET, ".d/x")              -> Msg (the answer) or None
    c.send(msg); c.recv(timeout)        -> raw control
"""
import ctypes
import os
import socket
import struct
import time

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 1, 2, 3, 4

OPT_ETAG, OPT_OBSERVE, OPT_URI_PATH, OPT_CONTENT_FORMAT = 4, 6, 11, 12
OPT_MAX_AGE, OPT_ACCEPT, OPT_BLOCK2, OPT_BLOCK1, OPT_SIZE2, OPT_SIZE1 = 14, 17, 23, 27, 28, 60

_ssl = ctypes.CDLL("libssl.so.3")
_ssl.DTLS_client_method.restype = ctypes.c_void_p
_ssl.SSL_CTX_new.restype = ctypes.c_void_p
_ssl.SSL_CTX_new.argtypes = [ctypes.c_void_p]
_ssl.SSL_CTX_free.argtypes = [ctypes.c_void_p]
_ssl.SSL_CTX_set_cipher_list.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_ssl.SSL_new.restype = ctypes.c_void_p
_ssl.SSL_new.argtypes = [ctypes.c_void_p]
_ssl.SSL_free.argtypes = [ctypes.c_void_p]
_ssl.BIO_new_dgram.restype = ctypes.c_void_p
_ssl.BIO_new_dgram.argtypes = [ctypes.c_int, ctypes.c_int]
_ssl.BIO_ctrl.restype = ctypes.c_long
_ssl.BIO_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
_ssl.SSL_set_bio.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_ssl.SSL_connect.argtypes = [ctypes.c_void_p]
_ssl.SSL_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
_ssl.SSL_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
_ssl.SSL_get_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
_ssl.SSL_shutdown.argtypes = [ctypes.c_void_p]

PSK_CB = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_uint)
_ssl.SSL_CTX_set_psk_client_callback.argtypes = [ctypes.c_void_p, PSK_CB]

BIO_CTRL_DGRAM_SET_CONNECTED = 32
SSL_ERROR_WANT_READ, SSL_ERROR_ZERO_RETURN = 2, 6


class Msg:
    def __init__(self, type_, code, mid, token=b"", options=None, payload=b""):
        self.type, self.code, self.mid, self.token = type_, code, mid, token
        self.options = options or []  # [(number, bytes)], in order
        self.payload = payload

    def opt(self, number):
        for n, v in self.options:
            if n == number:
                return v
        return None

    def uint(self, number):
        v = self.opt(number)
        return None if v is None else int.from_bytes(v, "big")

    @property
    def code_text(self):
        return "%d.%02d" % (self.code >> 5, self.code & 31)

    def block(self, number):
        """(num, more, szx) of a Block1/Block2 option, or None."""
        v = self.uint(number)
        return None if v is None else (v >> 4, (v >> 3) & 1, v & 7)


def uint_bytes(v):
    return b"" if v == 0 else v.to_bytes((v.bit_length() + 7) // 8, "big")


def encode(m):
    out = bytes([0x40 | m.type << 4 | len(m.token), m.code]) + struct.pack("!H", m.mid) + m.token
    last = 0
    for number, val in sorted(m.options, key=lambda o: o[0]):
        delta, length = number - last, len(val)
        ext = b""
        def nib(x):
            nonlocal ext
            if x < 13:
                return x
            if x < 269:
                ext += bytes([x - 13])
                return 13
            ext += struct.pack("!H", x - 269)
            return 14
        d = nib(delta)
        ln = nib(length)
        out += bytes([d << 4 | ln]) + ext + val
        last = number
    if m.payload:
        out += b"\xff" + m.payload
    return out


def decode(data):
    tkl = data[0] & 15
    m = Msg((data[0] >> 4) & 3, data[1], struct.unpack("!H", data[2:4])[0], data[4:4 + tkl])
    i, last = 4 + tkl, 0
    while i < len(data):
        if data[i] == 0xff:
            m.payload = data[i + 1:]
            break
        d, ln = data[i] >> 4, data[i] & 15
        i += 1
        vals = []
        for x in (d, ln):
            if x == 13:
                x = data[i] + 13
                i += 1
            elif x == 14:
                x = struct.unpack("!H", data[i:i + 2])[0] + 269
                i += 2
            vals.append(x)
        last += vals[0]
        m.options.append((last, data[i:i + vals[1]]))
        i += vals[1]
    return m


def path_options(path):
    return [(OPT_URI_PATH, seg.encode()) for seg in path.split("/") if seg != ""]


class FwClient:
    def __init__(self, host, port, identity, key, cipher="PSK-AES128-CCM8", timeout=5.0):
        self.identity = identity.encode()
        self.key = key.encode() if isinstance(key, str) else key
        self.mid = int.from_bytes(os.urandom(2), "big")
        self.tok = int.from_bytes(os.urandom(4), "big") << 32
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for every answer to a burst while the test is still sending.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.connect((host, port))
        self._timeout(timeout)
        self.ctx = _ssl.SSL_CTX_new(_ssl.DTLS_client_method())
        _ssl.SSL_CTX_set_cipher_list(self.ctx, cipher.encode())

        def psk_cb(ssl, hint, ident, max_ident, psk, max_psk):
            ctypes.memmove(ident, self.identity + b"\0", len(self.identity) + 1)
            ctypes.memmove(psk, self.key, len(self.key))
            return len(self.key)
        self._cb = PSK_CB(psk_cb)
        _ssl.SSL_CTX_set_psk_client_callback(self.ctx, self._cb)
        self.ssl = _ssl.SSL_new(self.ctx)
        bio = _ssl.BIO_new_dgram(self.sock.fileno(), 0)
        sa = struct.pack("!HH4s8x", socket.AF_INET, port, socket.inet_aton(host))
        sa = struct.pack("=H", socket.AF_INET) + sa[2:]
        self._sa = ctypes.create_string_buffer(sa, len(sa))
        _ssl.BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, self._sa)
        _ssl.SSL_set_bio(self.ssl, bio, bio)
        if _ssl.SSL_connect(self.ssl) != 1:
            raise AssertionError("DTLS handshake failed")
        self.closed_by_peer = False

    def _timeout(self, seconds):
        tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xffff
        return self.mid

    def next_token(self):
        self.tok += 1
        return self.tok.to_bytes(8, "big")

    def send(self, m):
        data = encode(m)
        buf = ctypes.create_string_buffer(data, len(data))
        n = _ssl.SSL_write(self.ssl, buf, len(data))
        if n != len(data):
            raise AssertionError("SSL_write failed: %d" % n)

    def recv(self, timeout=2.0):
        """The next CoAP message, or None on timeout or after close_notify."""
        self._timeout(timeout)
        buf = ctypes.create_string_buffer(4096)
        deadline = time.time() + timeout
        while time.time() < deadline + 0.1:
            n = _ssl.SSL_read(self.ssl, buf, 4096)
            if n > 0:
                return decode(buf.raw[:n])
            err = _ssl.SSL_get_error(self.ssl, n)
            if err == SSL_ERROR_ZERO_RETURN:
                self.closed_by_peer = True
                return None
            if err != SSL_ERROR_WANT_READ:
                return None
        return None

    def request(self, code, path, payload=b"", options=(), type_=CON, timeout=2.0,
                token=None):
        """Sends one request and returns its answer (matched by token), or
        None. Notifications for other tokens are ACKed and skipped."""
        m = Msg(type_, code, self.next_mid(), token or self.next_token(),
                path_options(path) + list(options), payload)
        self.send(m)
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.recv(max(0.05, deadline - time.time()))
            if r is None:
                return None
            if r.token == m.token and r.type != CON:
                return r
            if r.type == CON:
                self.send(Msg(ACK, 0, r.mid))
        return None

    def close(self):
        if self.ssl:
            _ssl.SSL_shutdown(self.ssl)
            _ssl.SSL_free(self.ssl)
            _ssl.SSL_CTX_free(self.ctx)
            self.ssl = None
        self.sock.close()
