#!/usr/bin/env python3
"""Integration tests: remote procedure calls attacked. A hostile or buggy
device (answers with other devices' call ids, floods .rpc/status, nests
its detail deeply, RSTs or never ACKs the call, observes with many tokens,
disconnects mid-call), an operator's typos on `devgate rpc call` (odd
method names and params, odd --timeout values, unknown projects and
devices), many concurrent calls across workers, and a daemon stopped and
restarted while calls wait.

Usage: rpc_attack_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import fwclient as fw  # noqa: E402
import minicbor  # noqa: E402
import crash_test  # noqa: E402
from rpc_test import (CBOR, JSON, CHANGED, rpc_cli, rpc_cli_bg, observe, next_call,  # noqa: E402
                      answer, request)

BAD_REQUEST, RESET = 128, 3
DEVICES = ["dev%d" % i for i in range(1, 7)]


def psk():
    return [{"identity": "%s@acme" % n, "device": n, "key": g.KEY} for n in DEVICES]


def dev(d, name="dev1"):
    return fw.FwClient("127.0.0.1", d.port, "%s@acme" % name, g.KEY)


def status(c, body, fmt=CBOR):
    payload = minicbor.dumps(body) if fmt == CBOR and not isinstance(body, bytes) else body
    return request(c, fw.POST, ".rpc/status", payload=payload,
                   options=[(fw.OPT_CONTENT_FORMAT, bytes([fmt]))])


def rows(d, device=None):
    args = ["list", "acme", "--json"] + (["--device", device] if device else [])
    rc, out, err = rpc_cli(d, *args)
    assert rc == 0, err
    return json.loads(out)


def test_other_devices_call_ids(d):
    """dev2 answers dev1's call with its id: dev1's call stays open, and
    only dev1's own answer completes it."""
    a, b = dev(d, "dev1"), dev(d, "dev2")
    try:
        ta, _ = observe(a)
        observe(b)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "mine", "--timeout", "8", "--json")
        call, _ = next_call(a, ta)
        assert call is not None, "no call notified"
        r = status(b, {"id": call["id"], "statusCode": 0, "detail": {"by": "dev2"}})
        assert r is not None and r.code == CHANGED, r and r.code_text
        time.sleep(0.5)
        assert p.poll() is None, "another device's answer completed the call"
        answer(a, call["id"], 0, {"by": "dev1"})
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, (p.returncode, err)
        assert json.loads(out)["detail"] == {"by": "dev1"}, out
    finally:
        a.close()
        b.close()


def test_status_flood_and_odd_bodies(d):
    """Random ids, non-UTF-8 ids, an id of 65 bytes, deep and large details,
    NaN and fractional status codes: each gets an answer, the session lives,
    and the real call is still answered afterwards."""
    c = dev(d)
    try:
        tok, _ = observe(c)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "m", "--timeout", "20", "--json")
        call, _ = next_call(c, tok)
        assert call is not None
        rnd = random.Random(7)
        for i in range(150):
            rid = "".join(rnd.choice("0123456789abcdef") for _ in range(16))
            r = status(c, {"id": rid, "statusCode": rnd.randrange(0, 17)})
            assert r is not None and r.code == CHANGED, (i, r and r.code_text)
        # A CBOR text string that is not UTF-8: a0 is a continuation byte.
        bad_utf8 = b"\xa2\x62id\x62\xa0\xa0\x6astatusCode\x00"
        # statusCode NaN (half float 0x7e00) and 1.5.
        nan = b"\xa2\x62id\x62ab\x6astatusCode\xf9\x7e\x00"
        deep = {"id": "zz", "statusCode": 0, "detail": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
               1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
        for body in (bad_utf8, nan, minicbor.dumps({"id": "x" * 65, "statusCode": 0}),
                     minicbor.dumps(deep), minicbor.dumps({"id": "ab", "statusCode": -1}),
                     minicbor.dumps({"id": "ab", "statusCode": 1e300})):
            r = status(c, body)
            assert r is not None and r.code == BAD_REQUEST, (body[:40], r and r.code_text)
        # The largest detail a single datagram carries is taken.
        big = {"id": "big", "statusCode": 0, "detail": {"s": "y" * 900}}
        r = status(c, big)
        assert r is not None and r.code == CHANGED, r and r.code_text
        answer(c, call["id"], 2, {"ok": [1, 2, {"k": "v"}]})
        out, err = p.communicate(timeout=10)
        assert p.returncode == 3, (p.returncode, err)
        assert json.loads(out)["detail"] == {"ok": [1, 2, {"k": "v"}]}, out
    finally:
        c.close()


def test_cli_odd_input(d):
    """Usage errors exit 2 before anything is stored; unknown projects and
    devices exit 1; nothing odd reaches the store."""
    c = dev(d)
    try:
        observe(c)
        cases = [
            ("", "[]", None),
            ("m" * 10240, "[]", None),
            ("m\x01x", "[]", None),
            ("m\nx", "[]", None),
            ("m", "{}", None),
            ("m", "1", None),
            ("m", "\"s\"", None),
            ("m", "[1", None),
            ("m", "[" + "1," * 40000 + "1]", None),
            ("m", "[" * 40 + "]" * 40, None),
            ("m", "[]", "nan"),
            ("m", "[]", "-1"),
            ("m", "[]", "0"),
            ("m", "[]", "1e9"),
            ("m", "[]", "inf"),
            ("m", "[]", "5s"),
        ]
        for method, params, timeout in cases:
            args = ["call", "acme", "dev1", method, params]
            if timeout is not None:
                args += ["--timeout", timeout]
            rc, out, err = rpc_cli(d, *args)
            assert rc == 2, (method[:20], params, timeout, rc, err)
        for proj, device in (("nosuch", "dev1"), ("acme", "nosuch"), ("", "")):
            rc, out, err = rpc_cli(d, "call", proj, device, "m", "--timeout", "2")
            assert rc == 1, (proj, device, rc, err)
        assert rows(d) == [], rows(d)
    finally:
        c.close()


def test_cli_non_utf8(d):
    """A method or params that are not UTF-8 are refused (exit 2): the device
    would get a call its CBOR or JSON decoder rejects."""
    c = dev(d)
    try:
        observe(c)
        for method, params in ((b"m\xff", b"[]"), (b"m", b"[\"\xc3\x28\"]"),
                               (b"m", b"[\"\xed\xa0\x80\"]")):
            p = subprocess.run([g.DEVGATE, "rpc", "call", "acme", "dev1", method, params,
                                "--timeout", "2", "-c", d.conf], capture_output=True, timeout=30)
            assert p.returncode == 2, (method, params, p.returncode, p.stderr)
        assert rows(d) == [], rows(d)
    finally:
        c.close()


def test_tiny_timeout(d):
    """--timeout 0.001: the call times out (exit 6) and is never notified."""
    c = dev(d)
    try:
        tok, _ = observe(c)
        rc, out, err = rpc_cli(d, "call", "acme", "dev1", "quick", "--timeout", "0.001")
        assert rc == 6, (rc, out, err)
        call, _ = next_call(c, tok, timeout=1.5)
        assert call is None, "an expired call was notified: %s" % call
    finally:
        c.close()


def test_large_params(d):
    """A call larger than one block goes out with Block2; the device fetches
    every block and reads the whole call."""
    c = dev(d)
    try:
        tok, _ = observe(c, JSON)
        params = json.dumps(["p" * 1000 for _ in range(12)])
        p = rpc_cli_bg(d, "call", "acme", "dev1", "big", params, "--timeout", "10")
        m = None
        deadline = time.time() + 5
        while time.time() < deadline and m is None:
            r = c.recv(0.5)
            if r is not None and r.type == fw.CON:
                c.send(fw.Msg(fw.ACK, 0, r.mid))
            if r is not None and r.token == tok and r.code == 69:
                m = r
        assert m is not None, "no notification"
        body = m.payload
        blk = m.block(fw.OPT_BLOCK2) if hasattr(fw, "OPT_BLOCK2") else m.block(23)
        assert blk is not None and blk[1] == 1, "a large call without Block2"
        num, szx = 1, blk[2]
        while True:
            r = request(c, fw.GET, ".rpc", options=[(fw.OPT_ACCEPT, bytes([JSON])),
                                                    (23, fw.uint_bytes((num << 4) | szx))])
            assert r is not None and r.code == 69, ("block", num, r and r.code_text,
                                                    r and r.payload[:80])
            body += r.payload
            if not r.block(23)[1]:
                break
            num += 1
            assert num < 100
        call = json.loads(body)
        assert call["method"] == "big" and json.dumps(call["params"]) == params, body[:80]
        answer(c, call["id"], 0, fmt=JSON)
        p.communicate(timeout=10)
        assert p.returncode == 0, p.returncode
    finally:
        c.close()


def test_expired_behind_head_not_notified(d):
    """A short call queued behind a long one expires while waiting: when the
    long one is answered, the expired one is not notified as if it were live."""
    c = dev(d)
    try:
        tok, _ = observe(c)
        p1 = rpc_cli_bg(d, "call", "acme", "dev1", "long", "--timeout", "10")
        call, _ = next_call(c, tok)
        assert call is not None and call["method"] == "long", call
        p2 = rpc_cli_bg(d, "call", "acme", "dev1", "short", "--timeout", "1")
        p2.communicate(timeout=10)
        assert p2.returncode == 6, p2.returncode
        answer(c, call["id"], 0)
        p1.communicate(timeout=10)
        assert p1.returncode == 0, p1.returncode
        late, _ = next_call(c, tok, timeout=1.5)
        assert late is None, "an expired call was notified after the head: %s" % late
    finally:
        c.close()


def test_rst_never_ack_reregister_disconnect(d):
    """RST of the call's notification, a device that never ACKs, a
    re-registration mid-call, many tokens, and a disconnect mid-call: the
    daemon stays up (ASan-clean at exit) and the next device gets its call."""
    c = dev(d)
    try:
        tok, _ = observe(c)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "r", "--timeout", "3")
        call, m = next_call(c, tok, ack=False)
        assert call is not None
        c.send(fw.Msg(RESET, 0, m.mid))
        p.communicate(timeout=10)
        assert p.returncode == 6, p.returncode
        # Many tokens: up to the limit, then 5.03; each gets the call.
        toks = []
        for _ in range(40):
            t = c.next_token()
            r = c.request(fw.GET, ".rpc", options=[(fw.OPT_OBSERVE, b""),
                                                   (fw.OPT_ACCEPT, bytes([CBOR]))], token=t)
            assert r is not None, "no answer to an observation"
            if r.code == 69:
                toks.append(t)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "many", "--timeout", "3")
        time.sleep(1.0)
        # Re-register mid-call with the first token, then vanish without a word.
        c.request(fw.GET, ".rpc", options=[(fw.OPT_OBSERVE, b""),
                                           (fw.OPT_ACCEPT, bytes([CBOR]))], token=toks[0])
        c.sock.close()
        c.ssl = None
        p.communicate(timeout=10)
        assert p.returncode == 6, p.returncode
    finally:
        c.close()
    c = dev(d)
    try:
        tok, _ = observe(c)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "after", "--timeout", "8")
        call, _ = next_call(c, tok)
        assert call is not None and call["method"] == "after", call
        answer(c, call["id"], 0)
        p.communicate(timeout=10)
        assert p.returncode == 0, p.returncode
    finally:
        c.close()


def test_many_calls_many_devices(d):
    """50 concurrent calls over six devices on two workers: each call ends
    with the device's answer or "busy", none is lost or crossed."""
    clients = {n: dev(d, n) for n in DEVICES}
    try:
        toks = {n: observe(c)[0] for n, c in clients.items()}
        procs = []
        for i in range(50):
            n = DEVICES[i % len(DEVICES)]
            procs.append((n, i, rpc_cli_bg(d, "call", "acme", n, "m%d" % i, "[%d]" % i,
                                           "--timeout", "20", "--json")))
        deadline = time.time() + 25
        answered = {}
        while time.time() < deadline and any(p.poll() is None for _, _, p in procs):
            for n, c in clients.items():
                call, _ = next_call(c, toks[n], timeout=0.05)
                if call is not None:
                    assert call["method"] == "m%d" % call["params"][0], call
                    assert call["params"][0] % len(DEVICES) == DEVICES.index(n), (n, call)
                    answered[call["id"]] = n
                    answer(c, call["id"], 0, {"n": call["params"][0]})
        codes = {}
        for n, i, p in procs:
            out, err = p.communicate(timeout=10)
            codes[i] = p.returncode
            assert p.returncode in (0, 7), (i, p.returncode, err)
            if p.returncode == 0:
                res = json.loads(out)
                assert res["device"] == n and res["detail"] == {"n": i}, res
        assert list(codes.values()).count(0) >= 30, codes
    finally:
        for c in clients.values():
            c.close()


def test_sigterm_with_calls_queued_then_restart(d):
    """SIGTERM while calls are queued: exit 0. The waiting CLIs end (timeout
    or offline), and after a restart none of those calls reaches the device."""
    c = dev(d)
    try:
        tok, _ = observe(c)
        procs = [rpc_cli_bg(d, "call", "acme", "dev1", "q%d" % i, "--timeout", "4")
                 for i in range(4)]
        call, _ = next_call(c, tok)
        assert call is not None
        d.proc.send_signal(15)
        assert d.proc.wait(10) == 0, d.proc.returncode
        assert "ERROR: AddressSanitizer" not in d.logtext()
        codes = [p.wait(15) for p in procs]
        assert all(rc in (4, 6) for rc in codes), codes
    finally:
        c.close()
    crash_test.restart(d)
    c = dev(d)
    try:
        tok, _ = observe(c)
        late, _ = next_call(c, tok, timeout=2.0)
        assert late is None, "an old call was delivered after the restart: %s" % late
        p = rpc_cli_bg(d, "call", "acme", "dev1", "new", "--timeout", "8")
        call, _ = next_call(c, tok)
        assert call is not None and call["method"] == "new", call
        answer(c, call["id"], 0)
        p.communicate(timeout=10)
        assert p.returncode == 0, p.returncode
        assert all(r["status"] != "pending" and r["status"] != "queued" for r in rows(d)), rows(d)
    finally:
        c.close()


TESTS = [
    (test_other_devices_call_ids, {"psk": psk()}),
    (test_status_flood_and_odd_bodies, {"limits": {"device_requests_per_s": 1000,
                                                   "device_burst": 1000}}),
    (test_cli_odd_input, {}),
    (test_cli_non_utf8, {}),
    (test_tiny_timeout, {}),
    (test_large_params, {}),
    (test_expired_behind_head_not_notified, {}),
    (test_rst_never_ack_reregister_disconnect, {}),
    (test_many_calls_many_devices, {"psk": psk(), "config": {"workers": 2}}),
    (test_sigterm_with_calls_queued_then_restart, {}),
]

if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
