#!/usr/bin/env bash
# scripts/soak.sh — memory and file descriptors stay flat over a million requests.
#
# Starts the two demo backends (CPU 1) and one ringgate worker (CPU 0), then runs
# SOAK_REQUESTS (default 1,000,000) measured requests open loop at SOAK_RATE (10,000 req/s,
# so ~100 s plus warm-up) with the bench mix (30 % Commands whose user id is only in the
# JSON body, 70 % Queries, header and query forms), 100,000 Zipf-distributed users, and a
# share of requests on brand-new connections (SOAK_NEW_CONN_RATIO, default 0.05) besides
# keep-alive ones. Every second it samples ringgate's RSS (VmRSS) and open descriptors
# (/proc/PID/fd) into a TSV.
#
# Pass/fail ("flat"):
#   - RSS band (max - min) after warm-up <= SOAK_MAX_RSS_BAND_KIB (default 4096 KiB: a leak
#     of 4 bytes per request would already exceed it), and RSS in the last 10 s of load
#     exceeds the first 10 s after warm-up by <= SOAK_MAX_RSS_GROWTH_KIB (default 1024);
#   - descriptors return to the pre-load baseline within 10 s after the load (the soak
#     config sets pool.idle_timeout_ms = 2000 so pooled upstream connections age out),
#     and never exceed baseline + connections + new connections in flight + pools;
#   - zero errors, zero non-2xx, zero unfinished requests (ringgate-load --fail-on-error).
# Prints the figures (for the README) and exits non-zero on any failure. Everything it
# started is stopped on exit.
#
# Knobs: SOAK_REQUESTS, SOAK_RATE, SOAK_CONNS (64), SOAK_NEW_CONN_RATIO, SOAK_WARMUP (10s),
# SOAK_MAX_RSS_BAND_KIB, SOAK_MAX_RSS_GROWTH_KIB, BENCH_PORT_BASE (18950),
# BENCH_SKIP_BUILD=1, SOAK_KEEP=1 (keep samples and logs), SOAK_OUT (copy of the samples).

set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench/lib.sh"

REQUESTS=${SOAK_REQUESTS:-1000000}
RATE=${SOAK_RATE:-10000}
CONNS=${SOAK_CONNS:-64}
NEW_CONN_RATIO=${SOAK_NEW_CONN_RATIO:-0.05}
WARMUP=${SOAK_WARMUP:-10}
MAX_RSS_BAND_KIB=${SOAK_MAX_RSS_BAND_KIB:-4096}
MAX_RSS_GROWTH_KIB=${SOAK_MAX_RSS_GROWTH_KIB:-1024}
PORT_BASE=${BENCH_PORT_BASE:-18950}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
PORT_RINGGATE=$PORT_BASE
PORT_BACKEND_1=$((PORT_BASE + 10))
PORT_BACKEND_2=$((PORT_BASE + 11))
POOL_MAX_IDLE=64

use_work_dir soak "${SOAK_KEEP:-0}"

# Sample "elapsed_s rss_kib fds" of $1 every second into $2 until the process is gone.
sample_loop() {
    local pid=$1 out=$2 t0=$SECONDS rss
    while rss=$(rss_kib "$pid" 2>/dev/null) && [[ -n $rss ]]; do
        printf '%d\t%d\t%d\n' "$((SECONDS - t0))" "$rss" "$(fd_count "$pid")" >>"$out"
        sleep 1
    done
}

# min max of column $2 of TSV $1 for rows with $3 <= elapsed <= $4.
band() {
    awk -F'\t' -v c="$2" -v from="$3" -v to="$4" '
        $1 >= from && $1 <= to { if (!n++ || $c < lo) lo = $c; if ($c > hi) hi = $c }
        END { if (n) print lo, hi; else print "0 0" }' "$1"
}

# Mean of column $2 of TSV $1 for rows with $3 <= elapsed <= $4.
mean() {
    awk -F'\t' -v c="$2" -v from="$3" -v to="$4" '
        $1 >= from && $1 <= to { s += $c; n++ } END { printf "%.0f\n", n ? s / n : 0 }' "$1"
}

main() {
    build_release
    ensure_commands jq:jq taskset:util-linux
    require_free_ports "$PORT_RINGGATE" "$PORT_BACKEND_1" "$PORT_BACKEND_2"
    start_backend "$PORT_BACKEND_1" zone_1 "$LOAD_CPU" "$WORK/backend-1.log"
    start_backend "$PORT_BACKEND_2" zone_2 "$LOAD_CPU" "$WORK/backend-2.log"
    fill_template "$REPO_ROOT/benches/peers/ringgate.toml.in" "$WORK/ringgate.toml" \
        PORT="$PORT_RINGGATE" ADMIN="" CPU="$PROXY_CPU" \
        BACKEND_1="$PORT_BACKEND_1" BACKEND_2="$PORT_BACKEND_2"
    # Pooled upstream connections age out fast, so descriptors can return to baseline.
    printf '\n[pool]\nmax_idle_per_backend = %d\nidle_timeout_ms = 2000\n' "$POOL_MAX_IDLE" \
        >>"$WORK/ringgate.toml"
    start_ringgate "$WORK/ringgate.toml" "$WORK/ringgate.log" "$PROXY_CPU"
    local router=$LAST_PID
    sleep 1
    local base_rss base_fds
    base_rss=$(rss_kib "$router")
    base_fds=$(fd_count "$router")
    log "ringgate pid $router: baseline RSS $base_rss KiB, $base_fds fds"

    local samples=$WORK/samples.tsv
    : >"$samples"
    sample_loop "$router" "$samples" &
    remember_pid $!
    local sampler=$!

    local started=$SECONDS
    log "soak: $REQUESTS requests at $RATE req/s after ${WARMUP}s warm-up," \
        "$CONNS connections, new-connection ratio $NEW_CONN_RATIO"
    local load_rc=0
    "$BIN_DIR/ringgate-load" --target "127.0.0.1:$PORT_RINGGATE" -R "$RATE" -c "$CONNS" -t 1 \
        --cpus "$LOAD_CPU" -n "$REQUESTS" --warmup "${WARMUP}s" --timeout 5s \
        --mix commands=30,queries=70 --query-form mixed --users 100000 --user-dist zipf \
        --new-conn-ratio "$NEW_CONN_RATIO" --fail-on-error --json "$WORK/load.json" \
        >"$WORK/load.txt" 2>&1 || load_rc=$?
    local load_end=$((SECONDS - started))

    # Descriptors back to baseline: client connections closed, pooled ones aged out.
    local fds_after i
    for ((i = 0; i < 10; i++)); do
        fds_after=$(fd_count "$router")
        ((fds_after <= base_fds)) && break
        sleep 1
    done
    stop_pid "$sampler:$(start_time_of "$sampler")"
    forget_pid "$sampler"
    [[ -n ${SOAK_OUT:-} ]] && cp "$samples" "$SOAK_OUT"

    local w=$WARMUP rss_lo rss_hi fd_lo fd_hi all_lo all_hi first last
    read -r rss_lo rss_hi < <(band "$samples" 2 "$((w + 1))" "$load_end")
    read -r all_lo all_hi < <(band "$samples" 2 0 "$load_end")
    read -r fd_lo fd_hi < <(band "$samples" 3 "$((w + 1))" "$load_end")
    first=$(mean "$samples" 2 "$((w + 1))" "$((w + 10))")
    last=$(mean "$samples" 2 "$((load_end - 10))" "$load_end")

    local fails=()
    local fd_cap=$((base_fds + 2 * CONNS + 2 * POOL_MAX_IDLE + 16))
    ((rss_hi - rss_lo <= MAX_RSS_BAND_KIB)) ||
        fails+=("RSS band $((rss_hi - rss_lo)) KiB > $MAX_RSS_BAND_KIB KiB")
    ((last - first <= MAX_RSS_GROWTH_KIB)) ||
        fails+=("RSS grew $((last - first)) KiB from the first to the last 10 s")
    ((fds_after <= base_fds)) || fails+=("fds after the load: $fds_after > baseline $base_fds")
    ((fd_hi <= fd_cap)) || fails+=("fds peaked at $fd_hi > $fd_cap")
    ((load_rc == 0)) || fails+=("ringgate-load reported errors, non-2xx or unfinished requests")
    kill -0 "$router" 2>/dev/null || fails+=("ringgate died")

    local j=$WORK/load.json
    echo
    echo "soak: $(jq -r '.requests.completed' "$j") requests measured (+ ${WARMUP}s warm-up) in ${load_end}s," \
        "$(jq -r '.rps | floor' "$j") req/s open loop, $CONNS connections," \
        "$(jq -r '.connections_opened' "$j") connections opened (new-connection ratio $NEW_CONN_RATIO)"
    echo "  latency     p50 $(jq -r '.latency_us.p50' "$j") µs, p99 $(jq -r '.latency_us.p99' "$j") µs," \
        "p99.9 $(jq -r '.latency_us.p99_9' "$j") µs, max $(jq -r '.latency_us.max' "$j") µs"
    echo "  errors      $(jq -r '.requests.errors' "$j") (connect $(jq -r '.errors.connect' "$j"), reset $(jq -r '.errors.reset' "$j"), timeout $(jq -r '.errors.timeout' "$j")), non-2xx $(jq -r '.requests.non_2xx' "$j"), unfinished $(jq -r '.requests.unfinished' "$j"), unsent $(jq -r '.requests.unsent' "$j")"
    echo "  RSS         baseline $base_rss KiB; whole run $all_lo–$all_hi KiB;" \
        "after warm-up $rss_lo–$rss_hi KiB (band $((rss_hi - rss_lo)) KiB);" \
        "first 10 s mean $first KiB, last 10 s mean $last KiB"
    echo "  fds         baseline $base_fds; during load $fd_lo–$fd_hi; after load $fds_after"
    echo "  samples     $(wc -l <"$samples") (1/s)"
    if ((${#fails[@]})); then
        printf '  FAIL        %s\n' "${fails[@]}"
        tail -20 "$WORK/load.txt" >&2
        return 1
    fi
    echo "  PASS        RSS and fds flat, no errors"
}

main "$@"
