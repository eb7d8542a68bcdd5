#!/usr/bin/env bash
# The Dockerfile's runtime stage, kept here so CI can check it natively (no
# Docker engine needed): the runtime libraries build/devgate links, and a
# system user to run it as.
#
#   docker-runtime-stage.sh             install the packages, make the user
#                                       and its directories (in the image)
#   docker-runtime-stage.sh --list      print the packages, one per line
#   docker-runtime-stage.sh --simulate  apt-get install --simulate the
#                                       packages as on an empty system: runs
#                                       against the package index only,
#                                       changes and downloads nothing
set -euo pipefail

# One package per library devgate links (wolfSSL is linked statically).
# tests/integration/packaging_test.py checks that every library of the
# built binary comes from these packages or what they depend on.
packages=(
	libuv1 libsqlite3-0 libcjson1 libcbor0.8 libcoap3 libmicrohttpd12 libsystemd0
)

case "${1:-}" in
--list)
	printf '%s\n' "${packages[@]}"
	exit 0
	;;
--simulate)
	# An empty dpkg status makes apt resolve every dependency from the
	# index, so the output lists all a bare image would need ("Inst" lines).
	status=$(mktemp)
	trap 'rm -f "$status"' EXIT
	apt-get install --simulate --no-install-recommends \
		-o Dir::State::status="$status" "${packages[@]}"
	exit 0
	;;
"") ;;
*)
	echo "usage: $0 [--list | --simulate]" >&2
	exit 2
	;;
esac

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# The user devgate runs as; it owns its state directory (the database and
# the generated development certificates) and only reads /etc/devgate.
useradd --system --user-group --home-dir /var/lib/devgate --no-create-home \
	--shell /usr/sbin/nologin devgate
install -d -m 0755 /etc/devgate /etc/devgate/projects
install -d -m 0750 -o devgate -g devgate /var/lib/devgate
