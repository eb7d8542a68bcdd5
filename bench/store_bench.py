#!/usr/bin/env python3
"""The store's writer under load: acknowledged stream records per second.

    bench/store_bench.py BUILD [--sessions N] [--records N] [--window N] [--queue N]

Starts BUILD/devgate on a free 127.0.0.1 port with a temporary config
directory (one PSK identity per session, its database on the same disk as
the temporary directory), then runs BUILD/bench/loadgen in post mode: N
sessions, then R stream POSTs spread over them with at most W outstanding,
each counted only when its 2.04 arrives (the 2.04 is sent after the
record's COMMIT is on disk, synchronous=FULL). Prints the wall-clock rate of
acknowledged records, p50/p99 ack latency, the server's CPU seconds and how
many rows the stream table holds afterwards (it must equal the 2.04s seen).
Everything it starts is stopped before it exits; every wait is bounded.
"""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

KEY = "benchbenchbenchbench"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_secs(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main():
    argv = sys.argv[1:]
    if not argv:
        sys.exit(__doc__)
    build = os.path.abspath(argv.pop(0))
    opts = {"--sessions": 200, "--records": 20000, "--window": 256, "--queue": 10000}
    for i, a in enumerate(argv):
        if a in opts and i + 1 < len(argv):
            opts[a] = int(argv[i + 1])
    n = opts["--sessions"]
    with tempfile.TemporaryDirectory(prefix="store-bench-") as d:
        os.makedirs(os.path.join(d, "projects", "bench"))
        with open(os.path.join(d, "projects", "bench", "psk.json"), "w") as f:
            json.dump([{"identity": "dev%d@bench" % i, "device": "dev%d" % i, "key": KEY}
                       for i in range(n)], f)
        port = free_port()
        with open(os.path.join(d, "devgate.json"), "w") as f:
            json.dump({"listen": ["127.0.0.1:%d" % port], "database": "var/devgate.db",
                       "projects_dir": "projects", "log": {"level": "warn"},
                       "metrics_listen": "",
                       "limits": {"max_sessions": max(2 * n, 1000), "max_handshakes": 100000,
                                  "device_requests_per_s": 100000, "device_burst": 100000,
                                  "max_write_queue": opts["--queue"]}}, f)
        log = open(os.path.join(d, "server.log"), "wb")
        proc = subprocess.Popen([os.path.join(build, "devgate"), "serve", "-c",
                                 os.path.join(d, "devgate.json")], stdout=log,
                                stderr=subprocess.STDOUT, cwd=d)
        loadgen = os.path.join(build, "bench", "loadgen")
        try:
            deadline = time.time() + 30
            while subprocess.run([loadgen, "-p", str(port), "-k", KEY, "-m", "hs", "-n", "1",
                                  "-t", "2"], capture_output=True, timeout=10).returncode != 0:
                if proc.poll() is not None or time.time() > deadline:
                    sys.exit("devgate did not start")
                time.sleep(0.2)
            c0 = cpu_secs(proc.pid)
            out = subprocess.run([loadgen, "-p", str(port), "-k", KEY, "-m", "post", "-n",
                                  str(n), "-r", str(opts["--records"]), "-w",
                                  str(opts["--window"]), "-u", ".s/bench", "-t", "120"],
                                 capture_output=True, text=True, timeout=180).stdout
            cpu = cpu_secs(proc.pid) - c0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            log.close()
        res = {}
        for line in out.splitlines():
            if line.startswith("mode="):
                res = dict(kv.split("=", 1) for kv in line.split())
        if not res:
            sys.exit("loadgen printed no result: %s" % out)
        db = sqlite3.connect(os.path.join(d, "var", "devgate.db"))
        rows = db.execute("SELECT COUNT(*) FROM stream").fetchone()[0]
        db.close()
        print("store bench: sessions=%d records=%s acked=%s failed=%s secs=%s"
              " records_per_s=%s p50_ms=%s p99_ms=%s server_cpu_s=%.2f rows=%d"
              % (n, res.get("requests"), res.get("ok"), res.get("failed"), res.get("secs"),
                 res.get("rate"), res.get("p50_ms"), res.get("p99_ms"), cpu, rows))
        ok = int(res.get("ok", 0))
        if rows < ok:
            sys.exit("lost records: %d acknowledged, %d stored" % (ok, rows))


if __name__ == "__main__":
    main()
