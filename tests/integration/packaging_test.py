#!/usr/bin/env python3
"""Integration tests of how devgate is packaged: the systemd unit, `make
install`, and the Docker image, whose steps live in scripts/ so they run
here without a Docker engine.

- The unit passes `systemd-analyze verify` (on a copy whose ExecStart names
  the built binary, since verify refuses a command that does not exist) and
  has Type=notify and the hardening; its exposure score stays low; the
  default config keeps its files where the sandbox lets devgate write.
- `make install DESTDIR=...` lays out the binary, the unit, the SQL and the
  default config with the right modes, and a second run keeps an edited
  config.
- The Dockerfile's stages, base image, user, port, volumes, health check
  and stop signal; the build context (after .dockerignore) holds what the
  Dockerfile copies and builds with the builder-stage script; the
  runtime-stage packages install on a bare system and provide every
  library the binary links.

Usage: packaging_test.py BUILD_DIR [TEST_NAME ...]
Prints one line per test and a final "integration: N passed, N failed".
"""
import filecmp
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(TOP, "build"))
DEVGATE = os.path.join(BUILD, "devgate")
UNIT = os.path.join(TOP, "systemd", "devgate.service")
DOCKERFILE = os.path.join(TOP, "Dockerfile")
RUNTIME_STAGE = os.path.join(TOP, "scripts", "docker-runtime-stage.sh")
BUILD_STAGE = os.path.join(TOP, "scripts", "docker-build-stage.sh")
DEFAULT_CONFIG = os.path.join(TOP, "conf", "install", "devgate.json")

# Libraries a sanitizer build links that a release build (the one the image
# ships) does not.
SANITIZER_LIBS = re.compile(r"^lib(asan|ubsan|lsan|tsan|hwasan)\.so")


def run(args, timeout=120, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    return p.returncode, p.stdout + p.stderr


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------- systemd


def parse_unit(text):
    """{section: [(key, value), ...]}, in order, continuation lines joined."""
    sections = {}
    cur = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], [])
            continue
        assert cur is not None and "=" in line, "unit: stray line %r" % line
        k, v = line.split("=", 1)
        cur.append((k.strip(), v.strip()))
    return sections


def unit_values(sections, section, key):
    return [v for k, v in sections.get(section, []) if k == key]


def verify_unit(path):
    """Runs systemd-analyze verify; returns the lines it printed about this
    unit. verify exits 0 even on an unknown key or a bad value (it logs and
    ignores them), so a unit passes only when nothing at all is said about
    it."""
    rc, out = run(["systemd-analyze", "verify", path])
    name = os.path.basename(path)
    about = [ln for ln in out.splitlines() if name in ln or path in ln]
    if rc != 0 and not about:
        about = ["exit status %d: %s" % (rc, out.strip())]
    return about


def unit_copy(tmp, text, binary):
    """Writes the unit with ExecStart naming `binary`, for verify."""
    text, n = re.subn(r"^ExecStart=\S+", "ExecStart=" + binary, text, flags=re.M)
    assert n == 1, "one ExecStart expected"
    path = os.path.join(tmp, "devgate.service")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_unit_verifies():
    assert shutil.which("systemd-analyze"), "systemd-analyze missing (scripts/deps.sh installs systemd)"
    text = open(UNIT).read()
    with tempfile.TemporaryDirectory(prefix="devgate-unit-") as tmp:
        bad = verify_unit(unit_copy(tmp, text, DEVGATE))
        assert not bad, "systemd-analyze verify:\n" + "\n".join(bad)
        # The check above sees what verify objects to: a bad value, an
        # unknown key and a missing command are each caught.
        for label, broken, binary in (
            ("bad Type", text.replace("Type=notify", "Type=notified"), DEVGATE),
            ("unknown key", text.replace("[Service]\n", "[Service]\nWatchdogSecs=30s\n"), DEVGATE),
            ("missing binary", text, os.path.join(tmp, "no-such-devgate")),
        ):
            assert broken != text or label == "missing binary", label
            assert verify_unit(unit_copy(tmp, broken, binary)), "verify missed a " + label


# What the unit must say, key by key (all values of a key, in order).
UNIT_SERVICE = {
    "Type": ["notify"],
    "NotifyAccess": ["main"],
    "ExecStart": ["/usr/local/bin/devgate serve -c /etc/devgate/devgate.json"],
    "ExecReload": ["/bin/kill -HUP $MAINPID"],
    "Restart": ["on-failure"],
    "WatchdogSec": ["30s"],
    "TimeoutStopSec": ["10s"],
    "DynamicUser": ["yes"],
    "StateDirectory": ["devgate"],
    "ConfigurationDirectory": ["devgate"],
    "NoNewPrivileges": ["yes"],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectControlGroups": ["yes"],
    "RestrictNamespaces": ["yes"],
    "RestrictRealtime": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "SystemCallArchitectures": ["native"],
    "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"],
    "CapabilityBoundingSet": [""],
}


def test_unit_settings():
    u = parse_unit(open(UNIT).read())
    for key, want in UNIT_SERVICE.items():
        got = unit_values(u, "Service", key)
        assert got == want, "[Service] %s: %r, want %r" % (key, got, want)
    filters = unit_values(u, "Service", "SystemCallFilter")
    assert filters and filters[0] == "@system-service", "SystemCallFilter: %r" % filters
    nofile = unit_values(u, "Service", "LimitNOFILE")
    assert nofile and int(nofile[-1]) >= 262144, "LimitNOFILE: %r" % nofile
    assert "multi-user.target" in unit_values(u, "Install", "WantedBy")
    # A regression of the hardening raises systemd's exposure score.
    with tempfile.TemporaryDirectory(prefix="devgate-unit-") as tmp:
        path = unit_copy(tmp, open(UNIT).read(), DEVGATE)
        rc, out = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", path])
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert rc == 0 and m, "systemd-analyze security: %s" % out[-2000:]
        assert float(m.group(1)) <= 2.0, "exposure %s" % m.group(1)


def test_default_config_fits_sandbox():
    """The default config's files are where ProtectSystem=strict lets
    devgate write (the StateDirectory) or read (the ConfigurationDirectory),
    it is the config ExecStart names, and devgate accepts it."""
    cfg = json.load(open(DEFAULT_CONFIG))
    assert cfg["listen"] == ["0.0.0.0:5684"], cfg
    assert cfg["database"] == "/var/lib/devgate/devgate.db", cfg
    assert cfg["projects_dir"] == "/etc/devgate/projects", cfg
    assert cfg["log"] == {"level": "info", "format": "text"}, cfg
    u = parse_unit(open(UNIT).read())
    state = "/var/lib/" + unit_values(u, "Service", "StateDirectory")[0] + "/"
    conf = "/etc/" + unit_values(u, "Service", "ConfigurationDirectory")[0] + "/"
    assert cfg["database"].startswith(state), (cfg["database"], state)
    assert cfg["projects_dir"].startswith(conf), (cfg["projects_dir"], conf)
    assert unit_values(u, "Service", "ExecStart")[0].endswith(" -c " + conf + "devgate.json")
    with tempfile.TemporaryDirectory(prefix="devgate-conf-") as tmp:
        text = open(DEFAULT_CONFIG).read().replace("/var/lib/devgate", tmp + "/var")
        text = text.replace("/etc/devgate", tmp)
        os.mkdir(os.path.join(tmp, "projects"))
        path = os.path.join(tmp, "devgate.json")
        with open(path, "w") as f:
            f.write(text)
        rc, out = run([DEVGATE, "check-config", "-c", path], timeout=30)
        assert rc == 0, out


# ---------------------------------------------------------------- install


def make_install(destdir, *extra):
    # -o: install what BUILD holds, never rebuild it from here.
    args = ["make", "--no-print-directory", "-C", TOP, "install", "BUILD=" + BUILD,
            "-o", os.path.join(BUILD, "devgate"), "DESTDIR=" + destdir] + list(extra)
    rc, out = run(args, env=dict(os.environ, MAKEFLAGS=""))
    assert rc == 0, "%s:\n%s" % (" ".join(args), out)
    return out


def check_layout(root, prefix, sysconfdir="/etc", unitdir="/lib/systemd/system"):
    files = {
        prefix + "/bin/devgate": 0o755,
        unitdir + "/devgate.service": 0o644,
        sysconfdir + "/devgate/devgate.json": 0o644,
        sysconfdir + "/devgate/projects/README.md": 0o644,
    }
    sqls = sorted(f for f in os.listdir(os.path.join(TOP, "sql")) if f.endswith(".sql"))
    assert sqls, "no sql/*.sql"
    for f in sqls:
        files[prefix + "/share/devgate/sql/" + f] = 0o644
    for rel, want in files.items():
        path = root + rel
        assert os.path.isfile(path), "missing " + rel
        assert mode(path) == want, "%s: mode %o, want %o" % (rel, mode(path), want)
    for d in (prefix + "/bin", unitdir, prefix + "/share/devgate/sql",
              sysconfdir + "/devgate", sysconfdir + "/devgate/projects"):
        assert mode(root + d) == 0o755, "%s: mode %o" % (d, mode(root + d))
    assert sorted(os.listdir(root + sysconfdir + "/devgate/projects")) == ["README.md"]
    assert filecmp.cmp(root + prefix + "/bin/devgate", DEVGATE, shallow=False)
    for f in sqls:
        assert filecmp.cmp(root + prefix + "/share/devgate/sql/" + f,
                           os.path.join(TOP, "sql", f), shallow=False), f
    assert filecmp.cmp(root + sysconfdir + "/devgate/projects/README.md",
                       os.path.join(TOP, "conf", "install", "projects-README.md"), shallow=False)
    # Nothing else is installed.
    listed = set(files)
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            rel = os.path.join(dirpath, n)[len(root):]
            assert rel in listed, "unexpected file " + rel
    # The unit names the installed binary and config, and still verifies.
    unit = open(root + unitdir + "/devgate.service").read()
    want = "ExecStart=%s/bin/devgate serve -c %s/devgate/devgate.json" % (prefix, sysconfdir)
    assert re.search("^" + re.escape(want) + "$", unit, re.M), unit
    with tempfile.TemporaryDirectory(prefix="devgate-unit-") as tmp:
        bad = verify_unit(unit_copy(tmp, unit, root + prefix + "/bin/devgate"))
        assert not bad, "installed unit:\n" + "\n".join(bad)
    return unit


def test_make_install():
    with tempfile.TemporaryDirectory(prefix="devgate-destdir-") as root:
        make_install(root, "PREFIX=/usr/local")
        unit = check_layout(root, "/usr/local")
        assert unit == open(UNIT).read(), "the default PREFIX changed the unit"
        conf = root + "/etc/devgate/devgate.json"
        readme = root + "/etc/devgate/projects/README.md"
        assert filecmp.cmp(conf, DEFAULT_CONFIG, shallow=False)
        # An operator's edits survive a second install; the rest is renewed.
        edited = open(conf).read().replace('"level": "info"', '"level": "debug"')
        assert edited != open(conf).read()
        with open(conf, "w") as f:
            f.write(edited)
        with open(readme, "a") as f:
            f.write("\nlocal notes\n")
        os.chmod(root + "/usr/local/bin/devgate", 0o700)
        out = make_install(root, "PREFIX=/usr/local")
        assert "keeping the existing" in out, out
        assert open(conf).read() == edited, "devgate.json was overwritten"
        assert open(readme).read().endswith("\nlocal notes\n"), "README.md was overwritten"
        assert mode(root + "/usr/local/bin/devgate") == 0o755


def test_make_install_dirs():
    """Other PREFIX, SYSCONFDIR and UNITDIR land where they say, the unit and
    the config follow them."""
    with tempfile.TemporaryDirectory(prefix="devgate-destdir-") as root:
        make_install(root, "PREFIX=/opt/devgate", "SYSCONFDIR=/opt/devgate/etc",
                     "UNITDIR=/usr/lib/systemd/system")
        check_layout(root, "/opt/devgate", "/opt/devgate/etc", "/usr/lib/systemd/system")
        cfg = json.load(open(root + "/opt/devgate/etc/devgate/devgate.json"))
        assert cfg["projects_dir"] == "/opt/devgate/etc/devgate/projects", cfg


# ---------------------------------------------------------------- Docker


def parse_dockerfile(text):
    """[(instruction, arguments)], continuation lines joined, comments and
    parser directives dropped."""
    out = []
    cur = ""
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not cur):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        if cur.strip():
            ins, _, args = cur.strip().partition(" ")
            out.append((ins.upper(), args.strip()))
        cur = ""
    assert not cur.strip(), "Dockerfile ends in a continuation"
    return out


def stages(instructions):
    """[{"base", "name", "body": [(ins, args)]}] per FROM."""
    res = []
    for ins, args in instructions:
        if ins == "FROM":
            m = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            assert m, "FROM " + args
            res.append({"base": m.group(1), "name": m.group(2), "body": []})
        else:
            assert res, ins + " before FROM"
            res[-1]["body"].append((ins, args))
    return res


def exec_form(args):
    v = json.loads(args)
    assert isinstance(v, list) and all(isinstance(x, str) for x in v), args
    return v


def copy_sources(args):
    """(flags, sources, destination) of a COPY."""
    words = exec_form(args) if args.startswith("[") else shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    rest = [w for w in words if not w.startswith("--")]
    return flags, rest[:-1], rest[-1]


def test_dockerfile():
    st = stages(parse_dockerfile(open(DOCKERFILE).read()))
    assert len(st) == 2, "stages: %r" % [s["name"] for s in st]
    build, rt = st
    for s in st:
        assert s["base"] == "debian:bookworm-slim", s["base"]
    assert build["name"], "the builder stage has no name"

    # Builder: its RUN steps are the builder-stage script.
    runs = [a for i, a in build["body"] if i == "RUN"]
    assert runs and all(r.startswith("scripts/docker-build-stage.sh") for r in runs), runs
    assert "scripts/docker-build-stage.sh" == runs[-1], "the last RUN builds everything"
    script = open(BUILD_STAGE).read()
    assert re.search(r"^scripts/deps\.sh$", script, re.M), "the builder does not run deps.sh"
    assert re.search(r"^make\b", script, re.M), "the builder does not run make"
    wanted = re.search(r"for p in ([^;]*); do", script)
    assert wanted and wanted.group(1).split() == ["make", "git"], "builder packages"

    # Runtime: the runtime-stage script, the binary from the builder, the
    # default config; no build context beyond those.
    body = rt["body"]
    runs = [a for i, a in body if i == "RUN"]
    copies = [copy_sources(a) for i, a in body if i in ("COPY", "ADD")]
    assert not [a for i, a in body if i == "ADD"], "ADD in the runtime stage"
    from_build = [(s, d) for f, s, d in copies if "--from=" + build["name"] in f]
    assert from_build == [(["/src/build/devgate"], "/usr/local/bin/devgate")], from_build
    local = {s[0]: d for f, s, d in copies if not any(x.startswith("--from=") for x in f)}
    assert local.get("conf/install/devgate.json") == "/etc/devgate/devgate.json", local
    assert local.get("conf/install/projects-README.md") == "/etc/devgate/projects/README.md"
    assert runs == [local.get("scripts/docker-runtime-stage.sh")], \
        "the runtime stage's RUN is not the runtime-stage script: %r" % runs
    assert set(local) == {"scripts/docker-runtime-stage.sh", "conf/install/devgate.json",
                          "conf/install/projects-README.md"}, local

    def one(ins):
        v = [a for i, a in body if i == ins]
        assert len(v) == 1, "%s: %r" % (ins, v)
        return v[0]

    user = one("USER")
    assert user.split(":")[0] not in ("root", "0") and user == "devgate", user
    assert re.search(r"^useradd --system\b.* devgate$",
                     open(RUNTIME_STAGE).read().replace("\\\n\t", ""), re.M), \
        "the runtime stage makes no system user devgate"
    assert one("EXPOSE").split() == ["5684/udp"]
    assert exec_form(one("VOLUME")) == ["/etc/devgate", "/var/lib/devgate"]
    hc = one("HEALTHCHECK")
    m = re.match(r"^((?:--\S+\s+)*)CMD\s+(\[.*\])$", hc)
    assert m, "HEALTHCHECK " + hc
    assert exec_form(m.group(2)) == ["devgate", "health", "-c", "/etc/devgate/devgate.json"]
    assert one("STOPSIGNAL") == "SIGTERM"
    ep = exec_form(one("ENTRYPOINT"))
    assert os.path.basename(ep[0]) == "devgate" and ep[1:] == [
        "serve", "-c", "/etc/devgate/devgate.json"], ep
    assert not [a for i, a in body if i == "CMD"], "CMD would be appended to the entrypoint"


def dockerignore_patterns():
    """.dockerignore as compiled regexes (with their ! flag): * and ? stay in
    one path element, ** spans several, a match excludes what is below."""
    pats = []
    for line in open(os.path.join(TOP, ".dockerignore")).read().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip("/"))
        rx = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif line.startswith("**", i):
                rx += ".*"
                i += 2
            elif line[i] == "*":
                rx += "[^/]*"
                i += 1
            elif line[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(line[i])
                i += 1
        pats.append((re.compile("^" + rx + "(?:/.*)?$"), neg))
    return pats


def ignored(rel, pats):
    out = False
    for rx, neg in pats:
        if rx.match(rel):
            out = not neg
    return out


def build_context(dest):
    """Copies the tree as `docker build` would send it: .dockerignore
    applied. Returns the relative paths left out at the top."""
    pats = dockerignore_patterns()
    left_out = set()
    for dirpath, dirs, names in os.walk(TOP):
        rel_dir = os.path.relpath(dirpath, TOP)
        for n in list(dirs) + names:
            rel = os.path.normpath(os.path.join(rel_dir, n))
            src = os.path.join(dirpath, n)
            if ignored(rel, pats):
                left_out.add(rel)
                if n in dirs:
                    dirs.remove(n)
                continue
            dst = os.path.join(dest, rel)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
                if n in dirs:
                    dirs.remove(n)
            elif n in dirs:
                os.makedirs(dst, exist_ok=True)
            else:
                shutil.copy2(src, dst)
    return left_out


def test_docker_context_builds():
    """The context after .dockerignore has what the Dockerfile copies and
    nothing of the host's builds, and the builder-stage script (what the
    builder's RUN does) builds a working devgate in it, natively."""
    with tempfile.TemporaryDirectory(prefix="devgate-context-") as ctx:
        left_out = build_context(ctx)
        for d in ("build", "third_party", "var", ".git"):
            if os.path.exists(os.path.join(TOP, d)):
                assert d in left_out, d + " would be sent to the builder"
        # What the repository tracks is source: none of it may be left out
        # (a build without sql/ would still link, with no schema).
        rc, out = run(["git", "-C", TOP, "ls-files", "-z"])
        if rc == 0:
            lost = [f for f in out.split("\0") if f and os.path.lexists(os.path.join(TOP, f))
                    and not os.path.lexists(os.path.join(ctx, f))]
            assert not lost, "tracked files left out of the context: %s" % lost[:20]
        for s in stages(parse_dockerfile(open(DOCKERFILE).read())):
            for ins, args in s["body"]:
                if ins != "COPY":
                    continue
                flags, srcs, _dst = copy_sources(args)
                if any(f.startswith("--from=") for f in flags):
                    continue
                for src in srcs:
                    assert os.path.exists(os.path.join(ctx, src)), "COPY %s: not in the context" % src
        env = dict(os.environ)
        wolfssl = os.path.join(TOP, "third_party", "wolfssl")
        env.update(DG_WOLFSSL_PREFIX=wolfssl, WOLFSSL=wolfssl, MAKEFLAGS="")
        rc, out = run([os.path.join(ctx, "scripts", "docker-build-stage.sh")],
                      timeout=900, env=env, cwd="/")
        assert rc == 0, "docker-build-stage.sh:\n" + out[-4000:]
        binary = os.path.join(ctx, "build", "devgate")
        rc, out = run([binary, "--version"], timeout=10)
        assert rc == 0 and out.startswith("devgate "), out
        check_runtime_libs(binary)


def simulate_runtime_packages():
    """(listed packages, every package a bare image installs for them)."""
    rc, out = run([RUNTIME_STAGE, "--list"])
    assert rc == 0, out
    listed = out.split()
    rc, out = run([RUNTIME_STAGE, "--simulate"], timeout=120)
    assert rc == 0, "apt-get install --simulate:\n" + out[-3000:]
    inst = set(re.findall(r"^Inst (\S+) ", out, re.M))
    assert inst, "no Inst lines (empty package index? run apt-get update):\n" + out[-2000:]
    missing = [p for p in listed if p not in inst]
    assert not missing, "not installable: %s" % missing
    return listed, inst


def owners(paths):
    """{path: the Debian package that ships it}, for the paths dpkg knows
    (usrmerge: a library may be listed under /lib or /usr/lib)."""
    cands = {}
    for path in paths:
        for p in (path, os.path.realpath(path)):
            cands.setdefault(p, path)
            if re.match(r"^/(lib|lib64|bin|sbin)/", p):
                cands.setdefault("/usr" + p, path)
            elif p.startswith("/usr/"):
                cands.setdefault(p[4:], path)
    # dpkg-query exits 1 when some path is unknown; the others are printed.
    _rc, out = run(["dpkg-query", "-S"] + sorted(cands), timeout=60)
    found = {}
    for line in out.splitlines():
        pkgs, _, f = line.rpartition(": ")
        if f in cands and not line.startswith("diversion"):
            found.setdefault(cands[f], pkgs.split(",")[0].strip().split(":")[0])
    return found


def ldd(path):
    """{library file name: resolved path} for what ldd lists."""
    rc, out = run(["ldd", path])
    assert rc == 0, "ldd %s: %s" % (path, out)
    libs = {}
    for line in out.splitlines():
        if "statically linked" in line:
            continue
        m = re.match(r"^\s*(\S+)(?: => (\S+))? \(0x", line)
        assert m, "ldd %s: %s" % (path, line)
        name, where = m.group(1), m.group(2) or m.group(1)
        assert where != "not", "ldd %s: %s not found" % (path, name)
        if not name.startswith("linux-vdso"):
            libs[os.path.basename(name)] = where
    return libs


_SIMULATED = []


def check_runtime_libs(binary):
    """Every library `binary` links, directly or not, comes from the
    runtime-stage packages or their dependencies; each library it names
    itself (NEEDED) from a package listed there (or libc6), and each listed
    package provides one of those."""
    if not _SIMULATED:
        _SIMULATED.append(simulate_runtime_packages())
    listed, inst = _SIMULATED[0]
    rc, out = run(["readelf", "-d", binary])
    assert rc == 0, out
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    needed = [n for n in needed if not SANITIZER_LIBS.match(n)]
    # What the binary needs, and what those need in turn (a sanitizer
    # runtime and what it alone pulls in are left out: the image ships a
    # release build).
    resolved = ldd(binary)
    libs = {}
    for n in needed:
        assert n in resolved, "%s: NEEDED but not resolved by ldd" % n
        libs[n] = resolved[n]
        if n.startswith("ld-linux"):
            continue
        libs.update(ldd(resolved[n]))
    assert libs, out
    problems = []
    providers = set()
    pkgs = owners(libs.values())
    for name, path in sorted(libs.items()):
        pkg = pkgs.get(path)
        if pkg is None:
            problems.append("%s (%s): no package ships it" % (name, path))
            continue
        if pkg not in inst:
            problems.append("%s: from %s, which the runtime stage does not install" % (name, pkg))
        if name in needed:
            providers.add(pkg)
            if pkg not in listed and pkg != "libc6":
                problems.append("%s: linked directly, but its package %s is not listed" % (name, pkg))
    unused = [p for p in listed if p not in providers]
    if unused:
        problems.append("listed but no library of %s is linked: %s" % (binary, unused))
    assert not problems, "\n".join(problems)


def test_runtime_packages():
    check_runtime_libs(DEVGATE)


# ---------------------------------------------------------------- scripts/deps.sh

DEPS = os.path.join(TOP, "scripts", "deps.sh")

# Every program the tests, the unit and the scripts call, beyond the build
# tools: each must come from a package deps.sh lists, or from one a Debian 12
# minbase has (Essential or Priority required).
TOOLS = ["kill", "ps", "ip", "curl", "openssl", "coap-client-openssl", "coap-client-gnutls",
         "systemd-analyze", "sqlite3", "chattr", "python3", "dpkg-source", "readelf", "ldd",
         "git", "make", "cmp", "od", "md5sum", "find", "sed", "awk"]


def deps_packages():
    with open(DEPS) as f:
        text = f.read()
    m = re.search(r"^packages=\((.*?)^\)", text, re.M | re.S)
    assert m, "no packages=( ... ) in deps.sh"
    return set(m.group(1).split())


def owner(tool):
    """The package that owns `tool` in the system's directories (the one a
    package installs; /bin/kill is the unit's)."""
    path = "/bin/kill" if tool == "kill" else shutil.which(
        tool, path="/usr/bin:/usr/sbin:/bin:/sbin")
    assert path, "%s is not installed" % tool
    cands = {path, os.path.realpath(path)}
    for p in list(cands):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")):
            if p.startswith(a):
                cands.add(b + p[len(a):])
            elif p.startswith(b):
                cands.add(a + p[len(b):])
    for c in sorted(cands):
        rc, out = run(["dpkg-query", "-S", c], timeout=30)
        if rc == 0:
            return out.split(":", 1)[0].split(",")[0].strip()
    raise AssertionError("no package owns %s (%s)" % (tool, sorted(cands)))


def in_minbase(pkg):
    rc, out = run(["dpkg-query", "-W", "-f", "${Essential} ${Priority}", pkg], timeout=30)
    return rc == 0 and (out.startswith("yes") or out.split()[-1:] == ["required"])


def test_deps_packages_cover_tools():
    listed = deps_packages()
    # What the starting point has (minbase + git + make), and what listed
    # packages bring: build-essential binutils (readelf), python3 its
    # python3-minimal.
    implied = {"git", "make", "binutils", "binutils-x86-64-linux-gnu",
               "binutils-aarch64-linux-gnu", "python3-minimal"}
    problems = []
    for tool in TOOLS:
        pkg = owner(tool)
        if pkg not in listed and pkg not in implied and not in_minbase(pkg):
            problems.append("%s comes from %s, which deps.sh does not install and a minbase "
                            "lacks" % (tool, pkg))
    assert not problems, "\n".join(problems)


def print_archive(etc):
    env = dict(os.environ, DG_APT_ETC=etc)
    env.pop("DG_DEBIAN_ARCHIVE", None)
    p = subprocess.run([DEPS, "--print-archive"], capture_output=True, text=True, timeout=30,
                       env=env)
    return p.returncode, p.stdout.strip(), p.stderr


def fake_etc(files):
    etc = tempfile.mkdtemp(prefix="devgate-apt-")
    os.makedirs(os.path.join(etc, "sources.list.d"))
    for rel, text in files.items():
        with open(os.path.join(etc, rel), "w") as f:
            f.write(text)
    return etc


def test_deps_archive_from_host():
    """deps.sh --print-archive names the host's own Debian archive (a mirror,
    a proxy), never its -security source, a disabled one or a third-party
    repository; with none it fails and says how to set one."""
    cases = [
        ({"sources.list.d/debian.sources":
          "Types: deb\n# a comment\nURIs: http://security.example/debian-security\n"
          "Suites: bookworm-security\nComponents: main\n\n"
          "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
          "Components: main\nEnabled: no\n\n"
          "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
          "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"},
         "http://mirror.example/debian"),
        ({"sources.list":
          "# deb http://commented.example/debian bookworm main\n"
          "deb http://deb.debian.org/debian-security bookworm-security main\n"
          "deb-src http://src.example/debian bookworm main\n"
          "deb [arch=amd64 signed-by=/x.gpg] https://download.docker.com/linux/debian bookworm stable\n"
          "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
          "http://proxy.example:3142/debian bookworm main\n"},
         "http://proxy.example:3142/debian"),
        ({"sources.list.d/nodesource.list": "deb https://deb.nodesource.com/node_20.x nodistro main\n",
          "sources.list.d/z.sources": "Types: deb deb-src\nURIs: https://mirror2.example/debian/\n"
                                      "Suites: stable-updates\nComponents: main"},
         "https://mirror2.example/debian/"),
    ]
    for files, want in cases:
        etc = fake_etc(files)
        try:
            rc, out, err = print_archive(etc)
            assert rc == 0 and out == want, (files, rc, out, err)
        finally:
            shutil.rmtree(etc)
    etc = fake_etc({"sources.list": "deb http://security.debian.org/debian-security bookworm-security main\n"})
    try:
        rc, out, err = print_archive(etc)
        assert rc != 0 and out == "" and "DG_DEBIAN_ARCHIVE" in err, (rc, out, err)
    finally:
        shutil.rmtree(etc)
    # The private list is made from it: no archive host is written in deps.sh itself.
    with open(DEPS) as f:
        text = f.read()
    assert "deb.debian.org" not in text, "deps.sh names an archive host of its own"
    assert "Dir::Etc::SourceList=$work/sources.list" in text


TESTS = [
    test_deps_packages_cover_tools,
    test_deps_archive_from_host,
    test_unit_verifies,
    test_unit_settings,
    test_default_config_fits_sandbox,
    test_make_install,
    test_make_install_dirs,
    test_dockerfile,
    test_runtime_packages,
    test_docker_context_builds,
]


def main():
    wanted = set(sys.argv[2:])
    passed = failed = 0
    for fn in TESTS:
        if wanted and fn.__name__ not in wanted:
            continue
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("ok   %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print("FAIL %-40s %s: %s" % (fn.__name__, type(e).__name__, str(e)[:4000]), flush=True)
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
