#!/usr/bin/env python3
"""Integration tests: remote procedure calls (issue 10 section 2). A device
(the project's own PSK DTLS client, fwclient.py, acting as the Golioth SDK's
rpc.c does) observes ".rpc" with Accept CBOR, answers each notified call
with a POST to ".rpc/status"; `devgate rpc call` waits for that answer.
coap-client-openssl observes ".rpc" too, as an independent client.

Usage: rpc_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import fwclient as fw  # noqa: E402
import minicbor  # noqa: E402

DEVGATE = g.DEVGATE
CBOR, JSON = 60, 50
CONTENT, CHANGED = 69, 68


def rpc_cli(d, *args, timeout=30):
    """Runs `devgate rpc ARGS -c CONF`; returns (exit status, stdout, stderr)."""
    p = subprocess.run([DEVGATE, "rpc"] + list(args) + ["-c", d.conf], capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def rpc_cli_bg(d, *args):
    return subprocess.Popen([DEVGATE, "rpc"] + list(args) + ["-c", d.conf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def observe(c, fmt=CBOR):
    """Registers an observation of .rpc; returns (token, answer)."""
    tok = c.next_token()
    r = c.request(fw.GET, ".rpc", options=[(fw.OPT_OBSERVE, b""),
                                           (fw.OPT_ACCEPT, bytes([fmt]))], token=tok)
    assert r is not None and r.code == CONTENT, r and r.code_text
    assert r.opt(fw.OPT_OBSERVE) is not None, "no Observe in the registration answer"
    return tok, r


def decode(fmt, payload):
    return minicbor.loads(payload) if fmt == CBOR else json.loads(payload)


def next_call(c, tok, fmt=CBOR, timeout=5.0, ack=True):
    """Waits for a notification on tok (or takes one that came while a request
    waited for its answer); ACKs it and returns (call, msg)."""
    stash = getattr(c, "stash", [])
    for m in stash:
        if m.token == tok and m.code == CONTENT:
            stash.remove(m)
            return decode(fmt, m.payload), m
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = c.recv(max(0.05, deadline - time.time()))
        if m is None:
            continue
        if m.type == fw.CON and ack:
            c.send(fw.Msg(fw.ACK, 0, m.mid))
        if m.token == tok and m.code == CONTENT:
            return decode(fmt, m.payload), m
    return None, None


def answer(c, call_id, status, detail=None, fmt=CBOR):
    body = {"id": call_id, "statusCode": status}
    if detail is not None:
        body["detail"] = detail
    payload = minicbor.dumps(body, indefinite=True) if fmt == CBOR else json.dumps(body).encode()
    r = request(c, fw.POST, ".rpc/status", payload=payload,
                options=[(fw.OPT_CONTENT_FORMAT, bytes([fmt]))])
    assert r is not None and r.code == CHANGED, r and r.code_text
    return r


def request(c, code, path, payload=b"", options=(), timeout=3.0):
    """As FwClient.request, but notifications that arrive meanwhile are ACKed
    and kept in c.stash for next_call()."""
    if not hasattr(c, "stash"):
        c.stash = []
    m = fw.Msg(fw.CON, code, c.next_mid(), c.next_token(), fw.path_options(path) + list(options),
               payload)
    c.send(m)
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = c.recv(max(0.05, deadline - time.time()))
        if r is None:
            continue
        if r.token == m.token and r.type != fw.CON:
            return r
        if r.type == fw.CON:
            c.send(fw.Msg(fw.ACK, 0, r.mid))
            c.stash.append(r)
    return None


def client(d):
    return fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)


def test_round_trip_cbor(d):
    c = client(d)
    try:
        tok, reg = observe(c)
        # The registration answer is the CBOR text "OK", which the SDK ignores.
        assert reg.payload == b"\x62OK", reg.payload
        p = rpc_cli_bg(d, "call", "acme", "dev1", "set_led", '[1, "on", 2.5]', "--timeout", "8",
                       "--json")
        call, m = next_call(c, tok)
        assert call is not None, "no call notified"
        assert m.type == fw.CON, "a call is a confirmable notification"
        assert set(call) == {"id", "method", "params"}, call
        assert call["method"] == "set_led" and call["params"] == [1, "on", 2.5], call
        t0 = time.time()
        answer(c, call["id"], 0, {"led": "on", "n": 3})
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, (p.returncode, err)
        res = json.loads(out)
        assert res["statusCode"] == 0 and res["detail"] == {"led": "on", "n": 3}, res
        assert res["status"] == "done" and res["id"] == call["id"], res
        assert time.time() - t0 < 2, "the CLI saw the answer late"
        # The record is kept and listed.
        rc, out, err = rpc_cli(d, "list", "acme", "--json")
        assert rc == 0, err
        rows = json.loads(out)
        assert [r["method"] for r in rows] == ["set_led"], rows
        assert rows[0]["params"] == [1, "on", 2.5] and rows[0]["statusCode"] == 0, rows
    finally:
        c.close()


def test_status_codes_and_json(d):
    """A non-zero statusCode exits 3 and is printed; JSON observers get JSON calls."""
    c = client(d)
    try:
        tok, reg = observe(c, JSON)
        assert json.loads(reg.payload) == "OK", reg.payload
        p = rpc_cli_bg(d, "call", "acme", "dev1", "nosuch")
        call, _ = next_call(c, tok, JSON)
        assert call is not None and call["method"] == "nosuch" and call["params"] == [], call
        answer(c, call["id"], 5, fmt=JSON)
        out, err = p.communicate(timeout=10)
        assert p.returncode == 3, (p.returncode, out, err)
        assert "statusCode 5 (NOT_FOUND)" in out.decode(), out
    finally:
        c.close()


def test_offline_fails_at_once(d):
    t0 = time.time()
    rc, out, err = rpc_cli(d, "call", "acme", "dev1", "reboot", "--timeout", "20")
    assert rc == 4, (rc, out, err)
    assert "not connected" in err, err
    assert time.time() - t0 < 3, "an offline call waited %.1fs" % (time.time() - t0)
    rc, out, _ = rpc_cli(d, "list", "acme", "--json")
    assert json.loads(out)[0]["status"] == "offline", out


def test_not_observing(d):
    c = client(d)
    try:
        r = c.request(fw.GET, ".d/x")
        assert r is not None, "no answer"
        rc, out, err = rpc_cli(d, "call", "acme", "dev1", "reboot", "--timeout", "20")
        assert rc == 5, (rc, out, err)
        assert "does not observe .rpc" in err, err
    finally:
        c.close()


def test_timeout(d):
    """A device that takes the call and never answers: exit 6 at --timeout,
    recorded as timeout; the notification was retransmitted while unacknowledged."""
    c = client(d)
    try:
        tok, _ = observe(c)
        t0 = time.time()
        p = rpc_cli_bg(d, "call", "acme", "dev1", "slow", "--timeout", "4")
        seen = []
        while time.time() - t0 < 4.5:
            m = c.recv(0.5)
            if m is not None and m.token == tok:
                seen.append(m.mid)
        out, err = p.communicate(timeout=10)
        took = time.time() - t0
        assert p.returncode == 6, (p.returncode, out, err)
        assert 3.5 < took < 6, took
        # Never ACKed: the same CON went again (RFC 7252 retransmission).
        assert len(seen) >= 2 and len(set(seen)) == 1, seen
        rc, out, _ = rpc_cli(d, "list", "acme", "--json")
        assert json.loads(out)[-1]["status"] == "timeout", out
        # The device answering late changes nothing and is still answered 2.04.
        r = c.request(fw.POST, ".rpc/status", payload=minicbor.dumps({"id": "x", "statusCode": 0}),
                      options=[(fw.OPT_CONTENT_FORMAT, bytes([CBOR]))])
        assert r is not None and r.code == CHANGED, r and r.code_text
    finally:
        c.close()


def test_queue_one_in_flight(d):
    """Three calls at once: one notified at a time, the next after the answer."""
    c = client(d)
    try:
        tok, _ = observe(c)
        procs = [rpc_cli_bg(d, "call", "acme", "dev1", "m%d" % i, "[%d]" % i, "--timeout", "10")
                 for i in range(3)]
        got = []
        for _ in range(3):
            call, _ = next_call(c, tok, timeout=5)
            assert call is not None, "calls notified: %s" % got
            # Nothing else comes while this one is unanswered.
            extra, _ = next_call(c, tok, timeout=0.6)
            assert extra is None, "a second call while %s is in flight" % call["method"]
            got.append(call["method"])
            answer(c, call["id"], 0)
        assert sorted(got) == ["m0", "m1", "m2"], got
        for p in procs:
            p.communicate(timeout=10)
            assert p.returncode == 0, p.returncode
    finally:
        c.close()


def test_queue_full_is_busy(d):
    c = client(d)
    try:
        tok, _ = observe(c)
        procs = [rpc_cli_bg(d, "call", "acme", "dev1", "q%d" % i, "--timeout", "6")
                 for i in range(8)]
        codes = [p.wait(15) for p in procs]
        # Five fit (one in flight, four behind it); the rest are refused at once.
        assert codes.count(7) == 3, codes
        assert codes.count(6) == 5, codes
    finally:
        c.close()


def test_bad_status_bodies(d):
    """Malformed answers get 4.00 and do not end the session or the call."""
    c = client(d)
    try:
        tok, _ = observe(c)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "m", "--timeout", "8")
        call, _ = next_call(c, tok)
        assert call is not None
        for body in (b"\xbf", minicbor.dumps({"statusCode": 0}), minicbor.dumps([1, 2]),
                     minicbor.dumps({"id": 5, "statusCode": 0}),
                     minicbor.dumps({"id": call["id"], "statusCode": "zero"})):
            r = c.request(fw.POST, ".rpc/status", payload=body,
                          options=[(fw.OPT_CONTENT_FORMAT, bytes([CBOR]))])
            assert r is not None and r.code == 128, (body, r and r.code_text)
        answer(c, call["id"], 0)
        p.communicate(timeout=10)
        assert p.returncode == 0, p.returncode
    finally:
        c.close()


def test_coap_client_observes(d):
    """coap-client-openssl observes .rpc and receives a call as a notification."""
    args = ["coap-client-openssl", "-m", "get", "-s", "4", "-A", "50", "-u", "dev1@acme",
            "-k", g.KEY, "coaps://127.0.0.1:%d/.rpc" % d.port]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    q = rpc_cli_bg(d, "call", "acme", "dev1", "ping", '["x"]', "--timeout", "2")
    out, _ = p.communicate(timeout=15)
    q.communicate(timeout=10)
    text = out.decode()
    assert '"OK"' in text, text
    assert '"method":"ping"' in text and '"params":["x"]' in text, text
    assert q.returncode == 6, q.returncode  # coap-client does not answer calls.


def test_reconnect_reobserves(d):
    """A device that reconnects and observes again with its old token gets new calls."""
    c = client(d)
    tok, _ = observe(c)
    c.close()
    c = client(d)
    try:
        r = c.request(fw.GET, ".rpc", options=[(fw.OPT_OBSERVE, b""),
                                               (fw.OPT_ACCEPT, bytes([CBOR]))], token=tok)
        assert r is not None and r.code == CONTENT
        time.sleep(0.3)
        p = rpc_cli_bg(d, "call", "acme", "dev1", "again", "--timeout", "8")
        call, _ = next_call(c, tok)
        assert call is not None and call["method"] == "again", call
        answer(c, call["id"], 0)
        p.communicate(timeout=10)
        assert p.returncode == 0
    finally:
        c.close()


def test_reconnect_mid_call_gets_it_again(d):
    """The SDK's reconnect: the session vanishes with a call notified but not
    answered, a new one observes .rpc with the old token, and the call comes
    again on it; the device's answer completes it."""
    c = client(d)
    tok, _ = observe(c)
    p = rpc_cli_bg(d, "call", "acme", "dev1", "reboot", "[3]", "--timeout", "10", "--json")
    call, _ = next_call(c, tok)
    assert call is not None
    c.sock.close()  # Gone without a word, as after a NAT rebinding.
    c2 = client(d)
    try:
        r = c2.request(fw.GET, ".rpc", options=[(fw.OPT_OBSERVE, b""),
                                                (fw.OPT_ACCEPT, bytes([CBOR]))], token=tok)
        assert r is not None and r.code == CONTENT, r and r.code_text
        again, _ = next_call(c2, tok, timeout=3)
        assert again is not None and again["id"] == call["id"], (call, again)
        answer(c2, again["id"], 0, {"ok": True})
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, (p.returncode, err)
        assert json.loads(out)["detail"] == {"ok": True}, out
    finally:
        c2.close()


def test_fractional_status_code_refused(d):
    c = client(d)
    try:
        r = c.request(fw.POST, ".rpc/status",
                      payload=minicbor.dumps({"id": "a", "statusCode": 1.5}),
                      options=[(fw.OPT_CONTENT_FORMAT, bytes([CBOR]))])
        assert r is not None and r.code == 128, r and r.code_text
    finally:
        c.close()


TESTS = [
    (test_reconnect_mid_call_gets_it_again, {}),
    (test_fractional_status_code_refused, {}),
    (test_round_trip_cbor, {}),
    (test_status_codes_and_json, {}),
    (test_offline_fails_at_once, {}),
    (test_not_observing, {}),
    (test_timeout, {}),
    (test_queue_one_in_flight, {}),
    (test_queue_full_is_busy, {}),
    (test_bad_status_bodies, {}),
    (test_coap_client_observes, {}),
    (test_reconnect_reobserves, {}),
]

if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
