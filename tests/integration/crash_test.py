#!/usr/bin/env python3
"""Load-and-fault test: nothing acknowledged to a device is lost when the
daemon dies. Four devices, each on its own DTLS session (openssl s_client as
a CoAP pipe), post numbered stream records {"n": i} as fast as they can, many
in flight at once; in the middle of the burst the daemon gets SIGKILL. Every
record answered 2.04 before the kill must be in the store after a restart
(`devgate stream list --json`). Three rounds on one database. Bounded: each
round posts for about 1.5 s, at most 400 records a device.

Usage: crash_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import coappipe as cp  # noqa: E402

DEVICES = ["dev%d" % i for i in range(1, 5)]
ROUNDS = 3
BURST_S = 1.5
MAX_PER_DEVICE = 400


def psk():
    return [{"identity": "%s@acme" % n, "device": n, "key": g.KEY} for n in DEVICES]


def restart(d):
    """Starts devgate serve again on the same config and database."""
    n = d.logtext().count("server.listening")
    d.proc = subprocess.Popen([g.DEVGATE, "serve", "-c", d.conf], stdout=d.log,
                              stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline:
        if d.logtext().count("server.listening") > n:
            return
        assert d.proc.poll() is None, "daemon exited at restart:\n" + d.logtext()[-3000:]
        time.sleep(0.05)
    raise AssertionError("daemon did not restart:\n" + d.logtext()[-3000:])


def stored(d, device):
    p = subprocess.run([g.DEVGATE, "stream", "list", "-c", d.conf, "acme", device, "--path",
                        "crash", "--json"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    return {r["value"]["n"] for r in json.loads(p.stdout) if isinstance(r.get("value"), dict)}


def poster(pipe, rnd, sent, stop):
    """One device's posts, as fast as its pipe takes them, until `stop`."""
    for i in range(MAX_PER_DEVICE):
        if stop.is_set():
            return
        v = rnd * 10000 + i
        try:
            tok = pipe.send(cp.POST, ".s/crash", content_format=50,
                            payload=json.dumps({"n": v}).encode())
        except (BrokenPipeError, OSError):
            return
        sent[tok] = v
        pipe.pump(0)


def burst(d, rnd):
    """Posts from every device until the kill, in the middle of the burst;
    returns ({device: set of n answered 2.04}, posts sent)."""
    est = d.logtext().count("session.established")
    pipes = {n: cp.CoapPipe(d.port, "%s@acme" % n, g.KEY, gap=0.004) for n in DEVICES}
    sent = {n: {} for n in DEVICES}  # device -> token -> n
    stop = threading.Event()
    threads = []
    try:
        deadline = time.time() + 10
        while d.logtext().count("session.established") < est + len(DEVICES):
            assert time.time() < deadline, "sessions not established:\n" + d.logtext()[-3000:]
            time.sleep(0.05)
        threads = [threading.Thread(target=poster, args=(pipes[n], rnd, sent[n], stop))
                   for n in DEVICES]
        for t in threads:
            t.start()
        time.sleep(BURST_S)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(5)
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(10)
        for pipe in pipes.values():
            pipe.pump(0.3)
        acked = {}
        for n, pipe in pipes.items():
            acked[n] = {v for tok, v in list(sent[n].items())
                        if any(code == "2.04" for _, code, _ in pipe.answers(tok))}
        return acked, sum(len(s) for s in sent.values())
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for pipe in pipes.values():
            pipe.close()


def test_kill9_during_burst_loses_nothing_acknowledged(d):
    total_acked = 0
    for rnd in range(1, ROUNDS + 1):
        acked, n_sent = burst(d, rnd)
        n_acked = sum(len(a) for a in acked.values())
        assert n_acked > 0, "no post was acknowledged in round %d:\n%s" % (rnd, d.logtext()[-3000:])
        assert d.proc.returncode == -signal.SIGKILL, d.proc.returncode
        restart(d)
        lost = {}
        for n in DEVICES:
            have = stored(d, n)
            missing = sorted(acked[n] - have)
            if missing:
                lost[n] = missing[:20]
        assert not lost, "round %d: acknowledged records lost after kill -9: %s" % (rnd, lost)
        total_acked += n_acked
        print("     round %d: %d posts sent, %d acknowledged before SIGKILL (the rest in "
              "flight or unanswered), all %d stored after restart"
              % (rnd, n_sent, n_acked, n_acked), flush=True)
    assert total_acked >= 100, total_acked


TESTS = [
    (test_kill9_during_burst_loses_nothing_acknowledged,
     {"psk": psk(), "limits": {"device_requests_per_s": 100000},
      "config": {"workers": 2, "log": {"level": "info", "format": "text"}}}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
