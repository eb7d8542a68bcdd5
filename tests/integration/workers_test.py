#!/usr/bin/env python3
"""Integration tests of the worker loops: devgate with "workers": 2 on
127.0.0.1, driven by dtlsclient.py (a scriptable DTLS PSK client) and
coap-client-openssl. Sessions from many source ports land on both
workers; a device that reconnects from new ports (so, on some tries, on
the other worker) ends with one live session and its old one closed; a
CLI state write reaches an observer on whichever worker holds it; a PSK
removed from the config directory closes its session on its worker; and
SIGTERM with sessions on both workers closes them all and exits 0.

Usage: workers_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dtlsclient as dc  # noqa: E402
import gateway_test as g  # noqa: E402

N_DEVICES = 16
KEYS = {"d%d" % i: "key-of-d%d" % i for i in range(N_DEVICES)}
PSK = [{"identity": "%s@acme" % dev, "device": dev, "key": key} for dev, key in KEYS.items()]
WORKERS = {"workers": 2}


def connect(d, dev, tries=3):
    s = dc.Session(("127.0.0.1", d.port), "%s@acme" % dev, KEYS[dev], timeout=2.0)
    s.handshake(tries=tries)
    return s


def session_workers(d):
    """{session id: worker} from the debug line each established session logs."""
    return {int(m.group(1)): int(m.group(3)) for m in re.finditer(
        r'event=worker.session msg="session (\d+) of device (\d+) on worker (\d+)"', d.logtext())}


def worker_of_last(d, before):
    """The worker of the one session established since `before` (a set of session IDs)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        new = {k: v for k, v in session_workers(d).items() if k not in before}
        if new:
            return new[max(new)], max(new)
        time.sleep(0.02)
    raise AssertionError("no worker.session line:\n" + d.logtext()[-2000:])


def gauges(d):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port,
                                  timeout=5).read().decode()
    return {int(m.group(1)): int(m.group(2)) for m in re.finditer(
        r'^devgate_worker_sessions\{worker="(\d+)"\} (-?\d+)$', body, re.M)}


def get_ok(s, path="", timeout=2.0):
    r = s.request("GET", path, timeout=timeout)
    return r is not None and (r["code"] >> 5) == 2


def test_sessions_on_both_workers(d):
    """Sixteen devices, each from its own source port: the kernel spreads
    them over both workers' sockets, each worker answers its own, and the
    gauges count them by worker."""
    sessions = [connect(d, dev) for dev in KEYS]
    try:
        for s in sessions:
            assert get_ok(s, ".well-known/core"), "no answer"
        deadline = time.time() + 5
        while time.time() < deadline and sum(gauges(d).values()) < N_DEVICES:
            time.sleep(0.05)
        gs = gauges(d)
        assert set(gs) == {0, 1}, gs
        assert sum(gs.values()) == N_DEVICES, gs
        by_worker = set(session_workers(d).values())
        # 16 random ports all hashed to one of two sockets: 1 in 32768.
        assert by_worker == {0, 1}, session_workers(d)
        assert gs[0] > 0 and gs[1] > 0, gs
    finally:
        for s in sessions:
            s.close()
    # close_notify from each client: the gauges go back to zero.
    deadline = time.time() + 5
    while time.time() < deadline and sum(gauges(d).values()) != 0:
        time.sleep(0.05)
    assert sum(gauges(d).values()) == 0, gauges(d)


def test_reconnect_across_workers(d):
    """One device reconnects from a new source port again and again
    without closing the old session: every new session replaces the one
    before it, on whichever worker that one was; at the end exactly one is
    live and every old one is closed (its next request gets no answer)."""
    old = []
    workers = []
    crossed = 0
    try:
        for i in range(12):
            before = set(session_workers(d))
            s = connect(d, "d0")
            w, sid = worker_of_last(d, before)
            if workers and w != workers[-1]:
                crossed += 1
            workers.append(w)
            if old:
                prev_sid = old[-1][1]
                assert d.wait_log(r'session.closed session=%d .*reason="replaced by a new '
                                  r'session of the same device"' % prev_sid), d.logtext()[-3000:]
            old.append((s, sid))
            if crossed >= 2 and i >= 5:
                break
        assert crossed >= 1, "every reconnection landed on one worker: %s" % workers
        live, _ = old[-1]
        assert get_ok(live, ".well-known/core"), "the newest session does not answer"
        for s, sid in old[:-1]:
            # The old session is gone: its request is not answered (the
            # server sent close_notify, or no longer knows the address).
            assert not get_ok(s, ".well-known/core", timeout=0.5), sid
        gs = gauges(d)
        assert sum(gs.values()) == 1, (gs, workers)
        print("     reconnections landed on workers %s" % workers)
    finally:
        for s, _ in old:
            s.close(notify=False)


def observe_on(d, dev):
    s = connect(d, dev)
    tok = os.urandom(4)
    r = s.request("GET", ".d/temp", token=tok, observe=0)
    assert r is not None and r["code"] == 0x45, r
    return s, tok


def test_cli_state_reaches_either_worker(d):
    """Observers on both workers: a `devgate state set` from the CLI is
    notified to each, by the worker that holds its session."""
    obs = {}
    try:
        # Until both workers hold one: a device may come again from new ports.
        for dev in list(KEYS) * 3:
            before = set(session_workers(d))
            s, tok = observe_on(d, dev)
            w, _ = worker_of_last(d, before)
            if w in obs:
                s.close()
                continue
            obs[w] = (dev, s, tok)
            if len(obs) == 2:
                break
        assert set(obs) == {0, 1}, "all sessions on one worker"
        for w, (dev, s, tok) in sorted(obs.items()):
            value = "%d" % (210 + w)
            p = subprocess.run([g.DEVGATE, "state", "set", "-c", d.conf, "acme", dev, "temp",
                                value], capture_output=True, timeout=20)
            assert p.returncode == 0, p.stderr
            got = None
            deadline = time.time() + 5
            while time.time() < deadline and got is None:
                plain = s.recv_app(timeout=deadline - time.time())
                if plain is None:
                    break
                m = dc.coap_parse(plain)
                if m is not None and m["token"] == tok:
                    if m["type"] == dc.CON:
                        s.send_app(bytes([0x60, 0]) + m["mid"].to_bytes(2, "big"))
                    got = m
            assert got is not None, "no notification on worker %d" % w
            assert value.encode() in got["payload"], got
    finally:
        for _, s, _ in obs.values():
            s.close()


def test_psk_removed_closes_on_its_worker(d):
    """Sessions on both workers; the PSK of one device on each is removed
    from the config directory: each is closed (close_notify) by its own
    worker, and the others stay."""
    sessions = {}
    try:
        for dev in KEYS:
            before = set(session_workers(d))
            s = connect(d, dev)
            w, sid = worker_of_last(d, before)
            sessions[dev] = (s, w, sid)
        # The kernel's hash may put every source port on one worker (about 1
        # in 32768 for 16 devices): a device reconnects from new ports, a
        # bounded number of times, until both workers hold one.
        for attempt in range(40):
            if len({w for _, w, _ in sessions.values()}) == 2:
                break
            dev = list(KEYS)[attempt % len(KEYS)]
            sessions[dev][0].close()
            before = set(session_workers(d))
            s = connect(d, dev)
            w, sid = worker_of_last(d, before)
            sessions[dev] = (s, w, sid)
        victims = {}
        for dev, (s, w, sid) in sessions.items():
            victims.setdefault(w, dev)
        assert set(victims) == {0, 1}, sessions
        keep = [e for e in PSK if e["device"] not in victims.values()]
        d.write("projects/acme/psk.json", json.dumps(keep))
        for w, dev in victims.items():
            sid = sessions[dev][2]
            assert d.wait_log(r'session.closed session=%d .*credentials revoked' % sid, 10), \
                d.logtext()[-3000:]
            s = sessions[dev][0]
            # close_notify reached the client.
            deadline = time.time() + 3
            while time.time() < deadline and (1, 0) not in s.alerts:
                data = s.recv_datagram(0.2)
                if data is not None:
                    s._take_records(data)
            assert (1, 0) in s.alerts, (dev, s.alerts)
            assert not get_ok(s, ".well-known/core", timeout=0.5), dev
        for dev, (s, w, sid) in sessions.items():
            if dev not in victims.values():
                assert get_ok(s, ".well-known/core"), (dev, w)
    finally:
        for s, _, _ in sessions.values():
            s.close()


def test_sighup_reaches_all_workers(d):
    """SIGHUP with a lower max_observers: every worker takes it (an
    observation over the new cap is refused on both)."""
    sess = {}
    try:
        # Until both workers hold one: a device may come again from new ports.
        for dev in list(KEYS) * 3:
            before = set(session_workers(d))
            s = connect(d, dev)
            w, _ = worker_of_last(d, before)
            if w in sess:
                s.close()
                continue
            sess[w] = s
            if len(sess) == 2:
                break
        assert set(sess) == {0, 1}
        cfg = json.load(open(d.conf))
        cfg.setdefault("limits", {})["max_observers"] = 1
        with open(d.conf, "w") as f:
            json.dump(cfg, f)
        d.proc.send_signal(signal.SIGHUP)
        assert d.wait_log(r"reload.done.*SIGHUP"), d.logtext()[-2000:]
        time.sleep(0.2)
        for w, s in sess.items():
            r = s.request("GET", ".d/a", token=b"a1", observe=0)
            assert r is not None and r["code"] == 0x45, (w, r)
            r = s.request("GET", ".d/b", token=b"b1", observe=0)
            assert r is not None and r["code"] == 0xA3, (w, r)  # 5.03: max_observers=1
    finally:
        for s in sess.values():
            s.close()


def test_sigterm_with_sessions_on_both(d):
    """SIGTERM with sessions on both workers: every session gets
    close_notify, the threads are joined and the daemon exits 0."""
    sessions = [connect(d, dev) for dev in KEYS]
    assert set(session_workers(d).values()) == {0, 1}, session_workers(d)
    t0 = time.time()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(10)
    assert rc == 0, rc
    assert time.time() - t0 < 3, time.time() - t0
    closed = len(re.findall(r'reason="server shutting down"', d.logtext()))
    assert closed == N_DEVICES, closed
    got = 0
    for s in sessions:
        deadline = time.time() + 2
        while time.time() < deadline and (1, 0) not in s.alerts:
            data = s.recv_datagram(0.2)
            if data is not None:
                s._take_records(data)
        got += (1, 0) in s.alerts
        s.close(notify=False)
    assert got == N_DEVICES, "close_notify reached %d of %d" % (got, N_DEVICES)


def test_coap_client_openssl(d):
    """An independent client (libcoap over OpenSSL), many times: each run
    uses a new source port and is answered, on whichever worker."""
    for _ in range(6):
        codes, _, _ = g.coap("coap-client-openssl", d, "get", ".well-known/core",
                             identity="d1@acme", key=KEYS["d1"])
        assert "2.05" in codes, codes


TESTS = [
    (test_sessions_on_both_workers, {"psk": PSK, "config": WORKERS}),
    (test_reconnect_across_workers, {"psk": PSK, "config": WORKERS}),
    (test_cli_state_reaches_either_worker, {"psk": PSK, "config": WORKERS}),
    (test_psk_removed_closes_on_its_worker, {"psk": PSK, "config": WORKERS}),
    (test_sighup_reaches_all_workers, {"psk": PSK, "config": WORKERS}),
    (test_sigterm_with_sessions_on_both, {"psk": PSK, "config": WORKERS}),
    (test_coap_client_openssl, {"psk": PSK, "config": WORKERS}),
]

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(g.run_suite(TESTS))
