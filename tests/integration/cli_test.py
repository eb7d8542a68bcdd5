#!/usr/bin/env python3
"""Integration tests of the devgate command line's argument handling:
negative values and `--` as positional arguments, --help and -h on every
command and subcommand the binary lists, usage errors (exit 2, usage on
stderr), and the config path default ($DEVGATE_CONFIG, else
/etc/devgate/devgate.json). Each test has a daemon on 127.0.0.1 whose
config directory gives project acme and device dev1.

Usage: cli_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402

DEVGATE = g.DEVGATE
DEFAULT_CONFIG = "/etc/devgate/devgate.json"


def run(*args, env=None):
    """Runs devgate with args; returns (exit status, stdout, stderr). A
    sanitizer report fails the test whatever the status."""
    e = dict(os.environ)
    e.pop("DEVGATE_CONFIG", None)
    e.update(env or {})
    p = subprocess.run([DEVGATE] + list(args), capture_output=True, timeout=20, env=e)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert not re.search(r"(ERROR: \w+Sanitizer|runtime error:)", err), (args, err)
    return p.returncode, out, err


def ok(*args, env=None):
    rc, out, err = run(*args, env=env)
    assert rc == 0, (args, rc, out, err)
    return out


def listed(text, section):
    """The names listed under `section:` in a usage text."""
    m = re.search(r"^%s:\n((?:  \S.*\n)+)" % section, text, re.M)
    return [line.split()[0] for line in m.group(1).splitlines()] if m else []


def test_negative_value(d):
    ok("state", "set", "-c", d.conf, "acme", "dev1", "temp", "-234.25")
    assert ok("state", "get", "-c", d.conf, "acme", "dev1", "temp").strip() == "-234.25"
    # A value may come before the options, and a negative integer too.
    ok("state", "set", "acme", "dev1", "low", "-7", "-c", d.conf)
    assert ok("state", "get", "acme", "dev1", "low", "-c", d.conf).strip() == "-7"
    ok("state", "set", "-c", d.conf, "acme", "dev1", "obj", '{"a": -1.5}')
    v = json.loads(ok("state", "get", "-c", d.conf, "acme", "dev1"))
    assert v == {"temp": -234.25, "low": -7, "obj": {"a": -1.5}}, v
    # A word that only starts with '-' is still an option, and an unknown one.
    rc, out, err = run("state", "set", "-c", d.conf, "acme", "dev1", "x", "-y")
    assert rc == 2 and "unknown option -y" in err and "usage: devgate state set" in err, err
    assert out == "", out


def test_double_dash(d):
    # After `--`, words that look like options are positional.
    ok("state", "set", "-c", d.conf, "--", "acme", "dev1", "-x", "1")
    assert ok("state", "get", "-c", d.conf, "--", "acme", "dev1", "-x").strip() == "1"
    out = ok("state", "get", "-c", d.conf, "--", "acme", "dev1", "--help")
    assert out.strip() == "null" and "usage" not in out, out
    rc, _, err = run("state", "get", "-c", d.conf, "acme", "dev1", "-x")
    assert rc == 2 and "unknown option -x" in err, err
    # Options before `--` still count; -c after `--` is a value.
    rc, _, err = run("state", "get", "--", "-c", d.conf, "acme", "dev1")
    assert rc == 2 and "unexpected argument" in err, err
    # An option's value is the next word whatever it looks like.
    out = ok("stream", "list", "--config", d.conf, "acme", "dev1", "--limit", "5")
    assert out == "", out
    rc, _, err = run("stream", "list", "-c", d.conf, "acme", "dev1", "--limit", "-5")
    assert rc == 2 and "--limit must be a whole number" in err, err
    assert "usage: devgate stream list" in err, err
    ok("devices", "list", "--config=" + d.conf)
    ok("devices", "list", "-c" + d.conf)


def test_help_everywhere(d):
    top = ok("--help")
    assert top == ok("-h") and top.startswith("usage: devgate "), top
    groups = listed(top, "commands")
    for want in ("serve", "devices", "psk", "projects", "state", "stream", "logs",
                 "check-config", "health"):
        assert want in groups, (want, groups)
    rc, out, err = run()
    assert rc == 2 and out == "" and "usage: devgate" in err, (rc, out, err)
    rc, out, err = run("no-such-command")
    assert rc == 2 and "unknown command no-such-command" in err, err
    checked = 0
    for grp in groups:
        text = ok(grp, "--help")
        assert text == ok(grp, "-h"), grp
        assert text.startswith("usage: devgate %s " % grp) or \
            text.startswith("usage: devgate %s\n" % grp), text
        subs = listed(text, "subcommands")
        if not subs:
            # A command without subcommands: its own usage, options included.
            assert "-h, --help" in text and "\n\n" in text, text
            rc, out, err = run(grp, "--no-such-option")
            assert rc == 2 and out == "" and err.count("usage: devgate %s" % grp) == 1, err
            checked += 1
            continue
        rc, out, err = run(grp)
        assert rc == 2 and out == "" and "usage: devgate %s <subcommand>" % grp in err, err
        rc, out, err = run(grp, "no-such-sub")
        assert rc == 2 and "unknown subcommand no-such-sub" in err, err
        for sub in subs:
            name = "%s %s" % (grp, sub)
            for flag in ("--help", "-h"):
                # Help wins over missing arguments and comes before any work.
                out = ok(grp, sub, flag)
                first = out.splitlines()[0]
                assert re.match(r"^usage: devgate %s( |$)" % re.escape(name), first), out
                assert "-h, --help" in out, out
            rc, out, err = run(grp, sub, "--no-such-option")
            assert rc == 2 and out == "", (name, rc, out)
            assert "unknown option --no-such-option" in err, err
            assert "usage: devgate %s" % name in err, err
            checked += 1
    assert checked >= 12, checked


def test_config_from_env(d):
    env = {"DEVGATE_CONFIG": d.conf}
    out = ok("devices", "list", env=env)
    assert re.search(r"^acme\s+dev1\s", out, re.M), out
    ok("state", "set", "acme", "dev1", "t", "-1", env=env)
    assert ok("state", "get", "acme", "dev1", "t", env=env).strip() == "-1"
    assert ok("check-config", env=env).startswith(d.conf + ": ok"), "check-config"
    # -c wins over the environment.
    missing = os.path.join(d.dir, "missing.json")
    out = ok("devices", "list", "-c", d.conf, env={"DEVGATE_CONFIG": missing})
    assert "dev1" in out, out
    rc, out, err = run("devices", "list", env={"DEVGATE_CONFIG": missing})
    assert rc == 1 and missing in err and "DEVGATE_CONFIG" in err, err
    # An empty DEVGATE_CONFIG is unset.
    rc, _, err = run("devices", "list", env={"DEVGATE_CONFIG": ""})
    assert rc == 1 and DEFAULT_CONFIG in err, err


def test_default_config_missing(d):
    if os.path.exists(DEFAULT_CONFIG):
        print("     (%s exists on this host: only the path in the error is checked)"
              % DEFAULT_CONFIG)
    home = tempfile.mkdtemp(prefix="devgate-cli-home-")
    try:
        env = {"HOME": home}
        for args in (("devices", "list"), ("state", "get", "acme", "dev1"),
                     ("check-config",), ("health",), ("psk", "list")):
            rc, out, err = run(*args, env=env)
            if os.path.exists(DEFAULT_CONFIG):
                assert DEFAULT_CONFIG in out + err or rc == 0, (args, out, err)
                continue
            assert rc == 1, (args, rc, out, err)
            assert DEFAULT_CONFIG + ": cannot read" in err, (args, err)
            assert "-c FILE" in err, err
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_state_set_honours_max_state_bytes(d):
    """The CLI may not make a state document larger than a device could."""
    ok("state", "set", "-c", d.conf, "acme", "dev1", "small", '"x"')
    big = json.dumps("y" * 2000)
    rc, out, err = run("state", "set", "-c", d.conf, "acme", "dev1", "big", big)
    assert rc == 1 and "limits.max_state_bytes (1024)" in err, (rc, err)
    v = json.loads(ok("state", "get", "-c", d.conf, "acme", "dev1"))
    assert v == {"small": "x"}, v


TESTS = [
    (test_state_set_honours_max_state_bytes, {"limits": {"max_state_bytes": 1024}}),
    (test_negative_value, {}),
    (test_double_dash, {}),
    (test_help_everywhere, {}),
    (test_config_from_env, {}),
    (test_default_config_missing, {}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
