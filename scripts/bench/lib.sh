# shellcheck shell=bash
# Shared pieces of scripts/bench.sh, scripts/flamegraph.sh and scripts/soak.sh: building,
# starting and stopping processes (every one is recorded and stopped by `stop_all`, which
# the scripts run from an EXIT trap), readiness and port checks, and /proc sampling.
#
# Source it after `set -euo pipefail`; it defines functions and a few variables only.

# Repository root (this file lives in scripts/bench/).
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Where cargo puts binaries: honours CARGO_TARGET_DIR like cargo does.
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BIN_DIR=$TARGET_DIR/release
# shellcheck disable=SC2034 # used by the scripts that source this file
CLK_TCK=$(getconf CLK_TCK)

# Prefix for every benchmark process (backends, proxies, load generator): BENCH_NICE=-10
# raises them all alike above other work on a shared machine (root only).
RUN_PREFIX=()
if [[ ${BENCH_NICE:-0} != 0 ]]; then
    RUN_PREFIX=(nice -n "$BENCH_NICE")
fi

# Scheduling policy of every thread of the given processes: set_policy rr|other PID...
# (scripts/bench.sh with BENCH_RT=1 puts every benchmarked process under SCHED_RR, so that
# other work on a shared machine cannot delay a wake-up by a whole time slice.)
set_policy() {
    local policy=$1 pid
    shift
    for pid in "$@"; do
        if [[ $policy == rr ]]; then
            chrt -a -r -p "${BENCH_RT_PRIO:-10}" "$pid" >/dev/null
        else
            chrt -a -o -p 0 "$pid" >/dev/null
        fi
    done
}

# Processes started by this script, in start order, as "PID:STARTTIME" (the start time
# from /proc/PID/stat guards against signalling a recycled PID).
STARTED_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Build the release binaries of the whole workspace (ringgate, ringgate-backend,
# ringgate-load) unless BENCH_SKIP_BUILD=1.
build_release() {
    if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then
        log "BENCH_SKIP_BUILD=1: using the binaries in $BIN_DIR"
    else
        log "cargo build --release --workspace (first build on 2 cores: ~4 min)"
        (cd "$REPO_ROOT" && cargo build --release --workspace --quiet) || die "build failed"
    fi
    local b
    for b in ringgate ringgate-backend ringgate-load; do
        [[ -x $BIN_DIR/$b ]] || die "missing $BIN_DIR/$b"
    done
}

# Install Debian packages that provide the given commands, if any is missing.
# Usage: ensure_commands cmd:package ...
ensure_commands() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Seconds in a duration, read as ringgate-load reads it: a number and one of its units (ns,
# us, µs, ms, s, sec, m, min, h; none = seconds; no space), e.g. "8s", "500ms", "2m", "3".
# Dies on anything else: bench.sh times a cell's counters over this many seconds and divides
# them by the requests the load counted, so a unit read differently here ("1min" as 1) would
# divide one second's CPU time by a minute's requests. Plain decimal output ("0.5", "120").
seconds_of() {
    awk -v d="$1" 'BEGIN {
        n = d; sub(/[^0-9.].*$/, "", n); u = substr(d, length(n) + 1)
        if (n !~ /^([0-9]+\.?[0-9]*|\.[0-9]+)$/) exit 1
        if (u == "" || u == "s" || u == "sec") f = 1
        else if (u == "ms") f = 1e-3
        else if (u == "us" || u == "µs") f = 1e-6
        else if (u == "ns") f = 1e-9
        else if (u == "m" || u == "min") f = 60
        else if (u == "h") f = 3600
        else exit 1
        s = sprintf("%.9f", n * f); sub(/\.?0+$/, "", s); print s
    }' || die "bad duration \"$1\" (a number and ns, us, ms, s, m or h, as ringgate-load takes it)"
}

# Whole seconds of a duration, at least 1 (wrk and ab take whole seconds).
whole_seconds() {
    local s
    s=$(seconds_of "$1") || exit 1
    awk -v s="$s" 'BEGIN { n = int(s + 0.5); print (n < 1 ? 1 : n) }'
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Fail unless every given port is free.
require_free_ports() {
    local p
    for p in "$@"; do
        if port_open "$p" || ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
            die "port $p is in use (set BENCH_PORT_BASE to move all ports)"
        fi
    done
}

# Wait (up to $2 s, default 10) until 127.0.0.1:$1 accepts connections.
wait_port() {
    local port=$1 deadline=$((SECONDS + ${2:-10}))
    until port_open "$port"; do
        ((SECONDS < deadline)) || die "nothing listening on 127.0.0.1:$port"
        sleep 0.05
    done
}

# Start time (field 22 of /proc/PID/stat) of a live process; empty if it is gone or a
# zombie.
start_time_of() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    read -ra fields <<<"${stat##*) }"
    [[ ${fields[0]} == Z ]] || echo "${fields[19]}"
}

# Record a child we started (see STARTED_PIDS).
remember_pid() { STARTED_PIDS+=("$1:$(start_time_of "$1")"); }

# Drop a child that has been waited for (its PID may be reused from now on).
forget_pid() {
    local i
    for i in "${!STARTED_PIDS[@]}"; do
        [[ ${STARTED_PIDS[i]%%:*} == "$1" ]] && unset 'STARTED_PIDS[i]'
    done
    STARTED_PIDS=("${STARTED_PIDS[@]}")
}

# Start a command in the background with stdout+stderr to $1; records its PID in
# STARTED_PIDS and in the variable LAST_PID.
start_bg() {
    local logfile=$1
    shift
    "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    remember_pid "$LAST_PID"
}

# Stop one process we started ("PID:STARTTIME"): SIGTERM, then SIGKILL after 5 s. Does
# nothing if that process is gone (or its PID now belongs to another process).
stop_pid() {
    local pid=${1%%:*} started=${1#*:} i
    [[ -n $started && $(start_time_of "$pid") == "$started" ]] || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ $(start_time_of "$pid") == "$started" ]] || break
        sleep 0.1
    done
    [[ $(start_time_of "$pid") == "$started" ]] && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

# Stop everything this script started, newest first. Safe to call twice.
stop_all() {
    local i
    resume_paused
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[i]}"
    done
    STARTED_PIDS=()
}

# Processes stopped by pause_others (SIGSTOP), to continue before anything else is done
# with them: a stopped process takes no signal but SIGKILL until continued.
PAUSED_PIDS=()

# Stop (SIGSTOP) the given processes until resume_paused: while one path is measured the
# others must not run on its core (a busy-polling proxy spins even when it has no traffic).
pause_pids() {
    local pid
    for pid in "$@"; do
        kill -STOP "$pid" 2>/dev/null && PAUSED_PIDS+=("$pid")
    done
    return 0
}

# Continue every process pause_pids stopped.
resume_paused() {
    ((${#PAUSED_PIDS[@]} == 0)) || kill -CONT "${PAUSED_PIDS[@]}" 2>/dev/null || true
    PAUSED_PIDS=()
}

# A process and all its children (nginx: master + workers).
pid_tree() {
    local pid=$1
    echo "$pid"
    pgrep -P "$pid" 2>/dev/null || true
}

# utime+stime (clock ticks) of the given PIDs, all threads included.
cpu_ticks() {
    local split
    read -ra split <<<"$(cpu_ticks_split "$@")"
    echo $((split[0] + split[1]))
}

# "utime stime" (clock ticks, summed over the given PIDs, all threads included: live ones
# and those that have exited).
cpu_ticks_split() {
    local user=0 system=0 pid stat fields
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # After "pid (comm) ", fields[0] is the state (field 3): utime (14) is
        # fields[11], stime (15) fields[12].
        read -ra fields <<<"${stat##*) }"
        user=$((user + fields[11]))
        system=$((system + fields[12]))
    done
    echo "$user $system"
}

# Resident set size (KiB) and open file descriptors of a process.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Start a demo backend pinned to CPU $3: start_backend PORT ZONE CPU LOGFILE
start_backend() {
    local port=$1 zone=$2 cpu=$3 logfile=$4
    start_bg "$logfile" "${RUN_PREFIX[@]}" taskset -c "$cpu" "$BIN_DIR/ringgate-backend" \
        --port "$port" --zone "$zone" --threads 1
    wait_port "$port"
}

# Fill a template: fill_template IN OUT NAME=VALUE ... replaces every @NAME@.
fill_template() {
    local in=$1 out=$2 text pair
    shift 2
    text=$(<"$in")
    for pair in "$@"; do
        text=${text//@${pair%%=*}@/${pair#*=}}
    done
    printf '%s\n' "$text" >"$out"
}

# Start ringgate (confined to CPU $3 like the peers) and wait for its ready line.
# start_ringgate CONFIG LOGFILE CPU [extra args...]
start_ringgate() {
    start_ringgate_bin "$BIN_DIR/ringgate" "$@"
}

# The same with another ringgate binary (scripts/bench.sh's A/B path, BENCH_BASELINE):
# start_ringgate_bin BINARY CONFIG LOGFILE CPU [extra args...]
start_ringgate_bin() {
    local bin=$1 config=$2 logfile=$3 cpu=$4 i
    shift 4
    start_bg "$logfile" "${RUN_PREFIX[@]}" taskset -c "$cpu" "$bin" --config "$config" "$@"
    for ((i = 0; i < 200; i++)); do
        grep -q '^ringgate listening on' "$logfile" 2>/dev/null && return 0
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$logfile" >&2
    die "ringgate did not start"
}

# Create $WORK (mktemp under /tmp/ringgate-NAME.*) and stop everything started, on exit,
# failure or signal. The directory is kept when KEEP is 1 or the script failed.
# Usage: use_work_dir NAME KEEP
use_work_dir() {
    WORK=$(mktemp -d "/tmp/ringgate-$1.XXXXXX")
    WORK_KEEP=$2
    trap cleanup_work_dir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup_work_dir() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [[ $WORK_KEEP == 1 || $rc != 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
