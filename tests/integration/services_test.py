#!/usr/bin/env python3
"""Integration tests of the device services: LightDB State (with Observe),
LightDB Stream (with Block1) and logs, in JSON and CBOR, driven by
coap-client-openssl and coap-client-gnutls against the real daemon on
127.0.0.1, and checked through the devgate CLI.

Usage: services_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402

DEVGATE = g.DEVGATE
OSSL = "coap-client-openssl"
GNUTLS = "coap-client-gnutls"


def cli(d, *args):
    p = subprocess.run([DEVGATE] + list(args[:2]) + ["-c", d.conf] + list(args[2:]),
                       capture_output=True, timeout=20)
    assert p.returncode == 0, (args, p.stderr.decode())
    return p.stdout.decode()


def payload_of(out):
    """The payload coap-client printed (its stdout without -v lines)."""
    lines = [l for l in out.splitlines() if not re.match(r"^(v:1 |\w{3} \d\d |\s*$)", l)]
    return "\n".join(lines).strip()


def post(client, d, path, body, fmt=50, extra=()):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(body if isinstance(body, bytes) else body.encode())
        name = f.name
    try:
        return g.coap(client, d, "post", path, extra=["-t", str(fmt), "-f", name] + list(extra))
    finally:
        os.unlink(name)


def get_value(client, d, path, accept=None):
    extra = ["-A", str(accept)] if accept else []
    codes, out, err = g.coap(client, d, "get", path, extra=extra + ["-o", "-"])
    return codes, out


def test_state_set_get_delete(d):
    codes, _, _ = post(OSSL, d, ".d/sensor", '{"temp": 21.5, "hum": {"in": 40}}')
    assert codes == ["2.04"], codes
    codes, _, _ = post(GNUTLS, d, ".d/sensor", '{"hum": {"out": 70}}')
    assert codes == ["2.04"], codes
    whole = json.loads(cli(d, "state", "get", "acme", "dev1", "sensor"))
    assert whole == {"temp": 21.5, "hum": {"in": 40, "out": 70}}, whole
    codes, out = get_value(GNUTLS, d, ".d/sensor/temp")
    assert codes == ["2.05"], codes
    assert "21.5" in out, out
    codes, out = get_value(OSSL, d, ".d/sensor")
    assert codes == ["2.05"] and '"out":70' in out.replace(" ", ""), out
    codes, _, _ = g.coap(OSSL, d, "delete", ".d/sensor/hum")
    assert codes == ["2.02"], codes
    assert json.loads(cli(d, "state", "get", "acme", "dev1", "sensor")) == {"temp": 21.5}
    codes, out = get_value(OSSL, d, ".d/nothing/here")
    assert codes == ["2.05"], codes


def test_cbor_in_json_out(d):
    # {"a": [1, 2, {"b": true}], "c": "x"} with indefinite-length map and array.
    cbor = bytes([0xBF, 0x61, ord("a"), 0x9F, 0x01, 0x02, 0xBF, 0x61, ord("b"), 0xF5, 0xFF,
                  0xFF, 0x61, ord("c"), 0x61, ord("x"), 0xFF])
    codes, _, _ = post(OSSL, d, ".d/cb", cbor, fmt=60)
    assert codes == ["2.04"], codes
    v = json.loads(cli(d, "state", "get", "acme", "dev1", "cb"))
    assert v == {"a": [1, 2, {"b": True}], "c": "x"}, v
    codes, out = get_value(GNUTLS, d, ".d/cb/c", accept=60)
    assert codes == ["2.05"], codes


def test_malformed_and_formats(d):
    codes, out, err = post(OSSL, d, ".d/x", '{"a": ')
    assert codes == ["4.00"], codes
    assert "JSON" in out + err, out + err
    codes, _, _ = post(OSSL, d, ".d/x", "hello", fmt=0)
    assert codes == ["4.15"], codes
    codes, _ = get_value(OSSL, d, ".d/x", accept=42)
    assert codes == ["4.06"], codes
    # The session survives all of that: a good request on a new session works too.
    codes, _, _ = post(GNUTLS, d, ".d/x", "1")
    assert codes == ["2.04"], codes


def test_observe_cli_change(d):
    post(OSSL, d, ".d/cfg", '{"led": false}')
    obs = subprocess.Popen([OSSL, "-v", "7", "-m", "get", "-s", "6", "-u", "dev1@acme", "-k",
                            g.KEY, "-B", "8", d.url(".d/cfg")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        time.sleep(0.5)
        t0 = time.time()
        cli(d, "state", "set", "acme", "dev1", "cfg/led", "true")
        # The daemon notifies within a second of the CLI's commit.
        assert d.wait_log(r"observe.notify .*path=cfg", 1.0), d.logtext()
        assert time.time() - t0 < 1.5, time.time() - t0
        out, _ = obs.communicate(timeout=15)
        text = out.decode("utf-8", "replace")
        notes = re.findall(r"t:CON c:2\.05 .*Observe:(\d+)", text)
        assert notes, text
        assert '{"led":true}' in text.replace(" ", ""), text
    finally:
        if obs.poll() is None:
            obs.kill()
            obs.wait()
    assert d.wait_log(r"session.closed|session.established")


def test_stream_block1(d):
    records = [{"t": 1700000000 + i, "v": i} for i in range(150)]
    body = json.dumps(records)
    assert len(body) >= 4096, len(body)
    codes, out, err = post(GNUTLS, d, ".s/temp", body, extra=["-b", "64"])
    assert codes and codes[-1] == "2.04", codes
    assert codes.count("2.31") >= len(body) // 64 - 1, codes
    rows = json.loads(cli(d, "stream", "list", "acme", "dev1", "--json"))
    assert len(rows) == 150, len(rows)
    assert rows[0]["ts"] == 1700000000 * 1000 and rows[-1]["value"] == records[-1], rows[-1]
    assert all(r["path"] == "temp" for r in rows)
    codes, _, _ = post(OSSL, d, ".s", '{"x": 1}')
    assert codes == ["2.04"], codes
    rows = json.loads(cli(d, "stream", "list", "acme", "dev1", "--json", "--limit", "1"))
    assert len(rows) == 1 and rows[0]["path"] == "" and rows[0]["value"] == {"x": 1}, rows


def test_logs_both_paths(d):
    codes, _, _ = post(OSSL, d, ".s/logs", '{"level": "warn", "module": "net", "msg": "one"}')
    assert codes == ["2.04"], codes
    cbor = bytes([0xA3, 0x65]) + b"level" + bytes([0x64]) + b"info" + bytes([0x66]) + \
        b"module" + bytes([0x63]) + b"app" + bytes([0x63]) + b"msg" + bytes([0x63]) + b"two"
    codes, _, _ = post(GNUTLS, d, "logs", cbor, fmt=60)
    assert codes == ["2.04"], codes
    rows = json.loads(cli(d, "logs", "list", "acme", "dev1", "--json"))
    assert [(r["level"], r["module"], r["msg"]) for r in rows] == \
        [("warn", "net", "one"), ("info", "app", "two")], rows
    rows = json.loads(cli(d, "logs", "list", "acme", "dev1", "--json", "--level", "warn"))
    assert len(rows) == 1


def test_body_too_large(d):
    body = json.dumps([{"v": i} for i in range(300)])
    assert len(body) > 2048
    codes, out, err = post(GNUTLS, d, ".s/big", body, extra=["-b", "64"])
    assert "4.13" in codes, codes
    assert re.search(r"c:4\.13 .*Size1:1024", out + err), out + err
    rows = json.loads(cli(d, "stream", "list", "acme", "dev1", "--json"))
    assert rows == [], rows


def test_rate_limit(d):
    # Past its burst and rate, one session's requests get 4.29 (the later
    # blocks of a Block1 upload are not new requests: see firmware_test.py).
    import fwclient as fw
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        codes = [c.request(fw.GET, ".d/x").code_text for _ in range(6)]
    finally:
        c.close()
    assert codes[:2] == ["2.05", "2.05"] and "4.29" in codes, codes


def _answers(c, tokens, timeout=5.0):
    """The answers to the requests with these tokens, by token (CON
    notifications are ACKed and skipped)."""
    import fwclient as fw
    got = {}
    deadline = time.time() + timeout
    while len(got) < len(tokens) and time.time() < deadline:
        m = c.recv(max(0.05, deadline - time.time()))
        if m is None:
            break
        if m.type == fw.CON:
            c.send(fw.Msg(fw.ACK, 0, m.mid))
        elif m.token in tokens:
            got[m.token] = m
    assert len(got) == len(tokens), (len(got), len(tokens))
    return got


def _put_then_get(c, value):
    """Sends a PUT of .d/v and, without waiting, a GET of it; returns
    (the PUT's code, the value the GET saw)."""
    import fwclient as fw
    put = fw.Msg(fw.CON, fw.PUT, c.next_mid(), c.next_token(), fw.path_options(".d/v") +
                 [(fw.OPT_CONTENT_FORMAT, fw.uint_bytes(50))], json.dumps(value).encode())
    get = fw.Msg(fw.CON, fw.GET, c.next_mid(), c.next_token(), fw.path_options(".d/v"), b"")
    c.send(put)
    c.send(get)
    got = _answers(c, {put.token, get.token})
    g_ = got[get.token]
    assert g_.code_text == "2.05", g_.code_text
    return got[put.token].code_text, (json.loads(g_.payload) if g_.payload else None)


def _get_v(c):
    import fwclient as fw
    r = c.request(fw.GET, ".d/v")
    assert r is not None and r.code_text == "2.05", r and r.code_text
    return json.loads(r.payload) if r.payload else None


def test_get_races_writes(d):
    """A state GET is answered from the worker's cache of documents; it
    must never show a document older than the last write acknowledged to
    the device, nor keep one older than a CLI change once that change was
    notified. 1. A GET sent right behind a PUT, on a new session each time
    (the GET misses the cache and its read races the write's commit): it
    sees the old or the new value, and the next GET the new one. 2. The
    same on one session, 100 times (every write replaces the cached
    document before its 2.04). 3. A CLI change while the document is
    cached is seen within the poll, and never undone by the cache; a
    device write after it reads back too."""
    import fwclient as fw
    for i in range(12):
        c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
        try:
            code, seen = _put_then_get(c, i)
            assert code == "2.04", code
            assert seen in (i - 1, i) or (i == 0 and seen is None), (i, seen)
            assert _get_v(c) == i, i
        finally:
            c.close()
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        prev = 11
        for i in range(100, 200):
            code, seen = _put_then_get(c, i)
            assert code == "2.04", code
            assert seen in (prev, i), (i, seen)
            assert _get_v(c) == i, i
            prev = i
        cli(d, "state", "set", "acme", "dev1", "v", "1000")
        deadline = time.time() + 3
        v = _get_v(c)
        while v != 1000 and time.time() < deadline:
            time.sleep(0.05)
            v = _get_v(c)
        assert v == 1000, v
        for _ in range(10):
            assert _get_v(c) == 1000
        code, seen = _put_then_get(c, 1001)
        assert code == "2.04" and seen in (1000, 1001), (code, seen)
        assert _get_v(c) == 1001
        assert json.loads(cli(d, "state", "get", "acme", "dev1", "v")) == 1001
    finally:
        c.close()


def _get_whole(c, path, check_etag=True):
    """GETs `path` block by block (Block2, 1024 bytes); returns (the
    document, the ETags seen). Raises if a block is not 2.05."""
    import fwclient as fw
    num, body, etags = 0, b"", []
    for _ in range(64):
        r = c.request(fw.GET, path, options=[(fw.OPT_BLOCK2, fw.uint_bytes(num << 4 | 6))])
        assert r is not None and r.code_text == "2.05", r and r.code_text
        etags.append(r.opt(fw.OPT_ETAG))
        b = r.block(fw.OPT_BLOCK2)
        body += r.payload
        if b is None or not b[1]:
            return json.loads(body) if body else None, etags
        num += 1
    raise AssertionError("more than 64 blocks")


def test_cached_documents_near_limits(d):
    """The worker's cache keeps documents up to 8192 bytes of JSON text and
    reads larger ones from the store: PUTs and DELETEs of 900-byte values
    that take the device's document back and forth across that size, and
    up to max_state_bytes, are each seen by the GETs (in blocks) that
    follow their answer (a miss, then a hit when it is kept), and by the
    CLI; a write over max_state_bytes is refused and changes nothing a GET
    sees; a document that changes between two blocks of a GET changes the
    ETag, so the client can tell."""
    import fwclient as fw
    cf = [(fw.OPT_CONTENT_FORMAT, fw.uint_bytes(50))]
    want = {}

    def check(what):
        for _ in range(2):
            got, _ = _get_whole(c, ".d/big")
            assert got == (want or None), (what, sorted(got or {}), sorted(want))
        cli_got = cli(d, "state", "get", "acme", "dev1", "big").strip()
        assert (json.loads(cli_got) if want else None) == (want or None), what

    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        # Up past 8192 bytes, down below it, and up again to the 16384 limit.
        ops = [("put", k) for k in range(12)] + [("del", k) for k in (3, 7, 9, 11)] + \
              [("put", k) for k in [3, 7] + list(range(12, 30))]
        for op, k in ops:
            key = "k%02d" % k
            if op == "put":
                val = "%s%d" % (chr(97 + k % 26), len(want)) * 1 + "x" * 900
                r = c.request(fw.PUT, ".d/big/" + key, json.dumps(val).encode(), options=cf)
                if r is not None and r.code_text == "4.13":
                    break  # max_state_bytes reached: the refused write changed nothing
                assert r is not None and r.code_text == "2.04", (key, r and r.code_text)
                want[key] = val
            else:
                r = c.request(fw.DELETE, ".d/big/" + key)
                assert r is not None and r.code_text == "2.02", (key, r and r.code_text)
                del want[key]
            check((op, key, len(json.dumps(want))))
        else:
            raise AssertionError("max_state_bytes never reached")
        check("after 4.13")
        assert len(json.dumps(want)) > 12000, len(json.dumps(want))
        # Below the cache's limit, then a change between two blocks of a GET.
        for key in list(want)[:12]:
            r = c.request(fw.DELETE, ".d/big/" + key)
            assert r is not None and r.code_text == "2.02"
            del want[key]
        check("shrunk")
        assert 1024 < len(json.dumps(want)) < 8192, len(json.dumps(want))
        b0 = c.request(fw.GET, ".d/big", options=[(fw.OPT_BLOCK2, fw.uint_bytes(0 << 4 | 6))])
        assert b0.code_text == "2.05" and b0.block(fw.OPT_BLOCK2)[1] == 1
        r = c.request(fw.PUT, ".d/big/znew", b'"changed"', options=cf)
        assert r is not None and r.code_text == "2.04"
        want["znew"] = "changed"
        b1 = c.request(fw.GET, ".d/big", options=[(fw.OPT_BLOCK2, fw.uint_bytes(1 << 4 | 6))])
        assert b1.code_text == "2.05", b1.code_text
        assert b1.opt(fw.OPT_ETAG) != b0.opt(fw.OPT_ETAG), "same ETag across a change"
        check("after the change")
    finally:
        c.close()

TESTS = [
    (test_state_set_get_delete, {}),
    (test_cbor_in_json_out, {}),
    (test_malformed_and_formats, {}),
    (test_observe_cli_change, {}),
    (test_stream_block1, {"limits": {"device_requests_per_s": 1000}}),
    (test_logs_both_paths, {}),
    (test_body_too_large, {"limits": {"max_body": 1024, "device_requests_per_s": 1000}}),
    (test_rate_limit, {"limits": {"device_requests_per_s": 2, "device_burst": 2}}),
    (test_get_races_writes, {"limits": {"device_requests_per_s": 10000, "device_burst": 10000}}),
    # One worker: every GET of the session meets the same cache.
    (test_cached_documents_near_limits,
     {"config": {"workers": 1},
      "limits": {"device_requests_per_s": 10000, "device_burst": 10000,
                 "max_state_bytes": 16384}}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
