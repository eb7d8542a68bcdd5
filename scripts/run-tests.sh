#!/usr/bin/env bash
# Runs every test against the binaries in each BUILD directory given
# (default build/): the Check unit tests, the fuzz targets over their
# corpora, and the integration tests that start the daemon on loopback;
# then, with DG_LIBFUZZER set, the libFuzzer targets for a few seconds.
# Prints one summary line, "N passed, N failed", and exits non-zero on any
# failure.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ $# -gt 0 ] || set -- build
# Debian's python3 and the python3-cryptography that deps.sh installs, not
# whatever python3 comes first on PATH (a pyenv one has other modules).
python=${DG_PYTHON:-/usr/bin/python3}
[ -x "$python" ] || python=python3
passed=0
failed=0
failures=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for build in "$@"; do
echo "== tests on $build"

for t in "$build"/tests/check_*; do
	[ -x "$t" ] || continue
	out=$(CK_DEFAULT_TIMEOUT=30 "$t" 2>&1)
	rc=$?
	echo "$out" | grep -E '^[0-9]+%: Checks:|:[EF]:' || true
	line=$(echo "$out" | grep -E '^[0-9]+%: Checks:' | tail -n 1)
	n=$(echo "$line" | sed -n 's/.*Checks: \([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*Failures: \([0-9]*\).*/\1/p')
	e=$(echo "$line" | sed -n 's/.*Errors: \([0-9]*\).*/\1/p')
	n=${n:-0} f=${f:-0} e=${e:-0}
	if [ "$rc" -ne 0 ] && [ $((f + e)) -eq 0 ]; then e=1; fi
	passed=$((passed + n - f - e))
	failed=$((failed + f + e))
	[ $((f + e)) -eq 0 ] || failures+=("$t")
done

for f in "$build"/fuzz/fuzz_*; do
	[ -x "$f" ] || continue
	name=$(basename "$f")
	corpus="tests/fuzz/corpus/${name#fuzz_}"
	if out=$("$f" "$corpus" 2>&1); then
		echo "ok   $name: $out"
		passed=$((passed + 1))
	else
		echo "FAIL $name: $out"
		failed=$((failed + 1))
		failures+=("$f")
	fi
done

# The benchmark with tiny counts (make bench's runner and load generator,
# both servers, every case: PSK and certificate handshakes, GET, stream POST,
# idle; devgate with 2 workers too once check-config takes the key), so it
# cannot rot: one test, on the first build only (a benchmark of a sanitizer
# build measures the sanitizer). It fails if any case fails a handshake or a
# request or gives no figure.
if [ "$build" = "$1" ]; then
	if [ -x "$build/bench/loadgen" ] && timeout 120 "$python" bench/run.py "$build" --smoke; then
		echo "ok   bench smoke"
		passed=$((passed + 1))
	else
		echo "FAIL bench smoke"
		failed=$((failed + 1))
		failures+=("bench($build)")
	fi
fi

for suite in tests/integration/*_test.py; do
	it=$(mktemp)
	"$python" "$suite" "$build" | tee "$it"
	rc=${PIPESTATUS[0]}
	n=$(sed -n 's/^integration: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$it")
	f=$(sed -n 's/^integration: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$it")
	rm -f "$it"
	if [ -z "$n" ]; then
		n=0
		f=1
	fi
	if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then f=1; fi
	passed=$((passed + n))
	failed=$((failed + f))
	[ "$f" -eq 0 ] || failures+=("$suite($build)")
done
done

# With DG_LIBFUZZER=DIR (make check sets it when clang has libFuzzer),
# each libFuzzer target in DIR/libfuzzer/ also runs for DG_FUZZ_SECONDS
# (default 5) over its corpus; a crash or sanitizer report is a failure.
if [ -n "${DG_LIBFUZZER:-}" ]; then
	echo "== libFuzzer targets in $DG_LIBFUZZER, ${DG_FUZZ_SECONDS:-5}s each"
	for f in "$DG_LIBFUZZER"/libfuzzer/fuzz_*; do
		[ -x "$f" ] || continue
		name=$(basename "$f")
		if scripts/fuzz.sh "$DG_LIBFUZZER" "${DG_FUZZ_SECONDS:-5}" "$name"; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
			failures+=("$f")
		fi
	done
fi

if [ "${#failures[@]}" -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
