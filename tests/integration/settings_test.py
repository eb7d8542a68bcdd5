#!/usr/bin/env python3
"""Integration tests of the Settings service (".c"): a device observes its
settings in CBOR and gets every change (a CLI change of the project or of
the device, an edit of settings.json) within a second with a greater
version; plain GETs in CBOR and JSON; ".c/status" reports shown by
`devgate settings status`; a bad settings.json is named and keeps the
previous settings; bad names are refused. Driven by the project's own
DTLS CoAP client (fwclient.py) and coap-client-openssl on 127.0.0.1.

Usage: settings_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fwclient as fw  # noqa: E402
import gateway_test as g  # noqa: E402
import minicbor  # noqa: E402

DEVGATE = g.DEVGATE
OSSL = "coap-client-openssl"

SETTINGS = {
    "MOTOR_SPEED": 100,
    "GAIN": {"type": "float", "value": 2},
    "RATIO": 2.5,
    "LIGHT_ON": True,
    "UNIT": "celsius",
}
FILES = {"projects/acme/settings.json": json.dumps(SETTINGS)}
OBSERVE_WITHIN = 1.0  # The bound for a change to reach an observer.


def run(d, *args):
    p = subprocess.run([DEVGATE] + list(args[:2]) + ["-c", d.conf] + list(args[2:]),
                       capture_output=True, timeout=20)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def cli(d, *args):
    rc, out, err = run(d, *args)
    assert rc == 0, (args, out, err)
    return out


def client(d):
    return fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)


ACCEPT_CBOR = (fw.OPT_ACCEPT, fw.uint_bytes(60))
CF_CBOR = (fw.OPT_CONTENT_FORMAT, fw.uint_bytes(60))


def get_cbor(c):
    r = c.request(fw.GET, ".c", options=[ACCEPT_CBOR])
    assert r is not None and r.code_text == "2.05", r and r.code_text
    v, rest = (minicbor.loads(r.payload), b"")
    assert rest == b"", rest
    return v


def check_types(v):
    assert set(v) == {"version", "settings"}, v
    s = v["settings"]
    assert type(s["MOTOR_SPEED"]) is int and s["MOTOR_SPEED"] == 100, s
    # A float of integral value stays a CBOR float: the SDK checks the major type.
    assert type(s["GAIN"]) is float and s["GAIN"] == 2.0, s
    assert type(s["RATIO"]) is float and s["RATIO"] == 2.5, s
    assert s["LIGHT_ON"] is True and s["UNIT"] == "celsius", s


class Observer:
    """An observation of ".c" in CBOR on one session."""

    def __init__(self, c):
        self.c = c
        self.token = b"\x5e\x77"
        r = c.request(fw.GET, ".c", options=[(fw.OPT_OBSERVE, b""), ACCEPT_CBOR],
                      token=self.token)
        assert r is not None and r.code_text == "2.05", r and r.code_text
        assert r.opt(fw.OPT_OBSERVE) is not None, "not registered"
        self.first, _ = (minicbor.loads(r.payload), b"")

    def next(self, timeout):
        """The next notification's settings, or None within timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.c.recv(max(0.05, deadline - time.time()))
            if m is None:
                continue
            if m.type == fw.CON:
                self.c.send(fw.Msg(fw.ACK, 0, m.mid))
            if m.token == self.token and m.code_text == "2.05":
                v, _ = (minicbor.loads(m.payload), b"")
                return v
        return None


def wait_change(obs, version, what, timeout=OBSERVE_WITHIN):
    t0 = time.time()
    v = obs.next(timeout + 0.5)
    assert v is not None, "no notification after " + what
    took = time.time() - t0
    assert took <= timeout + 0.25, (what, took)
    assert v["version"] > version, (what, v["version"], version)
    return v


# --- tests -----------------------------------------------------------------

def test_observe_types_and_changes(d):
    c = client(d)
    try:
        obs = Observer(c)
        check_types(obs.first)
        v0 = obs.first["version"]
        assert v0 > 1600000000000, v0  # ms since the epoch
        time.sleep(0.3)

        # A project change with the CLI: the file is edited, the device told.
        cli(d, "settings", "set", "acme", "MOTOR_SPEED", "120")
        v1 = wait_change(obs, v0, "settings set")
        assert v1["settings"]["MOTOR_SPEED"] == 120, v1
        with open(os.path.join(d.dir, "projects/acme/settings.json")) as f:
            on_disk = json.load(f)
        assert on_disk["MOTOR_SPEED"] == 120, on_disk
        assert on_disk["GAIN"] == {"type": "float", "value": 2}, on_disk
        assert list(on_disk) == list(SETTINGS), on_disk  # order and other keys kept

        # A device override.
        cli(d, "settings", "set", "acme", "MOTOR_SPEED", "7", "--device", "dev1")
        v2 = wait_change(obs, v1["version"], "settings set --device")
        assert v2["settings"]["MOTOR_SPEED"] == 7, v2
        # --type float of an integral value: a CBOR float.
        cli(d, "settings", "set", "acme", "RATIO", "3", "--type", "float", "--device", "dev1")
        v3 = wait_change(obs, v2["version"], "settings set --type float")
        assert type(v3["settings"]["RATIO"]) is float and v3["settings"]["RATIO"] == 3.0, v3

        # An edit of settings.json: the override still wins for MOTOR_SPEED.
        time.sleep(0.3)
        d.write("projects/acme/settings.json",
                json.dumps(dict(SETTINGS, UNIT="kelvin", NEW_ONE=-5)))
        v4 = wait_change(obs, v3["version"], "settings.json edit", timeout=1.0)
        s = v4["settings"]
        assert s["UNIT"] == "kelvin" and s["NEW_ONE"] == -5 and s["MOTOR_SPEED"] == 7, s

        # Deleting the override brings back the project's value.
        cli(d, "settings", "delete", "acme", "MOTOR_SPEED", "--device", "dev1")
        v5 = wait_change(obs, v4["version"], "settings delete --device")
        assert v5["settings"]["MOTOR_SPEED"] == 100, v5

        # A plain GET on the same session says the same.
        plain = get_cbor(c)
        assert plain == v5, (plain, v5)
    finally:
        c.close()
    got = json.loads(cli(d, "settings", "get", "acme", "--device", "dev1", "--json"))
    assert got["version"] == v5["version"] and got["settings"]["UNIT"] == "kelvin", got
    assert got["settings"]["GAIN"] == 2.0, got
    text = cli(d, "settings", "get", "acme", "GAIN")
    assert text.strip() == "2.0", text


def test_plain_get_and_json_accept(d):
    c = client(d)
    try:
        v = get_cbor(c)
        check_types(v)
    finally:
        c.close()
    codes, out, err = g.coap(OSSL, d, "get", ".c", extra=["-A", "50", "-o", "-"])
    assert codes == ["2.05"], (codes, out, err)
    doc, end = json.JSONDecoder().raw_decode(out[out.index("{\"version\""):])
    body = out[out.index("{\"version\""):][:end]
    assert '"GAIN":2.0' in body and '"MOTOR_SPEED":100' in body, body
    assert doc["version"] == v["version"] and doc["settings"]["RATIO"] == 2.5, doc
    # No settings at all: an empty map, version 0.
    cli(d, "settings", "delete", "acme", "MOTOR_SPEED")
    for name in ("GAIN", "RATIO", "LIGHT_ON", "UNIT"):
        cli(d, "settings", "delete", "acme", name)
    c = client(d)
    try:
        v = get_cbor(c)
        assert v["settings"] == {} and v["version"] > 0, v
    finally:
        c.close()


def test_status_reports(d):
    c = client(d)
    try:
        v = get_cbor(c)["version"]
        # As the SDK's Linux build sends it: an indefinite map and list.
        body = (b"\xbf" + minicbor.dumps("errors") + b"\x9f" +
                minicbor.dumps({"setting_key": "UNIT", "error_code": 1}) +
                minicbor.dumps({"setting_key": "RATIO", "error_code": 4, "details": "too big"}) +
                b"\xff" + minicbor.dumps("version") + minicbor.dumps(v) + b"\xff")
        r = c.request(fw.POST, ".c/status", body, options=[CF_CBOR])
        assert r is not None and r.code_text == "2.04", r and r.code_text
        # Malformed reports get 4.00 with a reason, and the session goes on.
        for bad, why in ((minicbor.dumps({"errors": []}), b"version"),
                         (minicbor.dumps({"version": v, "errors": [{"setting_key": "X",
                                                          "error_code": 9}]}), b"error_code"),
                         (b"\xbf\x61", b"CBOR")):
            r = c.request(fw.POST, ".c/status", bad, options=[CF_CBOR])
            assert r is not None and r.code_text == "4.00", (bad, r and r.code_text)
            assert why in r.payload, r.payload
        assert get_cbor(c)["version"] == v
    finally:
        c.close()
    out = cli(d, "settings", "status", "acme")
    assert "dev1: applied %d, up to date" % v in out, out
    assert "rejected UNIT: error_code 1" in out, out
    assert "rejected RATIO: error_code 4: too big" in out, out
    rows = json.loads(cli(d, "settings", "status", "acme", "--json"))
    assert len(rows) == 1 and rows[0]["device"] == "dev1", rows
    assert rows[0]["applied"] == v and rows[0]["up_to_date"] is True, rows
    assert rows[0]["errors"][1] == {"setting_key": "RATIO", "error_code": 4,
                                    "details": "too big"}, rows
    # A change makes the device's applied version old.
    cli(d, "settings", "set", "acme", "UNIT", "F", "--device", "dev1")
    rows = json.loads(cli(d, "settings", "status", "acme", "--json"))
    assert rows[0]["up_to_date"] is False and rows[0]["current"] > v, rows
    # A JSON report with no errors.
    codes, _, _ = post_json(d, ".c/status", json.dumps({"version": rows[0]["current"]}))
    assert codes == ["2.04"], codes
    rows = json.loads(cli(d, "settings", "status", "acme", "--json"))
    assert rows[0]["up_to_date"] is True and rows[0]["errors"] == [], rows


def post_json(d, path, body):
    tmp = os.path.join(d.dir, "body.json")
    with open(tmp, "w") as f:
        f.write(body)
    return g.coap(OSSL, d, "post", path, extra=["-t", "50", "-f", tmp])


def test_bad_settings_file_keeps_previous(d):
    c = client(d)
    try:
        v0 = get_cbor(c)
        for bad, key in (({"motor": 1}, "motor"), ({"A" * 64: 1}, "A" * 64),
                         ({"X": [1]}, "X"), ({"X": {"type": "int", "value": 2.5}}, "X")):
            d.write("projects/acme/settings.json", json.dumps(bad))
            path = os.path.join(d.dir, "projects/acme/settings.json")
            assert d.wait_log(r"config\.rejected.*%s: %s:" % (path, key), 3.0), d.logtext()
            rc, out, _ = run(d, "check-config")
            assert rc == 1 and "error: %s: %s:" % (path, key) in out, out
            assert get_cbor(c) == v0
        # Not JSON at all.
        d.write("projects/acme/settings.json", "{\"A\": ")
        assert d.wait_log(r"settings.json: line 1: malformed JSON", 3.0), d.logtext()
        assert get_cbor(c) == v0
        # The CLI does not overwrite a file it cannot read.
        rc, _, err = run(d, "settings", "set", "acme", "B", "1")
        assert rc == 1 and "fix the file first" in err, err
    finally:
        c.close()


def test_cli_refuses_bad_names(d):
    for name in ("Motor", "motor_speed", "A" * 64, "A-B", ""):
        for args in (("set", "acme", name, "1"), ("set", "acme", name, "1", "--device", "dev1"),
                     ("delete", "acme", name), ("get", "acme", name)):
            rc, _, err = run(d, "settings", *args)
            assert rc == 2, (args, rc, err)
            assert "a setting name is 1..63 characters of A-Z, 0-9 and _" in err, err
    rc, out, _ = run(d, "settings", "set", "acme", "A" * 63, "x")
    assert rc == 0, out
    assert json.loads(cli(d, "settings", "get", "acme", "--json"))["settings"]["A" * 63] == "x"
    rc, _, err = run(d, "settings", "set", "acme", "N", "1.5", "--type", "int")
    assert rc == 2 and "whole number" in err, err
    rc, _, err = run(d, "settings", "delete", "acme", "NOPE", "--device", "dev1")
    assert rc == 1 and "no override NOPE" in err, err
    rc, _, err = run(d, "settings", "set", "acme", "N", "1", "--device", "ghost")
    assert rc == 1 and "no device ghost" in err, err
    # Inference: bool, int, float, string.
    for value, want in (("true", True), ("-3", -3), ("1e3", 1000.0), ("0.5", 0.5),
                        ("hello", "hello"), ("12abc", "12abc")):
        cli(d, "settings", "set", "acme", "V", value)
        got = json.loads(cli(d, "settings", "get", "acme", "V", "--json"))
        assert got["value"] == want and type(got["value"]) is type(want), (value, got)


def test_settings_file_a_fifo(d):
    """A FIFO put where settings.json was is rejected, never waited on: the
    settings in force stay, later edits are still picked up, the CLI and
    check-config answer, and the daemon stops on SIGTERM."""
    c = client(d)
    try:
        v0 = get_cbor(c)
        path = os.path.join(d.dir, "projects/acme/settings.json")
        os.unlink(path)
        os.mkfifo(path)
        assert d.wait_log(r"config\.rejected.*%s: cannot read" % path, 3.0), d.logtext()
        assert get_cbor(c) == v0
        for args in (("check-config",), ("settings", "set", "acme", "B", "1")):
            try:
                rc, _, _ = run(d, *args)
            except subprocess.TimeoutExpired:
                raise AssertionError("%s waits on the FIFO" % (args,)) from None
            assert rc == 1, (args, rc)
        # A good file again: the reload that follows still runs.
        os.unlink(path)
        d.write("projects/acme/settings.json", json.dumps({"AFTER": 7}))
        deadline = time.time() + 3
        while time.time() < deadline and "AFTER" not in get_cbor(c)["settings"]:
            time.sleep(0.1)
        assert get_cbor(c)["settings"] == {"AFTER": 7}, get_cbor(c)
    finally:
        c.close()
    d.proc.terminate()
    try:
        d.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon does not stop") from None


BIG = {"NAME_%02d" % i: "v%02d-" % i + "x" * 120 for i in range(40)}


def fetch_blocks(c, first, token=None):
    """The whole representation whose first block is `first`: later blocks by
    GET .c with Block2 (RFC 7959 section 3.4), each checked against the
    first's ETag. Returns (bytes, number of blocks)."""
    b = first.block(fw.OPT_BLOCK2)
    assert b is not None and b[1] == 1, b
    size2 = first.uint(fw.OPT_SIZE2)
    etag = first.opt(fw.OPT_ETAG)
    assert size2 and size2 > len(first.payload) and etag, (size2, etag)
    data, num, szx = first.payload, b[0] + 1, b[2]
    while True:
        r = c.request(fw.GET, ".c", options=[(fw.OPT_ACCEPT, bytes([60])),
                                             (fw.OPT_BLOCK2, fw.uint_bytes(num << 4 | szx))])
        assert r is not None and r.code == 69, r and r.code_text
        assert r.opt(fw.OPT_ETAG) == etag, "the document changed between blocks"
        nb = r.block(fw.OPT_BLOCK2)
        assert nb[0] == num, (nb, num)
        data += r.payload
        if not nb[1]:
            break
        num += 1
    assert len(data) == size2, (len(data), size2)
    return data, num + 1


def test_large_settings_block2(d):
    """Settings larger than one DTLS record: the observation's answer and its
    notifications are first blocks, the rest fetched by Block2 and cut from a
    fresh render; coap-client-openssl gets the whole document at 64-byte blocks."""
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        tok = c.next_token()
        r = c.request(fw.GET, ".c", token=tok, options=[(fw.OPT_OBSERVE, b""),
                                                        (fw.OPT_ACCEPT, bytes([60]))])
        assert r is not None and r.code == 69 and r.opt(fw.OPT_OBSERVE) is not None
        data, n = fetch_blocks(c, r)
        doc = minicbor.loads(data)
        assert doc["settings"] == BIG and n >= 5, (n, sorted(doc))
        v0 = doc["version"]
        cli(d, "settings", "set", "acme", "NAME_07", "changed")
        deadline, note = time.time() + 2, None
        while note is None and time.time() < deadline:
            m = c.recv(0.2)
            if m is not None and m.type == fw.CON:
                c.send(fw.Msg(fw.ACK, 0, m.mid))
                if m.token == tok:
                    note = m
        assert note is not None, "no notification of the change"
        data, _ = fetch_blocks(c, note)
        doc = minicbor.loads(data)
        assert doc["settings"]["NAME_07"] == "changed" and doc["version"] > v0, doc["version"]
    finally:
        c.close()
    p = subprocess.run([OSSL, "-m", "get", "-b", "64", "-A", "60", "-u", "dev1@acme", "-k",
                        g.KEY, "-o", os.path.join(d.dir, "big.cbor"),
                        "coaps://127.0.0.1:%d/.c" % d.port], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()[-500:]
    with open(os.path.join(d.dir, "big.cbor"), "rb") as f:
        doc = minicbor.loads(f.read())
    assert doc["settings"]["NAME_07"] == "changed" and len(doc["settings"]) == 40


TESTS = [
    (test_large_settings_block2, {"files": {"projects/acme/settings.json": json.dumps(BIG)}}),
    (test_observe_types_and_changes, {"files": FILES}),
    (test_plain_get_and_json_accept, {"files": FILES}),
    (test_status_reports, {"files": FILES}),
    (test_bad_settings_file_keeps_previous, {"files": FILES}),
    (test_cli_refuses_bad_names, {"files": FILES}),
    (test_settings_file_a_fifo, {"files": FILES}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
