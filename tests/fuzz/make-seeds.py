#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_session and fuzz_chain.

    python3 tests/fuzz/make-seeds.py [BUILD]     (default build/)

tests/fuzz/corpus/session/: inputs for fuzz_session, in its chunk format
(flags, 2-byte big-endian length, payload; see fuzz_session.c): CoAP
requests of every service sent through the established session, a real
handshake transcript replayed raw from new peers (its cookie is stale, so
it exercises the cookie check), a second handshake from another port,
a close_notify, and malformed records. The transcript is recorded by
running BUILD/fuzz/fuzz_session with DG_FUZZ_TRANSCRIPT set.

tests/fuzz/corpus/chain/ and tests/fuzz/fuzz_chain_pki.h: a PKI made with
tests/integration/pki.py (Golioth's openssl recipe: v1 device
certificates) for the projects of fuzz_chain (acme and beta, each with its
own root; off, disabled, trusting acme's root), with long validity so the
seeds stay valid; the header holds the CA and CRL PEMs the target loads,
the corpus the chains (fuzz_chain's format: 2-byte big-endian length + DER
per certificate, the leaf first).
"""
import datetime
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))

# --- fuzz_session -------------------------------------------------------------

SRC_A, SRC_B, SRC_C = 0, 1, 2
RAW, APP, HANDSHAKE, CLOSE = 0, 4, 8, 12

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 1, 2, 3, 4


def chunk(flags, payload):
    return struct.pack(">BH", flags, len(payload)) + payload


def opt(number, value, prev):
    """One CoAP option after option `prev`."""
    delta = number - prev
    length = len(value)

    def nib(v):
        if v < 13:
            return v, b""
        if v < 269:
            return 13, bytes([v - 13])
        return 14, struct.pack(">H", v - 269)

    dn, dx = nib(delta)
    ln, lx = nib(length)
    return bytes([dn << 4 | ln]) + dx + lx + value


def uint(v):
    if v == 0:
        return b""
    out = b""
    while v:
        out = bytes([v & 0xFF]) + out
        v >>= 8
    return out


def coap(type_, code, mid, token=b"", options=(), payload=b""):
    """A CoAP message; options is a list of (number, bytes), any order."""
    out = bytes([0x40 | type_ << 4 | len(token), code]) + struct.pack(">H", mid) + token
    prev = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        out += opt(number, value, prev)
        prev = number
    if payload:
        out += b"\xff" + payload
    return out


def path(p):
    return [(11, seg.encode()) for seg in p.split("/") if seg]


def block(num, more, szx):
    return uint(num << 4 | (8 if more else 0) | szx)


TOKEN = bytes(range(1, 9))


def session_seeds(build):
    seeds = {}
    app = lambda m: chunk(SRC_A | APP, m)
    seeds["ping"] = app(coap(CON, 0, 1))
    seeds["keepalive-delete"] = app(coap(CON, DELETE, 2, bytes(8)))
    seeds["embedded-keepalive-non"] = app(coap(NON, 0, 3))
    seeds["get-wellknown"] = app(coap(CON, GET, 4, TOKEN, path(".well-known/core")))
    seeds["state-post-json"] = app(coap(CON, POST, 5, TOKEN, path(".d/sensor") + [(12, uint(50))],
                                        b'{"temp": 21.5, "on": true}'))
    seeds["state-put-cbor"] = app(coap(CON, PUT, 6, TOKEN, path(".d/x") + [(12, uint(60))],
                                       b"\xbf\x61a\x01\x61b\x9f\x01\x02\xff\xff"))
    seeds["state-get-observe"] = (
        app(coap(CON, POST, 7, TOKEN, path(".d/led") + [(12, uint(50))], b"1")) +
        app(coap(CON, GET, 8, TOKEN[::-1], path(".d/led") + [(6, b""), (17, uint(50))])) +
        app(coap(CON, POST, 9, TOKEN, path(".d/led") + [(12, uint(50))], b"2")) +
        app(coap(RST, 0, 0x8000)))
    seeds["state-get-accept-cbor"] = app(coap(CON, GET, 10, TOKEN, path(".d") + [(17, uint(60))]))
    seeds["state-delete"] = app(coap(CON, DELETE, 11, TOKEN, path(".d/sensor/temp")))
    seeds["stream-post"] = app(coap(CON, POST, 12, TOKEN, path(".s/env") + [(12, uint(50))],
                                    b'[{"t": 1700000000, "v": 1}, {"ts": 1700000000123, "v": 2}]'))
    body = b'{"v": "' + b"x" * 150 + b'"}'
    blocks = [body[i:i + 64] for i in range(0, len(body), 64)]
    seeds["stream-block1"] = b"".join(
        app(coap(CON, POST, 20 + i, TOKEN, path(".s") + [(12, uint(50)),
                                                         (27, block(i, i + 1 < len(blocks), 2))],
                 b))
        for i, b in enumerate(blocks))
    seeds["stream-block1-gap"] = (
        app(coap(CON, POST, 30, TOKEN, path(".s") + [(12, uint(50)), (27, block(0, True, 2))],
                 blocks[0])) +
        app(coap(CON, POST, 31, TOKEN, path(".s") + [(12, uint(50)), (27, block(2, False, 2))],
                 blocks[2])))
    seeds["logs"] = app(coap(CON, POST, 40, TOKEN, path(".s/logs") + [(12, uint(50))],
                             b'{"level": "info", "module": "app", "msg": "hello"}'))
    seeds["duplicate-con"] = app(coap(CON, GET, 41, TOKEN, path(".d"))) * 2
    seeds["unknown-critical-option"] = app(coap(CON, GET, 42, TOKEN, path(".d") + [(9, b"x")]))
    seeds["proxy-uri"] = app(coap(CON, GET, 43, TOKEN, [(35, b"coap://x/")]))
    seeds["bad-payload"] = app(coap(CON, POST, 44, TOKEN, path(".d/a") + [(12, uint(50))],
                                    b'{"a": '))
    seeds["bad-content-format"] = app(coap(CON, POST, 45, TOKEN, path(".d/a") + [(12, uint(41))],
                                           b"<x/>"))
    seeds["not-found"] = app(coap(CON, GET, 46, TOKEN, path("nowhere")))
    seeds["from-other-port"] = chunk(SRC_B | APP, coap(CON, GET, 47, TOKEN, path(".d")))
    seeds["from-new-peer"] = chunk(SRC_C | APP, coap(CON, GET, 48, TOKEN, path(".d")))
    seeds["second-handshake-same-port"] = chunk(SRC_A | HANDSHAKE, coap(CON, GET, 49, TOKEN,
                                                                         path(".d")))
    seeds["second-handshake-other-port"] = (
        chunk(SRC_B | HANDSHAKE, coap(CON, 0, 50)) +
        app(coap(CON, GET, 51, TOKEN, path(".d"))))
    seeds["close-notify"] = chunk(SRC_A | CLOSE, coap(CON, POST, 52, TOKEN, path(".d/bye"), b"1"))
    seeds["garbage-records"] = (
        chunk(SRC_A | RAW, b"\x17\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x10" + b"\xaa" * 16) +
        chunk(SRC_A | RAW, b"\x19\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x04" + b"\x01" * 4) +
        chunk(SRC_A | RAW, b"\x16\xfe\xfd\x00\x00" + b"\x00" * 6 + b"\xff\xff") +
        chunk(SRC_B | RAW, b"\x15\xfe\xfd\x00\x00" + b"\x00" * 5 + b"\x01\x00\x02\x02\x28"))

    # A real handshake's client flights, recorded by the target itself.
    fuzzer = os.path.join(build, "fuzz", "fuzz_session")
    if os.access(fuzzer, os.X_OK):
        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, "empty")
            open(empty, "wb").close()
            out = os.path.join(tmp, "transcript")
            env = dict(os.environ, DG_FUZZ_TRANSCRIPT=out)
            subprocess.run([fuzzer, empty], env=env, check=True, capture_output=True,
                           timeout=60)
            with open(out, "rb") as f:
                transcript = f.read()
        seeds["handshake-transcript-new-peer"] = transcript
        # The same flights from the established session's address and another port.
        seeds["handshake-transcript-same-peer"] = retarget(transcript, SRC_A)
        seeds["handshake-transcript-other-port"] = retarget(transcript, SRC_B)
    else:
        print("make-seeds: %s not built; no handshake transcript" % fuzzer, file=sys.stderr)
    return seeds


def retarget(stream, src):
    out = b""
    off = 0
    while off + 3 <= len(stream):
        flags, n = struct.unpack_from(">BH", stream, off)
        out += chunk((flags & ~3) | src, stream[off + 3:off + 3 + n])
        off += 3 + n
    return out


# --- fuzz_chain ----------------------------------------------------------------

def der(pem_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    with open(pem_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)


def chain(*ders):
    return b"".join(struct.pack(">H", len(d)) + d for d in ders)


def gencrl(pki, ca, name):
    out = pki.path(name + ".crl.pem")
    from pki import run
    run(["openssl", "ca", "-batch", "-config", ca.conf, "-gencrl", "-crldays", "7300",
         "-out", out])
    return out


def c_string(name, data):
    lines = ["static const char %s[] =" % name]
    for line in data.decode().splitlines():
        lines.append('\t"%s\\n"' % line)
    return "\n".join(lines) + ";\n"


def chain_seeds():
    import pki as pkimod
    p = pkimod.PKI()
    try:
        days = 7300
        acme = p.root("acme-root", cn="Acme Root CA", days=days)
        beta = p.root("beta-root", cn="Beta Root CA", days=days)
        inter = p.intermediate(acme, "acme-inter", days=days)
        now = datetime.datetime.now(datetime.timezone.utc)
        good = p.device(acme, "dev-good", days=days)
        via_inter = p.device(inter, "dev-inter", days=days)
        claims_beta = p.device(acme, "dev-claims-beta", slug="beta", days=days)
        beta_dev = p.device(beta, "dev-beta", slug="beta", days=days)
        off_dev = p.device(acme, "dev-off", slug="off", days=days)
        expired = p.expired(acme, "dev-expired")
        future = p.device_dated(acme, "dev-future", now + datetime.timedelta(days=3650),
                                now + datetime.timedelta(days=7000))
        revoked = p.device(acme, "dev-revoked", days=days)
        # Revoked through `openssl ca`: it must be in acme's database first.
        rev2 = p.device_dated(acme, "dev-revoked-ca", now - datetime.timedelta(days=1),
                              now + datetime.timedelta(days=days))
        p.revoke(acme, rev2)
        p.revoke(acme, revoked)
        crl = gencrl(p, acme, "acme")
        two_cn = p.device(acme, "dev-two-cn", subj="/O=acme/CN=a/CN=b", days=days)
        two_o = p.device(acme, "dev-two-o", subj="/O=acme/O=beta/CN=x", days=days)
        no_cn = p.device(acme, "dev-no-cn", subj="/O=acme", days=days)
        no_o = p.device(acme, "dev-no-o", subj="/CN=nobody", days=days)
        empty_cn = p.device_empty_cn(acme, "dev-empty-cn", days=days)
        # A device's leaf (not a CA) used to sign another leaf.
        leaf_ca = pkimod.CA(p, "dev-good-as-ca", good.cert, good.key)
        forged = p.device(leaf_ca, "dev-forged", days=days)

        seeds = {
            "good": chain(der(good.cert)),
            "via-intermediate": chain(der(via_inter.cert), der(inter.cert)),
            "via-intermediate-extra": chain(der(via_inter.cert), der(beta.cert), der(inter.cert),
                                            der(acme.cert)),
            "intermediate-missing": chain(der(via_inter.cert)),
            "claims-other-project": chain(der(claims_beta.cert)),
            "beta-no-auto-provision": chain(der(beta_dev.cert)),
            "disabled-project": chain(der(off_dev.cert)),
            "expired": chain(der(expired.cert)),
            "not-yet-valid": chain(der(future.cert)),
            "revoked": chain(der(revoked.cert)),
            "two-cn": chain(der(two_cn.cert)),
            "two-o": chain(der(two_o.cert)),
            "no-cn": chain(der(no_cn.cert)),
            "no-o": chain(der(no_o.cert)),
            "empty-cn": chain(der(empty_cn.cert)),
            "leaf-as-intermediate": chain(der(forged.cert), der(good.cert)),
            "ca-as-leaf": chain(der(acme.cert)),
            "truncated": chain(der(good.cert)[:200]),
        }
        header = ("/* Made by tests/fuzz/make-seeds.py: the CAs and CRL fuzz_chain loads. */\n" +
                  c_string("ACME_ROOT_PEM", acme.pem()) +
                  c_string("BETA_ROOT_PEM", beta.pem()) +
                  c_string("ACME_CRL_PEM", open(crl, "rb").read()))
        return seeds, header
    finally:
        p.cleanup()


def write_corpus(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    for k, v in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)
    print("make-seeds: %d seeds in %s" % (len(seeds), d))


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(TOP, "build")
    what = sys.argv[2:] or ["session", "chain"]
    if "session" in what:
        write_corpus("session", session_seeds(build))
    if "chain" in what:
        seeds, header = chain_seeds()
        write_corpus("chain", seeds)
        with open(os.path.join(HERE, "fuzz_chain_pki.h"), "w") as f:
            f.write(header)


if __name__ == "__main__":
    main()
