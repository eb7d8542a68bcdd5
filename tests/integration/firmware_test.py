#!/usr/bin/env python3
"""Integration tests: what unchanged Golioth-SDK firmware does to the daemon
(issue 8 section 3). No feedback loops from the rate limit, no silent loss
of large replies or of Block1 state writes, a bounded state document, and
every committed write acknowledged before shutdown.

Driven by coap-client-openssl/-gnutls and, where many requests must share
one session, by fwclient.py (a PSK DTLS client over the system's libssl).

Usage: firmware_test.py BUILD_DIR [TEST_NAME ...]
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_test as g  # noqa: E402
import fwclient as fw  # noqa: E402

DEVGATE = g.DEVGATE
OSSL = "coap-client-openssl"
GNUTLS = "coap-client-gnutls"
JSON = bytes([50])


def cli(d, *args):
    p = subprocess.run([DEVGATE] + list(args[:2]) + ["-c", d.conf] + list(args[2:]),
                       capture_output=True, timeout=30)
    assert p.returncode == 0, (args, p.stderr.decode())
    return p.stdout.decode()


def client(d):
    return fw.FwClient("127.0.0.1", d.port, "dev1@acme", g.KEY)


def metrics(d):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.metrics_port,
                                timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+(?:\{[^}]*\})?) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def post_file(cl, d, path, body, extra=()):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(body if isinstance(body, bytes) else body.encode())
        name = f.name
    try:
        return g.coap(cl, d, "post", path, extra=["-t", "50", "-f", name] + list(extra))
    finally:
        os.unlink(name)


def get_to_file(cl, d, path, extra=()):
    """GETs path with coap-client into a file; returns (codes, bytes)."""
    fd, name = tempfile.mkstemp()
    os.close(fd)
    try:
        codes, out, err = g.coap(cl, d, "get", path, extra=["-o", name] + list(extra))
        with open(name, "rb") as f:
            return codes, f.read(), out + err
    finally:
        os.unlink(name)


def burst(c, reqs):
    """Sends every request at once (no waiting), then collects the answers by
    token. reqs: [(code, path, payload)]. Returns {token: answer Msg}."""
    sent = []
    for code, path, payload in reqs:
        opts = [(fw.OPT_CONTENT_FORMAT, JSON)] if payload else []
        m = fw.Msg(fw.CON, code, c.next_mid(), c.next_token(), fw.path_options(path) + opts,
                   payload)
        c.send(m)
        sent.append(m.token)
    answers = {}
    deadline = time.time() + 10
    while len(answers) < len(sent) and time.time() < deadline:
        r = c.recv(1.0)
        if r is None:
            if c.closed_by_peer:
                break
            continue
        if r.type == fw.CON:
            c.send(fw.Msg(fw.ACK, 0, r.mid))
            continue
        answers[r.token] = r
    return sent, answers


def block2_get(c, path, szx=6, first=None, token=None):
    """Fetches a whole representation with GET + Block2; returns (bytes, answers)."""
    data, answers, num = b"", [], 0
    if first is not None:
        data, answers, num = first.payload, [first], 1
        if not first.block(fw.OPT_BLOCK2)[1]:
            return data, answers
        szx = first.block(fw.OPT_BLOCK2)[2]
    for _ in range(5000):
        r = c.request(fw.GET, path, options=[(fw.OPT_BLOCK2, fw.uint_bytes(num << 4 | szx))],
                      token=token)
        assert r is not None, "no answer to block %d" % num
        assert r.code_text == "2.05", (num, r.code_text, r.payload)
        answers.append(r)
        data += r.payload
        b = r.block(fw.OPT_BLOCK2)
        assert b is not None and b[0] << (b[2] + 4) == len(data) - len(r.payload), (num, b)
        if not b[1]:
            return data, answers
        num = b[0] + 1
        szx = b[2]
    raise AssertionError("Block2 transfer did not end")


# --- 1. a limit must never create a storm -----------------------------------

def test_connect_burst_no_429(d):
    """What an SDK example does on connecting: 40 requests in a few ms. With
    the default limits none gets 4.29."""
    c = client(d)
    try:
        reqs = []
        for i in range(40):
            kind = i % 4
            if kind == 0:
                reqs.append((fw.GET, ".d/cfg", b""))
            elif kind == 1:
                reqs.append((fw.POST, ".d/counter%d" % i, b"%d" % i))
            elif kind == 2:
                reqs.append((fw.POST, ".s/logs", b'{"level":"info","msg":"boot %d"}' % i))
            else:
                reqs.append((fw.POST, ".s/temp", b'{"v": %d}' % i))
        sent, answers = burst(c, reqs)
        codes = [answers[t].code_text if t in answers else None for t in sent]
        assert len(answers) == 40, codes
        assert "4.29" not in codes, codes
        assert all(x.startswith("2.") for x in codes), codes
    finally:
        c.close()


def test_flood_gets_429_and_counted(d):
    """A sustained flood from one session gets 4.29 once its burst is spent,
    and every 4.29 is counted in devgate_coap_requests_total."""
    c = client(d)
    try:
        before = metrics(d).get('devgate_coap_requests_total{service="state",class="4xx"}', 0)
        sent, answers = burst(c, [(fw.GET, ".d/x", b"")] * 200)
        codes = [answers[t].code_text for t in sent if t in answers]
        n429 = codes.count("4.29")
        assert len(codes) == 200, len(codes)
        assert n429 >= 100, codes
        assert all(answers[t].uint(fw.OPT_MAX_AGE) >= 1 for t in sent
                   if answers[t].code_text == "4.29")
        after = metrics(d)['devgate_coap_requests_total{service="state",class="4xx"}']
        assert after - before == n429, (before, after, n429)
        ok = metrics(d)['devgate_coap_requests_total{service="state",class="2xx"}']
        assert ok >= 200 - n429, ok
    finally:
        c.close()


def test_refused_requests_counted(d):
    """Requests the message layer refuses by itself (an unknown critical
    option: 4.02) are counted in devgate_coap_requests_total too."""
    c = client(d)
    try:
        for _ in range(3):
            r = c.request(fw.GET, ".d/x", options=[(2049, b"x")])
            assert r is not None and r.code_text == "4.02", r and r.code_text
    finally:
        c.close()
    m = metrics(d)
    assert m.get('devgate_coap_requests_total{service="other",class="4xx"}') == 3, m


def test_logs_over_rate_get_204(d):
    """Log posts over the rate are answered 2.04 (a 4.29 would make the SDK
    log again), dropped, counted and logged at a limited rate."""
    c = client(d)
    try:
        msgs = [(fw.POST, ".s/logs", b'{"level":"warn","module":"m","msg":"w%d"}' % i)
                for i in range(120)]
        sent, answers = burst(c, msgs)
        codes = [answers[t].code_text for t in sent if t in answers]
        assert len(codes) == 120 and set(codes) == {"2.04"}, codes
        m = metrics(d)
        dropped = m["devgate_logs_dropped_total"]
        assert dropped > 0, m
        assert m['devgate_coap_requests_total{service="logs",class="2xx"}'] == 120, m
        assert m.get('devgate_coap_requests_total{service="logs",class="4xx"}', 0) == 0, m
        time.sleep(0.5)
        rows = json.loads(cli(d, "logs", "list", "acme", "dev1", "--json", "--limit", "1000"))
        assert len(rows) == 120 - dropped, (len(rows), dropped)
        assert d.wait_log(r"logs.dropped .*reason="), d.logtext()[-2000:]
        assert len(re.findall(r"logs\.dropped", d.logtext())) <= 11, "log line not limited"
    finally:
        c.close()


def test_block1_upload_under_low_rate(d):
    """A 64-byte Block1 upload of a few KB completes under a rate of 2/s:
    the blocks after the first are one request, not new ones."""
    records = [{"t": 1700000000 + i, "v": i} for i in range(120)]
    body = json.dumps(records)
    assert len(body) >= 3000
    codes, out, err = post_file(GNUTLS, d, ".s/temp", body, extra=["-b", "64"])
    assert "4.29" not in codes, codes
    assert codes and codes[-1] == "2.04", codes
    assert codes.count("2.31") >= len(body) // 64 - 1, codes
    rows = json.loads(cli(d, "stream", "list", "acme", "dev1", "--json", "--limit", "1000"))
    assert len(rows) == 120, len(rows)


def test_block2_exemption_not_a_bypass(d):
    """The Block2 exemption from the rate limit covers only the next block
    of a GET transfer under way: once one large value was read, a POST with
    a Block2 option, or the same block asked again and again, is counted."""
    cli(d, "state", "set", "acme", "dev1", "big", json.dumps("z" * 3000))
    c = client(d)
    try:
        r = c.request(fw.GET, ".d/big")
        assert r is not None and r.block(fw.OPT_BLOCK2)[1] == 1, r and r.options
        b2 = [(fw.OPT_BLOCK2, fw.uint_bytes(1 << 4 | 6))]
        codes = []
        for i in range(30):
            m = fw.Msg(fw.CON, fw.POST, c.next_mid(), c.next_token(),
                       fw.path_options(".s/temp") + [(fw.OPT_CONTENT_FORMAT, JSON)] + b2,
                       b'{"v":%d}' % i)
            c.send(m)
            a = None
            deadline = time.time() + 5
            while a is None and time.time() < deadline:
                a = c.recv(1.0)
                if a is not None and a.token != m.token:
                    a = None
            assert a is not None, i
            codes.append(a.code_text)
        assert "4.29" in codes, codes
        codes = []
        for _ in range(30):
            a = c.request(fw.GET, ".d/big", options=b2)
            assert a is not None
            codes.append(a.code_text)
        assert "4.29" in codes, codes
        # A real transfer, 16-byte blocks, still passes whole at 2/s.
        time.sleep(1.0)
        r = c.request(fw.GET, ".d/big", options=[(fw.OPT_BLOCK2, fw.uint_bytes(0))])
        assert r is not None and r.code_text == "2.05", r and r.code_text
        data, answers = block2_get(c, ".d/big", first=r)
        assert len(answers) > 150 and data.decode() == json.dumps("z" * 3000)
    finally:
        c.close()


# --- 2. replies larger than one record --------------------------------------

def value_of(n, seed="v"):
    """A JSON string value of n bytes once encoded."""
    return json.dumps((seed * n)[: n - 2])


def test_get_large_values_block2(d):
    """1.5 KB and 5 KB state values GET back byte for byte with
    coap-client-openssl at its default block size and at -b 64."""
    v1 = value_of(1500, "abcdefghij")
    v5 = json.dumps({"k%03d" % i: "x" * 40 for i in range(110)}, separators=(",", ":"))
    assert 4900 < len(v5) < 5600, len(v5)
    cli(d, "state", "set", "acme", "dev1", "small/one", v1)
    cli(d, "state", "set", "acme", "dev1", "big", v5)
    for path, want in ((".d/small/one", v1), (".d/big", v5)):
        for extra in ([], ["-b", "64"], ["-b", "1024"]):
            codes, got, text = get_to_file(OSSL, d, path, extra)
            assert codes and set(codes) == {"2.05"}, (path, extra, codes, text[-1500:])
            assert got.decode() == want, (path, extra, len(got), len(want))
            assert len(codes) > 1, (path, extra, codes)
            if extra == ["-b", "64"]:
                assert len(codes) >= (len(want) + 63) // 64, (len(codes), len(want))
    # The first block carries Size2 and an ETag.
    c = client(d)
    try:
        r = c.request(fw.GET, ".d/big")
        assert r is not None and r.code_text == "2.05", r and r.code_text
        num, more, szx = r.block(fw.OPT_BLOCK2)
        assert (num, more) == (0, 1), (num, more)
        assert r.uint(fw.OPT_SIZE2) == len(v5), r.options
        assert r.opt(fw.OPT_ETAG) is not None, r.options
        data, answers = block2_get(c, ".d/big", first=r)
        assert data.decode() == v5
        assert {a.opt(fw.OPT_ETAG) for a in answers} == {r.opt(fw.OPT_ETAG)}
        # A block past the end is refused, the session stays.
        r = c.request(fw.GET, ".d/big", options=[(fw.OPT_BLOCK2, fw.uint_bytes(500 << 4 | 6))])
        assert r is not None and r.code_text == "4.02", r and r.code_text
        r = c.request(fw.GET, ".d/small/one", options=[(fw.OPT_BLOCK2, fw.uint_bytes(2))])
        assert r.code_text == "2.05" and len(r.payload) == 64, (r.code_text, len(r.payload))
    finally:
        c.close()


def test_observe_large_value(d):
    """An observer of a large value gets the first block in the notification
    (Block2, M=1) and fetches the rest with GET + Block2."""
    cli(d, "state", "set", "acme", "dev1", "doc", '{"a": 1}')
    c = client(d)
    try:
        tok = c.next_token()
        r = c.request(fw.GET, ".d/doc", options=[(fw.OPT_OBSERVE, b"")], token=tok)
        assert r is not None and r.code_text == "2.05" and r.opt(fw.OPT_OBSERVE) is not None
        big = json.dumps({"a": 2, "text": "y" * 3000}, separators=(",", ":"))
        cli(d, "state", "set", "acme", "dev1", "doc", big)
        note = None
        deadline = time.time() + 5
        while note is None and time.time() < deadline:
            m = c.recv(1.0)
            if m is not None and m.type == fw.CON and m.token == tok:
                note = m
                c.send(fw.Msg(fw.ACK, 0, m.mid))
        assert note is not None, d.logtext()[-2000:]
        assert note.code_text == "2.05" and note.opt(fw.OPT_OBSERVE) is not None
        num, more, szx = note.block(fw.OPT_BLOCK2)
        assert (num, more) == (0, 1), note.options
        assert note.uint(fw.OPT_SIZE2) == len(big)
        data, _ = block2_get(c, ".d/doc", first=note)
        assert json.loads(data) == json.loads(big)
    finally:
        c.close()
    # And with a real client: coap-client-openssl observing reassembles it.
    obs = subprocess.Popen([OSSL, "-v", "7", "-m", "get", "-s", "4", "-u", "dev1@acme", "-k",
                            g.KEY, "-B", "6", d.url(".d/doc")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        big2 = json.dumps({"a": 3, "text": "z" * 2500}, separators=(",", ":"))
        cli(d, "state", "set", "acme", "dev1", "doc", big2)
        out, _ = obs.communicate(timeout=20)
        text = out.decode("utf-8", "replace")
        # The notification's first block, then the blocks libcoap fetched.
        note = re.search(r"t:CON c:2\.05 .*ETag:0x(\w+), Observe:\d+, .*Block2:0/M/1024", text)
        assert note, text[-3000:]
        blocks = {}
        for m in re.finditer(r"c:2\.05 i:\w+ \{\w*\} \[ ETag:0x%s,.*Block2:(\d+)/[M_]/1024"
                             r"[^\]]*\] :: '(.*)'$" % note.group(1), text, re.M):
            blocks.setdefault(int(m.group(1)), m.group(2))
        assert sorted(blocks) == [0, 1, 2], sorted(blocks)
        assert "".join(blocks[i] for i in range(3)) == big2, len("".join(blocks.values()))
    finally:
        if obs.poll() is None:
            obs.kill()
            obs.wait()


# --- 3. Block1 on .d paths --------------------------------------------------

def test_state_set_block1(d):
    """A 3 KB JSON state set in 64- and 1024-byte blocks is stored whole."""
    value = {"cfg%02d" % i: {"name": "n" * 40, "v": i} for i in range(50)}
    body = json.dumps(value)
    assert len(body) > 3000
    for cl, bs in ((OSSL, "64"), (GNUTLS, "1024"), (OSSL, "1024"), (GNUTLS, "64")):
        cli(d, "state", "delete", "acme", "dev1", "big")
        codes, out, err = post_file(cl, d, ".d/big", body, extra=["-b", bs])
        assert codes and codes[-1] == "2.04", (cl, bs, codes)
        assert "2.31" in codes, (cl, bs, codes)
        got = json.loads(cli(d, "state", "get", "acme", "dev1", "big"))
        assert got == value, (cl, bs, len(json.dumps(got)))
        codes, data, _ = get_to_file(OSSL, d, ".d/big")
        assert json.loads(data) == value, (cl, bs, len(data))


# --- 4. state documents have a size limit -----------------------------------

def put_keys(c, n, size):
    """Sets n keys of `size` bytes one after the other; returns the codes."""
    codes = []
    for i in range(n):
        body = json.dumps({"key%03d" % i: "k" * (size - 20)}).encode()
        r = c.request(fw.POST, ".d/many", body, options=[(fw.OPT_CONTENT_FORMAT, JSON)])
        codes.append(r.code_text if r is not None else None)
    return codes


def test_state_size_limit(d):
    """With limits.max_state_bytes 16384, writes of 1.2 KB keys are taken
    until the document would pass it, then 4.13; what was taken reads back."""
    c = client(d)
    try:
        codes = put_keys(c, 20, 1200)
        ok = codes.count("2.04")
        assert 10 <= ok <= 14, codes
        assert codes[:ok] == ["2.04"] * ok and set(codes[ok:]) == {"4.13"}, codes
        doc = cli(d, "state", "get", "acme", "dev1")
        assert len(doc) <= 16384 + 100, len(doc)
        assert len(json.loads(doc)["many"]) == ok
        # A write that does not grow the document is still taken.
        r = c.request(fw.POST, ".d/many/key000", b'"short"',
                      options=[(fw.OPT_CONTENT_FORMAT, JSON)])
        assert r.code_text == "2.04", r.code_text
        r = c.request(fw.DELETE, ".d/many/key001")
        assert r.code_text == "2.02", r.code_text
        data, _ = block2_get(c, ".d")
        assert json.loads(data) == json.loads(cli(d, "state", "get", "acme", "dev1"))
    finally:
        c.close()


def test_big_document_reads(d):
    """150 writes of 1.2 KB keys (a 180 KB document, allowed by the config)
    are all acknowledged and a GET of the whole document reads them back."""
    c = client(d)
    try:
        codes = put_keys(c, 150, 1200)
        assert codes == ["2.04"] * 150, codes
    finally:
        c.close()
    codes, data, text = get_to_file(OSSL, d, ".d/many", ["-b", "1024"])
    assert codes and set(codes) == {"2.05"}, (codes[:5], text[-1000:])
    doc = json.loads(data)
    assert len(doc) == 150 and all(len(v) == 1180 for v in doc.values()), len(doc)


# --- 5. shutdown acknowledges what it committed -----------------------------

def test_shutdown_acknowledges_committed_writes(d):
    """SIGTERM during a burst of stream POSTs from a client that does not
    retry: every row stored got its 2.04 before close_notify."""
    c = client(d)
    try:
        for i in range(300):
            m = fw.Msg(fw.CON, fw.POST, c.next_mid(), c.next_token(),
                       fw.path_options(".s/burst") + [(fw.OPT_CONTENT_FORMAT, JSON)],
                       b'{"i": %d, "pad": "%s"}' % (i, b"p" * 200))
            c.send(m)
        d.proc.send_signal(signal.SIGTERM)
        acks = 0
        deadline = time.time() + 10
        while time.time() < deadline:
            r = c.recv(1.0)
            if r is None:
                if c.closed_by_peer or d.proc.poll() is not None:
                    break
                continue
            if r.code_text == "2.04":
                acks += 1
        assert c.closed_by_peer, "no close_notify"
    finally:
        c.close()
    d.proc.wait(10)
    assert d.proc.returncode == 0, d.proc.returncode
    rows = json.loads(cli(d, "stream", "list", "acme", "dev1", "--json", "--limit", "1000"))
    assert len(rows) == acks, (len(rows), acks)
    assert 0 < acks, acks


TESTS = [
    (test_connect_burst_no_429, {}),
    (test_flood_gets_429_and_counted, {}),
    (test_refused_requests_counted, {}),
    (test_logs_over_rate_get_204, {}),
    (test_block1_upload_under_low_rate, {"limits": {"device_requests_per_s": 2}}),
    (test_get_large_values_block2, {}),
    (test_block2_exemption_not_a_bypass, {"limits": {"device_requests_per_s": 2,
                                                    "device_burst": 4}}),
    (test_observe_large_value, {}),
    (test_state_set_block1, {}),
    (test_state_size_limit, {"limits": {"max_state_bytes": 16384,
                                        "device_requests_per_s": 1000}}),
    (test_big_document_reads, {"limits": {"max_state_bytes": 262144,
                                          "device_requests_per_s": 1000}}),
    (test_shutdown_acknowledges_committed_writes, {"limits": {"device_requests_per_s": 100000,
                                                              "device_burst": 100000}}),
]


if __name__ == "__main__":
    sys.exit(g.run_suite(TESTS))
