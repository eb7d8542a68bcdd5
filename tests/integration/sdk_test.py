#!/usr/bin/env python3
"""Integration test: one device doing what the Golioth firmware SDK's
golioth_basics example does (examples/common/golioth_basics.c with
src/settings.c, src/rpc.c, src/ota.c and src/fw_update.c), byte for byte
as far as the SDK's source tells, on one DTLS session, while an operator
drives it with the CLI: settings pushed, an RPC called, a firmware release
made and downloaded. Every answer the device gets must be a 2.xx (the SDK
logs anything else as an error and posts it to the cloud log).

The device side is fwclient.py (PSK DTLS over the system's libssl) with the
SDK's encodings: CBOR with indefinite-length maps (its Linux build), Accept
60 on observations, 8-byte tokens counting up, one Block2 token for every
block of a download, 1024-byte blocks.

Usage: sdk_test.py BUILD_DIR [TEST_NAME ...]
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import fwclient as fw  # noqa: E402
import minicbor  # noqa: E402

DEVGATE = g.DEVGATE
CBOR, JSON, OCTETS = 60, 50, 42
CONTENT = 69


def cli(d, *args, ok=(0,), timeout=30):
    p = subprocess.run([DEVGATE] + list(args) + ["-c", d.conf], capture_output=True,
                       timeout=timeout)
    assert p.returncode in ok, (args, p.returncode, p.stderr.decode())
    return p.stdout.decode()


def cli_bg(d, *args):
    return subprocess.Popen([DEVGATE] + list(args) + ["-c", d.conf], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


class Device:
    """The SDK's client: requests one at a time, notifications ACKed and
    queued by token, every answer's code recorded."""

    def __init__(self, d):
        self.c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
        self.notes = []   # Notifications not consumed yet.
        self.codes = []   # (path, code text) of every answer.

    def _pump(self, m):
        if m.type == fw.CON:
            self.c.send(fw.Msg(fw.ACK, 0, m.mid))
            self.notes.append(m)

    def request(self, code, path, payload=b"", options=(), token=None, timeout=5.0):
        m = fw.Msg(fw.CON, code, self.c.next_mid(), token or self.c.next_token(),
                   fw.path_options(path) + list(options), payload)
        self.c.send(m)
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.c.recv(max(0.05, deadline - time.time()))
            if r is None:
                continue
            if r.token == m.token and r.type != fw.CON:
                self.codes.append((path, r.code_text))
                return r
            self._pump(r)
        raise AssertionError("no answer to %s" % path)

    def observe(self, path):
        tok = self.c.next_token()
        r = self.request(fw.GET, path, options=[(fw.OPT_OBSERVE, b""),
                                                (fw.OPT_ACCEPT, bytes([CBOR]))], token=tok)
        assert r.code == CONTENT and r.opt(fw.OPT_OBSERVE) is not None, (path, r.code_text)
        return tok, r

    def post_cbor(self, path, value):
        return self.request(fw.POST, path, payload=minicbor.dumps(value, indefinite=True),
                            options=[(fw.OPT_CONTENT_FORMAT, bytes([CBOR]))])

    def notification(self, tok, timeout=3.0):
        deadline = time.time() + timeout
        while True:
            for m in self.notes:
                if m.token == tok:
                    self.notes.remove(m)
                    return m
            left = deadline - time.time()
            if left <= 0:
                return None
            m = self.c.recv(min(0.2, left))
            if m is not None:
                self._pump(m)

    def download(self, uri):
        """golioth_blockwise_get: one token, block n+1 asked after block n."""
        tok = self.c.next_token()
        segs = [s for s in uri.split("/") if s]
        data, num = b"", 0
        while True:
            blk = num << 4 | 6  # szx 6: 1024-byte blocks, as the SDK asks.
            r = self.request(fw.GET, "/".join(segs), token=tok,
                             options=[(fw.OPT_ACCEPT, bytes([OCTETS])),
                                      (fw.OPT_BLOCK2, fw.uint_bytes(blk))])
            assert r.code == CONTENT, (num, r.code_text)
            b = r.block(fw.OPT_BLOCK2)
            assert b is not None and b[0] == num and b[2] == 6, (num, b)
            assert len(r.payload) == 1024 or not b[1], (num, len(r.payload))
            data += r.payload
            if not b[1]:
                return data
            num += 1

    def close(self):
        self.c.close()


def decode_settings(m):
    v = minicbor.loads(m.payload)
    # zcbor_map_decode needs both keys.
    assert set(v) >= {"version", "settings"}, v
    return v


def decode_manifest(payload):
    v = minicbor.loads(payload)
    if not v:
        return None  # No release: the SDK reads {} as nothing to do.
    assert 1 in v and 3 in v, v
    for comp in v[3]:
        assert minicbor.keys_in_order(minicbor.dumps(comp)) == [1, 2, 3, 4, 5, 6], comp
        assert len(comp[3]) == 64 and len(comp[6]) <= 7, comp
    return v


def test_golioth_basics(d):
    dev = Device(d)
    try:
        # The burst right after connecting (golioth_basics, fw_update_init).
        dev.post_cbor(".u/c/main", {"s": 0, "r": 0, "pkg": "main", "v": "1.2.5"})
        ota_tok, r = dev.observe(".u/desired")
        assert decode_manifest(r.payload) is None, r.payload
        dev.post_cbor(".d/my_int", 42)
        dev.request(fw.POST, ".d/my_string", payload=minicbor.dumps("asdf"),
                    options=[(fw.OPT_CONTENT_FORMAT, bytes([CBOR]))])
        r = dev.request(fw.GET, ".d/my_int", options=[(fw.OPT_ACCEPT, bytes([CBOR]))])
        assert minicbor.loads(r.payload) == 42
        dev.observe(".d/desired/my_config")
        dev.post_cbor(".s/my_stream_int", 15)
        rpc_tok, r = dev.observe(".rpc")
        assert r.payload == b"\x62OK", r.payload
        set_tok, r = dev.observe(".c")
        first = decode_settings(r)
        r = dev.request(fw.GET, ".c", options=[(fw.OPT_ACCEPT, bytes([CBOR]))])
        decode_settings(r)

        # The operator pushes a setting: notified, applied, its status posted.
        cli(d, "settings", "set", "acme", "LOOP_DELAY_S", "5")
        m = dev.notification(set_tok, timeout=1.5)
        assert m is not None, "settings change not notified within a second"
        s = decode_settings(m)
        assert s["version"] > first["version"], (s, first)
        assert s["settings"]["LOOP_DELAY_S"] == 5 and isinstance(s["settings"]["LOOP_DELAY_S"], int)
        dev.post_cbor(".c/status", {"version": s["version"]})
        out = json.loads(cli(d, "settings", "status", "acme", "--json"))
        row = [x for x in out if x.get("device") == "dev1"]
        assert row and row[0]["up_to_date"] is True and row[0]["applied"] == s["version"], out

        # The operator calls "double" (golioth_basics' RPC): the device answers.
        p = cli_bg(d, "rpc", "call", "acme", "dev1", "double", "[21]", "--json")
        m = dev.notification(rpc_tok, timeout=2.0)
        assert m is not None, "RPC not notified"
        call = minicbor.loads(m.payload)
        assert call["method"] == "double" and call["params"] == [21], call
        dev.post_cbor(".rpc/status", {"id": call["id"], "detail": {"value": 42},
                                      "statusCode": 0})
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        assert json.loads(out)["detail"] == {"value": 42}, out

        # A firmware release: manifest notified, image downloaded and checked, states reported.
        image = os.urandom(64 * 1024 + 300)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(image)
        try:
            cli(d, "ota", "artifact", "add", "acme", "main", "1.2.6", f.name)
        finally:
            os.unlink(f.name)
        cli(d, "ota", "release", "create", "acme", "--artifact", "main@1.2.6", "--all")
        m = dev.notification(ota_tok, timeout=1.5)
        assert m is not None, "manifest not notified within a second"
        man = decode_manifest(m.payload)
        comp = [c for c in man[3] if c[1] == "main"][0]
        assert comp[2] == "1.2.6" and comp[4] == len(image), comp
        dev.post_cbor(".u/c/main", {"s": 1, "r": 0, "pkg": "main", "v": "1.2.5", "t": "1.2.6"})
        got = dev.download(comp[5])
        assert got == image, (len(got), len(image))
        assert hashlib.sha256(got).hexdigest() == comp[3]
        dev.post_cbor(".u/c/main", {"s": 2, "r": 0, "pkg": "main", "v": "1.2.5", "t": "1.2.6"})
        dev.post_cbor(".u/c/main", {"s": 3, "r": 0, "pkg": "main", "v": "1.2.5", "t": "1.2.6"})
        st = json.loads(cli(d, "ota", "status", "acme", "--json"))
        assert any(x.get("device") == "dev1" and x.get("package") == "main" for x in st), st

        # Nothing the device asked was refused.
        bad = [(p, c) for p, c in dev.codes if not c.startswith("2.")]
        assert not bad, bad
    finally:
        dev.close()


def test_trailing_empty_segment(d):
    """Older SDK builds (golioth_coap_add_path before it skipped empty
    segments) join the prefix ".rpc/" or ".c/" with the path "" and send
    coap_split_path's trailing empty Uri-Path too; the JSON-era RPC client
    put Content-Format 50 on its GET instead of Accept and skipped any
    answer not starting with '{'. Both must work as the current SDK does."""
    dev = Device(d)
    try:
        empty = (fw.OPT_URI_PATH, b"")
        tok = dev.c.next_token()
        r = dev.request(fw.GET, ".rpc", token=tok,
                        options=[empty, (fw.OPT_OBSERVE, b""),
                                 (fw.OPT_CONTENT_FORMAT, bytes([JSON]))])
        assert r.code == CONTENT and r.opt(fw.OPT_OBSERVE) is not None, r.code_text
        assert not r.payload.startswith(b"{"), r.payload
        set_tok = dev.c.next_token()
        r = dev.request(fw.GET, ".c", token=set_tok,
                        options=[empty, (fw.OPT_OBSERVE, b""), (fw.OPT_ACCEPT, bytes([CBOR]))])
        assert r.code == CONTENT and r.opt(fw.OPT_OBSERVE) is not None, r.code_text
        decode_settings(r)
        r = dev.request(fw.GET, ".c", options=[empty, (fw.OPT_ACCEPT, bytes([CBOR]))])
        assert r.code == CONTENT, r.code_text
        decode_settings(r)

        p = cli_bg(d, "rpc", "call", "acme", "dev1", "double", "[21]", "--json")
        m = dev.notification(tok, timeout=2.0)
        assert m is not None, "RPC not notified"
        assert m.payload.startswith(b"{"), m.payload
        call = json.loads(m.payload)
        assert call["method"] == "double" and call["params"] == [21], call
        body = '{ "id": "%s", "statusCode": 0, "detail": {"value": 42} }' % call["id"]
        r = dev.request(fw.POST, ".rpc/status", payload=body.encode(),
                        options=[(fw.OPT_CONTENT_FORMAT, bytes([JSON]))])
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        assert json.loads(out)["detail"] == {"value": 42}, out

        cli(d, "settings", "set", "acme", "LOOP_DELAY_S", "5")
        m = dev.notification(set_tok, timeout=1.5)
        assert m is not None, "settings change not notified within a second"
        assert decode_settings(m)["settings"]["LOOP_DELAY_S"] == 5

        bad = [(p, c) for p, c in dev.codes if not c.startswith("2.")]
        assert not bad, bad
    finally:
        dev.close()


TESTS = [
    (test_golioth_basics, {}),
    (test_trailing_empty_segment, {}),
]

if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
