#!/bin/sh
# Runs the test suites and prints one summary line: "N passed, N failed".
#   tests/run.sh          everything: format check, unit tests (plain and ASan+UBSan builds),
#                         end-to-end tests against the ASan+UBSan binary, and a one-second
#                         run of the benchmark harness
#   tests/run.sh unit     unit tests of the plain build only
#   tests/run.sh e2e      end-to-end tests against the plain build only
set -u
cd "$(dirname "$0")/.."
what=${1:-all}
passed=0
failed=0
failures=""
san_dir=$(mktemp -d /tmp/coder-san.XXXXXX)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$san_dir/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$san_dir/ubsan"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"

note() { printf '%s\n' "$*"; }
record() { # name status
    if [ "$2" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures="$failures $1"; fi
}

run_unit() { # build dir
    for t in "$1"/tests/test_*; do
        [ -x "$t" ] || continue
        name="unit:$(basename "$1")/$(basename "$t")"
        if out=$("$t" 2>&1); then
            record "$name" 0
            note "ok   $name ($(printf '%s\n' "$out" | grep -c '\[       OK \]') cases)"
        else
            record "$name" 1
            note "FAIL $name"
            printf '%s\n' "$out" | tail -n 40
        fi
    done
}

run_e2e() { # binary
    name="e2e:$1"
    CODER_BIN="$(pwd)/$1" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e \
        > "$san_dir/pytest.log" 2>&1
    rc=$?
    tail -n 60 "$san_dir/pytest.log"
    summary=$(grep -E '(passed|failed|errors?)(,| in [0-9.]+s)' "$san_dir/pytest.log" | tail -n 1)
    p=$(printf '%s' "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
    f=0
    for n in $(printf '%s' "$summary" | grep -oE '[0-9]+ (failed|errors?)' | grep -oE '[0-9]+'); do
        f=$((f + n))
    done
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$rc" != 0 ] && [ "${f:-0}" = 0 ]; then record "$name" 1; fi
    [ "$rc" != 0 ] && failures="$failures $name"
}

run_bench_smoke() { # the benchmark harness, for a second: it still works (not a figure)
    if out=$(/usr/bin/python3 bench/dataplane.py --smoke --bin build/coder 2>&1); then
        record bench-smoke 0
        note "ok   bench-smoke (bench/dataplane.py --smoke)"
    else
        record bench-smoke 1
        note "FAIL bench-smoke"
        printf '%s\n' "$out" | tail -n 30
    fi
}

check_sanitizers() {
    # Any report at all: ls of one pattern each (a glob that matches nothing must not hide
    # the other kind).
    reports=$(ls "$san_dir"/asan.* 2>/dev/null; ls "$san_dir"/ubsan.* 2>/dev/null)
    if [ -n "$reports" ]; then
        note "FAIL sanitizers reported problems:"
        for f in "$san_dir"/asan.* "$san_dir"/ubsan.*; do
            [ -f "$f" ] && { note "--- $f"; head -n 60 "$f"; }
        done
        record sanitizers 1
    else
        record sanitizers 0
        note "ok   sanitizers: no reports"
    fi
}

case "$what" in
unit) run_unit build ;;
e2e) run_e2e build/coder ;;
all)
    if clang-format --dry-run -Werror $(git ls-files '*.c' '*.h' 2>/dev/null) >/dev/null 2>&1; then
        record format 0; note "ok   format"
    else
        record format 1; note "FAIL format: run 'make format'"
        clang-format --dry-run $(git ls-files '*.c' '*.h') 2>&1 | head -n 20
    fi
    run_unit build
    run_unit build-asan
    run_e2e build-asan/coder
    check_sanitizers
    run_bench_smoke
    ;;
esac
rm -rf "$san_dir"
[ -n "$failures" ] && note "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
