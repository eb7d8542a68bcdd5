#!/usr/bin/env bash
# Installs what devgate needs to build and test on Debian 12, and builds
# wolfSSL from Debian trixie's source package into a project-local prefix.
#
# It installs only missing packages, reuses a wolfSSL build that is already
# there, and never changes the host's apt sources: the trixie source list
# lives in a private directory that apt is pointed at with -o options.
# The archive that list names is the host's own (its first Debian archive
# source that is not -security), so a host behind a mirror or a proxy
# fetches wolfSSL's source from where it fetches everything else.
#
#   scripts/deps.sh                  install, then build wolfSSL if needed
#   scripts/deps.sh --print-archive  print the archive URI it would use, and exit
#
# DG_APT_ETC (default /etc/apt) is where the host's sources are read from
# (the tests point it at a fake one); DG_DEBIAN_ARCHIVE overrides the URI.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
prefix="${DG_WOLFSSL_PREFIX:-$top/third_party/wolfssl}"
work="$top/third_party/.build"
stamp="$prefix/.devgate-built"

packages=(
	build-essential pkg-config autoconf automake libtool
	libuv1-dev libsqlite3-dev libcjson-dev libcbor-dev libcoap3-dev libsystemd-dev libmicrohttpd-dev
	libcoap3-bin check openssl dpkg-dev python3 python3-cryptography sqlite3 curl iproute2 systemd
	procps e2fsprogs clang libclang-rt-14-dev
	libssl-dev util-linux
)
# Not in a Debian 12 minbase, and called by the tests or the unit: procps
# (/bin/kill for ExecReload, which systemd-analyze verify checks; ps),
# e2fsprogs (chattr, for a read-only database in startup_test.py; it is
# "required", listed so a trimmed image still gets it), iproute2 (ip), curl.

# Prints the first Debian archive URI of the host's apt sources: one-line
# "deb" entries in sources.list and sources.list.d/*.list, then deb822
# sources.list.d/*.sources stanzas of Types deb, in apt's order; a source
# whose suite ends in -security (or whose URI is debian-security) is not the
# archive, nor is one whose suites are not Debian's or that has no main
# component (third-party repositories).
archive_uri() {
	local etc="${DG_APT_ETC:-/etc/apt}" f
	if [ -n "${DG_DEBIAN_ARCHIVE:-}" ]; then
		printf '%s\n' "$DG_DEBIAN_ARCHIVE"
		return 0
	fi
	local files=()
	[ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
	for f in "$etc"/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
	for f in "$etc"/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
	[ "${#files[@]}" -gt 0 ] || return 1
	awk '
	function debian_suite(s) {
		if (s ~ /-security$/) return 0
		return s ~ /^(stable|testing|unstable|oldstable|oldoldstable|sid|experimental|buster|bullseye|bookworm|trixie|forky|duke)(-updates|-backports|-backports-sloppy|-proposed-updates)?$/
	}
	function take(uri, suites, comps,   n, a, i) {
		if (uri ~ /debian-security/ || (" " comps " ") !~ /[ \t]main[ \t]/) return
		n = split(suites, a, /[ \t]+/)
		for (i = 1; i <= n; i++)
			if (a[i] != "" && debian_suite(a[i])) { print uri; found = 1; exit }
	}
	function flush(   n, u, i) {
		if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") {
			n = split(uris, u, /[ \t]+/)
			for (i = 1; i <= n; i++) if (u[i] != "") take(u[i], suites, comps)
		}
		types = uris = suites = comps = enabled = ""
	}
	FNR == 1 { flush(); deb822 = FILENAME ~ /\.sources$/ }
	/^[ \t]*#/ { next }
	deb822 {
		if ($0 ~ /^[ \t]*$/) { flush(); next }
		line = $0; key = tolower(line); sub(/:.*/, "", key)
		val = line; sub(/^[^:]*:[ \t]*/, "", val)
		if (key == "types") types = val
		else if (key == "uris") uris = val
		else if (key == "suites") suites = val
		else if (key == "components") comps = val
		else if (key == "enabled") enabled = tolower(val)
		next
	}
	$1 == "deb" {
		i = 2
		if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
		c = ""
		for (j = i + 2; j <= NF; j++) c = c " " $j
		if (i + 1 <= NF) take($i, $(i + 1), c)
	}
	END { if (!found) flush(); exit found ? 0 : 1 }
	' "${files[@]}" | head -n 1 | grep .
}

if [ "${1:-}" = --print-archive ]; then
	if ! archive_uri; then
		echo "deps: no Debian archive in ${DG_APT_ETC:-/etc/apt}/sources.list{,.d/}; set DG_DEBIAN_ARCHIVE" >&2
		exit 1
	fi
	exit 0
fi

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq
	as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# What the build below is made with (its flags, from asm=( to make); a change
# of it rebuilds wolfSSL.
wolfssl_cppflags="-DWOLFSSL_STATIC_PSK -DWOLFSSL_ALT_NAMES -DWOLFSSL_DTLS_DROP_STATS -DWOLFSSL_ALWAYS_VERIFY_CB -DNO_KEEP_PEER_CERT"
# Every WOLFSSL object has its own RNG, seeded when it is made (one per
# ClientHello that passes the cookie): getrandom(2) seeds it with one system
# call, where the default opens, reads and closes /dev/urandom each time.
wolfssl_cppflags="$wolfssl_cppflags -DWOLFSSL_GETRANDOM"
recipe="wolfssl trixie; $(sed -n '/^asm=(/,/make -j/p' "$0" | md5sum | cut -c1-16); $wolfssl_cppflags"
if [ -f "$stamp" ] && [ -f "$prefix/lib/libwolfssl.a" ] && [ "$(cat "$stamp")" = "$recipe" ]; then
	exit 0
fi

if ! archive=$(archive_uri); then
	echo "deps: no Debian archive in ${DG_APT_ETC:-/etc/apt}/sources.list{,.d/}; set DG_DEBIAN_ARCHIVE" >&2
	exit 1
fi
echo "deps: building wolfSSL from Debian trixie's source package ($archive) into $prefix"
rm -rf "$work"
mkdir -p "$work/lists/partial" "$work/src"
cat >"$work/sources.list" <<LIST
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $archive trixie main
LIST
aptopts=(
	-o "Dir::Etc::SourceList=$work/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State::Lists=$work/lists"
	-o "Dir::Cache::pkgcache="
	-o "Dir::Cache::srcpkgcache="
	-o "APT::Sandbox::User=root"
)
apt-get "${aptopts[@]}" update -qq
(cd "$work/src" && apt-get "${aptopts[@]}" source -qq wolfssl)
srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'wolfssl-*' | head -n 1)
if [ -z "$srcdir" ]; then
	echo "deps: apt-get source wolfssl produced no source tree" >&2
	exit 1
fi
case "$(basename "$srcdir")" in
wolfssl-5.7.*) ;;
*) echo "deps: expected wolfSSL 5.7.x, got $(basename "$srcdir")" >&2 ;;
esac

cd "$srcdir"
[ -x ./configure ] || ./autogen.sh >/dev/null
asm=(--enable-sp --enable-sp-asm)
# AES-GCM's 4-bit GHASH table (512 bytes in each of a session's two AES
# contexts, whatever its suite) only serves the C code: with intelasm, GCM
# runs on AES-NI and PCLMULQDQ, which compute from H alone, so x86_64 takes
# the small GHASH as its fallback and keeps 1 KB per session.
# No session tickets either (devgate resumes no session): a session keeps
# no ticket buffer.
gcm=(--enable-aesgcm)
if [ "$(uname -m)" = x86_64 ]; then
	asm+=(--enable-intelasm)
	gcm=(--enable-aesgcm=small)
fi
# The compatibility layer (opensslextra, which devgate's verify callback
# needs for the X509 and X509_STORE_CTX API) forces KEEP_PEER_CERT in
# settings.h, which embeds a 4 KB WOLFSSL_X509 in every connection object to
# serve wolfSSL_get_peer_certificate, a call devgate never makes: the verify
# callback reads the chain's DER from the store context, and the X509 of the
# certificate at hand is then a temporary one. wolfSSL 5.7.2 has no switch for
# it (later releases honour NO_KEEP_PEER_CERT), so the forcing is made to honour
# NO_KEEP_PEER_CERT here, and the build fails if the line is not found.
settings=wolfssl/wolfcrypt/settings.h
sed -i '/^#if defined(OPENSSL_EXTRA) && !defined(NO_CERTS)$/{N;s/\n    #undef  KEEP_PEER_CERT$/ \&\& !defined(NO_KEEP_PEER_CERT)&/}' "$settings"
if ! grep -q '^#if defined(OPENSSL_EXTRA) && !defined(NO_CERTS) && !defined(NO_KEEP_PEER_CERT)$' "$settings"; then
	echo "deps: $settings: the KEEP_PEER_CERT forcing was not found; cannot build without it" >&2
	exit 1
fi
./configure --prefix="$prefix" --enable-static --disable-shared --with-pic \
	--enable-dtls --enable-dtls13 --enable-dtlscid \
	--enable-psk --enable-aesccm "${gcm[@]}" "${asm[@]}" \
	--enable-opensslextra --enable-certext \
	--enable-crl --enable-sni --enable-chacha \
	--enable-poly1305 --enable-supportedcurves --enable-certgen --enable-keygen --disable-examples \
	--disable-crypttests --disable-benchmark \
	CPPFLAGS="$wolfssl_cppflags" >"$work/configure.log"
make -j"$(nproc)" >"$work/make.log" 2>&1
rm -rf "$prefix"
make install >"$work/install.log" 2>&1
cp "$srcdir/debian/changelog" "$prefix/debian-changelog" 2>/dev/null || true
printf '%s\n' "$recipe" >"$stamp"
echo "deps: wolfSSL $(basename "$srcdir") installed in $prefix"
