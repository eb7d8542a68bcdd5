#!/usr/bin/env python3
"""Integration tests of running devgate in production: check-config,
health, SIGHUP with a broken devgate.json, structured and journald logs,
log flood limiting, sd_notify (READY/RELOADING/STOPPING/WATCHDOG) and the
metrics endpoint, all on 127.0.0.1 against the real daemon.

Usage: ops_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402

DEVGATE = g.DEVGATE


def run(*args, timeout=20):
    p = subprocess.run([DEVGATE] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode() + p.stderr.decode()


def test_check_config(d):
    rc, out = run("check-config", "-c", d.conf)
    assert rc == 0, out
    assert re.search(r"^project acme: acme, enabled, auto_provision on, 0 CAs, 0 CRL files, "
                     r"1 PSK credentials, 0 settings$", out, re.M), out
    bad = os.path.join(d.dir, "bad.json")
    with open(bad, "w") as f:
        f.write('{"limitz": {}}')
    rc, out = run("check-config", "-c", bad)
    assert rc != 0 and "bad.json: limitz: unknown key" in out, out
    with open(bad, "w") as f:
        f.write('{"limits": {"idle_timeout_s": "long"}}')
    rc, out = run("check-config", "-c", bad)
    assert rc != 0 and "bad.json: limits.idle_timeout_s: must be an integer" in out, out
    d.write("projects/Bad_Dir/psk.json", "[]")
    d.write("projects/beta/psk.json", '[{"identity": "x@acme", "device": "x", "key": "k"}]')
    d.write("projects/beta/cas/broken.pem", "not a certificate")
    rc, out = run("check-config", "-c", d.conf)
    assert rc != 0, out
    assert "projects/Bad_Dir: not a valid project slug" in out, out
    assert "projects/beta/psk.json: [0].identity: must end in @beta" in out, out
    assert "projects/beta/cas/broken.pem: no PEM certificate in the file" in out, out
    assert "3 errors" in out, out


def test_health(d):
    rc, out = run("health", "-c", d.conf)
    assert rc == 0 and "answers" in out, out
    d.stop()
    rc, out = run("health", "-c", d.conf)
    assert rc != 0, out


def test_sighup_broken_config_keeps_serving(d):
    with open(d.conf) as f:
        good = f.read()
    with open(d.conf, "w") as f:
        f.write('{"listen": [')
    d.proc.send_signal(signal.SIGHUP)
    assert d.wait_log(r"reload.failed .*devgate.json: line \d+: malformed JSON.*keeping the "
                      r"running configuration"), d.logtext()
    assert d.proc.poll() is None
    codes, _, _ = g.coap("coap-client-openssl", d, "get", ".well-known/core")
    assert "2.05" in codes, codes
    # A good file with a change that needs a restart says so, and the rest applies.
    cfg = json.loads(good)
    cfg["database"] = "var/other.db"
    cfg["limits"] = {"device_requests_per_s": 1, "device_burst": 1}
    with open(d.conf, "w") as f:
        json.dump(cfg, f)
    d.proc.send_signal(signal.SIGHUP)
    assert d.wait_log(r"reload.restart_needed .*database changed"), d.logtext()
    assert d.wait_log(r"reload.done .*SIGHUP"), d.logtext()
    import fwclient as fw
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        codes = [c.request(fw.GET, ".well-known/core").code_text for _ in range(3)]
    finally:
        c.close()
    assert "4.29" in codes, codes  # the new limit is in force


def test_json_logs(d):
    codes, _, _ = g.coap("coap-client-openssl", d, "get", ".well-known/core")
    assert "2.05" in codes
    d.stop()
    lines = [l for l in d.logtext().splitlines() if l.strip()]
    objs = [json.loads(l) for l in lines]
    est = [o for o in objs if o.get("event") == "session.established"]
    assert est and est[0]["peer"].startswith("127.0.0.1:") and est[0]["project"] == "acme" \
        and est[0]["device"] == "dev1" and est[0]["auth"] == "psk", est
    assert all("ts" in o and "level" in o for o in objs), objs[:3]
    assert g.KEY not in d.logtext()  # no secret is logged


def test_journald_format(d):
    d.stop()
    lines = [l for l in d.logtext().splitlines() if l.strip()]
    assert lines and all(re.match(r"^<[3467]>level=\w+ event=", l) for l in lines), lines[:5]
    assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:", l) for l in lines), lines[:5]


def test_failure_lines_limited(d):
    procs = []
    for i in range(40):
        procs.append(subprocess.Popen(
            ["openssl", "s_client", "-dtls1_2", "-connect", "127.0.0.1:%d" % d.port,
             "-psk_identity", "ghost%d@acme" % i, "-psk", "00", "-cipher", "PSK-AES128-CCM8"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    time.sleep(1.2)
    # One more failure after the window: it reports how many were suppressed.
    g.s_client(d, "PSK-AES128-CCM8", identity="late@acme")
    assert d.wait_log(r"log.suppressed .*session.failed lines suppressed"), d.logtext()[-2000:]
    failed = len(re.findall(r"event=session.failed", d.logtext()))
    assert failed < 40, failed


class NotifySocket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="devgate-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.got = []

    def count(self, text):
        return sum(text in m for m in self.got)

    def wait(self, text, n=1, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.count(text) >= n:
                return True
            try:
                self.got.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        return False


NOTIFY = NotifySocket()


def test_sd_notify(d):
    assert NOTIFY.wait("READY=1"), NOTIFY.got
    assert NOTIFY.wait("WATCHDOG=1", 2), NOTIFY.got
    d.proc.send_signal(signal.SIGHUP)
    assert NOTIFY.wait("RELOADING=1"), NOTIFY.got
    assert NOTIFY.wait("READY=1", 2), NOTIFY.got
    d.proc.send_signal(signal.SIGTERM)
    assert NOTIFY.wait("STOPPING=1"), NOTIFY.got
    assert d.proc.wait(5) == 0


def test_metrics(d):
    codes, _, _ = g.coap("coap-client-openssl", d, "get", ".well-known/core")
    assert "2.05" in codes, codes
    g.s_client(d, "PSK-AES128-CCM8", key="wrong-key")
    time.sleep(0.3)
    p = subprocess.run(["curl", "-sf", "http://127.0.0.1:%d/metrics" % d.metrics_port],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert re.search(r'^devgate_handshakes_total\{auth="psk",result="ok"\} 1$', text, re.M), text
    assert re.search(r'^devgate_handshake_failures_total\{reason="wrong key"\} 1$', text,
                     re.M), text
    assert re.search(r'^devgate_coap_requests_total\{service="core",class="2xx"\} 1$', text,
                     re.M), text
    assert re.search(r'^devgate_datagrams_total\{direction="in"\} [1-9]', text, re.M), text
    assert re.search(r'^devgate_build_info\{version="[^"]+"\} 1$', text, re.M), text
    assert re.search(r"^devgate_handshake_seconds_count 1$", text, re.M), text
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:%d/nope" % d.metrics_port], capture_output=True,
                       timeout=10)
    assert p.stdout.decode() == "404", p.stdout


TESTS = [
    (test_check_config, {}),
    (test_health, {}),
    (test_sighup_broken_config_keeps_serving, {}),
    (test_json_logs, {"config": {"log": {"level": "info", "format": "json"}}}),
    (test_journald_format, {"journal": True}),
    (test_failure_lines_limited, {}),
    (test_sd_notify, {"env": {"NOTIFY_SOCKET": NOTIFY.path, "WATCHDOG_USEC": "400000"}}),
    (test_metrics, {}),
]


if __name__ == "__main__":
    rc = g.run_suite(TESTS)
    NOTIFY.sock.close()
    os.unlink(NOTIFY.path)
    os.rmdir(NOTIFY.dir)
    sys.exit(rc)
