#!/usr/bin/env bash
# The Dockerfile's builder stage, kept here so CI runs the same steps
# natively (no Docker engine needed): install make and git when missing,
# then the same scripts/deps.sh and make as everyone else. It leaves the
# binary in build/devgate of the tree it runs in.
#
#   docker-build-stage.sh --deps   only the packages and wolfSSL (the
#                                  Dockerfile runs this before copying the
#                                  sources, so a source change reuses it)
#   docker-build-stage.sh          all of it, then make
#
# Natively it installs nothing that is already there; DG_WOLFSSL_PREFIX and
# WOLFSSL (see scripts/deps.sh and the Makefile) point it at a wolfSSL build
# elsewhere, as tests/integration/packaging_test.py does.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in make git; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "build-stage: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq
	as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/deps.sh
if [ "${1:-}" = --deps ]; then
	exit 0
fi
make -j"$(nproc)" all
