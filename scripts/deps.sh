#!/usr/bin/env bash
# Installs what devgate needs to build and test on Debian 12, and builds
# wolfSSL from Debian trixie's source package into a project-local prefix.
#
# It installs only missing packages, reuses a wolfSSL build that is already
# there, and never changes the host's apt sources: the trixie source list
# lives in a private directory that apt is pointed at with -o options.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
prefix="${DG_WOLFSSL_PREFIX:-$top/third_party/wolfssl}"
work="$top/third_party/.build"
stamp="$prefix/.devgate-built"

packages=(
	build-essential pkg-config autoconf automake libtool
	libuv1-dev libsqlite3-dev libcjson-dev libcbor-dev libcoap3-dev libsystemd-dev libmicrohttpd-dev
	libcoap3-bin check openssl dpkg-dev python3 python3-cryptography sqlite3 curl iproute2 systemd
	clang libclang-rt-14-dev
)

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

# What the build below is made with; a change of it rebuilds wolfSSL.
wolfssl_cppflags="-DWOLFSSL_STATIC_PSK -DWOLFSSL_ALT_NAMES -DWOLFSSL_DTLS_DROP_STATS -DWOLFSSL_ALWAYS_VERIFY_CB"
recipe="wolfssl trixie; $(sed -n '/^\.\/configure/,/make -j/p' "$0" | md5sum | cut -c1-16); $wolfssl_cppflags"
if [ -f "$stamp" ] && [ -f "$prefix/lib/libwolfssl.a" ] && [ "$(cat "$stamp")" = "$recipe" ]; then
	exit 0
fi

echo "deps: building wolfSSL from Debian trixie's source package into $prefix"
rm -rf "$work"
mkdir -p "$work/lists/partial" "$work/src"
cat >"$work/sources.list" <<LIST
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
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
if [ "$(uname -m)" = x86_64 ]; then asm+=(--enable-intelasm); fi
./configure --prefix="$prefix" --enable-static --disable-shared --with-pic \
	--enable-dtls --enable-dtls13 --enable-dtlscid \
	--enable-psk --enable-aesccm --enable-aesgcm "${asm[@]}" \
	--enable-opensslextra --enable-certext --enable-sessioncerts \
	--enable-session-ticket --enable-crl --enable-sni --enable-chacha \
	--enable-poly1305 --enable-supportedcurves --enable-certgen --enable-keygen --disable-examples \
	--disable-crypttests --disable-benchmark \
	CPPFLAGS="$wolfssl_cppflags" >"$work/configure.log"
make -j"$(nproc)" >"$work/make.log" 2>&1
rm -rf "$prefix"
make install >"$work/install.log" 2>&1
cp "$srcdir/debian/changelog" "$prefix/debian-changelog" 2>/dev/null || true
printf '%s\n' "$recipe" >"$stamp"
echo "deps: wolfSSL $(basename "$srcdir") installed in $prefix"
