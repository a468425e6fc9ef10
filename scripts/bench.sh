#!/usr/bin/env bash
# scripts/bench.sh — ringgate side by side with the direct path, a byte-relay floor, nginx,
# HAProxy and optionally Pingora and another ringgate build, showing where each
# one's time goes.
#
# One command from a fresh clone: builds the release binaries and the relay, installs
# nginx, HAProxy, wrk, perf and jq from Debian's packages if missing, and runs, for every
# path in the same run:
#   direct         the backend itself (the floor of latency; the load goes to zone_1's backend),
#   relay          scripts/bench/relay.c: one thread, epoll, one backend connection per client
#                  connection, bytes copied both ways with read/write, no HTTP work — the
#                  floor of CPU every proxy on kernel sockets pays,
#   relay-uring    (BENCH_RELAY_URING=1) scripts/bench/relay-uring.c --mode plain: the same relay
#                  on one io_uring (SINGLE_ISSUER|DEFER_TASKRUN, one io_uring_submit_and_wait per
#                  loop turn), one recv per direction at a time into its buffer, then a send,
#   relay-pf       (BENCH_RELAY_URING=1) the same --mode pollfirst: plain with
#                  IORING_RECVSEND_POLL_FIRST on every recv (no recv attempt that fails first),
#   relay-ms       (BENCH_RELAY_URING=1) the same --mode multishot: registered (fixed) sockets,
#                  one multishot recv per socket from a provided-buffer ring, sends from those
#                  buffers; with relay-uring, what io_uring's features save next to the epoll
#                  floor (built with liburing, liburing-dev installed from Debian if missing),
#   ringgate       one worker,
#   ringgate-base  (BENCH_BASELINE=/path/to/ringgate) that binary, same config: an A/B of
#                  two builds in one run,
#   nginx          one worker, upstream keep-alive,
#   haproxy        one thread, http mode, keep-alive, http-reuse always,
#   pingora        (BENCH_PINGORA=1) scripts/bench/pingora/: a minimal ProxyHttp over
#                  Pingora's connection pool, one worker thread, built from crates.io in
#                  ~/.cache/ringgate-bench/pingora with nice -n 19 (first build: long),
# in these cells:
#   rates  ringgate-load open loop at each of BENCH_RATES (coordinated-omission corrected);
#          with BENCH_RATE_ROUNDS > 1 in rounds, as c1 below,
#   max    ringgate-load closed loop, BENCH_MAX_CONNS connections,
#   c1     ringgate-load closed loop, one connection, one request at a time, in
#          BENCH_C1_ROUNDS short rounds, paths round-robin within each round (the first path
#          rotating); reported as the medians over the rounds of p50/p99 and of the added
#          p50/p99 over direct in the same round (one c=1 run on a VM swings 0.2–1.5 ms),
#   wrk    our field measurement: wrk (1 thread) POSTs a ~200-byte JSON body whose user_id
#          is only in the body (ringgate parses every body), BENCH_WRK_CONNS connections,
#          against an nginx `return 200` backend (see benches/peers/nginx-backend.conf.in
#          for why not the demo backend), in the field's CPU layout (below); with
#          BENCH_WRK_ROUNDS > 1, in that many rounds like c1 (each path once per round, the
#          first path rotating), reported as medians over the rounds, and ringgate's CPU per
#          request ÷ each path's as the median of the ratios within a round (one wrk run
#          after another drifts with the host by 10–20 %; paths a few seconds apart do not),
# and, with BENCH_TLS=1 (or these names in BENCH_CELLS), three TLS cells with ringgate, nginx
# and HAProxy (and ringgate-base, which must then have [listener.tls]) each terminating TLS 1.3
# with the same certificate, suite (TLS_AES_128_GCM_SHA256) and group (X25519), in front of
# the wrk cell's backend, in its layout (scripts/bench/tls.sh says what is pinned where and
# how it is checked):
#   tls         keep-alive over TLS: the wrk cell's load over https://, BENCH_TLS_CONNS
#               connections (one handshake each, at wrk's start),
#   tls-hs      full handshakes: ab opens a new connection per request (HTTP/1.0, no
#               keep-alive) and never offers a session: one full TLS 1.3 handshake and one
#               POST per connection, BENCH_TLS_HS_CONNS at a time; rate = handshakes/s and
#               CPU per request = the proxy's CPU per handshake,
#   tls-resume  resumed handshakes: wrk with `Connection: close`, BENCH_TLS_HS_CONNS
#               connections; wrk reconnects after every answer offering the session it got
#               last, so every connection but each wrk connection's first resumes (PSK with
#               X25519: no certificate, no signature).
# Cells are interleaved across paths (a disturbance hits one cell, not one path).
#
# CPU layout (2-core box):
#   rates/max/c1: the proxy under test on BENCH_PROXY_CPU (0), every process/thread of it
#                 (taskset + its own pinning); ringgate-load (1 thread) and both demo backends
#                 (1 thread each) on BENCH_LOAD_CPU (1).
#   wrk:          the proxy on BENCH_WRK_PROXY_CPU (1); wrk and the nginx backend (1 worker)
#                 on BENCH_WRK_LOAD_CPU (0). Every proxy is restarted for this layout.
#   tls cells:    the same as wrk (ab too runs on BENCH_WRK_LOAD_CPU); the proxies are
#                 restarted with their TLS configs (benches/peers/*-tls.*.in). The client's
#                 side of a full handshake (OpenSSL 3.0) costs as much CPU as the proxy's or
#                 more, so the tls-hs rate is likely the load CPU's limit: the TLS table shows
#                 how busy each proxy's core was.
#
# Per-request columns of every proxy path, over the measured window of each cell only
# (after warm-up; scripts/bench/counters.sh): user and system CPU µs (utime/stime of all its
# processes and threads, /proc/PID/stat), and from `perf stat -p` attached for the window:
# syscalls (raw_syscalls:sys_enter), io_uring submissions (io_uring:io_uring_submit_req)
# and io_uring poll arms (io_uring:io_uring_poll_arm); and for every path, direct included,
# the TCP segments the machine sent (Tcp OutSegs, /proc/net/snmp). Ratios: ringgate ÷ each
# path for req/s and CPU/req.
#
# Output: one table on stdout and in benches/results/latest.md (the TLS cells in a second
# table, with the proxy core's busy share), and the latency curves of the last fixed rate in
# benches/results/latency.svg. Everything started is stopped on exit, failure included.
#
# Knobs (environment; durations as ringgate-load takes them: 6s, 500ms, 2m, ...):
#   BENCH_CELLS ("rates max c1 wrk")  which cells to run, in this order
#   BENCH_RATES ("5000 10000"), BENCH_CONNS (32)  open-loop rates and their connections
#   BENCH_RATE_ROUNDS (1)                         rounds of each rate (e.g. 5 with
#                                                 BENCH_DURATION=3s BENCH_WARMUP=1s)
#   BENCH_DURATION (6s), BENCH_WARMUP (2s)        measured time and warm-up per rates/max cell
#   BENCH_MAX_CONNS (32), BENCH_MAX_PIPELINE (1)  the closed-loop max cell
#   BENCH_C1_ROUNDS (5), BENCH_C1_DURATION (2s), BENCH_C1_WARMUP (1s)  the c=1 cell
#   BENCH_WRK_CONNS (50), BENCH_WRK_DURATION (6s), BENCH_WRK_WARMUP (2s)  the wrk cell
#                                                 (wrk takes whole seconds)
#   BENCH_WRK_ROUNDS (1)                          rounds of the wrk cell (e.g. 7 with
#                                                 BENCH_WRK_DURATION=3s BENCH_WRK_WARMUP=1s)
#   BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1)       layout of rates/max/c1
#   BENCH_WRK_PROXY_CPU (1), BENCH_WRK_LOAD_CPU (0)  layout of the wrk cell (and TLS cells)
#   BENCH_TLS=1                                   add the cells tls tls-hs tls-resume (after
#                                                 BENCH_CELLS; or name some in BENCH_CELLS)
#   BENCH_TLS_CONNS (BENCH_WRK_CONNS)             connections of the tls (keep-alive) cell
#   BENCH_TLS_HS_CONNS (50)                       concurrent connections of tls-hs/tls-resume
#   BENCH_TLS_DURATION, BENCH_TLS_WARMUP (BENCH_WRK_DURATION, BENCH_WRK_WARMUP)  per TLS
#                                                 cell (whole seconds)
#   BENCH_TLS_CIPHER (TLS_AES_128_GCM_SHA256)     the one TLS 1.3 suite offered and accepted
#   BENCH_TLS_CERT, BENCH_TLS_KEY                 your PEM certificate and key (default: a new
#                                                 self-signed ECDSA P-256 one per run)
#   BENCH_BASELINE=/path/to/ringgate              add the ringgate-base path (A/B)
#   BENCH_RINGGATE_ARGS, BENCH_BASELINE_ARGS      extra command-line arguments of each
#                                                 (e.g. BENCH_BASELINE=target/release/ringgate
#                                                 BENCH_BASELINE_ARGS="--ring plain": A/B of a
#                                                 setting on the same build)
#   BENCH_RELAY_URING=1                           add the relay-uring, relay-pf and relay-ms paths (io_uring
#                                                 relays; not in the TLS cells)
#   BENCH_PINGORA=1                               add the pingora path (builds it if needed;
#                                                 not in the TLS cells)
#   BENCH_PINGORA_DIR (~/.cache/ringgate-bench/pingora)  where Pingora is built
#   BENCH_PERF=0                                  no perf columns (utime/stime only)
#   BENCH_PORT_BASE (18800), BENCH_OUT (benches/results), BENCH_SKIP_BUILD=1,
#   BENCH_NICE (e.g. -10: every benchmarked process alike, above other work on a shared box),
#   BENCH_RT=1 (every benchmarked process under SCHED_RR, all alike: on a shared box, other
#   work then cannot delay a wake-up by a time slice; a core kept busier than 95 % by RT
#   tasks is throttled by the kernel, which can only show in the max and wrk cells),
#   BENCH_KEEP=1 (keep the work directory: every JSON/.hgrm, wrk and perf output, logs),
#   CARGO_TARGET_DIR.

set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/bench" && pwd)
# shellcheck source=scripts/bench/lib.sh
source "$BENCH_DIR/lib.sh"
# shellcheck source=scripts/bench/counters.sh
source "$BENCH_DIR/counters.sh"
# shellcheck source=scripts/bench/tls.sh
source "$BENCH_DIR/tls.sh"
export PATH=$PATH:/usr/sbin:/sbin

CELLS=${BENCH_CELLS:-rates max c1 wrk}
if [[ ${BENCH_TLS:-0} == 1 ]]; then
    for cell in tls tls-hs tls-resume; do
        [[ " $CELLS " == *" $cell "* ]] || CELLS+=" $cell"
    done
fi
RATES=${BENCH_RATES:-5000 10000}
RATE_ROUNDS=${BENCH_RATE_ROUNDS:-1}
DURATION=${BENCH_DURATION:-6s}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_CONNS:-32}
MAX_CONNS=${BENCH_MAX_CONNS:-32}
MAX_PIPELINE=${BENCH_MAX_PIPELINE:-1}
C1_ROUNDS=${BENCH_C1_ROUNDS:-5}
C1_DURATION=${BENCH_C1_DURATION:-2s}
C1_WARMUP=${BENCH_C1_WARMUP:-1s}
WRK_CONNS=${BENCH_WRK_CONNS:-50}
WRK_DURATION=${BENCH_WRK_DURATION:-6s}
WRK_WARMUP=${BENCH_WRK_WARMUP:-2s}
WRK_ROUNDS=${BENCH_WRK_ROUNDS:-1}
TLS_CONNS=${BENCH_TLS_CONNS:-$WRK_CONNS}
TLS_HS_CONNS=${BENCH_TLS_HS_CONNS:-50}
TLS_DURATION=${BENCH_TLS_DURATION:-$WRK_DURATION}
TLS_WARMUP=${BENCH_TLS_WARMUP:-$WRK_WARMUP}
PORT_BASE=${BENCH_PORT_BASE:-18800}
OUT=${BENCH_OUT:-$REPO_ROOT/benches/results}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
WRK_PROXY_CPU=${BENCH_WRK_PROXY_CPU:-1}
WRK_LOAD_CPU=${BENCH_WRK_LOAD_CPU:-0}
BASELINE=${BENCH_BASELINE:-}
PINGORA=${BENCH_PINGORA:-0}
PINGORA_DIR=${BENCH_PINGORA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringgate-bench/pingora}
RELAY_URING=${BENCH_RELAY_URING:-0}

PATHS=(direct relay)
[[ $RELAY_URING == 1 ]] && PATHS+=(relay-uring relay-pf relay-ms)
PATHS+=(ringgate)
[[ -n $BASELINE ]] && PATHS+=(ringgate-base)
PATHS+=(nginx haproxy)
[[ $PINGORA == 1 ]] && PATHS+=(pingora)
# The TLS cells: the proxies that terminate TLS (no direct, relays or Pingora).
TLS_PATHS=(ringgate)
[[ -n $BASELINE ]] && TLS_PATHS+=(ringgate-base)
TLS_PATHS+=(nginx haproxy)

# Port of each path's listener and PID of its main process, per layout (start_paths).
declare -A PORT_OF=() PID_OF=()

use_work_dir bench "${BENCH_KEEP:-0}"
chmod 755 "$WORK" # nginx workers run as nobody

# worker_cpu_affinity bit mask of one CPU: CPU 0 = "1", CPU 1 = "10", ...
cpu_mask() {
    local mask=1 i
    for ((i = 0; i < $1; i++)); do mask="${mask}0"; done
    echo "$mask"
}

has_cell() { [[ " $CELLS " == *" $1 "* ]]; }
# describe_idle -- how idle cores sleep (a KVM guest's halt polling moves every path's
# low-rate figures several-fold; see tuning/README.md, cpu.idle).
describe_idle() {
    local driver poll
    driver=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)
    poll=$(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null || true)
    if [[ $driver == haltpoll && -n $poll ]]; then
        echo "cpuidle haltpoll, guest_halt_poll_ns $poll"
    else
        echo "cpuidle $driver"
    fi
}

has_tls_cell() { has_cell tls || has_cell tls-hs || has_cell tls-resume; }

# Build Pingora's peer in $PINGORA_DIR (outside the repository's target) from the template
# in scripts/bench/pingora/, at the lowest priority; cargo makes a rebuild a no-op.
build_pingora() {
    local f
    # pingora-core's flate2 uses zlib-ng, built with cmake (and a C/C++ compiler).
    ensure_commands cmake:cmake c++:g++
    mkdir -p "$PINGORA_DIR"
    for f in Cargo.toml Cargo.lock main.rs; do
        [[ -f $BENCH_DIR/pingora/$f ]] || continue
        cmp -s "$BENCH_DIR/pingora/$f" "$PINGORA_DIR/$f" || cp "$BENCH_DIR/pingora/$f" "$PINGORA_DIR/$f"
    done
    # The committed Cargo.lock pins every crate version, so the peer is the same build
    # everywhere; --locked refuses to drift from it.
    local locked=()
    [[ -f $BENCH_DIR/pingora/Cargo.lock ]] && locked=(--locked)
    log "building Pingora's peer in $PINGORA_DIR (nice -n 19; the first build on 2 cores takes long)"
    if ! (cd "$PINGORA_DIR" && CARGO_TARGET_DIR="$PINGORA_DIR/target" \
        nice -n 19 cargo build --release "${locked[@]}" >"$PINGORA_DIR/build.log" 2>&1); then
        tail -n 30 "$PINGORA_DIR/build.log" >&2
        die "Pingora's peer did not build (full log: $PINGORA_DIR/build.log)"
    fi
    PINGORA_BIN=$PINGORA_DIR/target/release/pingora-peer
}

# Install liburing-dev (the header and library relay-uring.c is built with) if the compiler
# does not find liburing, the way ensure_commands installs a missing command's package.
ensure_liburing() {
    echo '#include <liburing.h>' | cc -E -x c - >/dev/null 2>&1 && return 0
    [[ $(id -u) == 0 ]] || die "need root to apt-get install liburing-dev"
    log "apt-get install liburing-dev"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends liburing-dev \
        >/dev/null || die "apt-get install liburing-dev failed"
}

setup() {
    build_release
    ensure_commands nginx:nginx haproxy:haproxy jq:jq taskset:util-linux wrk:wrk cc:gcc
    check_perf
    log "cc -O2 scripts/bench/relay.c"
    cc -O2 -Wall -o "$WORK/relay" "$BENCH_DIR/relay.c" || die "relay.c did not compile"
    RELAY_BIN=$WORK/relay
    if [[ $RELAY_URING == 1 ]]; then
        ensure_liburing
        log "cc -O2 scripts/bench/relay-uring.c -luring"
        cc -O2 -Wall -o "$WORK/relay-uring" "$BENCH_DIR/relay-uring.c" -luring ||
            die "relay-uring.c did not compile"
        RELAY_URING_BIN=$WORK/relay-uring
    fi
    if [[ -n $BASELINE ]]; then
        [[ -x $BASELINE ]] || die "BENCH_BASELINE=$BASELINE is not an executable"
    fi
    [[ $PINGORA == 1 ]] && build_pingora
    if has_tls_cell; then tls_setup; fi
    local ncpu cpu
    ncpu=$(nproc)
    for cpu in "$PROXY_CPU" "$LOAD_CPU" "$WRK_PROXY_CPU" "$WRK_LOAD_CPU"; do
        ((cpu < ncpu)) || die "CPU $cpu not available"
    done
    ((ncpu >= 2)) || log "warning: one CPU only: proxy and load share it"
    LOAD_AT_START=$(cut -d' ' -f1 /proc/loadavg)
    if [[ ${BENCH_RT:-0} != 1 ]] && awk -v l="$LOAD_AT_START" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average $LOAD_AT_START: other work will disturb the figures" \
            "(wait, or BENCH_RT=1 BENCH_NICE=-10 to put every benchmarked process above it)"
    fi
    local ports
    mapfile -t ports < <(seq "$PORT_BASE" $((PORT_BASE + 31)))
    if has_tls_cell; then mapfile -t -O "${#ports[@]}" ports < <(seq $((PORT_BASE + 40)) $((PORT_BASE + 47))); fi
    require_free_ports "${ports[@]}"
}

# Start the given paths of one layout:
#   start_paths TAG PORT0 PROXY_CPU BACKEND_1 BACKEND_2 SCHEME PATH...
# SCHEME http: the cleartext peer configs; https: their TLS variants (benches/peers/*-tls.*,
# with the run's certificate and suite: scripts/bench/tls.sh). Listeners on PORT0 + 0..8
# (relay-uring, relay-ms and relay-pf on 6, 7 and 8 are never in the TLS layout, whose
# backends are there); configs and logs in $WORK/TAG-*. Sets LAYOUT_PATHS, PORT_OF and PID_OF.
start_paths() {
    local tag=$1 port0=$2 cpu=$3 b1=$4 b2=$5 scheme=$6 path port tls=""
    shift 6
    LAYOUT_PATHS=("$@")
    [[ $scheme == https ]] && tls=-tls
    PORT_OF=([direct]=$b1)
    PID_OF=()
    for path in "${LAYOUT_PATHS[@]}"; do
        [[ $path == direct ]] && continue
        case $path in
        ringgate) port=$port0 ;;
        nginx) port=$((port0 + 1)) ;;
        haproxy) port=$((port0 + 2)) ;;
        relay) port=$((port0 + 3)) ;;
        ringgate-base) port=$((port0 + 4)) ;;
        pingora) port=$((port0 + 5)) ;;
        relay-uring) port=$((port0 + 6)) ;;
        relay-ms) port=$((port0 + 7)) ;;
        relay-pf) port=$((port0 + 8)) ;;
        esac
        PORT_OF[$path]=$port
        case $path in
        relay)
            start_bg "$WORK/$tag-relay.log" "${RUN_PREFIX[@]}" taskset -c "$cpu" "$RELAY_BIN" \
                "$port" "$b1" "$b2"
            ;;
        relay-uring | relay-pf | relay-ms)
            local relay_mode=plain
            [[ $path == relay-pf ]] && relay_mode=pollfirst
            [[ $path == relay-ms ]] && relay_mode=multishot
            start_bg "$WORK/$tag-$path.log" "${RUN_PREFIX[@]}" taskset -c "$cpu" "$RELAY_URING_BIN" \
                --mode "$relay_mode" "$port" "$b1" "$b2"
            ;;
        ringgate | ringgate-base)
            fill_template "$REPO_ROOT/benches/peers/ringgate$tls.toml.in" "$WORK/$tag-$path.toml" \
                PORT="$port" ADMIN="" CPU="$cpu" BACKEND_1="$b1" BACKEND_2="$b2" \
                CERT="${TLS_CERT:-}" KEY="${TLS_KEY:-}"
            local bin=$BIN_DIR/ringgate
            local -a args
            read -r -a args <<<"${BENCH_RINGGATE_ARGS:-}"
            if [[ $path == ringgate-base ]]; then
                bin=$BASELINE
                read -r -a args <<<"${BENCH_BASELINE_ARGS:-}"
            fi
            start_ringgate_bin "$bin" "$WORK/$tag-$path.toml" "$WORK/$tag-$path.log" "$cpu" \
                "${args[@]}"
            ;;
        nginx)
            mkdir -p "$WORK/$tag-nginx"
            mkdir -p "$WORK/$tag-nginx"/nginx-{body,proxy,fastcgi,uwsgi,scgi}
            chmod 755 "$WORK/$tag-nginx"
            chmod 777 "$WORK/$tag-nginx"/nginx-*
            fill_template "$REPO_ROOT/benches/peers/nginx$tls.conf.in" "$WORK/$tag-nginx/nginx.conf" \
                WORK="$WORK/$tag-nginx" CPU_MASK="$(cpu_mask "$cpu")" PORT="$port" \
                BACKEND_1="$b1" BACKEND_2="$b2" CERT="${TLS_CERT:-}" KEY="${TLS_KEY:-}" \
                CIPHER="$TLS_CIPHER"
            start_bg "$WORK/$tag-nginx.out" "${RUN_PREFIX[@]}" taskset -c "$cpu" nginx \
                -p "$WORK/$tag-nginx" -e "$WORK/$tag-nginx/nginx-error.log" -c "$WORK/$tag-nginx/nginx.conf"
            ;;
        haproxy)
            fill_template "$REPO_ROOT/benches/peers/haproxy$tls.cfg.in" "$WORK/$tag-haproxy.cfg" \
                CPU="$cpu" PORT="$port" BACKEND_1="$b1" BACKEND_2="$b2" \
                CERT_KEY="${TLS_CERT_KEY:-}" CIPHER="$TLS_CIPHER"
            start_bg "$WORK/$tag-haproxy.out" "${RUN_PREFIX[@]}" taskset -c "$cpu" haproxy -db \
                -f "$WORK/$tag-haproxy.cfg"
            ;;
        pingora)
            start_bg "$WORK/$tag-pingora.log" "${RUN_PREFIX[@]}" taskset -c "$cpu" "$PINGORA_BIN" \
                "127.0.0.1:$port" "$WORK/$tag-pingora.pid" "127.0.0.1:$b1" "127.0.0.1:$b2"
            ;;
        esac
        PID_OF[$path]=$LAST_PID
        wait_port "$port" 20
    done
    local summary=""
    for path in "${LAYOUT_PATHS[@]}"; do summary+=" $path :${PORT_OF[$path]}"; done
    log "$tag layout ($scheme), proxies on CPU $cpu:$summary"
    if [[ ${BENCH_RT:-0} == 1 ]]; then
        local pids=()
        for path in "${!PID_OF[@]}"; do mapfile -t -O "${#pids[@]}" pids < <(pid_tree "${PID_OF[$path]}"); done
        set_policy rr "${pids[@]}"
    fi
}

# Only the measured path runs: every other proxy of the layout is stopped (SIGSTOP) until
# resume_paused, so that none of them takes the measured one's core — a busy-polling
# ringgate (BENCH_BASELINE_ARGS="--busy-poll") spins on it even with no traffic.
pause_others() {
    local path pids
    for path in "${!PID_OF[@]}"; do
        [[ $path == "$1" ]] && continue
        mapfile -t pids < <(proxy_pids_of "$path")
        pause_pids "${pids[@]}"
    done
}

# PIDs whose CPU time and counters are charged to a path (nginx: master + workers).
proxy_pids_of() {
    [[ $1 == direct ]] || pid_tree "${PID_OF[$1]}"
}

# Prefix of every load generator (ringgate-load, wrk).
load_prefix() {
    if [[ ${BENCH_RT:-0} == 1 ]]; then
        echo chrt -r "${BENCH_RT_PRIO:-10}"
    elif ((${#RUN_PREFIX[@]} > 0)); then
        echo "${RUN_PREFIX[@]}"
    fi
}

# The rates/max/c1 layout: two demo backends on the load CPU, proxies on the proxy CPU.
start_load_layout() {
    local b1=$((PORT_BASE + 10)) b2=$((PORT_BASE + 11))
    log "demo backends: zone_1 :$b1, zone_2 :$b2 (1 thread each, CPU $LOAD_CPU)"
    start_backend "$b1" zone_1 "$LOAD_CPU" "$WORK/backend-1.log"
    local backends=("$LAST_PID")
    start_backend "$b2" zone_2 "$LOAD_CPU" "$WORK/backend-2.log"
    backends+=("$LAST_PID")
    [[ ${BENCH_RT:-0} == 1 ]] && set_policy rr "${backends[@]}"
    start_paths load "$PORT_BASE" "$PROXY_CPU" "$b1" "$b2" http "${PATHS[@]}"
}

# The nginx `return 200` backend of the wrk and TLS layouts, on the wrk load CPU:
# start_return200_backend TAG PORT_1 PORT_2.
start_return200_backend() {
    local tag=$1 b1=$2 b2=$3 dir=$WORK/$1-backend
    mkdir -p "$dir"/nginx-{body,proxy,fastcgi,uwsgi,scgi}
    chmod 755 "$dir"
    chmod 777 "$dir"/nginx-*
    fill_template "$REPO_ROOT/benches/peers/nginx-backend.conf.in" "$dir/nginx.conf" \
        WORK="$dir" CPU_MASK="$(cpu_mask "$WRK_LOAD_CPU")" BACKEND_1="$b1" BACKEND_2="$b2"
    start_bg "$WORK/$tag-backend.out" "${RUN_PREFIX[@]}" taskset -c "$WRK_LOAD_CPU" nginx \
        -p "$dir" -e "$dir/nginx-error.log" -c "$dir/nginx.conf"
    local backend=$LAST_PID
    wait_port "$b1"
    wait_port "$b2"
    log "nginx return-200 backend :$b1 :$b2 (1 worker, CPU $WRK_LOAD_CPU)"
    if [[ ${BENCH_RT:-0} == 1 ]]; then
        local pids
        mapfile -t pids < <(pid_tree "$backend")
        set_policy rr "${pids[@]}"
    fi
}

# The wrk layout: the nginx `return 200` backend (two ports) on the wrk CPU, proxies
# restarted on the wrk proxy CPU.
start_wrk_layout() {
    local b1=$((PORT_BASE + 30)) b2=$((PORT_BASE + 31))
    start_return200_backend wrk "$b1" "$b2"
    start_paths wrk $((PORT_BASE + 20)) "$WRK_PROXY_CPU" "$b1" "$b2" http "${PATHS[@]}"
}

# The TLS layout: the wrk layout with the TLS proxies (their own ports and backend), then
# the check of what each one negotiates (scripts/bench/tls.sh).
start_tls_layout() {
    local b1=$((PORT_BASE + 46)) b2=$((PORT_BASE + 47)) path
    start_return200_backend tls "$b1" "$b2"
    start_paths tls $((PORT_BASE + 40)) "$WRK_PROXY_CPU" "$b1" "$b2" https "${TLS_PATHS[@]}"
    for path in "${TLS_PATHS[@]}"; do tls_check_negotiation "$path" "${PORT_OF[$path]}"; done
}

# Columns of a rows.tsv row (see scripts/bench/table.awk): path mode rps p50 p99 p99.9
# completed failed utime stime syscalls submits arms segments, from a ringgate-load JSON and
# the window's counters.
load_row() {
    local path=$1 mode=$2 json=$3 counters=$4
    jq -r --arg path "$path" --arg mode "$mode" --arg c "$counters" \
        '[$path, $mode, .rps, .latency_us.p50, .latency_us.p99, .latency_us.p99_9,
          .requests.completed,
          (.requests.errors + .requests.non_2xx + .requests.unfinished + .requests.unsent)]
         + ($c | split(" ")) | @tsv' "$json"
}

# One ringgate-load run: run_load PATH MODE [ROUND] (MODE = a rate, "max" or "c1").
# Appends a row to $WORK/rows.tsv (with a ROUND: to $WORK/rounds-MODE.tsv, with the round).
run_load() {
    local path=$1 mode=$2 round=${3:-} name json args pids prefix
    local duration_s=$DURATION_S warmup_s=$WARMUP_S
    name="$path-$mode${round:+-$round}"
    json=$WORK/$name.json
    case $mode in
    max) args=(-c "$MAX_CONNS" --pipeline "$MAX_PIPELINE") ;;
    c1)
        args=(-c 1)
        duration_s=$C1_DURATION_S warmup_s=$C1_WARMUP_S
        ;;
    *) args=(-R "$mode" -c "$CONNS") ;;
    esac
    pause_others "$path"
    mapfile -t pids < <(proxy_pids_of "$path")
    counters_attach "$name" "${pids[@]}"
    read -ra prefix <<<"$(load_prefix)"
    # The load gets the very seconds the window below sleeps.
    timeout "$(awk -v a="$duration_s" -v b="$warmup_s" 'BEGIN { print int(a + b + 60) }')" \
        "${prefix[@]}" "$BIN_DIR/ringgate-load" --target "127.0.0.1:${PORT_OF[$path]}" "${args[@]}" -t 1 \
        --cpus "$LOAD_CPU" -d "${duration_s}s" --warmup "${warmup_s}s" \
        --mix commands=30,queries=70 --query-form mixed --users 1000 \
        --label "$path" --json "$json" --hgrm "$WORK/$name.hgrm" >"$WORK/$name.txt" 2>&1 &
    local load_pid=$!
    remember_pid "$load_pid"
    # The window is timed by this clock, as long as the load's measured part (which starts
    # the load's start-up and connect lead, ~50 ms, later and ends as much later: both ends
    # of the window shift alike, within the load's steady run).
    sleep "$warmup_s"
    window_begin
    sleep "$duration_s"
    window_end
    if ! wait "$load_pid"; then
        forget_pid "$load_pid"
        cat "$WORK/$name.txt" >&2
        die "ringgate-load failed on $name"
    fi
    forget_pid "$load_pid"
    resume_paused
    local counters=$WINDOW_COUNTERS
    if [[ -n $round ]]; then
        printf '%s\t%s\n' "$(load_row "$path" "$mode" "$json" "$counters")" "$round" >>"$WORK/rounds-$mode.tsv"
    else
        load_row "$path" "$mode" "$json" "$counters" >>"$WORK/rows.tsv"
    fi
    log "$(printf '%-13s %-8s' "$path" "$mode${round:+ #$round}") $(jq -r '"\(.rps|floor) req/s  p50 \(.latency_us.p50)  p99 \(.latency_us.p99) µs"' "$json")  [utime stime syscalls submits arms segments: $counters]"
}

# One wrk run (after a wrk warm-up run of its own): run_wrk PATH [MODE [ROUND]]. MODE wrk (the
# default): the wrk cell; tls: the same over https:// (keep-alive); tls-resume: over
# https:// with `Connection: close`, so wrk reconnects after every answer and resumes the
# session (see the TLS cells at the top). Appends to rows.tsv (with a ROUND: to
# wrk-rounds.tsv, with the round).
run_wrk() {
    local path=$1 mode=${2:-wrk} round=${3:-} name pids prefix url out
    local conns=$WRK_CONNS duration=$WRK_DURATION_S warmup=$WRK_WARMUP_S
    local -a client=() extra=()
    name="$path-$mode${round:+-$round}"
    url="http://127.0.0.1:${PORT_OF[$path]}/api/spot/v2/order"
    if [[ $mode == tls* ]]; then
        url="https${url#http}"
        client=(env "OPENSSL_CONF=$TLS_CLIENT_CNF")
        conns=$TLS_CONNS duration=$TLS_DURATION_S warmup=$TLS_WARMUP_S
    fi
    if [[ $mode == tls-resume ]]; then
        conns=$TLS_HS_CONNS
        extra=(-H "Connection: close")
    fi
    pause_others "$path"
    mapfile -t pids < <(proxy_pids_of "$path")
    counters_attach "$name" "${pids[@]}"
    read -ra prefix <<<"$(load_prefix)"
    local wrk=("${prefix[@]}" "${client[@]}" taskset -c "$WRK_LOAD_CPU" wrk -t1 -c "$conns"
        -s "$BENCH_DIR/wrk-post.lua" "${extra[@]}")
    run_tracked "$WORK/$name-warmup.txt" "${wrk[@]}" -d "${warmup}s" "$url" ||
        die "wrk warm-up failed on $path: $(cat "$WORK/$name-warmup.txt")"
    window_begin
    if ! run_tracked "$WORK/$name.txt" "${wrk[@]}" -d "${duration}s" "$url"; then
        counters_detach
        die "wrk failed on $path: $(cat "$WORK/$name.txt")"
    fi
    window_end
    resume_paused
    local counters=$WINDOW_COUNTERS
    out=$(awk '$1 == "ringgate-bench-wrk"' "$WORK/$name.txt")
    [[ -n $out ]] || die "no summary from wrk on $path: $(cat "$WORK/$name.txt")"
    # ringgate-bench-wrk requests duration_us connect read write status timeout p50 p99 p99.9
    awk -v path="$path" -v mode="$mode" -v c="$counters" -v round="$round" 'BEGIN { OFS = "\t" } {
        split(c, k, " ")
        row = path OFS mode OFS $2 / ($3 / 1e6) OFS $9 OFS $10 OFS $11 OFS $2 OFS \
            $4 + $5 + $6 + $7 + $8 OFS k[1] OFS k[2] OFS k[3] OFS k[4] OFS k[5] OFS k[6]
        print (round == "" ? row : row OFS round)
    }' <<<"$out" >>"$WORK/$([[ -n $round ]] && echo "rounds-$mode" || echo rows).tsv"
    local unit=req/s
    [[ $mode == tls-resume ]] && unit=handshakes/s
    log "$(printf '%-13s %-10s' "$path" "$mode") $(awk -v unit="$unit" '{ printf "%.0f %s  p50 %s  p99 %s µs  errors %d", $2 / ($3 / 1e6), unit, $9, $10, $4 + $5 + $6 + $7 + $8 }' <<<"$out")  [utime stime syscalls submits arms segments: $counters]"
}

# A cell in rounds: in_rounds ROUNDS RUN MODE runs `RUN PATH MODE ROUND` for every path in
# every round, round-robin within a round (the first path rotating, so that no path is
# always measured first or last), then folds the rounds into one row per path
# (scripts/bench/rounds.awk).
in_rounds() {
    local rounds=$1 run=$2 mode=$3 round i n=${#PATHS[@]}
    : >"$WORK/rounds-$mode.tsv"
    for ((round = 1; round <= rounds; round++)); do
        for ((i = 0; i < n; i++)); do
            "$run" "${PATHS[(i + round - 1) % n]}" "$mode" "$round"
        done
    done
    awk -f "$BENCH_DIR/rounds.awk" "$WORK/rounds-$mode.tsv" >>"$WORK/rows.tsv"
}

# Run a command to completion in the background (so that the EXIT trap can stop it):
# run_tracked LOGFILE COMMAND...; returns its status.
run_tracked() {
    local logfile=$1 pid rc=0
    shift
    "$@" >"$logfile" 2>&1 &
    pid=$!
    remember_pid "$pid"
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# Order of the paths per mode: by p99 (rates, c1) or req/s (max, wrk), and by CPU/req.
render_ranking() {
    local mode by_speed by_cpu
    for mode in "$@"; do
        by_cpu=$(awk -F'\t' -v m="$mode" '$2 == m && $9 != "-" && $7 > 0 { print ($9 + $10) / $7, $1 }' \
            "$WORK/rows.tsv" | sort -g | awk '{ print $2 }' | paste -sd ' ')
        case $mode in
        max | wrk | tls*)
            by_speed=$(awk -F'\t' -v m="$mode" '$2 == m { print -$3, $1 }' "$WORK/rows.tsv" |
                sort -g | awk '{ print $2 }' | paste -sd ' ')
            local unit=req/s per=req
            [[ $mode == tls-hs || $mode == tls-resume ]] && unit=handshakes/s per=handshake
            printf -- '- %s: by %s: %s; by proxy CPU/%s: %s\n' "$mode" "$unit" \
                "${by_speed// / > }" "$per" "${by_cpu// / < }"
            ;;
        *)
            by_speed=$(awk -F'\t' -v m="$mode" '$2 == m { print $5, $1 }' "$WORK/rows.tsv" |
                sort -g | awk '{ print $2 }' | paste -sd ' ')
            printf -- '- %s: by p99: %s; by proxy CPU/req: %s\n' \
                "$([[ $mode == c1 ]] && echo "c=1 (medians)" || echo "$mode req/s")" \
                "${by_speed// / < }" "${by_cpu// / < }"
            ;;
        esac
    done
}

# What the run did, for the head of latest.md (only the cells that ran).
describe_run() {
    local nice="nice ${BENCH_NICE:-0}"
    [[ ${BENCH_RT:-0} == 1 ]] && nice+=", SCHED_RR (BENCH_RT=1)"
    if has_cell rates || has_cell max || has_cell c1 || has_cell wrk; then
        echo "- Paths: direct = the load sent straight to a backend; relay = scripts/bench/relay.c, a"
        echo "  one-thread epoll byte copier (one backend connection per client connection, read/write,"
        echo "  no HTTP work): the floor of any proxy on kernel sockets. Every proxy: 1 worker/thread."
        if [[ $RELAY_URING == 1 ]]; then
            echo "  relay-uring / relay-pf / relay-ms = scripts/bench/relay-uring.c, the same relay on one"
            echo "  io_uring (SINGLE_ISSUER|DEFER_TASKRUN, one io_uring_submit_and_wait per loop turn): --mode"
            echo "  plain, one recv per direction at a time into its buffer, then a send / --mode pollfirst, the"
            echo "  same with IORING_RECVSEND_POLL_FIRST on every recv / --mode multishot, registered sockets, one"
            echo "  multishot recv per socket from a provided-buffer ring, sends from those buffers."
        fi
        echo "  Every benchmarked process runs at $nice."
    else
        echo "- Every proxy: 1 worker/thread. Every benchmarked process runs at $nice."
    fi
    echo "  While one path is measured, every other proxy is stopped (SIGSTOP): none shares its core."
    if has_cell rates || has_cell max || has_cell c1; then
        echo "- rates/max/c1 layout: proxy on CPU $PROXY_CPU; ringgate-load (1 thread) and two ringgate-backend"
        echo "  processes (1 thread each) on CPU $LOAD_CPU. Load: 30 % Commands (POST ~180 B JSON, user id"
        echo "  in the body only) / 70 % Queries (GET, user id in X-User-Id or ?user_id=, 50/50), 1000"
        echo "  uniform users."
    fi
    if has_cell rates || has_cell max; then
        echo "- rates: open loop, $CONNS connections, corrected for coordinated omission; max: closed loop,"
        echo "  $MAX_CONNS connections, pipeline $MAX_PIPELINE; $DURATION measured after $WARMUP warm-up per cell."
        if has_cell rates && ((RATE_ROUNDS > 1)); then
            echo "  Each rate in $RATE_ROUNDS rounds, folded as the c=1 cell's (below)."
        fi
    fi
    if has_cell c1; then
        echo "- c=1: one connection, closed loop, $C1_ROUNDS rounds × $C1_DURATION (after $C1_WARMUP warm-up), paths"
        echo "  round-robin within a round; latencies and req/s are medians over the rounds, the added"
        echo "  latency the median of each round's difference to direct in that round; the per-request"
        echo "  columns are totals over the rounds ÷ requests; \"(rounds)\": ringgate ÷ path CPU/req is the"
        echo "  median of the ratios within each round."
    fi
    if has_cell wrk; then
        echo "- wrk (field layout): proxy on CPU $WRK_PROXY_CPU; wrk (1 thread) and an nginx \`return 200\` backend"
        echo "  (1 worker, two ports) on CPU $WRK_LOAD_CPU. POST of a 205-byte JSON body, user id only in the body"
        echo "  (last key), $WRK_CONNS connections, ${WRK_DURATION_S} s measured after a ${WRK_WARMUP_S} s wrk warm-up run; closed loop"
        echo "  (wrk's latencies are not corrected for coordinated omission)."
        if ((WRK_ROUNDS > 1)); then
            echo "  In $WRK_ROUNDS rounds, paths round-robin within a round: req/s and latencies are medians over"
            echo "  the rounds, the per-request columns totals over the rounds ÷ requests, and \"(rounds)\""
            echo "  marks ringgate ÷ path CPU/req as the median of the ratios within each round."
        fi
    fi
    if has_tls_cell; then describe_tls; fi
    echo "- Per request, over each cell's measured window only: user / sys µs = utime / stime of all"
    echo "  the proxy's processes and threads (/proc/PID/stat; on loopback the kernel's receive path"
    echo "  runs in the sender's context, so it is charged to the proxy); syscalls, io_uring submissions"
    if [[ ${BENCH_PERF:-1} == 1 ]]; then
        echo "  and poll arms counted by \`perf stat -p\` (raw_syscalls:sys_enter, io_uring:io_uring_submit_req,"
        echo "  io_uring:io_uring_poll_arm), switched on and off at the window's ends."
    else
        echo "  and poll arms not measured (BENCH_PERF=0)."
    fi
    echo "  TCP segments/req: every segment the machine sent in the window (Tcp OutSegs) ÷ requests:"
    echo "  2 direct and 4 through a proxy when each message goes in one segment with no bare ACK."
    echo "  ≈ req/s per proxy core = 10⁶ ÷ CPU µs/req."
}

# The TLS libraries of the run, for the head of latest.md.
describe_tls_software() {
    local rustls
    rustls=$(awk '/^name = "rustls"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$REPO_ROOT/Cargo.lock")
    # nginx -V: "built with OpenSSL A ... (running with OpenSSL B ...)": the one it runs with.
    echo "TLS libraries: ringgate rustls $rustls (ring); nginx on $(nginx -V 2>&1 |
        grep -o 'with OpenSSL [^ ]*' | tail -n 1 | sed 's/^with //');" \
        "HAProxy on $(haproxy -vv 2>&1 | sed -n 's/^Running on OpenSSL version : \(OpenSSL [^ ]*\).*/\1/p');" \
        "wrk, ab and s_client on $(openssl version | awk '{ print $1, $2 }')."
}

# What the TLS cells did, and what each proxy negotiated (scripts/bench/tls.sh).
describe_tls() {
    echo "- TLS cells (the wrk cell's layout; proxies restarted with benches/peers/*-tls.*): ringgate,"
    echo "  nginx and HAProxy terminate TLS 1.3 with one certificate ($TLS_CERT_DESC),"
    echo "  suite $TLS_CIPHER and group X25519: the clients offer nothing else"
    echo "  (scripts/bench/tls-client.cnf.in), nginx and HAProxy accept nothing else, and ringgate, which"
    echo "  has no such setting, follows the client's order (rustls). Each proxy sends two session tickets"
    echo "  per full handshake. Checked before the cells with openssl s_client (a full, then a resumed"
    echo "  handshake):"
    local path version suite group sig alpn resumed
    while IFS=$'\t' read -r path version suite group sig alpn resumed; do
        echo "  $path: $version, $suite, $group, $sig certificate, ALPN $alpn, resumes: $resumed;"
    done <"$TLS_DIR/negotiated.tsv"
    if has_cell tls; then
        echo "- tls: wrk (1 thread) over https://, the wrk cell's POST, $TLS_CONNS connections (one full"
        echo "  handshake each, at wrk's start), ${TLS_DURATION_S} s measured after a ${TLS_WARMUP_S} s wrk warm-up run."
    fi
    if has_cell tls-hs; then
        echo "- tls-hs: ab (1 thread) opens a connection per request (HTTP/1.0, no keep-alive: the proxy"
        echo "  closes after the answer), a new SSL object each time and no session offered: every connection"
        echo "  is a full TLS 1.3 handshake and one POST of the same body; $TLS_HS_CONNS at a time, ${TLS_DURATION_S} s"
        echo "  after a ${TLS_WARMUP_S} s warm-up run. p50/p99: ab's connect-to-answer time (no p99.9)."
    fi
    if has_cell tls-resume; then
        echo "- tls-resume: wrk (1 thread) with \`Connection: close\`, $TLS_HS_CONNS connections: it reconnects after"
        echo "  every answer offering the session it got last, so all but each wrk connection's first"
        echo "  handshake are resumed (PSK + X25519: no certificate, no signature). p50/p99: request to answer,"
        echo "  without the handshake."
    fi
    echo "- proxy core busy: CPU per request × rate, the share of its one core the proxy used: well"
    echo "  below 100 %, the load CPU (the client's half of every handshake) set the rate."
}

main() {
    local started=$SECONDS
    DURATION_S=$(seconds_of "$DURATION")
    WARMUP_S=$(seconds_of "$WARMUP")
    C1_DURATION_S=$(seconds_of "$C1_DURATION")
    C1_WARMUP_S=$(seconds_of "$C1_WARMUP")
    WRK_DURATION_S=$(whole_seconds "$WRK_DURATION")
    WRK_WARMUP_S=$(whole_seconds "$WRK_WARMUP")
    TLS_DURATION_S=$(whole_seconds "$TLS_DURATION")
    TLS_WARMUP_S=$(whole_seconds "$TLS_WARMUP")
    if has_tls_cell; then tls_check_knobs; fi
    setup
    : >"$WORK/rows.tsv"
    local mode path modes=()
    if has_cell rates; then read -ra modes <<<"$RATES"; fi
    if has_cell max; then modes+=(max); fi

    if ((${#modes[@]} > 0)) || has_cell c1; then
        start_load_layout
        for mode in "${modes[@]}"; do
            if [[ $mode != max ]] && ((RATE_ROUNDS > 1)); then
                in_rounds "$RATE_ROUNDS" run_load "$mode"
            else
                for path in "${PATHS[@]}"; do run_load "$path" "$mode"; done
            fi
        done
        if has_cell c1; then
            in_rounds "$C1_ROUNDS" run_load c1
            modes+=(c1)
        fi
        stop_all
    fi
    if has_cell wrk; then
        start_wrk_layout
        if ((WRK_ROUNDS > 1)); then
            in_rounds "$WRK_ROUNDS" run_wrk wrk
        else
            for path in "${PATHS[@]}"; do run_wrk "$path"; done
        fi
        modes+=(wrk)
        stop_all
    fi
    if has_tls_cell; then
        start_tls_layout
        for mode in tls tls-hs tls-resume; do
            has_cell "$mode" || continue
            for path in "${TLS_PATHS[@]}"; do
                if [[ $mode == tls-hs ]]; then run_tls_handshakes "$path"; else run_wrk "$path" "$mode"; fi
            done
            modes+=("$mode")
        done
        stop_all
    fi
    ((${#modes[@]} > 0)) ||
        die "BENCH_CELLS=\"$CELLS\" names no cell (rates max c1 wrk tls tls-hs tls-resume)"

    mkdir -p "$OUT"
    local plot_rate="" plot_args=() rates
    if has_cell rates; then
        read -ra rates <<<"$RATES"
        plot_rate=${rates[${#rates[@]} - 1]}
        # In rounds: the last round's.
        local round_suffix=""
        ((RATE_ROUNDS > 1)) && round_suffix=-$RATE_ROUNDS
        for path in "${PATHS[@]}"; do
            plot_args+=("$path=$WORK/$path-$plot_rate$round_suffix.json")
        done
        "$BIN_DIR/ringgate-load" plot --out "$OUT/latency.svg" --log-y \
            --title "Latency by percentile, $plot_rate req/s open loop (30% Commands, 70% Queries)" \
            "${plot_args[@]}" >/dev/null
    fi

    local rev table base_rev="" load_at_end
    load_at_end=$(cut -d' ' -f1 /proc/loadavg)
    rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_ROOT" status --porcelain -- src 2>/dev/null) ]]; then
        rev="$rev+dirty"
    fi
    [[ -n $BASELINE ]] && base_rev="; ringgate-base = $BASELINE ($(sha256sum "$BASELINE" | cut -c1-12))"
    local -a table_vars=(-v tck="$CLK_TCK" -v conns="$CONNS" -v max_conns="$MAX_CONNS"
        -v max_pipeline="$MAX_PIPELINE" -v c1_rounds="$C1_ROUNDS" -v c1_duration="$C1_DURATION"
        -v wrk_conns="$WRK_CONNS" -v wrk_rounds="$WRK_ROUNDS" -v rate_rounds="$RATE_ROUNDS"
        -v tls_conns="$TLS_CONNS" -v tls_hs_conns="$TLS_HS_CONNS")
    local tls_table=""
    table=""
    if awk -F'\t' '$2 !~ /^tls/ { found = 1 } END { exit !found }' "$WORK/rows.tsv"; then
        table=$(awk "${table_vars[@]}" -f "$BENCH_DIR/table.awk" "$WORK/rows.tsv")
    fi
    if has_tls_cell; then
        tls_table=$(awk "${table_vars[@]}" -v tls=1 -f "$BENCH_DIR/table.awk" "$WORK/rows.tsv")
    fi
    {
        echo "# scripts/bench.sh — $(date -u +%Y-%m-%dT%H:%MZ), ringgate $rev$base_rev"
        echo
        echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), $(describe_idle);"
        echo "load average $LOAD_AT_START before the run, $load_at_end after it; cells: $CELLS; $((SECONDS - started)) s in all."
        echo "Peers: $(nginx -v 2>&1 | sed 's/.*version: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')$(
            [[ $PINGORA == 1 ]] && echo ", Pingora $(awk '/name = "pingora-core"/ { getline; gsub(/[^0-9.]/, ""); print }' "$PINGORA_DIR/Cargo.lock" 2>/dev/null) (work_stealing off, 1 thread)")."
        if has_tls_cell; then describe_tls_software; fi
        echo
        describe_run
        if [[ -n $table ]]; then
            echo
            echo "$table"
        fi
        if [[ -n $tls_table ]]; then
            echo
            echo "TLS 1.3 cells (proxy CPU $WRK_PROXY_CPU; load and backend CPU $WRK_LOAD_CPU):"
            echo
            echo "$tls_table"
        fi
        echo
        echo "Ranking:"
        echo
        render_ranking "${modes[@]}"
    } >"$OUT/latest.md"
    echo
    cat "$OUT/latest.md"
    echo
    log "wrote $OUT/latest.md${plot_rate:+ and $OUT/latency.svg} in $((SECONDS - started)) s"
}

main "$@"
