#!/usr/bin/env bash
# scripts/bench.sh — ringgate side by side with the direct path, nginx and HAProxy (SPEC §6).
#
# One command from a fresh clone: builds the release binaries, installs nginx, HAProxy
# (and jq) from Debian's packages if missing, starts the same two demo backends for
# everyone, and runs the same ringgate-load mix against
#   direct   the backends themselves (the floor; the load goes to zone_1's backend),
#   ringgate one worker,
#   nginx    one worker, upstream keep-alive,
#   haproxy  one thread, http mode, keep-alive, http-reuse always,
# at fixed open-loop rates (coordinated-omission corrected) and at maximum (closed loop).
# Paths are interleaved within each mode, so a disturbance hits one cell, not one path.
#
# CPU layout (2-core box; override with BENCH_PROXY_CPU / BENCH_LOAD_CPU):
#   core 0: the proxy under test (every process/thread of it, via taskset + its own pinning)
#   core 1: ringgate-load (1 thread) and both backends (1 thread each)
# The proxy's CPU time per request is (utime+stime of all its processes and threads,
# from /proc/PID/stat, between the end of warm-up and the end of the run) / requests.
#
# Output: one table on stdout and in benches/results/latest.md, and the latency curves
# of the last fixed rate in benches/results/latency.svg. Everything started is stopped on
# exit, failure included.
#
# Knobs (environment): BENCH_RATES ("5000 10000"), BENCH_DURATION (6s), BENCH_WARMUP (2s),
# BENCH_CONNS (32, open loop), BENCH_MAX_CONNS (32), BENCH_MAX_PIPELINE (1),
# BENCH_PORT_BASE (18800), BENCH_OUT (benches/results), BENCH_SKIP_BUILD=1,
# BENCH_NICE (e.g. -10: every benchmarked process alike, above other work on a shared box),
# BENCH_RT=1 (every benchmarked process under SCHED_RR, all alike: on a shared box, other
# work then cannot delay a wake-up by a time slice; a core kept busier than 95 % by RT
# tasks is throttled by the kernel, which can only show in the max cells),
# BENCH_KEEP=1 (keep the work directory with every JSON/.hgrm and log), CARGO_TARGET_DIR.

set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench/lib.sh"
export PATH=$PATH:/usr/sbin:/sbin

RATES=${BENCH_RATES:-5000 10000}
DURATION=${BENCH_DURATION:-6s}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_CONNS:-32}
MAX_CONNS=${BENCH_MAX_CONNS:-32}
MAX_PIPELINE=${BENCH_MAX_PIPELINE:-1}
PORT_BASE=${BENCH_PORT_BASE:-18800}
OUT=${BENCH_OUT:-$REPO_ROOT/benches/results}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
PATHS=(direct ringgate nginx haproxy)

PORT_RINGGATE=$PORT_BASE
PORT_NGINX=$((PORT_BASE + 1))
PORT_HAPROXY=$((PORT_BASE + 2))
PORT_BACKEND_1=$((PORT_BASE + 10))
PORT_BACKEND_2=$((PORT_BASE + 11))

use_work_dir bench "${BENCH_KEEP:-0}"
chmod 755 "$WORK" # nginx workers run as nobody


# Seconds in a ringgate-load duration ("8s", "500ms", "2m", "3").
seconds_of() {
    awk -v d="$1" 'BEGIN {
        n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
        if (u == "ms") n /= 1000; else if (u == "m") n *= 60; else if (u == "us") n /= 1e6
        print n
    }'
}

setup() {
    build_release
    ensure_commands nginx:nginx haproxy:haproxy jq:jq taskset:util-linux
    local ncpu
    ncpu=$(nproc)
    ((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "CPU $PROXY_CPU or $LOAD_CPU not available"
    ((ncpu >= 2)) || log "warning: one CPU only: proxy and load share it"
    local load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    LOAD_AT_START=$load1
    if [[ ${BENCH_RT:-0} != 1 ]] && awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average $load1: other work will disturb the latencies" \
            "(wait, or BENCH_RT=1 BENCH_NICE=-10 to put every benchmarked process above it)"
    fi
    require_free_ports "$PORT_RINGGATE" "$PORT_NGINX" "$PORT_HAPROXY" \
        "$PORT_BACKEND_1" "$PORT_BACKEND_2"

    log "backends: zone_1 :$PORT_BACKEND_1, zone_2 :$PORT_BACKEND_2 (1 thread each, CPU $LOAD_CPU)"
    start_backend "$PORT_BACKEND_1" zone_1 "$LOAD_CPU" "$WORK/backend-1.log"
    PIDS_BACKENDS=("$LAST_PID")
    start_backend "$PORT_BACKEND_2" zone_2 "$LOAD_CPU" "$WORK/backend-2.log"
    PIDS_BACKENDS+=("$LAST_PID")

    local vars=(PORT="$PORT_RINGGATE" ADMIN="" CPU="$PROXY_CPU"
        BACKEND_1="$PORT_BACKEND_1" BACKEND_2="$PORT_BACKEND_2")
    fill_template "$REPO_ROOT/benches/peers/ringgate.toml.in" "$WORK/ringgate.toml" "${vars[@]}"
    start_ringgate "$WORK/ringgate.toml" "$WORK/ringgate.log" "$PROXY_CPU"
    PID_RINGGATE=$LAST_PID

    mkdir -p "$WORK"/nginx-{body,proxy,fastcgi,uwsgi,scgi}
    chmod 777 "$WORK"/nginx-*
    local mask i
    # worker_cpu_affinity bit mask: CPU 0 = "1", CPU 1 = "10", ...
    mask=1
    for ((i = 0; i < PROXY_CPU; i++)); do mask="${mask}0"; done
    fill_template "$REPO_ROOT/benches/peers/nginx.conf.in" "$WORK/nginx.conf" \
        WORK="$WORK" CPU_MASK="$mask" PORT="$PORT_NGINX" \
        BACKEND_1="$PORT_BACKEND_1" BACKEND_2="$PORT_BACKEND_2"
    start_bg "$WORK/nginx.out" "${RUN_PREFIX[@]}" taskset -c "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/nginx-error.log" \
        -c "$WORK/nginx.conf"
    PID_NGINX=$LAST_PID
    wait_port "$PORT_NGINX"

    fill_template "$REPO_ROOT/benches/peers/haproxy.cfg.in" "$WORK/haproxy.cfg" \
        CPU="$PROXY_CPU" PORT="$PORT_HAPROXY" \
        BACKEND_1="$PORT_BACKEND_1" BACKEND_2="$PORT_BACKEND_2"
    start_bg "$WORK/haproxy.out" "${RUN_PREFIX[@]}" taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
    PID_HAPROXY=$LAST_PID
    wait_port "$PORT_HAPROXY"
    log "ringgate :$PORT_RINGGATE, nginx :$PORT_NGINX, haproxy :$PORT_HAPROXY (CPU $PROXY_CPU)"
    if [[ ${BENCH_RT:-0} == 1 ]]; then
        local peers
        mapfile -t peers < <(pid_tree "$PID_NGINX"; pid_tree "$PID_HAPROXY")
        set_policy rr "${PIDS_BACKENDS[@]}" "$PID_RINGGATE" "${peers[@]}"
        log "BENCH_RT=1: every benchmarked process runs under SCHED_RR"
    fi
}

target_of() {
    case $1 in
    direct) echo "127.0.0.1:$PORT_BACKEND_1" ;;
    ringgate) echo "127.0.0.1:$PORT_RINGGATE" ;;
    nginx) echo "127.0.0.1:$PORT_NGINX" ;;
    haproxy) echo "127.0.0.1:$PORT_HAPROXY" ;;
    esac
}

# PIDs whose CPU time is charged to a path (nginx: master + workers, read at run time).
proxy_pids_of() {
    case $1 in
    direct) ;;
    ringgate) echo "$PID_RINGGATE" ;;
    nginx) pid_tree "$PID_NGINX" ;;
    haproxy) pid_tree "$PID_HAPROXY" ;;
    esac
}

# One load run: run_one PATH MODE (MODE = a rate, or "max"). Appends a row to $WORK/rows.tsv.
run_one() {
    local path=$1 mode=$2 name json args pids=() t0 t1
    name="$path-$mode"
    json=$WORK/$name.json
    if [[ $mode == max ]]; then
        args=(-c "$MAX_CONNS" --pipeline "$MAX_PIPELINE")
    else
        args=(-R "$mode" -c "$CONNS")
    fi
    mapfile -t pids < <(proxy_pids_of "$path")
    local load_prefix=("${RUN_PREFIX[@]}")
    if [[ ${BENCH_RT:-0} == 1 ]]; then
        load_prefix=(chrt -r "${BENCH_RT_PRIO:-10}")
    fi
    timeout $((${DURATION_S%.*} + ${WARMUP_S%.*} + 60)) "${load_prefix[@]}" \
        "$BIN_DIR/ringgate-load" --target "$(target_of "$path")" "${args[@]}" -t 1 \
        --cpus "$LOAD_CPU" -d "$DURATION" --warmup "$WARMUP" \
        --mix commands=30,queries=70 --query-form mixed --users 1000 \
        --label "$path" --json "$json" --hgrm "$WORK/$name.hgrm" >"$WORK/$name.txt" 2>&1 &
    local load_pid=$!
    remember_pid "$load_pid"
    sleep "$WARMUP_S"
    t0=$(cpu_ticks "${pids[@]}")
    if ! wait "$load_pid"; then
        forget_pid "$load_pid"
        cat "$WORK/$name.txt" >&2
        die "ringgate-load failed on $name"
    fi
    forget_pid "$load_pid"
    t1=$(cpu_ticks "${pids[@]}")
    # Columns: path mode rps p50 p99 p99.9 completed failed proxy_ticks
    jq -r --arg path "$path" --arg mode "$mode" --arg t "$((t1 - t0))" \
        '[$path, $mode, .rps, .latency_us.p50, .latency_us.p99, .latency_us.p99_9,
          .requests.completed,
          (.requests.errors + .requests.non_2xx + .requests.unfinished + .requests.unsent),
          $t] | @tsv' "$json" >>"$WORK/rows.tsv"
    log "$(printf '%-8s %-6s' "$path" "$mode") $(jq -r '"\(.rps|floor) req/s  p50 \(.latency_us.p50)  p99 \(.latency_us.p99) µs"' "$json")"
}

# The Markdown table from rows.tsv (ratios against direct and against ringgate, per mode).
render_table() {
    awk -F'\t' -v tck="$CLK_TCK" '
    {
        k = $1 SUBSEP $2; order[++rows] = k; mode[k] = $2; path[k] = $1
        rps[k] = $3; p50[k] = $4; p99[k] = $5; p999[k] = $6; n[k] = $7; err[k] = $8
        cu[k] = ($1 == "direct" || $7 == 0) ? -1 : 1e6 * $9 / tck / $7
    }
    END {
        print "| path | mode | req/s | p50 µs | p99 µs | p99.9 µs | errors | proxy CPU µs/req | ≈ req/s per proxy core | added p50 / p99 over direct (µs) | ringgate ÷ path: req/s (>1: ringgate more) | ringgate ÷ path: CPU/req (<1: ringgate cheaper) |"
        print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= rows; i++) {
            k = order[i]; m = mode[k]; d = "direct" SUBSEP m; r = "ringgate" SUBSEP m
            label = (m == "max") ? "max (closed loop)" : m " req/s (open loop)"
            c = (cu[k] < 0) ? "—" : sprintf("%.1f", cu[k])
            per = (cu[k] <= 0) ? "—" : sprintf("%.0f", 1e6 / cu[k])
            added = (path[k] == "direct" || !(d in p50)) ? "—" : sprintf("+%.0f / +%.0f", p50[k] - p50[d], p99[k] - p99[d])
            thr = (path[k] == "direct" || !(r in rps) || rps[k] == 0) ? "—" : sprintf("%.2f×", rps[r] / rps[k])
            cr = (cu[k] <= 0 || !(r in cu) || cu[r] <= 0) ? "—" : sprintf("%.2f×", cu[r] / cu[k])
            printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %d | %s | %s | %s | %s | %s |\n",
                path[k], label, rps[k], p50[k], p99[k], p999[k], err[k], c, per, added, thr, cr
        }
    }' "$WORK/rows.tsv"
}

# Order of the paths per mode, by p99 (fixed rates) or req/s (max), and by CPU/req.
render_ranking() {
    local mode by_latency by_cpu
    for mode in "$@"; do
        by_latency=$(awk -F'\t' -v m="$mode" '$2 == m { print (m == "max" ? -$3 : $5), $1 }' \
            "$WORK/rows.tsv" | sort -g | awk '{ print $2 }' | paste -sd ' ')
        by_cpu=$(awk -F'\t' -v m="$mode" '$2 == m && $1 != "direct" && $7 > 0 { print $9 / $7, $1 }' \
            "$WORK/rows.tsv" | sort -g | awk '{ print $2 }' | paste -sd ' ')
        if [[ $mode == max ]]; then
            printf -- '- max: by req/s: %s; by proxy CPU/req: %s\n' \
                "${by_latency// / > }" "${by_cpu// / < }"
        else
            printf -- '- %s req/s: by p99: %s; by proxy CPU/req: %s\n' "$mode" \
                "${by_latency// / < }" "${by_cpu// / < }"
        fi
    done
}

main() {
    local started=$SECONDS
    DURATION_S=$(seconds_of "$DURATION")
    WARMUP_S=$(seconds_of "$WARMUP")
    setup
    : >"$WORK/rows.tsv"
    local mode path modes
    read -ra modes <<<"$RATES"
    modes+=(max)
    for mode in "${modes[@]}"; do
        for path in "${PATHS[@]}"; do
            run_one "$path" "$mode"
        done
    done

    mkdir -p "$OUT"
    local plot_rate=${modes[${#modes[@]} - 2]}
    "$BIN_DIR/ringgate-load" plot --out "$OUT/latency.svg" --log-y \
        --title "Latency by percentile, $plot_rate req/s open loop (30% Commands, 70% Queries)" \
        "direct=$WORK/direct-$plot_rate.json" "ringgate=$WORK/ringgate-$plot_rate.json" \
        "nginx=$WORK/nginx-$plot_rate.json" "haproxy=$WORK/haproxy-$plot_rate.json" >/dev/null

    local rev table
    rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_ROOT" status --porcelain -- src 2>/dev/null) ]]; then
        rev="$rev+dirty"
    fi
    table=$(render_table)
    {
        echo "# scripts/bench.sh — $(date -u +%Y-%m-%dT%H:%MZ), ringgate $rev"
        echo
        echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r);"
        echo "load average $LOAD_AT_START before the run."
        echo "Peers: $(nginx -v 2>&1 | sed 's/.*version: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')."
        echo "Layout: proxy on CPU $PROXY_CPU (1 worker/thread each); ringgate-load (1 thread) and"
        echo "two ringgate-backend processes (1 thread each) on CPU $LOAD_CPU. Direct = the load sent"
        echo "straight to zone_1's backend. Every benchmarked process runs at nice ${BENCH_NICE:-0}$(
            [[ ${BENCH_RT:-0} == 1 ]] && echo ", under SCHED_RR (BENCH_RT=1)")."
        echo "Load: ringgate-load, 30 % Commands (POST ~180 B JSON, user id in the body only) /"
        echo "70 % Queries (GET, user id in X-User-Id or ?user_id=, 50/50), 1000 uniform users;"
        echo "open loop: $CONNS connections, corrected for coordinated omission; max: closed loop,"
        echo "$MAX_CONNS connections, pipeline $MAX_PIPELINE. $DURATION measured after $WARMUP warm-up per cell."
        echo "Proxy CPU µs/req = utime+stime of all the proxy's processes and threads over the"
        echo "measured part / requests completed (on loopback the kernel's receive path runs in"
        echo "the sender's context, so it is charged to the proxy); ≈ req/s per proxy core = 10⁶ / that."
        echo
        echo "$table"
        echo
        echo "Ranking:"
        echo
        render_ranking "${modes[@]}"
    } >"$OUT/latest.md"
    echo
    cat "$OUT/latest.md"
    echo
    log "wrote $OUT/latest.md and $OUT/latency.svg in $((SECONDS - started)) s"
}

main "$@"
