#!/bin/sh
# On the first `make run`, creates an example project with one PSK device
# whose key is random (no secret ships in the repository), and prints how
# to connect to it. Later runs print the same instructions.
set -eu
conf=${1:-conf/devgate.json}
dir=$(dirname "$conf")/projects/example
psk="$dir/psk.json"
if [ ! -f "$psk" ]; then
	mkdir -p "$dir"
	key=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-32)
	umask 077
	printf '[{"identity": "dev1@example", "device": "dev1", "key": "%s"}]\n' "$key" >"$psk"
	echo "first run: created the example project in $dir with a random key"
fi
key=$(sed -n 's/.*"key": *"\([^"]*\)".*/\1/p' "$psk" | head -n 1)
cat <<MSG

  Connect the example device (identity dev1@example):

    coap-client-openssl -m get -u dev1@example -k $key coaps://127.0.0.1/.well-known/core

  List devices:  build/devgate devices list -c $conf

MSG
