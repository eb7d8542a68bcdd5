#!/usr/bin/env python3
"""A throw-away PKI for the certificate tests, made with `openssl`.

Every key and certificate lives in one temporary directory (PKI.dir),
removed by PKI.cleanup(). The root CA, device keys, CSRs and device
certificates are made with exactly the commands of Golioth's PKI page
(../shared/seeds/003_*.txt), so device certificates are X.509 **v1**
(`openssl x509 -req` with no extensions, as on Debian 12's OpenSSL 3.0):

    openssl ecparam -name prime256v1 -genkey -noout -out ca.key.pem
    openssl req -x509 -new -nodes -key ca.key.pem -sha256 \
        -subj "/CN=Root CA" -days N -out ca.crt.pem
    openssl ecparam -name prime256v1 -genkey -noout -out device.key.pem
    openssl req -new -key device.key.pem -subj "/O=SLUG/CN=ID" -out device.csr.pem
    openssl x509 -req -in device.csr.pem -CA ca.crt.pem -CAkey ca.key.pem \
        -CAcreateserial -out device.crt.pem -days N -sha256

What the recipe cannot make, and how it is made here instead:

- an intermediate CA: `openssl x509 -req` signed by the root with an
  -extfile (basicConstraints=critical,CA:TRUE, keyUsage keyCertSign,cRLSign);
- chosen validity dates (expired, not yet valid): OpenSSL 3.0's `x509`
  has no -not_before/-not_after (they came in 3.4), so `openssl ca
  -startdate/-enddate` with a minimal ca config and no extensions
  section, which also gives a v1 certificate;
- an empty CN: `openssl req` skips an empty "/CN=" in -subj and refuses it
  from a config file (ASN1 minsize 1 for commonName), so that one CSR is
  built with python3-cryptography (its own check bypassed) and then signed
  with the recipe's `openssl x509 -req`;
- a CRL: `openssl ca -revoke` then `openssl ca -gencrl` (a v2 CRL with a
  CRL number, signed by the issuing CA).

`python3 pki.py` builds one of each and checks it (self_check()).
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

OPENSSL = "openssl"


class PKIError(Exception):
    pass


def run(args, cwd=None, timeout=30):
    """Runs a command; returns its stdout (text). Raises PKIError with stderr."""
    p = subprocess.run(args, cwd=cwd, capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise PKIError("%s failed (%d):\n%s%s" % (" ".join(args), p.returncode,
                                                   p.stdout.decode("utf-8", "replace"),
                                                   p.stderr.decode("utf-8", "replace")))
    return p.stdout.decode("utf-8", "replace")


def asn1_time(dt):
    """YYYYMMDDHHMMSSZ (GeneralizedTime), as `openssl ca -startdate` takes it."""
    return dt.astimezone(datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")


class CA:
    """A CA certificate and its key, plus an `openssl ca` database for dated
    certificates and CRLs."""

    def __init__(self, pki, name, cert, key, parent=None):
        self.pki = pki
        self.name = name
        self.cert = cert
        self.key = key
        self.parent = parent
        self.db = os.path.join(pki.dir, name + ".cadb")
        os.makedirs(self.db)
        open(os.path.join(self.db, "index.txt"), "w").close()
        with open(os.path.join(self.db, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(self.db, "crlnumber"), "w") as f:
            f.write("01\n")
        self.conf = os.path.join(self.db, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write(CA_CONF % {"db": self.db, "cert": self.cert, "key": self.key})

    def pem(self):
        with open(self.cert, "rb") as f:
            return f.read()


# No x509_extensions and no copy_extensions: certificates come out v1, like
# the recipe's. policy_any keeps O and CN optional; -preserveDN keeps order.
CA_CONF = """\
[ca]
default_ca = CA_default
[CA_default]
dir = %(db)s
database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir
certificate = %(cert)s
private_key = %(key)s
default_md = sha256
default_days = 7
default_crl_days = 7
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
organizationName = optional
commonName = optional
"""

INTERMEDIATE_EXT = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class Leaf:
    """A device: key, CSR and certificate paths."""

    def __init__(self, name, key, csr, cert, subject):
        self.name = name
        self.key = key
        self.csr = csr
        self.cert = cert
        self.subject = subject

    def pem(self):
        with open(self.cert, "rb") as f:
            return f.read()


class PKI:
    def __init__(self, base=None):
        self.dir = tempfile.mkdtemp(prefix="devgate-pki-", dir=base)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the recipe ---------------------------------------------------------

    def genkey(self, name):
        out = self.path(name + ".key.pem")
        run([OPENSSL, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", out])
        return out

    def root(self, name, cn="Root CA", days=3650):
        """A self-signed root CA, with the recipe's `req -x509`."""
        key = self.genkey(name)
        cert = self.path(name + ".crt.pem")
        run([OPENSSL, "req", "-x509", "-new", "-nodes", "-key", key, "-sha256",
             "-subj", "/CN=%s" % cn, "-days", str(days), "-out", cert])
        return CA(self, name, cert, key)

    def csr(self, name, subj, key=None):
        """The recipe's CSR: `req -new -key K -subj SUBJ`."""
        key = key or self.genkey(name)
        csr = self.path(name + ".csr.pem")
        run([OPENSSL, "req", "-new", "-key", key, "-subj", subj, "-out", csr])
        return key, csr

    def sign(self, ca, csr, out, days=7, extfile=None):
        """The recipe's signing: `x509 -req -CA -CAkey -CAcreateserial -days -sha256`."""
        args = [OPENSSL, "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
                "-CAcreateserial", "-out", out, "-days", str(days), "-sha256"]
        if extfile:
            args += ["-extfile", extfile]
        # -CAcreateserial writes <ca>.srl next to the CA certificate: in self.dir.
        run(args, cwd=self.dir)
        return out

    def device(self, ca, name, subj=None, days=7, slug="acme", cn=None):
        """A device certificate made exactly with the recipe (X.509 v1).
        subj defaults to /O=<slug>/CN=<cn or name>."""
        if subj is None:
            subj = "/O=%s/CN=%s" % (slug, cn if cn is not None else name)
        key, csr = self.csr(name, subj)
        cert = self.sign(ca, csr, self.path(name + ".crt.pem"), days=days)
        return Leaf(name, key, csr, cert, subj)

    # --- beyond the recipe --------------------------------------------------

    def intermediate(self, parent, name, cn=None, days=1825):
        """An intermediate CA signed by `parent` (v3: CA:TRUE, keyCertSign)."""
        key, csr = self.csr(name, "/CN=%s" % (cn or name + " Intermediate CA"))
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write(INTERMEDIATE_EXT)
        cert = self.sign(parent, csr, self.path(name + ".crt.pem"), days=days, extfile=ext)
        return CA(self, name, cert, key, parent=parent)

    def device_dated(self, ca, name, not_before, not_after, subj=None, slug="acme"):
        """A v1 device certificate with chosen dates, via `openssl ca`."""
        if subj is None:
            subj = "/O=%s/CN=%s" % (slug, name)
        key, csr = self.csr(name, subj)
        cert = self.path(name + ".crt.pem")
        run([OPENSSL, "ca", "-batch", "-config", ca.conf, "-in", csr, "-out", cert,
             "-notext", "-preserveDN", "-startdate", asn1_time(not_before),
             "-enddate", asn1_time(not_after)])
        return Leaf(name, key, csr, cert, subj)

    def expired(self, ca, name, **kw):
        now = datetime.datetime.now(datetime.timezone.utc)
        return self.device_dated(ca, name, now - datetime.timedelta(days=30),
                                 now - datetime.timedelta(days=1), **kw)

    def not_yet_valid(self, ca, name, **kw):
        now = datetime.datetime.now(datetime.timezone.utc)
        return self.device_dated(ca, name, now + datetime.timedelta(days=1),
                                 now + datetime.timedelta(days=30), **kw)

    def device_empty_cn(self, ca, name, slug="acme", days=7):
        """Subject O=<slug>, CN="" (a present but empty commonName). The CSR
        is made with python3-cryptography, because `openssl req` drops or
        refuses an empty CN; the signing is the recipe's."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID
        import warnings
        key = self.genkey(name)
        with open(key, "rb") as f:
            k = serialization.load_pem_private_key(f.read(), None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cn = x509.NameAttribute(NameOID.COMMON_NAME, "", _validate=False)
            except TypeError:  # an older cryptography without _validate
                cn = x509.NameAttribute(NameOID.COMMON_NAME, "")
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, slug), cn])
        req = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
            k, hashes.SHA256())
        csr = self.path(name + ".csr.pem")
        with open(csr, "wb") as f:
            f.write(req.public_bytes(serialization.Encoding.PEM))
        cert = self.sign(ca, csr, self.path(name + ".crt.pem"), days=days)
        return Leaf(name, key, csr, cert, "/O=%s/CN=" % slug)

    # --- beyond openssl 3.0's command line: python3-cryptography -------------

    def _load(self, path, key=False):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        with open(path, "rb") as f:
            data = f.read()
        if key:
            return serialization.load_pem_private_key(data, None)
        return x509.load_pem_x509_certificate(data)

    def device_seconds(self, ca, name, seconds, slug="acme", cn=None):
        """A device certificate whose notAfter is `seconds` from now (openssl
        cannot do seconds). The key and CSR are the recipe's; the signing is
        python3-cryptography's, with the CA's key, and no extensions."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        subj = "/O=%s/CN=%s" % (slug, cn or name)
        key, csr_path = self.csr(name, subj)
        with open(csr_path, "rb") as f:
            csr = x509.load_pem_x509_csr(f.read())
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        cert = (x509.CertificateBuilder().subject_name(csr.subject)
                .issuer_name(self._load(ca.cert).subject).public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(seconds=seconds))
                .sign(self._load(ca.key, key=True), hashes.SHA256()))
        out = self.path(name + ".crt.pem")
        with open(out, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        return Leaf(name, key, csr_path, out, subj)

    def device_ext(self, ca, name, subj, ext, days=7):
        """A certificate signed by `ca` with the recipe's `x509 -req`, plus
        the v3 extensions of `ext` (an -extfile's text)."""
        key, csr = self.csr(name, subj)
        extfile = self.path(name + ".ext")
        with open(extfile, "w") as f:
            f.write(ext)
        cert = self.sign(ca, csr, self.path(name + ".crt.pem"), days=days, extfile=extfile)
        return Leaf(name, key, csr, cert, subj)

    def self_made_cas(self, prefix, n, constraints=0):
        """`n` CA certificates (CA:TRUE, keyCertSign) with distinct subjects,
        "issued" by a root that exists nowhere, and one shared key, as PEM
        bytes; and that key. What a device
        could make by the thousand to send along its chain. `constraints`
        permitted DNS subtrees (nameConstraints) make each weigh more in a
        store that keeps it."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        pems = []
        for i in range(n):
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "%s %d" % (prefix, i))])
            # Issued by a root nobody has (not self-signed: wolfSSL keeps those
            # from a peer's chain only when its verify callback vouches for them).
            issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "%s root" % prefix)])
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(days=1))
                    .not_valid_after(now + datetime.timedelta(days=30))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                    .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                 False, False), True))
            if constraints:
                cert = cert.add_extension(x509.NameConstraints(
                    permitted_subtrees=[x509.DNSName("%s.n%d-%d.devices.example" % ("x" * 40, i, j))
                                        for j in range(constraints)],
                    excluded_subtrees=None), True)
            cert = cert.sign(key, hashes.SHA256())
            pems.append(cert.public_bytes(serialization.Encoding.PEM))
        return pems, key

    def leaf_signed_by(self, ca_pem, ca_key, name, slug="acme"):
        """A v3 device certificate /O=<slug>/CN=<name> signed by a CA given as
        PEM bytes and key (one of self_made_cas)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        subj = "/O=%s/CN=%s" % (slug, name)
        key, csr_path = self.csr(name, subj)
        with open(csr_path, "rb") as f:
            csr = x509.load_pem_x509_csr(f.read())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(csr.subject)
                .issuer_name(x509.load_pem_x509_certificate(ca_pem).subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=7))
                .sign(ca_key, hashes.SHA256()))
        out = self.path(name + ".crt.pem")
        with open(out, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        return Leaf(name, key, csr_path, out, subj)

    def crl_dated(self, ca, last_update, next_update, revoked=(), name=None):
        """A CRL of `ca` with chosen dates (`openssl ca -gencrl` always starts
        now), listing `revoked` leaves, signed with the CA's key. Returns PEM bytes."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        b = (x509.CertificateRevocationListBuilder().issuer_name(self._load(ca.cert).subject)
             .last_update(last_update).next_update(next_update))
        for leaf in revoked:
            serial = self._load(leaf.cert).serial_number
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(last_update).build())
        crl = b.sign(self._load(ca.key, key=True), hashes.SHA256())
        pem = crl.public_bytes(serialization.Encoding.PEM)
        with open(self.path((name or ca.name) + ".dated.crl.pem"), "wb") as f:
            f.write(pem)
        return pem

    def revoke(self, ca, leaf):
        """Marks `leaf` revoked in `ca`'s database (adds it if `ca` never saw it)."""
        run([OPENSSL, "ca", "-batch", "-config", ca.conf, "-revoke", leaf.cert,
             "-crl_reason", "keyCompromise"])

    def crl(self, ca, name=None):
        """A CRL of `ca` listing every certificate revoked so far. Returns its path."""
        out = self.path((name or ca.name) + ".crl.pem")
        run([OPENSSL, "ca", "-batch", "-config", ca.conf, "-gencrl", "-crldays", "7",
             "-out", out])
        return out

    def bundle(self, name, *paths):
        """Concatenates PEM files (a chain for -cert_chain, or a CA file)."""
        out = self.path(name)
        with open(out, "wb") as f:
            for p in paths:
                with open(p, "rb") as g:
                    f.write(g.read())
        return out


# --- inspection --------------------------------------------------------------

def text(cert):
    return run([OPENSSL, "x509", "-in", cert, "-noout", "-text"])


def version(cert):
    m = re.search(r"Version: (\d+)", text(cert))
    return int(m.group(1)) if m else None


def subject(cert):
    """The subject as openssl prints it with -nameopt compat: /O=acme/CN=dev1."""
    out = run([OPENSSL, "x509", "-in", cert, "-noout", "-subject", "-nameopt", "compat"])
    return out.strip()[len("subject="):]


def verify(cafile, cert, untrusted=None, crl=None):
    """`openssl verify`; returns (ok, output)."""
    args = [OPENSSL, "verify", "-CAfile", cafile]
    if untrusted:
        args += ["-untrusted", untrusted]
    if crl:
        args += ["-crl_check", "-CRLfile", crl]
    p = subprocess.run(args + [cert], capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    return p.returncode == 0 and ": OK" in out, out


def self_check(report=print):
    """Makes one of everything and checks it is what the tests claim it is.
    Raises AssertionError on the first mismatch."""
    pki = PKI()
    try:
        root = pki.root("root")
        t = text(root.cert)
        assert "Version: 3" in t and "CA:TRUE" in t, t
        assert subject(root.cert) == "/CN=Root CA", subject(root.cert)

        dev = pki.device(root, "dev1")
        assert version(dev.cert) == 1, text(dev.cert)
        assert "X509v3" not in text(dev.cert), text(dev.cert)
        assert subject(dev.cert) == "/O=acme/CN=dev1", subject(dev.cert)
        ok, out = verify(root.cert, dev.cert)
        assert ok, out
        report("pki: recipe leaf is X.509 v1, /O=acme/CN=dev1, verifies against the root")

        inter = pki.intermediate(root, "inter")
        t = text(inter.cert)
        assert "Version: 3" in t and re.search(r"Basic Constraints: critical\s+CA:TRUE", t), t
        assert re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign", t), t
        ok, out = verify(root.cert, inter.cert)
        assert ok, out
        idev = pki.device(inter, "idev")
        assert version(idev.cert) == 1
        ok, out = verify(root.cert, idev.cert, untrusted=inter.cert)
        assert ok, out
        ok, out = verify(root.cert, idev.cert)
        assert not ok, "a leaf under the intermediate verified without it: " + out
        ok, out = verify(pki.bundle("root+inter.pem", root.cert, inter.cert), idev.cert)
        assert ok, out
        report("pki: intermediate is v3 CA:TRUE critical, keyCertSign+cRLSign; "
               "its v1 leaf verifies only with the intermediate")

        other = pki.root("other", cn="Root CA")
        ok, out = verify(other.cert, dev.cert)
        assert not ok, out
        report("pki: a second root with the same CN does not verify the first root's leaf")

        exp = pki.expired(root, "old")
        assert version(exp.cert) == 1, text(exp.cert)
        ok, out = verify(root.cert, exp.cert)
        assert not ok and "certificate has expired" in out, out
        nyv = pki.not_yet_valid(root, "future")
        assert version(nyv.cert) == 1, text(nyv.cert)
        ok, out = verify(root.cert, nyv.cert)
        assert not ok and "certificate is not yet valid" in out, out
        report("pki: expired and not-yet-valid v1 leaves (openssl ca -startdate/-enddate) "
               "fail openssl verify for exactly that")

        noo = pki.device(root, "noo", subj="/CN=noo")
        assert subject(noo.cert) == "/CN=noo"
        two = pki.device(root, "twoo", subj="/O=acme/O=beta/CN=twoo")
        assert subject(two.cert) == "/O=acme/O=beta/CN=twoo", subject(two.cert)
        nocn = pki.device(root, "nocn", subj="/O=acme")
        assert subject(nocn.cert) == "/O=acme"
        empty = pki.device_empty_cn(root, "emptycn")
        assert version(empty.cert) == 1
        asn = run([OPENSSL, "asn1parse", "-in", empty.cert])
        assert re.search(r"commonName\n.*l=\s*0 prim: (UTF8STRING|PRINTABLESTRING)", asn), asn
        for leaf in (noo, two, nocn, empty):
            ok, out = verify(root.cert, leaf.cert)
            assert ok, out
        report("pki: subjects /CN=noo, /O=acme/O=beta/CN=twoo, /O=acme (no CN) and "
               "/O=acme/CN= (empty CN, 0-length UTF8String) are v1 and chain-valid")

        rev = pki.device(root, "revoked")
        pki.revoke(root, rev)
        crl = pki.crl(root)
        crltext = run([OPENSSL, "crl", "-in", crl, "-noout", "-text"])
        serial = run([OPENSSL, "x509", "-in", rev.cert, "-noout", "-serial"]).strip().split("=")[1]
        assert serial.upper().lstrip("0") in crltext.replace(":", "").upper(), crltext
        ok, out = verify(root.cert, rev.cert, crl=crl)
        assert not ok and "certificate revoked" in out, out
        ok, out = verify(root.cert, dev.cert, crl=crl)
        assert ok, out
        report("pki: CRL from openssl ca -gencrl revokes its leaf (openssl verify "
               "-crl_check) and not the others")
    finally:
        pki.cleanup()


if __name__ == "__main__":
    try:
        self_check()
    except (AssertionError, PKIError) as e:
        print("pki self-check FAILED: %s" % e)
        sys.exit(1)
    print("pki self-check ok")
