#!/usr/bin/env bash
# Quick side-by-side with wrk: scripts/bench.sh's wrk cell alone — our field measurement.
# wrk (1 thread) POSTs a ~200-byte JSON body whose user id is only in the body, against
# every path of scripts/bench.sh (direct, the relay floor, ringgate, nginx, HAProxy, and
# Pingora / ringgate-base when BENCH_PINGORA=1 / BENCH_BASELINE=... are set), each proxy
# with one worker on CPU 1, wrk and an nginx `return 200` backend on CPU 0. Reports req/s,
# wrk's latency percentiles and each proxy's user/sys CPU, syscalls, io_uring submissions
# and poll arms per request.
#
# Usage: scripts/wrk-compare.sh [seconds] [connections]     (defaults: 10, 50)
# Every BENCH_* knob of scripts/bench.sh applies. The table goes to stdout and to
# $BENCH_OUT/latest.md (default /tmp/ringgate-wrk-compare, so that the full harness's
# benches/results/latest.md is left alone).
set -euo pipefail
export BENCH_CELLS=wrk
if (($# >= 1)); then
    export BENCH_WRK_DURATION=${1}s
else
    export BENCH_WRK_DURATION=${BENCH_WRK_DURATION:-10s}
fi
export BENCH_WRK_CONNS=${2:-${BENCH_WRK_CONNS:-50}}
export BENCH_OUT=${BENCH_OUT:-/tmp/ringgate-wrk-compare}
exec "$(dirname "${BASH_SOURCE[0]}")/bench.sh"
