"""A small CBOR (RFC 8949) codec for the tests: what the Golioth SDK and
devgate exchange (integers, floats, text, bytes, arrays, maps, definite and
indefinite lengths, true/false/null). Floats decode to Python floats and
stay distinct from integers, so a test can check the type a device sees.

    loads(b) -> value            dumps(value, indefinite=False) -> bytes
"""
import struct


class Float:
    """Marks a float to encode as such even when it is integral (2.0)."""

    def __init__(self, v):
        self.v = float(v)


def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < (1 << (8 * struct.calcsize(fmt))):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError("integer too large")


def dumps(v, indefinite=False):
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, Float):
        return b"\xfb" + struct.pack(">d", v.v)
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return _head(3, len(b)) + b
    if isinstance(v, (list, tuple)):
        body = b"".join(dumps(x, indefinite) for x in v)
        return (b"\x9f" + body + b"\xff") if indefinite else _head(4, len(v)) + body
    if isinstance(v, dict):
        body = b"".join(dumps(k, indefinite) + dumps(x, indefinite) for k, x in v.items())
        return (b"\xbf" + body + b"\xff") if indefinite else _head(5, len(v)) + body
    raise TypeError(type(v))


def _half(h):
    s, e, m = h >> 15, (h >> 10) & 0x1F, h & 0x3FF
    if e == 0:
        v = m * 2.0 ** -24
    elif e == 31:
        v = float("inf") if m == 0 else float("nan")
    else:
        v = (1 + m / 1024.0) * 2.0 ** (e - 15)
    return -v if s else v


class _Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise ValueError("truncated CBOR")
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def item(self):
        ib = self.take(1)[0]
        major, ai = ib >> 5, ib & 0x1F
        if major == 7:
            if ai == 20:
                return False
            if ai == 21:
                return True
            if ai in (22, 23):
                return None
            if ai == 25:
                return _half(struct.unpack(">H", self.take(2))[0])
            if ai == 26:
                return struct.unpack(">f", self.take(4))[0]
            if ai == 27:
                return struct.unpack(">d", self.take(8))[0]
            if ai == 31:
                return _BREAK
            raise ValueError("simple value %d" % ai)
        if ai == 31:
            if major == 4:
                out = []
                while True:
                    x = self.item()
                    if x is _BREAK:
                        return out
                    out.append(x)
            if major == 5:
                out = {}
                while True:
                    k = self.item()
                    if k is _BREAK:
                        return out
                    out[_key(k)] = self.item()
            if major in (2, 3):
                parts = []
                while True:
                    x = self.item()
                    if x is _BREAK:
                        return (b"" if major == 2 else "").join(parts)
                    parts.append(x)
            raise ValueError("indefinite length for major type %d" % major)
        if ai < 24:
            n = ai
        elif ai <= 27:
            n = int.from_bytes(self.take(1 << (ai - 24)), "big")
        else:
            raise ValueError("reserved additional information %d" % ai)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return bytes(self.take(n))
        if major == 3:
            return self.take(n).decode()
        if major == 4:
            return [self.item() for _ in range(n)]
        if major == 5:
            out = {}
            for _ in range(n):
                k = self.item()
                out[_key(k)] = self.item()
            return out
        if major == 6:
            return self.item()  # A tag: its content.
        raise ValueError("major type %d" % major)


_BREAK = object()


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def loads(b):
    r = _Reader(bytes(b))
    v = r.item()
    if r.i != len(r.b):
        raise ValueError("%d bytes after the CBOR item" % (len(r.b) - r.i))
    return v


def keys_in_order(b):
    """The keys of the top-level map of b, in the order they were encoded."""
    r = _Reader(bytes(b))
    ib = r.take(1)[0]
    if ib >> 5 != 5:
        raise ValueError("not a map")
    keys = []
    n = None if (ib & 0x1F) == 31 else (ib & 0x1F if (ib & 0x1F) < 24 else
                                        int.from_bytes(r.take(1 << ((ib & 0x1F) - 24)), "big"))
    while n is None or len(keys) < n:
        k = r.item()
        if k is _BREAK:
            break
        keys.append(k)
        r.item()
    return keys
