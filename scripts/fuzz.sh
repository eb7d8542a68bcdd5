#!/usr/bin/env bash
# Runs the libFuzzer builds of the fuzz targets.
#
#   scripts/fuzz.sh --available [CC]     exit 0 when CC (default clang) links
#                                        -fsanitize=fuzzer
#   scripts/fuzz.sh BUILD SECONDS [NAME...]
#                                        runs BUILD/libfuzzer/fuzz_NAME (every
#                                        target by default) for SECONDS each
#
# Each target reads its committed corpus, tests/fuzz/corpus/NAME, without
# writing to it; what it finds goes to BUILD/corpus/NAME, crashes to
# BUILD/crashes/. Prints one line per target, "ok   fuzz_NAME: ..." or
# "FAIL fuzz_NAME: ...", and exits non-zero when any target failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ "${1:-}" = --available ]; then
	cc=${2:-clang}
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
		>"$tmp/t.c"
	"$cc" -fsanitize=fuzzer,address,undefined -o "$tmp/t" "$tmp/t.c" >/dev/null 2>&1
	exit
fi

build=${1:?usage: scripts/fuzz.sh BUILD SECONDS [NAME...]}
seconds=${2:?usage: scripts/fuzz.sh BUILD SECONDS [NAME...]}
shift 2
[ "$seconds" -gt 0 ] || exit 0
if [ $# -eq 0 ]; then
	for t in "$build"/libfuzzer/fuzz_*; do
		[ -x "$t" ] && set -- "$@" "$(basename "$t")"
	done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
for name in "$@"; do
	name=fuzz_${name#fuzz_}
	short=${name#fuzz_}
	bin="$build/libfuzzer/$name"
	mkdir -p "$build/corpus/$short" "$build/crashes" "$build/logs"
	log="$build/logs/$name.log"
	"$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=4096 -print_final_stats=1 \
		-artifact_prefix="$build/crashes/$name-" \
		"$build/corpus/$short" "tests/fuzz/corpus/$short" >"$log" 2>&1
	st=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1)
	if [ "$st" -eq 0 ]; then
		echo "ok   $name: ${execs:-?} runs in ${seconds}s, ${cov:-cov: ?}"
	else
		echo "FAIL $name: exit $st after ${execs:-?} runs; see $log"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' "$log" | head -n 5
		rc=1
	fi
done
exit $rc
