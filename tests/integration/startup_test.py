#!/usr/bin/env python3
"""Integration tests of start-up failures, as an operator meets them: every
way `devgate serve` cannot start exits non-zero with one line that names the
file and the reason. A database that cannot be written (immutable, or under a
path whose parent is a regular file, which stops root too), a corrupt
database, a missing server certificate, a bad devgate.json.

Usage: startup_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402

DEVGATE = g.DEVGATE


class Setup:
    """A config directory with a devgate.json; nothing runs until serve()."""

    def __init__(self, **cfg):
        self.dir = tempfile.mkdtemp(prefix="devgate-start-")
        os.makedirs(os.path.join(self.dir, "projects"))
        self.conf = os.path.join(self.dir, "devgate.json")
        base = {"listen": ["127.0.0.1:%d" % g.free_port()], "database": "var/devgate.db",
                "metrics_listen": ""}
        base.update(cfg)
        self.write_conf(base)
        self.immutable = []

    def write_conf(self, cfg):
        with open(self.conf, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))

    def path(self, rel):
        return os.path.join(self.dir, rel)

    def serve(self, timeout=10):
        """Runs serve; returns (exit code, output), or raises if it keeps running."""
        p = subprocess.Popen([DEVGATE, "serve", "-c", self.conf], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            raise AssertionError("serve did not exit:\n" + out.decode("utf-8", "replace"))
        return p.returncode, out.decode("utf-8", "replace")

    def first_run(self):
        """Starts the daemon once to make the database, then stops it."""
        p = subprocess.Popen([DEVGATE, "serve", "-c", self.conf], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        out = b""
        while time.time() < deadline and not os.path.exists(self.path("var/devgate.db")):
            time.sleep(0.05)
        time.sleep(0.3)
        p.terminate()
        out, _ = p.communicate(timeout=10)
        assert p.returncode == 0, out.decode()

    def cleanup(self):
        for f in self.immutable:
            subprocess.run(["chattr", "-i", f], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def error_line(out):
    """The one error line: level=error (text) or "level":"error" (JSON), or the CLI's devgate: line."""
    lines = [l for l in out.splitlines() if "level=error" in l or l.startswith("devgate:")]
    assert lines, "no error line:\n" + out
    return lines[0]


def expect_failure(s, path, reason):
    rc, out = s.serve()
    assert rc != 0, "exit 0:\n" + out
    assert not re.search(r"(ERROR: \w+Sanitizer|runtime error:)", out), out
    line = error_line(out)
    assert path in line, "the path %r is not named: %s" % (path, line)
    assert re.search(reason, line), "reason /%s/ not in: %s" % (reason, line)
    print("     %s" % line[line.find("level="):] if "level=" in line else "     " + line,
          flush=True)


def test_database_immutable(s):
    s.first_run()
    db = s.path("var/devgate.db")
    # Root ignores mode bits; the immutable attribute stops root too.
    p = subprocess.run(["chattr", "+i", db], capture_output=True)
    if p.returncode == 0:
        s.immutable.append(db)
    elif os.geteuid() != 0:
        os.chmod(db, 0o444)
    else:
        raise AssertionError("cannot make the database read-only: " + p.stderr.decode())
    expect_failure(s, "var/devgate.db", r"cannot be written \(read-only")


def test_database_under_a_file(s):
    with open(s.path("plain"), "w") as f:
        f.write("not a directory\n")
    s.write_conf({"listen": ["127.0.0.1:%d" % g.free_port()], "metrics_listen": "",
                  "database": "plain/devgate.db"})
    expect_failure(s, "plain/devgate.db", r"cannot create its directory: Not a directory")


def test_database_corrupt(s):
    os.makedirs(s.path("var"))
    with open(s.path("var/devgate.db"), "wb") as f:
        f.write(b"this is not an SQLite file " * 100)
    expect_failure(s, "var/devgate.db", r"not an SQLite database, or a corrupt one")


def test_server_cert_missing(s):
    s.write_conf({"listen": ["127.0.0.1:%d" % g.free_port()], "metrics_listen": "",
                  "database": "var/devgate.db", "server_cert": "tls/server.pem",
                  "server_key": "tls/server.key"})
    expect_failure(s, "tls/server.pem", r"cannot read: No such file or directory")


def test_bad_config(s):
    s.write_conf('{"listen": ["127.0.0.1:1"], "limits": {"max_body": "big"}}')
    expect_failure(s, "devgate.json", r"limits.max_body: must be an integer")
    s.write_conf('{"listen": [')
    expect_failure(s, "devgate.json", r"malformed JSON")


TESTS = [test_database_immutable, test_database_under_a_file, test_database_corrupt,
         test_server_cert_missing, test_bad_config]


def main():
    wanted = set(sys.argv[2:])
    passed = failed = 0
    for fn in TESTS:
        if wanted and fn.__name__ not in wanted:
            continue
        s = Setup()
        t0 = time.time()
        try:
            fn(s)
            passed += 1
            print("ok   %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print("FAIL %-40s %s: %s" % (fn.__name__, type(e).__name__, str(e)[:3000]),
                  flush=True)
        finally:
            s.cleanup()
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
