#!/usr/bin/env bash
# scripts/flamegraph.sh — a CPU flame graph of ringgate under the bench harness's load.
#
# Starts the two demo backends (CPU 1) and one ringgate worker (CPU 0) exactly as
# scripts/bench.sh does, drives ringgate with the same ringgate-load mix (30 % Commands
# with the user id in a JSON body, 70 % Queries), records the router with
# `perf record --call-graph dwarf` (the release profile has debug info but no frame
# pointers, so frame-pointer unwinding would lose most user-space stacks), folds the
# stacks with inferno and writes:
#   flamegraphs/ringgate-<mode>.svg     the flame graph (kernel frames shown, tagged _[k])
#   flamegraphs/ringgate-<mode>.txt     where the time goes: kernel network stack,
#                                       io_uring, scheduler, ringgate, runtime, libc, and
#                                       the top user-space frames by self time
# Installs linux-perf (Debian) and inferno (`cargo install inferno`) if missing.
#
# Usage: scripts/flamegraph.sh [RATE|max]   (default 15000: open loop at 15k req/s)
# Knobs: FLAME_SECONDS (10), FLAME_FREQ (499 Hz), FLAME_CALL_GRAPH (dwarf; or fp),
# BENCH_PORT_BASE (18900), BENCH_SKIP_BUILD=1, FLAME_KEEP=1 (keep perf.data), CARGO_TARGET_DIR.

set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench/lib.sh"
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin

MODE=${1:-15000}
SECONDS_RECORDED=${FLAME_SECONDS:-10}
FREQ=${FLAME_FREQ:-499}
CALL_GRAPH=${FLAME_CALL_GRAPH:-dwarf}
PORT_BASE=${BENCH_PORT_BASE:-18900}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
OUT_DIR=$REPO_ROOT/flamegraphs
PORT_RINGGATE=$PORT_BASE
PORT_BACKEND_1=$((PORT_BASE + 10))
PORT_BACKEND_2=$((PORT_BASE + 11))

use_work_dir flame "${FLAME_KEEP:-0}"

# Shares of the folded stacks (inferno --all: kernel frames end in _[k]) by category, and
# the top user-space frames by self time. A user-space sample is charged to the innermost
# frame that names a known crate (so an inlined `core::` helper counts for its caller); a
# kernel sample to what its stack serves.
summarize() {
    awk '
    function user_cat(f, k,    i) {
        for (i = k; i >= 1; i--) {
            if (f[i] ~ /_\[k\]$/) continue
            if (f[i] ~ /^(<)?ringgate::/) return "user: ringgate"
            if (f[i] ~ /^(<)?monoio::/) return "user: monoio runtime"
            if (f[i] ~ /httparse/) return "user: httparse"
            if (f[i] ~ /simd_json|simdutf8/) return "user: simd-json"
            if (f[i] ~ /hdrhistogram/) return "user: hdrhistogram"
            if (f[i] ~ /^(__memcpy|__memmove|__memset|memcpy|memmove|malloc|free|cfree|_int_|realloc|__libc|__GI_|clock_gettime|__vdso|syscall$|pthread)/) return "user: libc (memcpy, malloc, clock, syscall stubs)"
        }
        return "user: other"
    }
    {
        n = $NF; stack = $0; sub(/ [0-9]+$/, "", stack)
        total += n
        k = split(stack, f, ";"); leaf = f[k]
        if (leaf ~ /_\[k\]$/) {
            if (stack ~ /(tcp_|__tcp|ip_|__ip|inet_|sock_|skb|__dev_queue|loopback|net_rx|netif|napi|sk_)/) cat = "kernel: TCP/IP + loopback (send, receive, softirq)"
            else if (stack ~ /io_uring|io_submit|io_issue|io_poll|io_req|io_cq|tctx_task|io_wq/) cat = "kernel: io_uring (excluding the TCP work it calls)"
            else if (stack ~ /schedule|finish_task_switch|__switch_to|pick_next|futex/) cat = "kernel: scheduler, futex"
            else if (stack ~ /(entry_SYSCALL|do_syscall|syscall_exit|exc_page_fault|asm_)/) cat = "kernel: syscall entry/exit, faults"
            else cat = "kernel: other"
        } else {
            cat = user_cat(f, k)
            self[leaf] += n
            user += n
        }
        share[cat] += n
    }
    END {
        if (total == 0) { print "no samples"; exit 1 }
        printf "user space %.1f %%, kernel %.1f %% of on-CPU samples\n\n", 100 * user / total, 100 * (total - user) / total
        print "by category:"
        for (c in share) printf "%6.1f %%  %s\n", 100 * share[c] / total, c | "sort -rn"
        close("sort -rn")
        print "\ntop user-space frames by self time (% of all samples):"
        for (s in self) printf "%6.2f %%  %s\n", 100 * self[s] / total, s | "sort -rn | head -20"
        close("sort -rn | head -20")
    }' "$1"
}

main() {
    build_release
    ensure_commands perf:linux-perf taskset:util-linux
    if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
        log "cargo install inferno (once, ~2 min)"
        cargo install inferno --locked --quiet || die "cargo install inferno failed"
    fi
    require_free_ports "$PORT_RINGGATE" "$PORT_BACKEND_1" "$PORT_BACKEND_2"

    start_backend "$PORT_BACKEND_1" zone_1 "$LOAD_CPU" "$WORK/backend-1.log"
    start_backend "$PORT_BACKEND_2" zone_2 "$LOAD_CPU" "$WORK/backend-2.log"
    fill_template "$REPO_ROOT/benches/peers/ringgate.toml.in" "$WORK/ringgate.toml" \
        PORT="$PORT_RINGGATE" ADMIN="" CPU="$PROXY_CPU" \
        BACKEND_1="$PORT_BACKEND_1" BACKEND_2="$PORT_BACKEND_2"
    start_ringgate "$WORK/ringgate.toml" "$WORK/ringgate.log" "$PROXY_CPU"
    local router=$LAST_PID

    local args warmup=3
    if [[ $MODE == max ]]; then args=(-c 32); else args=(-R "$MODE" -c 32); fi
    start_bg "$WORK/load.txt" "$BIN_DIR/ringgate-load" --target "127.0.0.1:$PORT_RINGGATE" \
        "${args[@]}" -t 1 --cpus "$LOAD_CPU" -d "$((SECONDS_RECORDED + 2))s" --warmup "${warmup}s" \
        --mix commands=30,queries=70 --query-form mixed --users 1000 --json "$WORK/load.json"
    local load=$LAST_PID
    sleep "$warmup"

    log "perf record -F $FREQ --call-graph $CALL_GRAPH on ringgate (pid $router) for ${SECONDS_RECORDED}s"
    local cg=(--call-graph "$CALL_GRAPH")
    [[ $CALL_GRAPH == dwarf ]] && cg=(--call-graph "dwarf,16384")
    perf record -F "$FREQ" "${cg[@]}" -p "$router" -o "$WORK/perf.data" \
        -- sleep "$SECONDS_RECORDED" >"$WORK/perf-record.log" 2>&1 ||
        { cat "$WORK/perf-record.log" >&2; die "perf record failed"; }
    wait "$load" || { cat "$WORK/load.txt" >&2; die "ringgate-load failed"; }
    forget_pid "$load"

    local name="ringgate-$MODE"
    [[ $MODE == max ]] || name="ringgate-${MODE}rps"
    mkdir -p "$OUT_DIR"
    log "folding stacks (perf script | inferno-collapse-perf --all)"
    perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$WORK/folded.txt"
    local rps
    rps=$(jq -r '.rps | floor' "$WORK/load.json")
    inferno-flamegraph --title "ringgate, 1 worker, $rps req/s ($MODE), 30 % Commands / 70 % Queries" \
        --subtitle "perf -F $FREQ --call-graph $CALL_GRAPH, ${SECONDS_RECORDED} s; kernel frames end in _[k]" \
        --colors rust --width 1600 <"$WORK/folded.txt" >"$OUT_DIR/$name.svg"
    {
        echo "# $name: ringgate $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)," \
            "$rps req/s achieved, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "# load: $(jq -r '"p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, errors \(.requests.errors), non-2xx \(.requests.non_2xx)"' "$WORK/load.json")"
        echo
        summarize "$WORK/folded.txt"
    } >"$OUT_DIR/$name.txt"
    cat "$OUT_DIR/$name.txt"
    log "wrote $OUT_DIR/$name.svg and $OUT_DIR/$name.txt"
}

main "$@"
