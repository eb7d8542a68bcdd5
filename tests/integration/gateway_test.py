#!/usr/bin/env python3
"""Integration tests: the real daemon on loopback, driven by real clients.

Each test starts build/devgate on a free 127.0.0.1 port with its own
config directory and database, talks to it with coap-client-openssl,
coap-client-gnutls and openssl s_client, and checks what came back and
what the daemon logged. Every loop is bounded in count and time.

Usage: gateway_test.py BUILD_DIR [TEST_NAME ...]
Prints one line per test and a final "N passed, N failed".
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
DEVGATE = os.path.join(BUILD, "devgate")
KEY = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24))


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_tcp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """One devgate serve process with a private config directory."""

    def __init__(self, psk=None, limits=None, extra_projects=None, files=None,
                 project_json=None, config=None, env=None, wait_ready=True, journal=False):
        """files: {path relative to the config directory: bytes or str},
        written before the daemon starts (directories made as needed).
        project_json: {slug: dict} written as projects/<slug>/project.json.
        config: more top-level devgate.json keys. env: more environment
        variables for the daemon."""
        self.dir = tempfile.mkdtemp(prefix="devgate-it-")
        self.port = free_port()
        self.metrics_port = free_tcp_port()
        self.conf = os.path.join(self.dir, "devgate.json")
        projects = os.path.join(self.dir, "projects")
        os.makedirs(os.path.join(projects, "acme"))
        if psk is None:
            psk = [{"identity": "dev1@acme", "device": "dev1", "key": KEY}]
        with open(os.path.join(projects, "acme", "psk.json"), "w") as f:
            json.dump(psk, f)
        for slug, entries in (extra_projects or {}).items():
            os.makedirs(os.path.join(projects, slug))
            with open(os.path.join(projects, slug, "psk.json"), "w") as f:
                json.dump(entries, f)
        for slug, meta in (project_json or {}).items():
            self.write("projects/%s/project.json" % slug, json.dumps(meta))
        for rel, data in (files or {}).items():
            self.write(rel, data)
        cfg = {
            "listen": ["127.0.0.1:%d" % self.port],
            "database": "var/devgate.db",
            "projects_dir": "projects",
            "log": {"level": "debug", "format": "text"},
            "metrics_listen": "127.0.0.1:%d" % self.metrics_port,
        }
        if limits:
            cfg["limits"] = limits
        cfg.update(config or {})
        with open(self.conf, "w") as f:
            json.dump(cfg, f)
        self.log_path = os.path.join(self.dir, "devgate.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, **(env or {}))
        if journal:
            # As systemd does: JOURNAL_STREAM names the file stderr is.
            st = os.fstat(self.log.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        self.proc = subprocess.Popen([DEVGATE, "serve", "-c", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if not wait_ready:
            return
        deadline = time.time() + 10
        while time.time() < deadline:
            if "server.listening" in self.logtext():
                return
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited at start:\n" + self.logtext())
            time.sleep(0.05)
        raise AssertionError("daemon did not start listening:\n" + self.logtext())

    def write(self, rel, data):
        """Writes a file under the config directory, atomically (a rename),
        so a watcher never reads half of it."""
        path = os.path.join(self.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.rename(tmp, path)
        return path

    def logtext(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.logtext()):
                return True
            time.sleep(0.05)
        return False

    def url(self, path=""):
        return "coaps://127.0.0.1:%d/%s" % (self.port, path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.dump_threads()
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def dump_threads(self):
        """A daemon that did not exit: its threads' stacks go to its log
        (gdb, when installed), so a failed stop says where it hung."""
        if shutil.which("gdb") is None:
            return
        try:
            out = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex",
                                  "thread apply all bt"], capture_output=True, text=True,
                                 timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return
        self.log.write(("---- threads of a daemon that did not stop ----\n" + out).encode())
        self.log.flush()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def coap(client, d, method, path, identity="dev1@acme", key=None, extra=()):
    """Runs a coap-client; returns (response codes seen, stdout, stderr)."""
    cmd = [client, "-v", "7", "-m", method, "-u", identity, "-k", key or KEY,
           "-B", "5"] + list(extra) + [d.url(path)]
    p = subprocess.run(cmd, capture_output=True, timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    codes = re.findall(r"v:1 t:(?:ACK|NON|CON) c:(\d\.\d\d)", out + err)
    return codes, out, err


def s_client(d, cipher, identity="dev1@acme", key=None, extra=()):
    """Runs openssl s_client -dtls1_2 with a PSK; returns (exit code, output)."""
    hexkey = (key or KEY).encode().hex()
    cmd = ["openssl", "s_client", "-dtls1_2", "-connect", "127.0.0.1:%d" % d.port,
           "-psk_identity", identity, "-psk", hexkey, "-cipher", cipher] + list(extra)
    p = subprocess.run(cmd, input=b"", capture_output=True, timeout=20)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def devices_json(d):
    p = subprocess.run([DEVGATE, "devices", "list", "-c", d.conf, "--json"],
                       capture_output=True, timeout=20, check=True)
    return json.loads(p.stdout)


def s_client_live(d, cipher="PSK-AES128-CCM8", bind=None):
    """Starts openssl s_client with a PSK and keeps it connected (stdin open)."""
    cmd = ["openssl", "s_client", "-dtls1_2", "-connect", "127.0.0.1:%d" % d.port,
           "-psk_identity", "dev1@acme", "-psk", KEY.encode().hex(), "-cipher", cipher]
    if bind:
        cmd += ["-bind", bind]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


# --- tests -----------------------------------------------------------------

def test_well_known_core_openssl(d):
    codes, out, _ = coap("coap-client-openssl", d, "get", ".well-known/core")
    assert "2.05" in codes, codes
    assert "</.well-known/core>" in out, out


def test_well_known_core_gnutls(d):
    codes, out, _ = coap("coap-client-gnutls", d, "get", ".well-known/core")
    assert "2.05" in codes, codes
    assert "</.well-known/core>" in out, out


def test_s_client_psk_suites(d):
    for cipher in ("PSK-AES128-CCM8", "PSK-AES128-GCM-SHA256", "PSK-AES128-CCM",
                   "PSK-AES128-CBC-SHA256", "PSK-CHACHA20-POLY1305",
                   "ECDHE-PSK-AES128-CBC-SHA256", "ECDHE-PSK-CHACHA20-POLY1305"):
        rc, out = s_client(d, cipher)
        assert rc == 0 and "alert" not in out, (cipher, out)
        assert re.search(r"Cipher is " + re.escape(cipher), out), (cipher, out)
    assert d.wait_log(r"session.established .*cipher=PSK-AES128-CCM-8")
    assert d.wait_log(r"session.established .*cipher=PSK-AES128-GCM-SHA256")


def test_server_certificate_presented(d):
    ca = os.path.join(d.dir, "var", "dev-certs", "dev-ca.pem")
    p = subprocess.run(["openssl", "s_client", "-dtls1_2", "-connect",
                        "127.0.0.1:%d" % d.port, "-CAfile", ca, "-verify_hostname",
                        "localhost", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                       input=b"", capture_output=True, timeout=20)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert "Verify return code: 0 (ok)" in out, out
    # No client certificate proves no device: the handshake is refused.
    assert d.wait_log(r'session.failed .*reason="no client certificate"'), d.logtext()


def test_wrong_key(d):
    rc, out = s_client(d, "PSK-AES128-CCM8", key="not-the-key")
    assert rc != 0, out
    assert d.wait_log(r'session.failed .*reason="wrong key" identity=dev1@acme'), d.logtext()
    codes, _, _ = coap("coap-client-gnutls", d, "get", ".well-known/core", key="wrong")
    assert "2.05" not in codes


def alert_of(out):
    """The TLS alert openssl s_client reports receiving, or None."""
    m = re.search(r"alert (?:number \d+|[a-z ]+?)(?: *\n|:)", out)
    return m.group(0).strip() if m else None


def test_unknown_identity(d):
    """An unknown identity must look like a known one with a wrong key on
    the wire (the same alert, decrypt_error, after the Finished), while
    the log says which it was."""
    rc, out = s_client(d, "PSK-AES128-CCM8", identity="ghost@acme")
    assert rc != 0, out
    assert "unknown psk identity" not in out.lower(), out
    assert "decrypt error" in out.lower(), out
    assert d.wait_log(r'session.failed .*reason="unknown PSK identity" identity=ghost@acme')
    rc2, out2 = s_client(d, "PSK-AES128-CCM8", key="not-the-key")
    assert rc2 != 0, out2
    assert "decrypt error" in out2.lower(), out2
    assert d.wait_log(r'session.failed .*reason="wrong key" identity=dev1@acme'), d.logtext()


def test_unknown_project(d):
    rc, out = s_client(d, "PSK-AES128-CCM8", identity="dev1@nowhere")
    assert rc != 0, out
    assert d.wait_log(r'session.failed .*reason="unknown project" identity=dev1@nowhere')
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core",
                       identity="dev1@other")
    assert "2.05" not in codes
    assert d.wait_log(r"identity=dev1@other")


def test_identity_of_other_project(d):
    # beta exists, but dev1@beta is not one of its identities.
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core",
                       identity="dev1@beta")
    assert "2.05" not in codes
    assert d.wait_log(r'reason="unknown PSK identity" identity=dev1@beta'), d.logtext()


def test_unknown_path_and_keepalive(d):
    codes, _, _ = coap("coap-client-openssl", d, "get", "no/such/thing")
    assert codes == ["4.04"], codes
    codes, _, _ = coap("coap-client-gnutls", d, "delete", "")
    assert codes == ["2.02"], codes
    codes, _, _ = coap("coap-client-openssl", d, "post", ".well-known/core")
    assert codes == ["4.05"], codes


def test_critical_option_and_proxy(d):
    codes, _, _ = coap("coap-client-gnutls", d, "get", ".well-known/core",
                       extra=["-O", "2049,x"])
    assert codes == ["4.02"], codes
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core",
                       extra=["-O", "35,coaps://127.0.0.1:%d/x" % d.port])
    assert codes == ["5.05"], codes
    # Uri-Host and Uri-Port are accepted.
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core",
                       extra=["-O", "3,gateway.example", "-O", "7,\x16\x24"])
    assert codes == ["2.05"], codes


def test_devices_list(d):
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core")
    assert "2.05" in codes
    devs = devices_json(d)
    assert len(devs) == 1, devs
    dev = devs[0]
    assert dev["project"] == "acme" and dev["name"] == "dev1", dev
    assert dev["certificate_id"] is None and dev["auth"] == "psk", dev
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", dev["created_at"]), dev
    # last_seen is written by the store's writer thread, off the loop.
    deadline = time.time() + 5
    while devs[0]["last_seen"] is None and time.time() < deadline:
        time.sleep(0.1)
        devs = devices_json(d)
    assert devs[0]["last_seen"] is not None, devs
    text = subprocess.run([DEVGATE, "devices", "list", "-c", d.conf],
                          capture_output=True, timeout=20).stdout.decode()
    assert re.search(r"^acme\s+dev1\s+-\s+psk", text, re.M), text


def test_one_session_per_device(d):
    """A second session of the same device replaces the first."""
    first = s_client_live(d, "PSK-AES128-CCM8")
    try:
        assert d.wait_log(r"session.established session=\d+ "), d.logtext()
        codes, _, _ = coap("coap-client-gnutls", d, "get", ".well-known/core")
        assert "2.05" in codes, codes
        assert d.wait_log(r"session.closed .*reason=\"replaced by a new session of the same device\""), d.logtext()
    finally:
        first.kill()
        first.wait()


def test_junk_datagrams(d):
    """400 hostile datagrams leave the daemon and a live session undisturbed."""
    live = s_client_live(d, "PSK-AES128-GCM-SHA256")
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        rng = random.Random(1234)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        sent = 0
        for i in range(400):
            kind = i % 8
            if kind == 0:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1400)))
            elif kind == 1:  # truncated record header
                data = bytes([22, 0xfe, 0xfd, 0, 0])[: rng.randint(1, 5)]
            elif kind == 2:  # header whose length overruns the datagram
                data = bytes([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 0, 0])
            elif kind == 3:  # ClientHello with a lying handshake length and garbage body
                body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
                data = bytes([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0,
                              (len(body) + 12) >> 8, (len(body) + 12) & 0xff,
                              1, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff]) + body
            elif kind == 4:  # application data for a session that does not exist
                data = bytes([23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 20]) + bytes(20)
            elif kind == 5:  # a CID record
                data = bytes([25, 0xfe, 0xfd, 0, 1]) + bytes(rng.getrandbits(8) for _ in range(40))
            elif kind == 6:  # an alert claiming epoch 0
                data = bytes([21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 40])
            else:  # a DTLS 1.0 ClientHello fragment, cut short
                data = bytes([22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 1, 0, 0, 60])
            socks[i % len(socks)].sendto(data, ("127.0.0.1", d.port))
            sent += 1
        for s in socks:
            s.close()
        assert sent == 400
        time.sleep(0.5)
        assert d.proc.poll() is None, "daemon died:\n" + d.logtext()
        assert live.poll() is None, "the live session's client went away"
        assert "session.closed" not in d.logtext(), d.logtext()
        codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core")
        assert "2.05" in codes, codes
        codes, _, _ = coap("coap-client-gnutls", d, "get", ".well-known/core")
        assert "2.05" in codes, codes
    finally:
        live.kill()
        live.wait()


def test_sigterm_with_client(d):
    live = s_client_live(d, "PSK-AES128-CCM")
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        t0 = time.time()
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(5)
        elapsed = time.time() - t0
        assert rc == 0, rc
        assert elapsed < 2.0, elapsed
        assert 'reason="server shutting down"' in d.logtext(), d.logtext()
        # The client got close_notify and ends by itself.
        out, _ = live.communicate(timeout=5)
        assert b"closed" in out.lower() or live.returncode is not None
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()


def test_bad_config_names_key(d):
    bad = os.path.join(d.dir, "bad.json")
    with open(bad, "w") as f:
        json.dump({"limits": {"max_sessions": 0}}, f)
    p = subprocess.run([DEVGATE, "serve", "-c", bad], capture_output=True, timeout=10)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert "bad.json: limits.max_sessions: must be an integer 1..10000000" in err, err


def test_bad_psk_file_skipped(d):
    # beta's psk.json names another project: rejected with path, index and key.
    log = d.logtext()
    assert re.search(r"projects/gamma/psk.json: \[0\].identity: must end in @gamma", log), log
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core")
    assert "2.05" in codes


def test_handshake_limits(d):
    """max_handshakes=1: a stalled half-open handshake holds the only slot
    only until a newcomer needs it (the oldest stalled handshake gives
    way), and an established session is never evicted for a handshake."""
    import dtlsprobe
    live = s_client_live(d)
    try:
        assert d.wait_log(r"session.established session=1 "), d.logtext()
        sock, replied = dtlsprobe.stalled_handshake("127.0.0.1", d.port)
        try:
            assert replied, "no ServerHello flight after the cookie"
            codes, _, _ = coap("coap-client-gnutls", d, "get", ".well-known/core")
            assert "2.05" in codes, codes
            # The stalled handshake (session 2) gave way, not the live session 1.
            assert d.wait_log(r'session.closed session=2 .*reason="stalled handshake gave way'), \
                d.logtext()
            assert not re.search(r'session.closed session=1 .*gave way', d.logtext()), d.logtext()
        finally:
            sock.close()
    finally:
        live.kill()
        live.wait()


def test_new_handshake_from_same_address(d):
    """A device that lost its session (killed, no close_notify) and comes
    back from the same address and port replaces the old session once the
    new handshake completes."""
    port = free_port()
    first = s_client_live(d, bind="127.0.0.1:%d" % port)
    try:
        assert d.wait_log(r"session.established session=1 "), d.logtext()
    finally:
        first.kill()
        first.wait()
    second = s_client_live(d, bind="127.0.0.1:%d" % port)
    try:
        assert d.wait_log(r"session.established session=2 "), d.logtext()
        assert d.wait_log(r'session.closed session=1 .*reason="replaced by a new handshake from the same address"'), d.logtext()
        assert second.poll() is None
    finally:
        second.kill()
        second.wait()


def test_idle_timeout(d):
    """A session with no traffic is closed (with close_notify) after idle_timeout_s."""
    live = s_client_live(d)
    try:
        assert d.wait_log(r"session.established"), d.logtext()
        t0 = time.time()
        assert d.wait_log(r'session.closed .*reason="idle timeout"', 14), d.logtext()
        assert time.time() - t0 >= 8.5, time.time() - t0
        out, _ = live.communicate(timeout=5)
        assert b"closed" in out.lower() or live.returncode is not None
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()


BIG_PSK = 100000


def big_psk():
    """One psk.json of BIG_PSK credentials (about 8 MB, as an operator with
    100k devices writes it), dev1@acme first."""
    return [{"identity": "dev%d@acme" % i, "device": "dev%d" % i, "key": KEY}
            for i in range(1, BIG_PSK + 1)]


def test_100k_identities_import(d):
    """100k PSK credentials in one psk.json import in a few seconds (the
    repeat check was quadratic: minutes), and the last one connects."""
    t0 = time.time()
    deadline = t0 + 15
    while time.time() < deadline and "server.listening" not in d.logtext():
        assert d.proc.poll() is None, d.logtext()[-2000:]
        time.sleep(0.05)
    took = time.time() - t0
    log = d.logtext()
    assert "%d PSK credentials" % BIG_PSK in log, log[-2000:]
    assert took < 10, "import took %.1fs" % took
    print("     %d credentials imported, listening %.2fs after start" % (BIG_PSK, took))
    codes, _, _ = coap("coap-client-openssl", d, "get", ".well-known/core",
                       identity="dev%d@acme" % BIG_PSK)
    assert "2.05" in codes, codes


TESTS = [
    (test_well_known_core_openssl, {}),
    (test_well_known_core_gnutls, {}),
    (test_s_client_psk_suites, {}),
    (test_server_certificate_presented, {}),
    (test_wrong_key, {}),
    (test_unknown_identity, {}),
    (test_unknown_project, {}),
    (test_identity_of_other_project,
     {"extra_projects": {"beta": [{"identity": "other@beta", "device": "b1", "key": "k"}]}}),
    (test_unknown_path_and_keepalive, {}),
    (test_critical_option_and_proxy, {}),
    (test_devices_list, {}),
    (test_one_session_per_device, {}),
    (test_junk_datagrams, {}),
    (test_sigterm_with_client, {}),
    (test_bad_config_names_key, {}),
    (test_bad_psk_file_skipped,
     {"extra_projects": {"gamma": [{"identity": "x@acme", "device": "x", "key": "k"}]}}),
    (test_handshake_limits, {"limits": {"max_handshakes": 1, "handshake_timeout_s": 2}}),
    (test_new_handshake_from_same_address, {}),
    (test_idle_timeout, {"limits": {"idle_timeout_s": 10}}),
    (test_100k_identities_import, {"psk": big_psk(), "wait_ready": False,
                                   "config": {"log": {"level": "info", "format": "text"}}}),
]


def run_suite(tests):
    """Runs (test function, Daemon keyword arguments) pairs, each on a fresh
    daemon; a test also fails when the daemon, stopped with SIGTERM, does not
    exit 0 or printed a sanitizer report. Prints one line per test and the
    summary; returns the exit status."""
    wanted = set(sys.argv[2:])
    passed = failed = 0
    for fn, kwargs in tests:
        if wanted and fn.__name__ not in wanted:
            continue
        d = None
        t0 = time.time()
        try:
            d = Daemon(**kwargs)
            fn(d)
            d.stop()
            bad = re.search(r"(ERROR: \w+Sanitizer|runtime error:)", d.logtext())
            assert bad is None, "sanitizer report"
            assert d.proc.returncode in (0, None), "daemon exit status %s" % d.proc.returncode
            passed += 1
            print("ok   %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print("FAIL %-40s %s: %s" % (fn.__name__, type(e).__name__, str(e)[:3000]),
                  flush=True)
            if d is not None:
                print("---- daemon log ----\n" + d.logtext()[-3000:], flush=True)
        finally:
            if d is not None:
                d.cleanup()
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_suite(TESTS))
