#!/usr/bin/env python3
"""`make bench`: devgate against coap-server-openssl (libcoap), same run.

    bench/run.py BUILD [--smoke] [--markdown] [--only WORD] [--perf DIR] [--COUNT N ...]

Counts (defaults in DEFAULTS, tiny ones in SMOKE): --handshakes (PSK),
--cert-handshakes and --certs (ECDHE-ECDSA: handshakes and distinct device
certificates), --sessions and --requests (state GET at a small session
count), --large and --large-requests (state GET at a large session count),
--streams (stream POSTs at --sessions sessions), --idle and --idle-large
(idle sessions held for RSS). --only runs the cases whose name has WORD;
--perf DIR profiles the server over each measured phase with `perf record
-g` (DIR/<server>-<case>-w<workers>.data, and .data.txt with the top symbols).

It makes a throw-away PKI with tests/integration/pki.py (Golioth's openssl
recipe: a root CA, an intermediate under it, a server certificate);
BUILD/bench/loadgen makes the device certificates itself (P-256, X.509 v1,
/O=bench/CN=<id>, signed by the root or by the intermediate). Each case
starts a fresh server on a free 127.0.0.1 port: devgate with a temporary
config directory (projects/bench with the root CA and one PSK identity per
session, the PKI's server certificate), or coap-server-openssl with
`-k KEY -h HINT` (PSK) or `-c CERT -j KEY -R ROOT` (certificates). With one
devgate worker (and for libcoap) the server is pinned to CPU 0 and the
generator to CPU 1; with two workers both are pinned to CPUs 0-1.

Figures: rates are per second of server CPU (utime+stime of
/proc/PID/stat over the measured phase only; the generator prints "ready"
and waits on stdin while the runner reads it), the wall-clock rate beside
them; RSS is /proc/PID/status VmRSS at the end (idle: (RSS with the
sessions held - RSS before) / sessions); p50/p99 are the generator's
handshake or request latencies. --smoke uses tiny counts (seconds) and
exits 1 unless every case ran with no failure; a full run exits 1 when a
case gave no result.
"""
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import pki  # noqa: E402

KEY = "benchbenchbenchbench"
SLUG = "bench"
# A psk.json holds at most 4 MiB (src/auth/confdir.c): identities are spread
# over projects p0, p1, ... of PSK_GROUP each, as dev<i>@p<i / PSK_GROUP>.
PSK_GROUP = 25000
# Each phase of a large case (handshakes, then requests) stops after this
# many seconds: libcoap slows down as its sessions grow, and the table then
# shows how many sessions it reached.
LARGE_TMAX = 40
TICK = os.sysconf("SC_CLK_TCK")

DEFAULTS = {"--handshakes": 20000, "--cert-handshakes": 4000, "--certs": 1000,
            "--sessions": 1000, "--requests": 200000, "--large": 100000,
            "--large-requests": 200000, "--streams": 50000, "--idle": 10000,
            "--idle-large": 100000}
SMOKE = {"--handshakes": 40, "--cert-handshakes": 12, "--certs": 6, "--sessions": 10,
         "--requests": 200, "--large": 30, "--large-requests": 200, "--streams": 100,
         "--idle": 20, "--idle-large": 40}


def free_port(pair=False):
    """A UDP port free on 127.0.0.1 (and the next one too, with pair)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if not pair or p >= 65535:
            return p
        t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
        finally:
            t.close()
    raise RuntimeError("no free UDP port pair")


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


def udp_drops(pid):
    """Datagrams the kernel dropped on the UDP sockets of process pid (a full
    receive buffer): the drops column of /proc/net/udp for its sockets."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] in inodes:
                        total += int(cols[12])
        except OSError:
            pass
    return total


def pin(cpus):
    return ["taskset", "-c", cpus] if (os.cpu_count() or 1) >= 2 else []


class Bench:
    """What every case shares: the build, the PKI, the work directory."""

    def __init__(self, build, work):
        self.build = build
        self.work = work
        self.loadgen = os.path.join(build, "bench", "loadgen")
        self.pki = pki.PKI(base=work)
        self.root = self.pki.root("root", cn="Bench Root CA")
        self.inter = self.pki.intermediate(self.root, "inter", cn="Bench Intermediate CA")
        srv = self.pki.device(self.root, "server", subj="/CN=localhost", days=30)
        self.server_cert, self.server_key = srv.cert, srv.key
        self.workers_key = self.probe_workers()

    def probe_workers(self):
        """Where this devgate takes a `workers` count, as a path of keys in
        devgate.json, or None: the first that `devgate check-config` accepts."""
        d = tempfile.mkdtemp(prefix="workers-", dir=self.work)
        os.makedirs(os.path.join(d, "projects"))
        for where in (("workers",), ("limits", "workers")):
            cfg = {"listen": ["127.0.0.1:%d" % free_port()], "database": "devgate.db",
                   "projects_dir": "projects", "metrics_listen": ""}
            node = cfg
            for k in where[:-1]:
                node = node.setdefault(k, {})
            node[where[-1]] = 2
            path = os.path.join(d, "devgate.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            p = subprocess.run([os.path.join(self.build, "devgate"), "check-config", "-c", path],
                               capture_output=True, timeout=30, cwd=d)
            if p.returncode == 0:
                return where
        return None


class Server:
    """One server for one case: started, probed with a handshake, stopped."""

    def __init__(self, bench, kind, auth, nids, workers=1):
        self.kind, self.auth, self.workers = kind, auth, workers
        self.bench = bench
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="%s-" % kind, dir=bench.work)
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.cpus = "0" if workers == 1 else "0,1"
        self.gen_cpus = "1" if workers == 1 else "0,1"
        if kind == "devgate":
            self.port = self.dtls_port = free_port()
            proj = os.path.join(self.dir, "projects", SLUG)
            os.makedirs(os.path.join(proj, "cas"))
            shutil.copy(bench.root.cert, os.path.join(proj, "cas", "root.pem"))
            for g in range((nids + PSK_GROUP - 1) // PSK_GROUP if auth == "psk" else 0):
                os.makedirs(os.path.join(self.dir, "projects", "p%d" % g))
                with open(os.path.join(self.dir, "projects", "p%d" % g, "psk.json"), "w") as f:
                    json.dump([{"identity": "dev%d@p%d" % (i, g), "device": "dev%d" % i,
                                "key": KEY}
                               for i in range(g * PSK_GROUP, min(nids, (g + 1) * PSK_GROUP))],
                              f, separators=(",", ":"))
            cfg = {"listen": ["127.0.0.1:%d" % self.port], "database": "var/devgate.db",
                   "projects_dir": "projects", "server_cert": bench.server_cert,
                   "server_key": bench.server_key,
                   "log": {"level": "warn", "format": "text"}, "metrics_listen": "",
                   "limits": {"max_sessions": max(nids * 2, 1000), "max_handshakes": 100000,
                              "idle_timeout_s": 3600, "device_requests_per_s": 100000,
                              "device_burst": 100000}}
            if bench.workers_key:
                node = cfg
                for k in bench.workers_key[:-1]:
                    node = node.setdefault(k, {})
                node[bench.workers_key[-1]] = workers
            elif workers != 1:
                raise RuntimeError("this devgate takes no workers key")
            with open(os.path.join(self.dir, "devgate.json"), "w") as f:
                json.dump(cfg, f)
            args = [os.path.join(bench.build, "devgate"), "serve", "-c",
                    os.path.join(self.dir, "devgate.json")]
            self.get_path = ".d/x"
        else:
            self.port = free_port(pair=True)
            # coap-server listens for DTLS on port + 1.
            self.dtls_port = self.port + 1
            args = ["coap-server-openssl", "-A", "127.0.0.1", "-p", str(self.port), "-v", "0"]
            if auth == "psk":
                args += ["-k", KEY, "-h", SLUG]
            else:
                args += ["-c", bench.server_cert, "-j", bench.server_key, "-R", bench.root.cert]
            self.get_path = ""
        self.proc = subprocess.Popen(pin(self.cpus) + args, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self):
        """Returns when one handshake succeeds (loading many identities takes
        a while); raises RuntimeError if the server exits or never answers."""
        kind = self.kind
        deadline = time.time() + 120
        while True:
            time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start: %s" % (kind, self.logtext()))
            probe = subprocess.run([self.bench.loadgen, "-p", str(self.dtls_port), "-k", KEY,
                                    "-m", "hs", "-n", "1", "-t", "2", "-b", "1000000"]
                                   + self.auth_args() + self.cert_args("probe%u", False, 1),
                                   capture_output=True, timeout=30)
            if probe.returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError("%s never answered a handshake: %s %s" % (
                    kind, probe.stdout.decode("utf-8", "replace"), self.logtext()))

    def auth_args(self):
        return ["-i", "dev%u@p%u", "-G", str(PSK_GROUP)] if self.auth == "psk" else []

    def cert_args(self, cnfmt, chain, count):
        if self.auth != "cert":
            return []
        ca = self.bench.inter if chain else self.bench.root
        return ["-X", ca.cert, "-Y", ca.key, "-c", str(count), "-O", SLUG, "-N", cnfmt] + (
            ["-x"] if chain else [])

    def logtext(self):
        with open(os.path.join(self.dir, "server.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL after 15 s); idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def perf_start(pid, out):
    """Starts `perf record` on pid (call graphs, 499 Hz) into out, or None."""
    try:
        return subprocess.Popen(["perf", "record", "-q", "-F", "499", "-g", "-p", str(pid),
                                 "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def perf_stop(rec, out):
    """Stops a perf record (SIGINT, as perf wants) and writes the flat profile
    of the top symbols next to it (out + ".txt")."""
    if rec is None:
        return
    rec.send_signal(signal.SIGINT)
    try:
        rec.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rec.kill()
        rec.wait()
    with open(out + ".txt", "w") as f:
        subprocess.run(["perf", "report", "-i", out, "--stdio", "--no-children",
                        "--sort", "dso,symbol", "--percent-limit", "0.5", "-g", "none"],
                       stdout=f, stderr=subprocess.DEVNULL, timeout=300)


def run_loadgen(srv, args, timeout, perf_out=None):
    """Runs the generator against srv with -S. Returns a dict: the result
    line's keys, and cpu (server CPU seconds from "ready" to the end),
    cpu_before (before "ready"), rss0 (KB before), rss_ready, rss_end.
    With perf_out, the server is profiled over the measured phase."""
    cmd = pin(srv.gen_cpus) + [srv.bench.loadgen, "-p", str(srv.dtls_port), "-k", KEY,
                               "-S"] + srv.auth_args() + args
    pid = srv.proc.pid
    out = {"rss0": rss_kb(pid)}
    drops0 = udp_drops(pid)
    c_start = cpu_secs(pid)
    c_ready = None
    rec = None
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    # A generator that stops writing is killed at the deadline all the same.
    watchdog = threading.Timer(timeout, p.kill)
    watchdog.start()
    try:
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith("ready"):
                c_ready = cpu_secs(pid)
                if "-m" in args and args[args.index("-m") + 1] == "idle":
                    time.sleep(0.5)
                out["rss_ready"] = rss_kb(pid)
                out["ready"] = dict(kv.split("=", 1) for kv in line.split()[1:])
                if perf_out:
                    rec = perf_start(pid, perf_out)
                    time.sleep(0.5)  # perf attaching to every thread.
                p.stdin.write("go\n")
                p.stdin.flush()
            elif line.startswith("mode="):
                out.update(kv.split("=", 1) for kv in line.split())
        p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
        out["stderr"] = p.stderr.read()[-1000:]
        p.stdout.close()
        p.stderr.close()
        p.stdin.close()
    c_end = cpu_secs(pid)
    perf_stop(rec, perf_out)
    if c_ready is None:
        c_ready = c_start
    out["cpu_before"] = c_ready - c_start
    out["cpu"] = c_end - c_ready
    out["rss_end"] = rss_kb(pid)
    out["drops"] = udp_drops(pid) - drops0
    out["rc"] = p.returncode
    return out


def cases(o):
    """Each case: name, auth, loadgen args (a function of the server),
    sessions the server must know, kind of figure, the issue's target,
    whether it runs with 2 devgate workers too, whether libcoap runs it."""
    hs = lambda n, w: ["-m", "hs", "-n", str(n), "-w", str(w)]
    return [
        dict(name="PSK handshakes (PSK-AES128-CCM8)", auth="psk", nids=o["--handshakes"],
             args=lambda s: hs(o["--handshakes"], 64), kind="rate", target=25000, workers2=True,
             libcoap=True),
        dict(name="ECDHE-ECDSA P-256 handshakes, leaf only", auth="cert", nids=0,
             args=lambda s: hs(o["--cert-handshakes"], 32) + ["-W"] + s.cert_args(
                 "leaf%u", False, o["--certs"]),
             kind="rate", target=2400, workers2=True, libcoap=True),
        dict(name="ECDHE-ECDSA P-256 handshakes, 2-cert chain", auth="cert", nids=0,
             args=lambda s: hs(o["--cert-handshakes"], 32) + ["-W"] + s.cert_args(
                 "chain%u", True, o["--certs"]),
             kind="rate", target=2400, workers2=True, libcoap=True),
        dict(name="state GET at %d sessions" % o["--sessions"], auth="psk", nids=o["--sessions"],
             args=lambda s: ["-m", "get", "-n", str(o["--sessions"]), "-r", str(o["--requests"]),
                             "-w", "256", "-u", s.get_path],
             kind="rate", target=150000, workers2=True, libcoap=True, small_get=True),
        dict(name="state GET at %d sessions" % o["--large"], auth="psk", nids=o["--large"],
             args=lambda s: ["-m", "get", "-n", str(o["--large"]), "-r",
                             str(o["--large-requests"]), "-w", "256", "-u", s.get_path],
             kind="rate", target=150000, workers2=True, libcoap=True, large_get=True,
             tmax=LARGE_TMAX),
        dict(name="stream POST at %d sessions, 2.04 received" % o["--sessions"], auth="psk",
             nids=o["--sessions"],
             args=lambda s: ["-m", "post", "-n", str(o["--sessions"]), "-r", str(o["--streams"]),
                             "-w", "256", "-u", ".s"],
             kind="stream", target=20000, workers2=False, libcoap=False),
        dict(name="KB per idle PSK session at %d" % o["--idle"], auth="psk", nids=o["--idle"],
             args=lambda s: ["-m", "idle", "-n", str(o["--idle"]), "-w", "64", "-H", "60"],
             kind="idle", target=None, workers2=False, libcoap=True),
        dict(name="KB per idle PSK session at %d" % o["--idle-large"], auth="psk",
             nids=o["--idle-large"],
             args=lambda s: ["-m", "idle", "-n", str(o["--idle-large"]), "-w", "64", "-H", "60"],
             kind="idle", target=12, workers2=False, libcoap=True, tmax=LARGE_TMAX),
    ]


def measure(bench, case, kind, workers, timeout, perf_dir=None):
    """Runs one case on one server; returns a figure dict or raises. With
    perf_dir, the server is profiled into perf_dir/<server>-<case>-w<workers>.data
    (and .data.txt)."""
    srv = Server(bench, kind, case["auth"], max(case["nids"], 1), workers)
    try:
        args = case["args"](srv) + (["-t", str(case["tmax"])] if "tmax" in case else [])
        perf_out = None
        if perf_dir:
            perf_out = os.path.join(perf_dir, "%s-%s-w%d.data" % (
                kind, "".join(ch if ch.isalnum() else "-" for ch in case["name"]).strip("-"),
                workers))
        r = run_loadgen(srv, args, timeout, perf_out)
    finally:
        srv.stop()
    if "ok" not in r:
        raise RuntimeError("no result (rc %s): %s\n%s" % (r.get("rc"), r.get("stderr"),
                                                          srv.logtext()))
    ok = int(r["ok"])
    fig = {"ok": ok, "failed": int(r.get("failed", 0)),
           "up": int(r.get("ready", {}).get("ok", 0)), "drops": r["drops"], "p50": float(r.get("p50_ms", 0)),
           "p99": float(r.get("p99_ms", 0)), "wall": float(r.get("rate", 0)),
           "rss_mb": r["rss_end"] / 1024, "cpu": r["cpu"], "rc": r["rc"],
           "detail": " ".join("%s=%s" % (k, r[k]) for k in
                              ("hs_failed", "wrong_code", "unanswered", "rc") if k in r)}
    if case["kind"] == "idle":
        fig["value"] = (r.get("rss_ready", r["rss_end"]) - r["rss0"]) / max(ok, 1)
        fig["cpu"] = r["cpu_before"]
        fig["rss_mb"] = r.get("rss_ready", r["rss_end"]) / 1024
    elif case["kind"] == "stream":
        fig["value"] = fig["wall"]
    else:
        fig["value"] = ok / r["cpu"] if r["cpu"] > 0 else float("nan")
    return fig


def verdict(case, workers, d, rows):
    """The issue's target for this row as text, and whether it is met."""
    if d is None:
        return "-", "-"
    if workers == 2:
        one = next((r for r in rows if r["case"] is case and r["workers"] == 1), None)
        if not one or not one["devgate"]:
            return ">= 1.8x 1 worker", "-"
        x = 2 * d["value"] / one["devgate"]["value"] if one["devgate"]["value"] else 0
        wall = d["wall"] / one["devgate"]["wall"] if one["devgate"]["wall"] else 0
        return (">= 1.8x 1 worker (%.2fx per CPU s x 2; wall %.2fx)" % (x, wall),
                "yes" if x >= 1.8 else "no")
    if case["kind"] == "idle":
        if case["target"] is None:
            return "-", "-"
        return "<= 12 KB", "yes" if d["value"] <= 12 else "no"
    if case["kind"] == "stream":
        return ">= 20k/s, p99 <= 20 ms", "yes" if d["value"] >= 20000 and d["p99"] <= 20 else "no"
    text = ">= %gk /CPU s" % (case["target"] / 1000)
    met = d["value"] >= case["target"]
    if case.get("large_get"):
        small = next((r for r in rows if r["case"].get("small_get") and r["workers"] == 1), None)
        if small and small["devgate"]:
            drop = 1 - d["value"] / small["devgate"]["value"]
            text += ", within 10%% of 1k (%+.0f%%)" % (-100 * drop)
            met = met and drop <= 0.10
    return text, "yes" if met else "no"


def fmt_value(case, x):
    if x is None:
        return "-"
    if case["kind"] == "idle":
        return "%.1f KB" % x["value"]
    if x["value"] != x["value"]:
        return "< 1 tick"  # Under 1/CLK_TCK s of server CPU: smoke counts.
    return "{:,.0f}".format(x["value"])


def fmt_lat(case, x):
    if x is None or case["kind"] == "idle" and not x["p50"]:
        return "-"
    return "%.1f/%.1f" % (x["p50"], x["p99"])


def table(rows, markdown):
    cols = ["case", "workers", "devgate", "libcoap", "ratio", "dg wall/s", "lc wall/s",
            "dg CPU s", "lc CPU s", "dg RSS MB", "lc RSS MB", "dg p50/p99 ms", "lc p50/p99 ms",
            "dg fail", "lc fail", "UDP drops dg/lc", "sessions dg/lc", "target", "met"]
    lines = []
    for r in rows:
        c, d, l = r["case"], r["devgate"], r["libcoap"]
        ratio = ("%.2f" % (d["value"] / l["value"])) if d and l and l["value"] else "-"
        target, met = verdict(c, r["workers"], d, rows)
        lines.append([c["name"], "%d%s" % (r["workers"], " (0-1)" if r["workers"] == 2 else ""),
                      fmt_value(c, d), fmt_value(c, l), ratio,
                      "{:,.0f}".format(d["wall"]) if d else "-",
                      "{:,.0f}".format(l["wall"]) if l else "-",
                      "%.2f" % d["cpu"] if d else "-", "%.2f" % l["cpu"] if l else "-",
                      "%.1f" % d["rss_mb"] if d else "-", "%.1f" % l["rss_mb"] if l else "-",
                      fmt_lat(c, d), fmt_lat(c, l), str(d["failed"]) if d else "-",
                      str(l["failed"]) if l else "-",
                      "/".join(str(x["drops"]) if x else "-" for x in (d, l)),
                      "/".join(str(x["up"]) if x else "-" for x in (d, l))
                      if c["kind"] != "rate" or c.get("small_get") or c.get("large_get") else "-",
                      target, met])
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(x) + " |" for x in lines]
    else:
        w = [max(len(cols[i]), *(len(x[i]) for x in lines)) if lines else len(cols[i])
             for i in range(len(cols))]
        out = ["  ".join(cols[i].ljust(w[i]) for i in range(len(cols)))]
        out.append("-" * len(out[0]))
        out += ["  ".join(x[i].ljust(w[i]) for i in range(len(cols))) for x in lines]
    return "\n".join(out)


def on_term(signum, frame):
    raise SystemExit(128 + signum)


def main():
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    build = os.path.abspath(argv.pop(0))
    smoke = "--smoke" in argv
    markdown = "--markdown" in argv
    opts = dict(SMOKE if smoke else DEFAULTS)
    only = perf_dir = None
    for i, a in enumerate(argv):
        if a in opts and i + 1 < len(argv):
            opts[a] = int(argv[i + 1])
        elif a == "--only" and i + 1 < len(argv):
            only = argv[i + 1]
        elif a == "--perf" and i + 1 < len(argv):
            perf_dir = os.path.abspath(argv[i + 1])
            os.makedirs(perf_dir, exist_ok=True)
        elif a.startswith("--") and a not in ("--smoke", "--markdown", "--only", "--perf"):
            print("bench: unknown option %s" % a, file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, on_term)
    timeout = 60 if smoke else 900
    work = tempfile.mkdtemp(prefix="devgate-bench-")
    rows, broken = [], []
    t0 = time.time()
    try:
        bench = Bench(build, work)
        if not bench.workers_key:
            print("bench: devgate check-config takes no workers key: 1 worker only",
                  file=sys.stderr)
        for case in cases(opts):
            if only and only.lower() not in case["name"].lower():
                continue
            for workers in ((1, 2) if case["workers2"] and bench.workers_key else (1,)):
                row = {"case": case, "workers": workers, "devgate": None, "libcoap": None}
                kinds = ["devgate"] + (["libcoap"] if case["libcoap"] and workers == 1 else [])
                for kind in kinds:
                    try:
                        row[kind] = measure(bench, case, kind, workers, timeout, perf_dir)
                        bad = row[kind]["failed"] or row[kind]["rc"] != 0
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        print("bench: %s, %s, %d worker(s): %s" % (case["name"], kind, workers, e),
                              file=sys.stderr)
                        bad = True
                        if smoke or row[kind] is None:
                            broken.append("%s on %s" % (case["name"], kind))
                    if bad and row[kind] is not None:
                        print("bench: %s on %s: %d failed (%s)" % (
                            case["name"], kind, row[kind]["failed"], row[kind]["detail"]),
                            file=sys.stderr)
                        if smoke:
                            broken.append("%s on %s" % (case["name"], kind))
                    print("bench: %.0f s: %s, %s, %d worker(s): %s" % (
                        time.time() - t0, case["name"], kind, workers,
                        fmt_value(case, row[kind])), file=sys.stderr)
                rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows, markdown))
    print("Rates are per second of server CPU (wall/s: per second of wall clock); latency in ms\n"
          "(handshake or request, at the generator); RSS at the end (idle: with the sessions\n"
          "held); fail: handshakes or requests that got no answer (no retransmission); UDP\n"
          "drops: datagrams the kernel dropped at the server's sockets (/proc/net/udp).\n"
          "workers 1: server on CPU 0, loadgen on CPU 1; workers 2 (0-1): devgate and loadgen\n"
          "both on CPUs 0-1; its target compares 2 x its rate per CPU s with 1 worker's.")
    if broken:
        print("bench: broken: %s" % "; ".join(broken), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
