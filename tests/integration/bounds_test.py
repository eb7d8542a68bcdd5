#!/usr/bin/env python3
"""Integration tests of resource bounds that a live reload changes: a SIGHUP
that raises limits.max_observers under a session that already holds
observations, and limits.max_body lowered in the middle of a Block1
transfer. Run under the sanitizer build (build-san), the daemon must not
report any error; the suite runner fails a test on a sanitizer report.

Usage: bounds_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import coappipe as cp  # noqa: E402


def set_limits(d, **limits):
    with open(d.conf) as f:
        cfg = json.load(f)
    cfg.setdefault("limits", {}).update(limits)
    with open(d.conf, "w") as f:
        json.dump(cfg, f)


def sighup(d):
    n = d.logtext().count("reload.done")
    d.proc.send_signal(signal.SIGHUP)
    for _ in range(50):
        if d.logtext().count("reload.done") > n:
            break
        time.sleep(0.1)
    assert d.logtext().count("reload.done") > n, d.logtext()


def test_observers_after_raised_limit(d):
    """Two observations under max_observers=2, a SIGHUP to 8, six more in the
    same session: all eight are held (2.05 with Observe) and all eight are
    notified on a CLI change."""
    pipe = cp.CoapPipe(d.port, "dev1@acme", g.KEY)
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        tokens = [pipe.send(cp.GET, ".d/o%d" % i, observe=0) for i in range(2)]
        assert [pipe.wait_answer(t) for t in tokens] == ["2.05", "2.05"], pipe.rx
        t = pipe.send(cp.GET, ".d/o2", observe=0)
        assert pipe.wait_answer(t) == "5.03", pipe.rx  # max_observers=2 reached
        set_limits(d, max_observers=8)
        sighup(d)
        more = [pipe.send(cp.GET, ".d/o%d" % i, observe=0) for i in range(2, 8)]
        assert [pipe.wait_answer(t) for t in more] == ["2.05"] * 6, pipe.rx
        tokens += more
        t = pipe.send(cp.GET, ".d/o9", observe=0)
        assert pipe.wait_answer(t) == "5.03", pipe.rx  # max_observers=8 reached
        # A change of the whole document notifies every observation, one CON at a time.
        p = subprocess.run([g.DEVGATE, "state", "set", "-c", d.conf, "acme", "dev1", "",
                            json.dumps({"o%d" % i: i for i in range(8)})],
                           capture_output=True, timeout=20)
        assert p.returncode == 0, p.stderr
        notified = set()
        for _ in range(100):
            pipe.pump(0.1)
            for i, tok in enumerate(tokens):
                for mtype, code, mid in pipe.answers(tok):
                    if mtype == cp.CON and i not in notified:
                        notified.add(i)
                        pipe.ack(mid)
            if len(notified) == 8:
                break
        assert notified == set(range(8)), (notified, d.logtext()[-2000:])
    finally:
        pipe.close()
    assert d.proc.poll() is None, d.logtext()


def test_write_queue_full_503(d):
    """With limits.max_write_queue=1 and the writer held (another process
    holds the database's write lock), a second write is answered at once
    with 5.03 and Max-Age instead of growing the queue; after the lock goes,
    writes are taken again."""
    import sqlite3
    pipe = cp.CoapPipe(d.port, "dev1@acme", g.KEY)
    db = sqlite3.connect(os.path.join(d.dir, "var", "devgate.db"), timeout=5,
                         isolation_level=None)
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        t = pipe.send(cp.POST, ".s/x", content_format=50, payload=b'{"n": 0}')
        assert pipe.wait_answer(t) == "2.04", pipe.rx
        db.execute("BEGIN IMMEDIATE")
        held = pipe.send(cp.POST, ".s/x", content_format=50, payload=b'{"n": 1}')
        t = pipe.send(cp.POST, ".s/x", content_format=50, payload=b'{"n": 2}')
        assert pipe.wait_answer(t, 2.0) == "5.03", pipe.rx
        assert pipe.options(t).get(14) == [b"\x01"], pipe.options(t)  # Max-Age: 1
        db.execute("ROLLBACK")
        assert pipe.wait_answer(held, 8.0) == "2.04", pipe.rx
        t = pipe.send(cp.POST, ".s/x", content_format=50, payload=b'{"n": 3}')
        assert pipe.wait_answer(t) == "2.04", pipe.rx
    finally:
        db.close()
        pipe.close()


def test_block1_limit_lowered_mid_transfer(d):
    """A Block1 transfer started under max_body=4096 keeps that limit when a
    SIGHUP lowers it to 1024, and its 4.13 says so (Size1 4096, the limit that
    refused it, not the new one)."""
    pipe = cp.CoapPipe(d.port, "dev1@acme", g.KEY)
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        chunk = b"[" + b"1," * 511 + b"1"  # 1024 bytes
        t = pipe.send(cp.POST, ".s/big", content_format=50, payload=chunk,
                      block1=(0, True, 6))
        assert pipe.wait_answer(t) == "2.31", pipe.rx
        set_limits(d, max_body=1024)
        sighup(d)
        codes = []
        for num in range(1, 5):
            t = pipe.send(cp.POST, ".s/big", content_format=50, payload=chunk,
                          block1=(num, True, 6))
            codes.append(pipe.wait_answer(t))
            if codes[-1] != "2.31":
                break
        # 4096 bytes fit (blocks 0..3); the fifth block is over the transfer's limit.
        assert codes == ["2.31", "2.31", "2.31", "4.13"], (codes, pipe.rx)
        assert pipe.options(t).get(60) == [(4096).to_bytes(2, "big")], pipe.options(t)
    finally:
        pipe.close()


def test_write_queue_burst(d):
    """With limits.max_write_queue=1, a burst of stream POSTs from 32 sessions
    at once (the project's load generator, 32 outstanding): what does not fit
    in the queue is refused at once with 5.03 (counted in the metrics as the
    generator's failures, none of them a timeout), every 2.04 is a stored
    record, and writes are taken again after the burst."""
    import re
    import sqlite3
    import urllib.request
    gen = subprocess.run([os.path.join(g.BUILD, "bench", "loadgen"), "-p", str(d.port),
                          "-k", g.KEY, "-i", "burst%u@acme", "-m", "post", "-n", "32",
                          "-r", "640", "-w", "32", "-u", ".s/burst", "-t", "60"],
                         capture_output=True, text=True, timeout=120,
                         # The generator's OpenSSL objects live until exit: no leak report.
                         env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    line = [l for l in gen.stdout.splitlines() if l.startswith("mode=")]
    assert line, (gen.returncode, gen.stdout, gen.stderr[-2000:])
    res = dict(kv.split("=", 1) for kv in line[0].split())
    ok, failed = int(res["ok"]), int(res["failed"])
    assert ok + failed == 640, res
    assert ok > 0 and failed > 0, res
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port,
                                     timeout=5).read().decode()
    m = re.search(r'devgate_coap_requests_total\{service="stream",class="5xx"\} (\d+)',
                  metrics)
    assert m and int(m.group(1)) == failed, (failed, m and m.group(0))
    db = sqlite3.connect(os.path.join(d.dir, "var", "devgate.db"), timeout=5)
    try:
        rows = db.execute("SELECT COUNT(*) FROM stream").fetchone()[0]
    finally:
        db.close()
    assert rows == ok, (rows, ok)
    # After the burst, a write is taken again (its session's own last_seen may
    # hold the one place in the queue for a moment: it retries after Max-Age).
    pipe = cp.CoapPipe(d.port, "dev1@acme", g.KEY)
    try:
        codes = []
        for _ in range(5):
            t = pipe.send(cp.POST, ".s/x", content_format=50, payload=b'{"after": 1}')
            codes.append(pipe.wait_answer(t))
            if codes[-1] != "5.03":
                break
            time.sleep(1.0)
        assert codes[-1] == "2.04", (codes, pipe.rx)
    finally:
        pipe.close()


LIMITS = {"max_observers": 2, "device_requests_per_s": 1000}

TESTS = [
    (test_observers_after_raised_limit, {"limits": dict(LIMITS)}),
    (test_block1_limit_lowered_mid_transfer, {"limits": {"max_body": 4096,
                                                         "device_requests_per_s": 1000}}),
    (test_write_queue_full_503, {"limits": {"max_write_queue": 1,
                                            "device_requests_per_s": 1000}}),
    (test_write_queue_burst, {"limits": {"max_write_queue": 1, "device_requests_per_s": 1000,
                                         "device_burst": 1000},
                              "psk": [{"identity": "dev1@acme", "device": "dev1", "key": g.KEY}] +
                              [{"identity": "burst%d@acme" % i, "device": "burst%d" % i,
                                "key": g.KEY} for i in range(32)]}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
