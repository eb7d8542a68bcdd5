#!/usr/bin/env python3
"""`make bench`: devgate against coap-server-openssl (libcoap), same run.

    bench/run.py BUILD [--smoke] [--sessions N] [--handshakes N] [--requests N] [--idle N]

Starts each server itself on a free 127.0.0.1 port (devgate with a
temporary config directory and N generated PSK identities; libcoap's
coap-server-openssl with -k KEY -h HINT), pins the server to CPU 0 and
BUILD/bench/loadgen to CPU 1 (taskset, when there are two CPUs), runs every
case on both, and prints one table: the figure for each, the ratio, the
server's CPU seconds over the case (/proc/PID/stat utime+stime), its RSS
(/proc/PID/status VmRSS) and p50/p99 latency. Rates are per second of
server CPU. --smoke uses tiny counts (a few seconds) and exits 0 when the
table is printed and every case ran.
"""
import json
import os
import shutil
import signal
import socket
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


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() >= 2 else []


class Server:
    def __init__(self, kind, build, nids, workdir):
        self.kind = kind
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-%s-" % kind, dir=workdir)
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        if kind == "devgate":
            os.makedirs(os.path.join(self.dir, "projects", "bench"))
            with open(os.path.join(self.dir, "projects", "bench", "psk.json"), "w") as f:
                json.dump([{"identity": "dev%d@bench" % i, "device": "dev%d" % i, "key": KEY}
                           for i in range(nids)], f)
            with open(os.path.join(self.dir, "devgate.json"), "w") as f:
                json.dump({"listen": ["127.0.0.1:%d" % self.port], "database": "var/devgate.db",
                           "projects_dir": "projects", "log": {"level": "warn", "format": "text"},
                           "metrics_listen": "",
                           "limits": {"max_sessions": max(nids * 2, 1000),
                                      "max_handshakes": 100000,
                                      "idle_timeout_s": 3600}}, f)
            args = [os.path.join(build, "devgate"), "serve", "-c",
                    os.path.join(self.dir, "devgate.json")]
            self.get_path = ".d/x"
            self.dtls_port = self.port
        else:
            args = ["coap-server-openssl", "-A", "127.0.0.1", "-p", str(self.port),
                    "-k", KEY, "-h", "bench", "-v", "0"]
            self.get_path = ""
            # coap-server listens for DTLS on port + 1.
            self.dtls_port = self.port + 1
        self.proc = subprocess.Popen(pin(0) + args, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        # Ready when one handshake succeeds (loading many identities takes a while).
        deadline = time.time() + 60
        while True:
            time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start: %s" % (kind, self.logtext()))
            probe = subprocess.run([os.path.join(build, "bench", "loadgen"), "-p",
                                    str(self.dtls_port), "-k", KEY, "-m", "hs", "-n", "1",
                                    "-t", "2"], capture_output=True, timeout=10)
            if probe.returncode == 0:
                break
            if time.time() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("%s never answered a handshake: %s" % (kind, self.logtext()))

    def logtext(self):
        with open(os.path.join(self.dir, "server.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


def loadgen(build, srv, args, timeout, on_ready=None):
    """Runs loadgen against srv; returns (result dict, server CPU seconds, RSS
    KB at the end or at 'ready' for idle, RSS KB before)."""
    cmd = pin(1) + [os.path.join(build, "bench", "loadgen"), "-p", str(srv.dtls_port),
                    "-k", KEY] + args
    rss0 = rss_kb(srv.proc.pid)
    c0 = cpu_secs(srv.proc.pid)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    res, mark = {}, None
    try:
        deadline = time.time() + timeout
        for line in p.stdout:
            if line.startswith("ready"):
                # Requests start now: CPU counts from here; idle RSS is read here.
                c0 = cpu_secs(srv.proc.pid)
                time.sleep(0.5)
                mark = rss_kb(srv.proc.pid)
            elif line.startswith("mode="):
                res = dict(kv.split("=", 1) for kv in line.split())
            if time.time() > deadline:
                break
        p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    c1 = cpu_secs(srv.proc.pid)
    return res, c1 - c0, (mark if mark is not None else rss_kb(srv.proc.pid)), rss0


def main():
    argv = sys.argv[1:]
    if not argv:
        print(__doc__)
        return 2
    build = os.path.abspath(argv.pop(0))
    smoke = "--smoke" in argv
    opts = {"--sessions": 1000, "--handshakes": 20000, "--requests": 200000, "--idle": 10000,
            "--streams": 50000}
    if smoke:
        opts = {"--sessions": 20, "--handshakes": 50, "--requests": 400, "--idle": 50,
                "--streams": 200}
    for i, a in enumerate(argv):
        if a in opts and i + 1 < len(argv):
            opts[a] = int(argv[i + 1])
    nids = max(opts["--handshakes"], opts["--sessions"], opts["--idle"])
    work = tempfile.mkdtemp(prefix="devgate-bench-")
    tmo = 60 if smoke else 600
    cases = [
        ("PSK handshakes/s (PSK-AES128-CCM8)", "rate_cpu",
         ["-m", "hs", "-n", str(opts["--handshakes"]), "-w", "64"]),
        ("state GET/s at %d sessions" % opts["--sessions"], "rate_cpu",
         ["-m", "get", "-n", str(opts["--sessions"]), "-r", str(opts["--requests"]), "-w", "256"]),
        ("stream POST 2.04/s at %d sessions" % opts["--sessions"], "rate_cpu",
         ["-m", "post", "-n", str(opts["--sessions"]), "-r", str(opts["--streams"]), "-w", "256"]),
        ("KB per idle PSK session at %d" % opts["--idle"], "kb_idle",
         ["-m", "idle", "-n", str(opts["--idle"]), "-w", "256", "-H", "1.5"]),
    ]
    rows = []
    ok = True
    try:
        for name, kind, args in cases:
            row = {"case": name}
            for which in ("devgate", "libcoap"):
                if "POST" in name and which == "libcoap":
                    row[which] = None  # coap-server has no stream resource
                    continue
                srv = Server(which, build, nids, work)
                try:
                    a = list(args)
                    if "-m" in a and a[a.index("-m") + 1] in ("get", "post"):
                        path = srv.get_path if "GET" in name else ".s"
                        a += ["-u", path] if path else ["-u", ""]
                    res, cpu, rss, rss0 = loadgen(build, srv, a, tmo)
                finally:
                    srv.stop()
                if not res:
                    ok = False
                    row[which] = None
                    print("bench: %s on %s gave no result\n%s" % (name, which, srv.logtext()),
                          file=sys.stderr)
                    continue
                good = int(res.get("ok", 0))
                if kind == "kb_idle":
                    val = (rss - rss0) / max(good, 1)
                else:
                    val = good / cpu if cpu > 0 else float("nan")
                row[which] = {"value": val, "cpu": cpu, "rss": rss, "p50": res.get("p50_ms", "-"),
                              "p99": res.get("p99_ms", "-"), "ok": good,
                              "failed": res.get("failed", "?"),
                              "wall": float(res.get("rate", 0) or 0)}
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    hdr = ("%-36s %-7s %12s %12s %7s %8s %8s %9s %9s %12s %8s %8s" %
           ("case", "workers", "devgate", "libcoap", "ratio", "dg cpu s", "lc cpu s",
            "dg RSS MB", "lc RSS MB", "dg p50/p99", "dg fail", "lc fail"))
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        d, l = r.get("devgate"), r.get("libcoap")
        f = lambda x: ("%.1f" % x["value"]) if x else "-"
        ratio = ("%.2f" % (d["value"] / l["value"])) if d and l and l["value"] else "-"
        print("%-36s %-7s %12s %12s %7s %8s %8s %9s %9s %12s %8s %8s" % (
            r["case"], "1", f(d), f(l), ratio,
            ("%.2f" % d["cpu"]) if d else "-", ("%.2f" % l["cpu"]) if l else "-",
            ("%.1f" % (d["rss"] / 1024)) if d else "-", ("%.1f" % (l["rss"] / 1024)) if l else "-",
            ("%s/%s" % (d["p50"], d["p99"])) if d else "-",
            d["failed"] if d else "-", l["failed"] if l else "-"))
    print("rates are per second of server CPU; latency in ms; workers: devgate's thread count "
          "(one until workers are built)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
