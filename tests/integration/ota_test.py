#!/usr/bin/env python3
"""Integration tests of the OTA service (".u") against the real daemon on
127.0.0.1: artifacts and releases made with the devgate CLI, the desired
manifest (plain GET and Observe, CBOR and JSON, notified when a release
is created and rolled back), artifacts downloaded by Block2 with
coap-client-openssl and coap-client-gnutls at 1024- and 64-byte blocks
and with the Golioth SDK's own pattern (one token, 1024-byte blocks, one
request in flight) under the default rate limits, and state reports seen
by `devgate ota status`.

Usage: ota_test.py BUILD_DIR [TEST_NAME ...]
"""
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import fwclient as fw  # noqa: E402

DEVGATE = g.DEVGATE
OSSL = "coap-client-openssl"
GNUTLS = "coap-client-gnutls"
ACCEPT_CBOR = [(fw.OPT_ACCEPT, fw.uint_bytes(60))]


def cli(d, *args, check=True):
    """Runs `devgate <group> <sub...> -c CONF <args>`; the -c goes after the
    words that name the command."""
    words = 3 if args[0] == "ota" and args[1] in ("artifact", "release") else 2
    p = subprocess.run([DEVGATE] + list(args[:words]) + ["-c", d.conf] + list(args[words:]),
                       capture_output=True, timeout=60)
    if check:
        assert p.returncode == 0, (args, p.returncode, p.stderr.decode())
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def make_file(d, name, size, seed):
    rnd = random.Random(seed)
    data = bytes(rnd.getrandbits(8) for _ in range(size))
    path = os.path.join(d.dir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def add_artifact(d, package, version, path):
    _, out, _ = cli(d, "ota", "artifact", "add", "acme", package, version, path)
    sha, size = out.split()
    return sha, int(size)


# A small CBOR decoder for what the daemon sends (definite lengths): maps
# decode to lists of (key, value) pairs so that the order of keys shows.
def cbor_decode(b, i=0):
    ib = b[i]
    major, info = ib >> 5, ib & 31
    i += 1
    if info < 24:
        n = info
    else:
        w = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n = int.from_bytes(b[i:i + w], "big")
        i += w
    if major == 0:
        return n, i
    if major in (2, 3):
        v = b[i:i + n]
        return (v.decode() if major == 3 else v), i + n
    if major == 4:
        out = []
        for _ in range(n):
            v, i = cbor_decode(b, i)
            out.append(v)
        return out, i
    if major == 5:
        out = []
        for _ in range(n):
            k, i = cbor_decode(b, i)
            v, i = cbor_decode(b, i)
            out.append((k, v))
        return out, i
    raise AssertionError("CBOR major type %d not expected" % major)


def cbor(b):
    v, n = cbor_decode(b)
    assert n == len(b), (n, len(b))
    return v


def cbor_encode(v):
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        return bytes([major << 5 | 24]) + bytes([n]) if n < 256 else \
            bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    if isinstance(v, int):
        return head(0, v)
    if isinstance(v, str):
        return head(3, len(v.encode())) + v.encode()
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor_encode(k) + cbor_encode(x) for k, x in v.items())
    raise AssertionError(v)


def check_manifest(m, seq, comps):
    """m: a decoded manifest; comps: [(package, version, sha, size, bootloader)]."""
    assert [k for k, _ in m] == [1, 2, 3], m
    assert m[0][1] == seq, (m[0][1], seq)
    assert isinstance(m[1][1], str) and len(m[1][1]) == 64, m
    assert len(m[2][1]) == len(comps), m
    for got, (pkg, ver, sha, size, boot) in zip(m[2][1], comps):
        assert [k for k, _ in got] == [1, 2, 3, 4, 5, 6], got
        assert [v for _, v in got] == [pkg, ver, sha, size, "/.u/c/%s@%s" % (pkg, ver),
                                       boot], got


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sanitized(pid):
    """Whether the daemon runs with AddressSanitizer, whose quarantine keeps
    freed memory resident: its RSS says nothing about what the code keeps."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def test_manifest_and_unknown(d):
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        # No release: the empty map, in CBOR and JSON, never an error.
        r = c.request(fw.GET, ".u/desired", options=ACCEPT_CBOR)
        assert r.code_text == "2.05" and r.payload == b"\xa0", (r.code_text, r.payload)
        assert r.uint(fw.OPT_CONTENT_FORMAT) == 60
        r = c.request(fw.GET, ".u/desired", options=[(fw.OPT_ACCEPT, fw.uint_bytes(50))])
        assert r.code_text == "2.05" and json.loads(r.payload) == {}, r.payload
        # Unknown artifacts and malformed URIs: 4.04.
        for path in (".u/c/main@1.0.0", ".u/c/main", ".u/c/@1", ".u/c/" + "x" * 40 + "@1"):
            r = c.request(fw.GET, path)
            assert r.code_text == "4.04", (path, r.code_text)
        r = c.request(fw.GET, ".u/other")
        assert r.code_text == "4.04", r.code_text

        img = b"\x3d\xb8\xf3\x96" + bytes(range(200))
        path = os.path.join(d.dir, "img.bin")
        with open(path, "wb") as f:
            f.write(img)
        sha, size = add_artifact(d, "main", "1.2.3", path)
        assert sha == hashlib.sha256(img).hexdigest() and size == len(img)
        p2, data2 = make_file(d, "model.bin", 3000, 2)
        sha2, _ = add_artifact(d, "model", "7", p2)
        _, out, _ = cli(d, "ota", "release", "create", "acme", "--artifact", "main@1.2.3",
                        "--artifact", "model@7", "--all")
        rid = int(out)
        r = c.request(fw.GET, ".u/desired", options=ACCEPT_CBOR)
        assert r.code_text == "2.05", r.code_text
        check_manifest(cbor(r.payload), rid, [("main", "1.2.3", sha, size, "mcuboot"),
                                              ("model", "7", sha2, 3000, "")])
        r = c.request(fw.GET, ".u/desired", options=[(fw.OPT_ACCEPT, fw.uint_bytes(50))])
        j = json.loads(r.payload)
        assert j["sequenceNumber"] == rid and len(j["hash"]) == 64, j
        assert [x["uri"] for x in j["components"]] == ["/.u/c/main@1.2.3", "/.u/c/model@7"], j
        # A small artifact without Block2 comes whole; past its end: as any resource.
        r = c.request(fw.GET, ".u/c/main@1.2.3")
        assert r.code_text == "2.05" and r.payload == img, r.code_text
        assert r.uint(fw.OPT_CONTENT_FORMAT) == 42 and r.uint(fw.OPT_SIZE2) == len(img)
        assert r.opt(fw.OPT_ETAG) == bytes.fromhex(sha[:16]), r.opt(fw.OPT_ETAG)
        r = c.request(fw.GET, ".u/c/model@7", options=[(fw.OPT_BLOCK2, fw.uint_bytes(3 << 4 | 6))])
        assert r.code_text == "4.02", r.code_text
        r = c.request(fw.GET, ".u/c/model@7", options=[(fw.OPT_BLOCK2, fw.uint_bytes(2 << 4 | 6))])
        assert r.code_text == "2.05" and r.payload == data2[2048:], r.code_text
        assert r.block(fw.OPT_BLOCK2) == (2, 0, 6), r.block(fw.OPT_BLOCK2)
        # Unknown package or device in a release, bad names: refused by the CLI.
        rc, _, err = cli(d, "ota", "release", "create", "acme", "--artifact", "main@9", "--all",
                         check=False)
        assert rc == 1 and "no artifact main@9" in err, err
        rc, _, err = cli(d, "ota", "artifact", "add", "acme", "a/b", "1", path, check=False)
        assert rc == 2 and "package" in err, err
        rc, _, err = cli(d, "ota", "artifact", "add", "acme", "main", "1.2.3", path, check=False)
        assert rc == 1 and "already" in err, err
        arts = json.loads(cli(d, "ota", "artifact", "list", "acme", "--json")[1])
        assert [(a["package"], a["version"]) for a in arts] == [("main", "1.2.3"),
                                                                ("model", "7")], arts
    finally:
        c.close()


def test_download_coap_clients(d):
    path, data = make_file(d, "fw.bin", 256 * 1024, 1)
    sha, _ = add_artifact(d, "main", "1.0.0", path)
    assert sha == hashlib.sha256(data).hexdigest()
    for client in (OSSL, GNUTLS):
        for block in (1024, 64):
            out = os.path.join(d.dir, "out-%s-%d.bin" % (client, block))
            cmd = [client, "-m", "get", "-b", str(block), "-u", "dev1@acme", "-k", g.KEY,
                   "-B", "120", "-o", out, d.url(".u/c/main@1.0.0")]
            t0 = time.time()
            p = subprocess.run(cmd, capture_output=True, timeout=150)
            assert p.returncode == 0, (client, block, p.stderr.decode()[-2000:])
            with open(out, "rb") as f:
                got = f.read()
            assert got == data, (client, block, len(got), time.time() - t0)
    assert "4.29" not in d.logtext()


def _download_sdk(c, uri, size, accept):
    """Fetches `uri` as the SDK does: one token, Block2 num/szx 6, the next
    block asked right after each answer. Returns (bytes, codes, etags)."""
    token = c.next_token()
    body, codes, etags, num = b"", [], set(), 0
    for _ in range(size // 1024 + 2):
        r = c.request(fw.GET, uri, token=token,
                      options=[(fw.OPT_ACCEPT, fw.uint_bytes(accept)),
                               (fw.OPT_BLOCK2, fw.uint_bytes(num << 4 | 6))],
                      timeout=5.0)
        assert r is not None, "no answer to block %d" % num
        codes.append(r.code_text)
        if r.code_text != "2.05":
            break
        assert r.uint(fw.OPT_CONTENT_FORMAT) == 42
        assert r.uint(fw.OPT_SIZE2) == size, r.uint(fw.OPT_SIZE2)
        etags.add(r.opt(fw.OPT_ETAG))
        b = r.block(fw.OPT_BLOCK2)
        assert b[0] == num and b[2] == 6, b
        body += r.payload
        if not b[1]:
            break
        num += 1
    return body, codes, etags


def test_download_sdk_pattern(d):
    size = 1024 * 1024
    path, data = make_file(d, "big.bin", size, 3)
    sha, _ = add_artifact(d, "main", "2.0.0", path)
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        # A first pass warms what every download shares (the store's page
        # cache, up to its 2 MB bound); the second must cost nothing more.
        body, codes, etags = _download_sdk(c, ".u/c/main@2.0.0", size, 42)
        assert set(codes) == {"2.05"} and len(codes) == 1024, codes[-3:]
        assert body == data and etags == {bytes.fromhex(sha[:16])}
        first = rss_kb(d.proc.pid)
        t0 = time.time()
        body, codes, etags = _download_sdk(c, ".u/c/main@2.0.0", size, 50)
        took = time.time() - t0
        after = rss_kb(d.proc.pid)
        assert set(codes) == {"2.05"} and len(codes) == 1024, codes[-3:]
        assert body == data
        if not sanitized(d.proc.pid):
            assert after - first < 300, ("VmRSS grew during a 1 MB download", first, after)
        print("     1 MB in %.2fs, VmRSS %d -> %d kB" % (took, first, after), flush=True)
    finally:
        c.close()
    assert "4.29" not in d.logtext()


def test_observe_release_rollback(d):
    path, _ = make_file(d, "a.bin", 5000, 4)
    sha, _ = add_artifact(d, "main", "1.0.0", path)
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        token = c.next_token()
        r = c.request(fw.GET, ".u/desired", token=token,
                      options=ACCEPT_CBOR + [(fw.OPT_OBSERVE, b"")])
        assert r.code_text == "2.05" and r.payload == b"\xa0", (r.code_text, r.payload)
        assert r.opt(fw.OPT_OBSERVE) is not None

        def notification(what):
            deadline = time.time() + 1.0
            while time.time() < deadline:
                m = c.recv(max(0.05, deadline - time.time()))
                if m is None:
                    break
                if m.type == fw.CON:
                    c.send(fw.Msg(fw.ACK, 0, m.mid))
                if m.token == token and m.code_text == "2.05":
                    return m
            raise AssertionError("no notification within a second of " + what)

        _, out, _ = cli(d, "ota", "release", "create", "acme", "--artifact", "main@1.0.0",
                        "--device", "dev1")
        rid = int(out)
        m = notification("the release")
        check_manifest(cbor(m.payload), rid, [("main", "1.0.0", sha, 5000, "")])
        _, out, _ = cli(d, "ota", "release", "rollback", "acme")
        assert "rolled back release %d" % rid in out, out
        m = notification("the rollback")
        assert m.payload == b"\xa0", m.payload
        rel = json.loads(cli(d, "ota", "release", "list", "acme", "--json")[1])
        assert rel == [{"id": rid, "created": rel[0]["created"], "rolled_back": True,
                        "artifacts": ["main@1.0.0"], "devices": ["dev1"]}], rel
        rc, _, err = cli(d, "ota", "release", "rollback", "acme", check=False)
        assert rc == 1 and "no release to roll back" in err, err
    finally:
        c.close()


def test_state_report(d):
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        body = cbor_encode({"s": 1, "r": 0, "pkg": "main", "v": "1.0.0", "t": "1.0.1"})
        r = c.request(fw.POST, ".u/c/main", body,
                      options=[(fw.OPT_CONTENT_FORMAT, fw.uint_bytes(60))])
        assert r.code_text == "2.04", r.code_text
        for bad in ({"s": 9, "r": 0, "pkg": "main"}, {"s": 1, "r": 12, "pkg": "main"},
                    {"s": 1, "r": 0, "pkg": "other"}, {"r": 0}):
            r = c.request(fw.POST, ".u/c/main", cbor_encode(bad),
                          options=[(fw.OPT_CONTENT_FORMAT, fw.uint_bytes(60))])
            assert r.code_text == "4.00", (bad, r.code_text)
    finally:
        c.close()
    st = json.loads(cli(d, "ota", "status", "acme", "--json")[1])
    assert len(st) == 1, st
    s = st[0]
    assert (s["device"], s["package"], s["version"], s["state_name"], s["reason_name"],
            s["target"]) == ("dev1", "main", "1.0.0", "DOWNLOADING", "READY", "1.0.1"), s
    # JSON too, from coap-client; the text output names state and reason.
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(b'{"s": 3, "r": 1, "pkg": "main", "v": "1.0.1"}')
        name = f.name
    try:
        codes, _, _ = g.coap(GNUTLS, d, "post", ".u/c/main", extra=["-t", "50", "-f", name])
    finally:
        os.unlink(name)
    assert codes == ["2.04"], codes
    _, out, _ = cli(d, "ota", "status", "acme")
    assert "dev1" in out and "UPDATING" in out and "FIRMWARE_UPDATED_SUCCESSFULLY" in out, out


def test_artifact_add_not_a_file(d):
    """A FIFO, a device, a directory or an empty file is refused at once: the
    CLI never waits on a FIFO nobody writes to (it would hold the store's
    write lock meanwhile, and every device write would fail), and stores
    nothing."""
    fifo = os.path.join(d.dir, "fifo")
    os.mkfifo(fifo)
    empty = os.path.join(d.dir, "empty.bin")
    open(empty, "wb").close()
    for path, why in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                      (d.dir, "not a regular file"), (empty, "empty")):
        t0 = time.time()
        try:
            p = subprocess.run([DEVGATE, "ota", "artifact", "add", "-c", d.conf, "acme", "main",
                                "1", path], capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("artifact add of %s hangs" % path) from None
        assert p.returncode == 1 and why in p.stderr.decode(), (path, p.stderr)
        assert time.time() - t0 < 5, path
    # A device's write goes through meanwhile and after.
    c = fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)
    try:
        r = c.request(fw.POST, ".u/c/main", cbor_encode({"s": 0, "r": 0}),
                      options=[(fw.OPT_CONTENT_FORMAT, fw.uint_bytes(60))])
        assert r.code_text == "2.04", r.code_text
    finally:
        c.close()
    assert json.loads(cli(d, "ota", "artifact", "list", "acme", "--json")[1]) == []


N_FLEET = 20
FLEET_PSK = [{"identity": "d%d@acme" % i, "device": "d%d" % i, "key": g.KEY}
             for i in range(N_FLEET)]


def test_fleet_downloads_at_once(d):
    """A release for the whole fleet: 20 devices download 128 KB each at the
    same time, in the SDK's pattern, under the default limits; every block is
    a 2.05 and every image is whole."""
    import threading
    size = 128 * 1024
    path, data = make_file(d, "fleet.bin", size, 9)
    add_artifact(d, "main", "3.0.0", path)
    results = [None] * N_FLEET

    def one(i):
        try:
            c = fw.FwClient("127.0.0.1", d.port, "d%d@acme" % i, g.KEY)
            try:
                results[i] = _download_sdk(c, ".u/c/main@3.0.0", size, 42)
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e
    t0 = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(N_FLEET)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    took = time.time() - t0
    for i, r in enumerate(results):
        assert not isinstance(r, Exception) and r is not None, (i, r)
        body, codes, _ = r
        assert set(codes) == {"2.05"}, (i, [c for c in codes if c != "2.05"][:3])
        assert body == data, (i, len(body))
    print("     %d devices x %d KB in %.2fs" % (N_FLEET, size // 1024, took), flush=True)


TESTS = [
    (test_fleet_downloads_at_once, {"psk": FLEET_PSK}),
    (test_manifest_and_unknown, {"limits": {"device_requests_per_s": 1000}}),
    (test_download_coap_clients, {}),
    # The default limits: a download's next blocks are never rate-limited.
    (test_download_sdk_pattern, {}),
    (test_observe_release_rollback, {}),
    (test_state_report, {"limits": {"device_requests_per_s": 1000}}),
    (test_artifact_add_not_a_file, {}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
