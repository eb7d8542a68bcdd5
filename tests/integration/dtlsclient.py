"""A scriptable DTLS 1.2 PSK client for adversarial tests.

It does what a test needs and no more, with every byte under the test's
control:

- Records: `record()` builds one with any content type, version, epoch,
  sequence number, length field (which may lie) and payload; several go in
  one datagram by concatenation; `Session.send_raw()` sends any datagram.
- The handshake: TLS_PSK_WITH_AES_128_CCM_8 (0xC0A8) and
  TLS_PSK_WITH_AES_128_GCM_SHA256 (0x00A8), with the cookie exchange
  (RFC 6347), an optional ServerKeyExchange (identity hint), the PRF of
  RFC 5246 with SHA-256 and the transcript rules of RFC 6347 (the first
  ClientHello and the HelloVerifyRequest are left out). Each step is a
  method, so a test can stop, repeat or tamper with any of them;
  `Session.handshake()` runs them all. Abbreviated handshakes (session
  resumption by session ID) are supported too.
- Handshake fragmentation on send (`hs_fragments()` takes any list of
  (offset, length) pairs, overlapping or lying) and reassembly on receive.
- Source addresses: `bind` takes any 127.x.y.z address and port, with
  SO_REUSEADDR/SO_REUSEPORT when asked, so a test can speak from an
  address another socket holds.
- A small CoAP codec (`coap_request()`, `coap_parse()`) and `Session.request()`
  that sends one CoAP request and returns the parsed answer.
- `Canary`: a thread that keeps an established session busy with a request
  every `interval` seconds and counts answered and lost requests.

Every receive has a timeout; every loop is bounded in count and time.
"""
import hashlib
import hmac
import os
import socket
import struct
import threading
import time

from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

PSK_AES128_CCM_8 = 0xC0A8
PSK_AES128_GCM_SHA256 = 0x00A8

DTLS12 = 0xFEFD
CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA = 20, 21, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_HELLO_VERIFY = 1, 2, 3
HS_SERVER_KEY_EXCHANGE, HS_SERVER_HELLO_DONE = 12, 14
HS_CLIENT_KEY_EXCHANGE, HS_FINISHED = 16, 20
MAX_DATAGRAM = 65535


class DTLSError(Exception):
    """The peer did something the client did not expect (an alert, a
    timeout, a bad Finished); `alert` holds (level, description) when
    an alert caused it."""

    def __init__(self, msg, alert=None):
        super().__init__(msg)
        self.alert = alert


# --- primitives ---------------------------------------------------------------

def prf(secret, label, seed, n):
    """The TLS 1.2 PRF with SHA-256 (RFC 5246 section 5)."""
    seed = label + seed
    out = b""
    a = seed
    while len(out) < n:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:n]


def psk_premaster(psk):
    """The plain-PSK premaster secret (RFC 4279 section 2)."""
    n = len(psk)
    return struct.pack("!H", n) + b"\x00" * n + struct.pack("!H", n) + psk


def record(ctype, payload, epoch=0, seq=0, version=DTLS12, length=None):
    """One DTLS record. `length` overrides the length field (it may lie)."""
    if length is None:
        length = len(payload)
    return (struct.pack("!BHH", ctype, version, epoch) + seq.to_bytes(6, "big") +
            struct.pack("!H", length & 0xFFFF) + payload)


def hs_header(msg_type, length, message_seq, frag_offset, frag_length):
    return (struct.pack("!B", msg_type) + length.to_bytes(3, "big") +
            struct.pack("!H", message_seq) + frag_offset.to_bytes(3, "big") +
            frag_length.to_bytes(3, "big"))


def hs_message(msg_type, body, message_seq):
    """A whole handshake message (one fragment covering the body)."""
    return hs_header(msg_type, len(body), message_seq, 0, len(body)) + body


def hs_fragments(msg_type, body, message_seq, pieces, length=None):
    """Handshake fragments of `body`: one per (offset, frag_len) in `pieces`,
    carrying body[offset:offset+frag_len]. Offsets may overlap or leave
    gaps; `length` overrides the total length field (it may lie), and a
    piece given as (offset, frag_len, data) carries `data` whatever the
    body holds there."""
    total = len(body) if length is None else length
    out = []
    for p in pieces:
        off, n = p[0], p[1]
        data = p[2] if len(p) > 2 else body[off:off + n]
        out.append(hs_header(msg_type, total, message_seq, off, n) + data)
    return out


def parse_records(data):
    """Splits a datagram into (type, version, epoch, seq, payload) tuples;
    stops at the first record that does not fit."""
    out = []
    i = 0
    while len(data) - i >= 13:
        ctype, version, epoch = struct.unpack("!BHH", data[i:i + 5])
        seq = int.from_bytes(data[i + 5:i + 11], "big")
        (n,) = struct.unpack("!H", data[i + 11:i + 13])
        if i + 13 + n > len(data):
            break
        out.append((ctype, version, epoch, seq, data[i + 13:i + 13 + n]))
        i += 13 + n
    return out


def client_hello_body(random, cookie=b"", suites=(PSK_AES128_CCM_8,), session_id=b"",
                      extensions=b"", version=DTLS12):
    body = struct.pack("!H", version) + random
    body += struct.pack("!B", len(session_id)) + session_id
    body += struct.pack("!B", len(cookie)) + cookie
    body += struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites)
    body += b"\x01\x00"
    if extensions:
        body += struct.pack("!H", len(extensions)) + extensions
    return body


class Cipher:
    """One direction's AEAD record protection (RFC 5288/6655 nonces)."""

    def __init__(self, suite, key, salt):
        self.salt = salt
        if suite == PSK_AES128_CCM_8:
            self.aead = AESCCM(key, tag_length=8)
            self.tag = 8
        elif suite == PSK_AES128_GCM_SHA256:
            self.aead = AESGCM(key)
            self.tag = 16
        else:
            raise ValueError("unsupported suite 0x%04x" % suite)

    def seal(self, ctype, version, epoch, seq, plain, explicit=None):
        seqnum = struct.pack("!H", epoch) + seq.to_bytes(6, "big")
        explicit = seqnum if explicit is None else explicit
        aad = seqnum + struct.pack("!BHH", ctype, version, len(plain))
        return explicit + self.aead.encrypt(self.salt + explicit, plain, aad)

    def open(self, ctype, version, epoch, seq, payload):
        if len(payload) < 8 + self.tag:
            return None
        seqnum = struct.pack("!H", epoch) + seq.to_bytes(6, "big")
        n = len(payload) - 8 - self.tag
        aad = seqnum + struct.pack("!BHH", ctype, version, n)
        try:
            return self.aead.decrypt(self.salt + payload[:8], payload[8:], aad)
        except Exception:  # noqa: BLE001 - any failure is a bad record
            return None


def make_socket(bind=None, reuse=False, timeout=2.0):
    """A UDP socket bound to `bind` ((host, port), host any 127/8 address;
    None: 127.0.0.1 and a free port). With `reuse`, SO_REUSEADDR and
    SO_REUSEPORT are set, so that a second socket may bind the same
    address and port as the first (which must have set them too)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(bind or ("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


# --- the session ----------------------------------------------------------------

class Session:
    """One DTLS 1.2 PSK client session on its own UDP socket.

    The steps of a full handshake, each callable on its own:
    hello() (cookie exchange), hello_again() (the cookie-bearing
    ClientHello and the server's flight), key_exchange() (ClientKeyExchange,
    ChangeCipherSpec, Finished) and finish() (the server's CCS and
    Finished). handshake() runs them all and retransmits a lost flight
    (bounded)."""

    def __init__(self, server, identity, psk, suite=PSK_AES128_CCM_8, bind=None,
                 reuse=False, timeout=2.0, sock=None):
        self.server = server
        self.identity = identity if isinstance(identity, bytes) else identity.encode()
        self.psk = psk if isinstance(psk, bytes) else psk.encode()
        self.suite = suite
        self.timeout = timeout
        self.sock = sock or make_socket(bind, reuse, timeout)
        self.client_random = os.urandom(32)
        self.server_random = None
        self.session_id = b""
        self.offer_session_id = b""
        self.cookie = b""
        self.epoch = 0
        self.seq = {0: 0}
        self.msg_seq = 0
        self.transcript = b""
        self.master = None
        self.write = None
        self.read = None
        self.read_epoch = 0
        self.hint = None
        self.established = False
        self.abbreviated = False
        self.alerts = []          # (level, description) received.
        self.app_queue = []       # Decrypted application data not yet taken.
        self._frags = {}          # message_seq -> {"type", "len", "buf", "have"}
        self._next_rx_msg = 0
        self._hs_queue = []       # Reassembled handshake messages not yet taken.
        self._flight = []         # The last flight: [(type, plaintext, epoch)], or bytes.
        self._mid = int.from_bytes(os.urandom(2), "big")
        self._ch2 = None          # The ClientHello with the cookie, as sent.
        self._early = []          # Epoch-1 records that came before the keys.

    # -- addresses and raw I/O --

    def addr(self):
        return self.sock.getsockname()

    def close(self, notify=True):
        """Sends close_notify when established (and `notify`), closes the socket."""
        try:
            if notify and self.established and self.write is not None:
                self.send_record(CT_ALERT, b"\x01\x00")
        except OSError:
            pass
        self.sock.close()

    def send_raw(self, data):
        """Sends one datagram as given."""
        self.sock.sendto(data, self.server)

    def next_seq(self, epoch=None):
        epoch = self.epoch if epoch is None else epoch
        n = self.seq.get(epoch, 0)
        self.seq[epoch] = n + 1
        return n

    def make_record(self, ctype, plain, epoch=None, seq=None, version=DTLS12, length=None):
        """A record in the current (or given) epoch, protected when that epoch
        has keys. `seq` defaults to the epoch's next sequence number."""
        epoch = self.epoch if epoch is None else epoch
        seq = self.next_seq(epoch) if seq is None else seq
        if epoch > 0 and self.write is not None:
            plain = self.write.seal(ctype, version, epoch, seq, plain)
        return record(ctype, plain, epoch, seq, version, length)

    def send_record(self, ctype, plain, **kw):
        data = self.make_record(ctype, plain, **kw)
        self.send_raw(data)
        return data

    def retransmit(self):
        """Sends the last flight again, in one datagram, each record with
        the next sequence number of its epoch (a flight a test built with
        key_exchange(extra=...) goes out byte for byte as before)."""
        if isinstance(self._flight, bytes):
            self.send_raw(self._flight)
            return
        self.send_raw(b"".join(self.make_record(t, p, epoch=e) for t, p, e in self._flight))

    def recv_datagram(self, timeout=None):
        """One datagram from the server, or None after `timeout` seconds."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            while True:
                data, src = self.sock.recvfrom(MAX_DATAGRAM)
                if src == tuple(self.server):
                    return data
        except (socket.timeout, BlockingIOError):
            return None

    # -- receiving --

    def set_read(self, cipher, epoch=1):
        """Starts reading `epoch` with `cipher`; records of it that came
        before are processed now."""
        self.read = cipher
        self.read_epoch = epoch
        early, self._early = self._early, []
        for r in early:
            self._take_records(record(r[0], r[4], r[2], r[3], r[1]))

    def _take_records(self, data):
        """Processes one datagram: alerts are recorded, handshake fragments
        reassembled, application data decrypted into app_queue. Returns the
        list of (type, epoch, plaintext) it decoded."""
        out = []
        for ctype, version, epoch, seq, payload in parse_records(data):
            if epoch > 0:
                if self.read is None and epoch == 1 and len(self._early) < 16:
                    # Keys not derived yet (a resumed server's Finished
                    # comes with its ServerHello): kept for set_read().
                    self._early.append((ctype, version, epoch, seq, payload))
                    continue
                if self.read is None or epoch != self.read_epoch:
                    continue
                plain = self.read.open(ctype, version, epoch, seq, payload)
                if plain is None:
                    continue
            else:
                plain = payload
            out.append((ctype, epoch, plain))
            if ctype == CT_ALERT and len(plain) >= 2:
                self.alerts.append((plain[0], plain[1]))
            elif ctype == CT_HANDSHAKE:
                self._reassemble(plain, epoch)
            elif ctype == CT_APPDATA and epoch > 0:
                self.app_queue.append(plain)
        return out

    def _reassemble(self, plain, epoch):
        i = 0
        while len(plain) - i >= 12:
            mtype = plain[i]
            mlen = int.from_bytes(plain[i + 1:i + 4], "big")
            mseq = struct.unpack("!H", plain[i + 4:i + 6])[0]
            off = int.from_bytes(plain[i + 6:i + 9], "big")
            flen = int.from_bytes(plain[i + 9:i + 12], "big")
            frag = plain[i + 12:i + 12 + flen]
            i += 12 + flen
            if len(frag) != flen or off + flen > mlen or mseq < self._next_rx_msg:
                continue
            ent = self._frags.setdefault(mseq, {"type": mtype, "len": mlen,
                                                "buf": bytearray(mlen),
                                                "have": bytearray(mlen), "epoch": epoch})
            if ent["len"] != mlen or ent["type"] != mtype:
                continue
            ent["buf"][off:off + flen] = frag
            ent["have"][off:off + flen] = b"\x01" * flen
            while self._next_rx_msg in self._frags:
                e = self._frags[self._next_rx_msg]
                if e["len"] and min(e["have"]) == 0:
                    break
                del self._frags[self._next_rx_msg]
                self._hs_queue.append((e["type"], self._next_rx_msg, bytes(e["buf"]),
                                       e["epoch"]))
                self._next_rx_msg += 1

    def recv_handshake(self, want, timeout=None):
        """Waits for the handshake messages whose types are in `want`, in
        order; returns [(type, body)]. Raises DTLSError on an alert or a
        timeout."""
        got = []
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while len(got) < len(want):
            while self._hs_queue and len(got) < len(want):
                mtype, mseq, body, _ = self._hs_queue.pop(0)
                got.append((mtype, body, mseq))
                if mtype != want[len(got) - 1]:
                    raise DTLSError("expected handshake type %d, got %d" %
                                    (want[len(got) - 1], mtype))
            if len(got) == len(want):
                break
            left = deadline - time.time()
            if left <= 0:
                raise DTLSError("timeout waiting for handshake %r (got %r)" %
                                (want, [g[0] for g in got]))
            data = self.recv_datagram(left)
            if data is None:
                continue
            n_alerts = len(self.alerts)
            self._take_records(data)
            if len(self.alerts) > n_alerts:
                raise DTLSError("alert %r" % (self.alerts[-1],), self.alerts[-1])
        return got

    # -- the handshake, step by step --

    def client_hello(self, cookie=b"", message_seq=None, session_id=None, suites=None,
                     extensions=b""):
        """The ClientHello handshake message (header and body) and its body."""
        sid = self.offer_session_id if session_id is None else session_id
        body = client_hello_body(self.client_random, cookie, suites or (self.suite,), sid,
                                 extensions)
        mseq = self.msg_seq if message_seq is None else message_seq
        return hs_message(HS_CLIENT_HELLO, body, mseq), body

    def hello(self, timeout=None):
        """Sends the first ClientHello; returns the cookie of the
        HelloVerifyRequest (b"" when the server answered with a ServerHello
        straight away, which a cookie-checking server does not)."""
        msg, _ = self.client_hello()
        self.msg_seq += 1
        self.send_record(CT_HANDSHAKE, msg)
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while time.time() < deadline:
            data = self.recv_datagram(max(0.01, deadline - time.time()))
            if data is None:
                break
            for ctype, _, _, _, payload in parse_records(data):
                if ctype == CT_ALERT and len(payload) >= 2:
                    self.alerts.append((payload[0], payload[1]))
                    raise DTLSError("alert %r" % (self.alerts[-1],), self.alerts[-1])
                if ctype == CT_HANDSHAKE and len(payload) >= 12 + 3 and payload[0] == HS_HELLO_VERIFY:
                    n = payload[12 + 2]
                    self.cookie = payload[12 + 3:12 + 3 + n]
                    self._next_rx_msg = struct.unpack("!H", payload[4:6])[0] + 1
                    return self.cookie
        raise DTLSError("no HelloVerifyRequest")

    def hello_again(self, timeout=None, send=True):
        """Sends the ClientHello with the cookie and reads the server's
        flight: ServerHello, an optional ServerKeyExchange and
        ServerHelloDone, or for a resumed session ServerHello, CCS and
        Finished. With `send` false it only reads: the ClientHello went out
        already (this client's own, retransmitted, or one a test sent itself
        in any fragments with the message_seq and body of client_hello())."""
        if send or self._ch2 is None:
            self._ch2, _ = self.client_hello(cookie=self.cookie)
            self.msg_seq += 1
            self._flight = [(CT_HANDSHAKE, self._ch2, 0)]
            if send:
                self.retransmit()
        self.transcript = self._ch2
        (sh,) = self.recv_handshake([HS_SERVER_HELLO], timeout)
        self._server_hello(sh[1])
        self.transcript += hs_message(HS_SERVER_HELLO, sh[1], sh[2])
        if self.abbreviated:
            return
        nxt = self.recv_handshake([self._peek_type(timeout)], timeout)[0]
        if nxt[0] == HS_SERVER_KEY_EXCHANGE:
            (hl,) = struct.unpack("!H", nxt[1][:2])
            self.hint = nxt[1][2:2 + hl]
            self.transcript += hs_message(nxt[0], nxt[1], nxt[2])
            nxt = self.recv_handshake([HS_SERVER_HELLO_DONE], timeout)[0]
        if nxt[0] != HS_SERVER_HELLO_DONE:
            raise DTLSError("expected ServerHelloDone, got %d" % nxt[0])
        self.transcript += hs_message(nxt[0], nxt[1], nxt[2])

    def _peek_type(self, timeout):
        """The type of the next reassembled handshake message (waits for it)."""
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while not self._hs_queue:
            left = deadline - time.time()
            if left <= 0:
                raise DTLSError("timeout waiting for the server's flight")
            data = self.recv_datagram(left)
            if data is None:
                continue
            n_alerts = len(self.alerts)
            self._take_records(data)
            if len(self.alerts) > n_alerts:
                raise DTLSError("alert %r" % (self.alerts[-1],), self.alerts[-1])
        return self._hs_queue[0][0]

    def _server_hello(self, body):
        (version,) = struct.unpack("!H", body[:2])
        self.server_random = body[2:34]
        n = body[34]
        sid = body[35:35 + n]
        (suite,) = struct.unpack("!H", body[35 + n:37 + n])
        if suite != self.suite:
            raise DTLSError("server chose suite 0x%04x" % suite)
        self.abbreviated = bool(self.offer_session_id) and sid == self.offer_session_id
        self.session_id = sid

    def derive_keys(self):
        if self.master is None:
            self.master = prf(psk_premaster(self.psk), b"master secret",
                              self.client_random + self.server_random, 48)
        kb = prf(self.master, b"key expansion", self.server_random + self.client_random, 40)
        self.write = Cipher(self.suite, kb[0:16], kb[32:36])
        self._server_cipher = Cipher(self.suite, kb[16:32], kb[36:40])

    def verify_data(self, label, transcript=None):
        t = self.transcript if transcript is None else transcript
        return prf(self.master, label, hashlib.sha256(t).digest(), 12)

    def key_exchange(self, identity=None, finished=None, send=True, extra=None):
        """Builds the client's second flight: ClientKeyExchange (with
        `identity`, default the session's), ChangeCipherSpec and Finished
        (`finished` replaces its verify_data). Returns the list of records;
        sends them in one datagram unless `send` is false. `extra` is a
        function given the list that returns the list to send."""
        ident = self.identity if identity is None else identity
        cke = hs_message(HS_CLIENT_KEY_EXCHANGE, struct.pack("!H", len(ident)) + ident,
                         self.msg_seq)
        self.msg_seq += 1
        self.transcript += cke
        self.master = None  # A full handshake: a new master secret.
        self.derive_keys()
        recs = [self.make_record(CT_HANDSHAKE, cke), self.make_record(CT_CCS, b"\x01")]
        self.epoch = 1
        self.seq.setdefault(1, 0)
        fin_body = finished if finished is not None else self.verify_data(b"client finished")
        fin = hs_message(HS_FINISHED, fin_body, self.msg_seq)
        self.msg_seq += 1
        self._client_finished = fin
        recs.append(self.make_record(CT_HANDSHAKE, fin))
        self._transcript_before_server_fin = self.transcript + fin
        if extra is not None:
            recs = extra(recs)
        # A retransmission sends what a test built as it is; the client's
        # own flight is built again with fresh record sequence numbers.
        self._flight = b"".join(recs) if extra is not None else [
            (CT_HANDSHAKE, cke, 0), (CT_CCS, b"\x01", 0), (CT_HANDSHAKE, fin, 1)]
        if send:
            self.send_raw(b"".join(recs))
        return recs

    def finish(self, timeout=None):
        """Waits for the server's ChangeCipherSpec and Finished and checks it."""
        if self.read is None:
            self.set_read(self._server_cipher)
        (fin,) = self.recv_handshake([HS_FINISHED], timeout)
        want = self.verify_data(b"server finished", self._transcript_before_server_fin)
        if fin[1] != want:
            raise DTLSError("server Finished does not verify")
        self.established = True

    def handshake(self, tries=3, timeout=None):
        """The whole handshake, with up to `tries` sends of each flight.
        Returns self."""
        t = self.timeout if timeout is None else timeout
        for i in range(tries):
            try:
                self.hello(t)
                break
            except DTLSError as e:
                if e.alert is not None or i == tries - 1:
                    raise
                self.msg_seq = 0
        for i in range(tries):
            try:
                if i == 0:
                    self.hello_again(t)
                else:
                    self.retransmit()
                    self.hello_again(t, send=False)
                break
            except DTLSError as e:
                if e.alert is not None or i == tries - 1:
                    raise
        if self.abbreviated:
            self._resume_finish(t)
            return self
        self.key_exchange()
        for i in range(tries):
            try:
                self.finish(t)
                break
            except DTLSError as e:
                if e.alert is not None or i == tries - 1:
                    raise
                self.retransmit()
        return self

    def _resume_finish(self, timeout):
        """An abbreviated handshake: the server's CCS and Finished, then ours."""
        self.derive_keys()
        self.set_read(self._server_cipher)
        (fin,) = self.recv_handshake([HS_FINISHED], timeout)
        if fin[1] != self.verify_data(b"server finished"):
            raise DTLSError("server Finished (resumed) does not verify")
        self.transcript += hs_message(HS_FINISHED, fin[1], fin[2])
        recs = [self.make_record(CT_CCS, b"\x01")]
        self.epoch = 1
        self.seq.setdefault(1, 0)
        mine = hs_message(HS_FINISHED, self.verify_data(b"client finished"), self.msg_seq)
        self.msg_seq += 1
        recs.append(self.make_record(CT_HANDSHAKE, mine))
        self.send_raw(b"".join(recs))
        self.established = True

    def resumable(self):
        """What a later Session needs to resume this one: (session_id, master)."""
        return self.session_id, self.master

    def resume_from(self, state):
        """Offers the session ID and master secret of `state` in the next hello."""
        self.offer_session_id, self.master = state

    # -- application data --

    def send_app(self, plain, **kw):
        """Sends one application-data record (epoch 1)."""
        return self.send_record(CT_APPDATA, plain, **kw)

    def recv_app(self, timeout=None):
        """The next application-data plaintext, or None after `timeout`."""
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while not self.app_queue:
            left = deadline - time.time()
            if left <= 0:
                return None
            data = self.recv_datagram(left)
            if data is not None:
                self._take_records(data)
        return self.app_queue.pop(0)

    def request(self, method, path, payload=b"", timeout=None, **kw):
        """Sends one CoAP request (see coap_request) and returns the parsed
        response whose token matches, or None after `timeout`. Empty ACKs
        and notifications of other tokens are skipped; a CON response is
        ACKed."""
        tok = kw.pop("token", None) or os.urandom(8)
        mid = kw.pop("mid", None)
        if mid is None:
            self._mid = (self._mid + 1) & 0xFFFF
            mid = self._mid
        self.send_app(coap_request(method, path, payload, token=tok, mid=mid, **kw))
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        for _ in range(1000):
            left = deadline - time.time()
            if left <= 0:
                return None
            data = self.recv_app(left)
            if data is None:
                return None
            resp = coap_parse(data)
            if resp is None:
                continue
            if resp["type"] == 0:  # CON from the server: ACK it.
                self.send_app(struct.pack("!BBH", 0x60, 0, resp["mid"]))
            if resp["token"] == tok and resp["code"] != 0:
                return resp
        return None


# --- CoAP -------------------------------------------------------------------------

CON, NON, ACK, RST = 0, 1, 2, 3
METHODS = {"GET": 1, "POST": 2, "PUT": 3, "DELETE": 4}
OPT_OBSERVE, OPT_URI_PATH, OPT_CONTENT_FORMAT = 6, 11, 12
OPT_ACCEPT, OPT_BLOCK2, OPT_BLOCK1, OPT_SIZE1 = 17, 23, 27, 60


def coap_uint(v):
    if v == 0:
        return b""
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def coap_block(num, more, szx):
    """A Block1/Block2 option value: NUM, M and SZX (size 2**(SZX+4))."""
    return coap_uint((num << 4) | (8 if more else 0) | szx)


def coap_options(opts):
    """Encodes (number, bytes) pairs, sorted by number, with delta encoding."""
    out = b""
    last = 0
    for num, val in sorted(opts, key=lambda o: o[0]):
        delta = num - last
        last = num

        def ext(v):
            if v < 13:
                return v, b""
            if v < 269:
                return 13, bytes([v - 13])
            return 14, struct.pack("!H", v - 269)

        dn, dx = ext(delta)
        ln, lx = ext(len(val))
        out += bytes([(dn << 4) | ln]) + dx + lx + val
    return out


def coap_request(method, path, payload=b"", token=b"", mid=0, mtype=CON,
                 content_format=None, accept=None, observe=None, block1=None,
                 block2=None, options=()):
    """One CoAP request. `method` is GET/POST/PUT/DELETE or a code number,
    `path` a string split at '/' into Uri-Path options (empty segments
    dropped), block1/block2 (num, more, szx) tuples, `options` more
    (number, bytes) pairs."""
    code = METHODS[method.upper()] if isinstance(method, str) else method
    opts = [(OPT_URI_PATH, seg.encode()) for seg in path.split("/") if seg]
    if content_format is not None:
        opts.append((OPT_CONTENT_FORMAT, coap_uint(content_format)))
    if accept is not None:
        opts.append((OPT_ACCEPT, coap_uint(accept)))
    if observe is not None:
        opts.append((OPT_OBSERVE, coap_uint(observe)))
    if block1 is not None:
        opts.append((OPT_BLOCK1, coap_block(*block1)))
    if block2 is not None:
        opts.append((OPT_BLOCK2, coap_block(*block2)))
    opts.extend(options)
    pdu = struct.pack("!BBH", 0x40 | (mtype << 4) | len(token), code, mid) + token
    pdu += coap_options(opts)
    if payload:
        pdu += b"\xff" + payload
    return pdu


def coap_parse(data):
    """Decodes a CoAP message into a dict (type, code as "2.05", mid, token,
    options as [(number, bytes)], payload, and block1/block2/observe/
    content_format when present), or None when it is not one."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    tkl = data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        return None
    msg = {"type": (data[0] >> 4) & 3, "code": data[1], "mid": struct.unpack("!H", data[2:4])[0],
           "token": data[4:4 + tkl], "options": [], "payload": b""}
    i = 4 + tkl
    num = 0
    while i < len(data):
        if data[i] == 0xFF:
            msg["payload"] = data[i + 1:]
            break
        d, ln = data[i] >> 4, data[i] & 0x0F
        i += 1
        vals = []
        for v in (d, ln):
            if v == 13:
                vals.append(data[i] + 13)
                i += 1
            elif v == 14:
                vals.append(struct.unpack("!H", data[i:i + 2])[0] + 269)
                i += 2
            elif v == 15:
                return None
            else:
                vals.append(v)
        num += vals[0]
        msg["options"].append((num, data[i:i + vals[1]]))
        i += vals[1]
    c = msg["code"]
    msg["code_text"] = "%d.%02d" % (c >> 5, c & 31)
    for num, val in msg["options"]:
        iv = int.from_bytes(val, "big") if val else 0
        if num == OPT_OBSERVE:
            msg["observe"] = iv
        elif num == OPT_CONTENT_FORMAT:
            msg["content_format"] = iv
        elif num in (OPT_BLOCK1, OPT_BLOCK2):
            msg["block1" if num == OPT_BLOCK1 else "block2"] = (iv >> 4, bool(iv & 8), iv & 7)
    return msg


# --- the canary ---------------------------------------------------------------------

class Canary:
    """A thread that sends a CoAP GET on an established session every
    `interval` seconds and counts answered and lost requests (a request is
    lost when no answer came within `timeout`). Use as a context manager,
    or start() and stop(); `answered`, `lost` and `codes` hold the counts."""

    def __init__(self, session, path=".d", interval=0.1, timeout=1.0, max_requests=2000):
        self.session = session
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.max_requests = max_requests
        self.answered = 0
        self.lost = 0
        self.codes = {}
        self.lost_at = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.time()
        for i in range(self.max_requests):
            if self._stop.is_set():
                break
            start = time.time()
            resp = self.session.request("GET", self.path, timeout=self.timeout, accept=50)
            if resp is None:
                self.lost += 1
                self.lost_at.append(round(start - t0, 2))
            else:
                self.answered += 1
                self.codes[resp["code_text"]] = self.codes.get(resp["code_text"], 0) + 1
            left = self.interval - (time.time() - start)
            if left > 0:
                self._stop.wait(left)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(self.timeout + self.interval + 5)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def ok(self):
        """True when it asked at least once and every request was answered 2.xx."""
        good = sum(n for c, n in self.codes.items() if c.startswith("2."))
        return self.answered > 0 and self.lost == 0 and good == self.answered

    def __str__(self):
        return "canary answered=%d lost=%d codes=%r lost_at=%r" % (
            self.answered, self.lost, self.codes, self.lost_at[:10])
