#!/usr/bin/env bash
# CI smoke for the fuzz targets: build all five with libFuzzer instrumentation and run
# each for a short time (default 20 s) from the committed seeds. Fails on any crash,
# panic or assertion (the targets' guarantees), printing the reproducing input.
#
# Needs only stable Rust (rustup) and a C++ compiler for libFuzzer's runtime (g++ from
# build-essential). Nothing is installed: libfuzzer-sys is driven by plain `cargo build`
# with the same SanitizerCoverage flags cargo-fuzz passes, minus AddressSanitizer (which
# needs nightly's -Zsanitizer; the long runs in README.md use it via cargo-fuzz).
#
#   fuzz/smoke.sh                 # 5 targets x 20 s
#   FUZZ_SECS=600 fuzz/smoke.sh   # longer
set -euo pipefail
cd "$(dirname "$0")"

SECS=${FUZZ_SECS:-20}
TARGETS=${FUZZ_TARGETS:-"request_head chunked user_id_json user_id_query response_head"}
HOST=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
# SanitizerCoverage for libFuzzer (stable codegen options), debug assertions and overflow
# checks on. An explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# Compile time dominates a smoke run: the dependency tree (monoio, tracing, clap, ...)
# is built unoptimised, only the code on the fuzzed paths is optimised (opt-level 1).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${FUZZ_OPT_LEVEL:-0}
export CARGO_PROFILE_RELEASE_DEBUG=${FUZZ_DEBUG:-line-tables-only}
HOT_OPT=${FUZZ_HOT_OPT_LEVEL:-1}
CONFIG=()
for p in ringgate ringgate-fuzz simd-json httparse memchr serde_json value-trait halfbrown; do
    CONFIG+=(--config "profile.release.package.$p.opt-level=$HOT_OPT")
done

if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: a C++ compiler is needed for libFuzzer (apt-get install g++)" >&2
    exit 1
fi

start=$(date +%s)
cargo build --release --target "$HOST" --bins "${CONFIG[@]}"
echo "fuzz/smoke.sh: built in $(( $(date +%s) - start )) s"

mkdir -p artifacts
for t in $TARGETS; do
    dict=dicts/http.dict
    [ "$t" = user_id_json ] && dict=dicts/json.dict
    [ "$t" = user_id_query ] && dict=dicts/query.dict
    work=$(mktemp -d)
    cp corpus/"$t"/* "$work"/
    echo "fuzz/smoke.sh: $t for ${SECS} s"
    if ! "$CARGO_TARGET_DIR/$HOST/release/$t" "$work" -dict="$dict" \
        -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t-" > "artifacts/$t.log" 2>&1; then
        tail -n 60 "artifacts/$t.log" >&2
        echo "fuzz/smoke.sh: $t FAILED; reproduce with: $CARGO_TARGET_DIR/$HOST/release/$t artifacts/$t-crash-*" >&2
        exit 1
    fi
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|Done [0-9]+ runs" "artifacts/$t.log" || true
    rm -rf "$work"
done
echo "fuzz/smoke.sh: all targets ran clean in $(( $(date +%s) - start )) s"
