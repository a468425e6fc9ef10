# shellcheck shell=bash
# Per-request counters of scripts/bench.sh over a measured window: the proxy's user and
# system CPU time (utime/stime of all its processes and threads, from /proc/PID/stat) and,
# from one `perf stat -p` attached to the same processes for the window only,
#   raw_syscalls:sys_enter         every system call entered (io_uring_enter included),
#   io_uring:io_uring_submit_req   every io_uring request (SQE) submitted,
#   io_uring:io_uring_poll_arm     every io_uring request that had to arm a poll (its
#                                  socket was not ready when it was issued),
# and the TCP segments the machine sent in the window (Tcp OutSegs of /proc/net/snmp, every
# path, direct included: on loopback only the cell's traffic moves then, so a request
# answered in one segment each way costs 2 direct and 4 through a proxy; more means a
# message split over several writes, or bare ACKs).
# perf counts only threads that exist when it attaches (every proxy here starts its
# threads at start-up; io_uring's io-wq workers created later would be missed, but their
# CPU time is still in utime/stime): window_end warns when a thread appeared meanwhile.
# perf's own cost inside the proxy (a counter bump per event) is the same for every path.
#
# perf is attached before the cell starts, with its events disabled (`-D -1`), and switched
# on and off through its control FIFO exactly when the window opens and closes: its start-up
# (which takes seconds on a busy box) never eats into the window.
#
# Source after lib.sh. BENCH_PERF=0 leaves the three perf columns empty ("-").
# Usage: counters_attach NAME PID...  before the cell (no PID, the direct path: only the
#                                     TCP segments are counted)
#        window_begin                 when the measured part starts
#        window_end                   when it ends: sets WINDOW_COUNTERS to
#                                     "utime_ticks stime_ticks syscalls submits arms segments"
# $WORK/NAME.window keeps the times and ticks, $WORK/NAME.perf perf's output.

PERF_EVENTS=raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm

# Fail early, with the reason, if perf cannot count the three tracepoints here.
check_perf() {
    [[ ${BENCH_PERF:-1} == 1 ]] || return 0
    ensure_commands perf:linux-perf
    local out
    if ! out=$(perf stat -x, -e "$PERF_EVENTS" -- true 2>&1); then
        printf '%s\n' "$out" >&2
        die "perf cannot count $PERF_EVENTS (root? tracefs? or set BENCH_PERF=0)"
    fi
}

# Thread ids of the given processes, sorted as text (for comm).
thread_ids() {
    local pid
    for pid in "$@"; do
        ls "/proc/$pid/task" 2>/dev/null || true
    done | sort
}

# Send a command to the attached perf and wait for its "ack".
perf_command() {
    local reply=""
    echo "$1" >&"$PERF_CTL_FD"
    read -r -t 30 -u "$PERF_ACK_FD" reply || true
    [[ $reply == ack ]] || {
        cat "$WORK/$WINDOW_NAME.perf.log" >&2
        die "perf did not acknowledge '$1' ($WINDOW_NAME)"
    }
}

counters_attach() {
    WINDOW_NAME=$1
    shift
    WINDOW_PIDS=("$@")
    WINDOW_PERF_PID=
    WINDOW_T0=
    ((${#WINDOW_PIDS[@]} > 0)) || return 0
    [[ ${BENCH_PERF:-1} == 1 ]] || return 0
    local out=$WORK/$WINDOW_NAME.perf pid_list
    pid_list=$(IFS=,; echo "${WINDOW_PIDS[*]}")
    WINDOW_TIDS=$(thread_ids "${WINDOW_PIDS[@]}")
    rm -f "$out.ctl" "$out.ack"
    mkfifo "$out.ctl" "$out.ack"
    start_bg "$out.log" perf stat -x, -o "$out" -D -1 --control "fifo:$out.ctl,$out.ack" \
        -e "$PERF_EVENTS" -p "$pid_list"
    WINDOW_PERF_PID=$LAST_PID
    # Read-write opens never block, whether or not perf has opened its ends yet.
    exec {PERF_CTL_FD}<>"$out.ctl" {PERF_ACK_FD}<>"$out.ack"
    # A command is acknowledged once perf's counters are set up: then it is ready.
    perf_command disable
}

# TCP segments sent so far in this network namespace (Tcp OutSegs).
tcp_out_segments() {
    awk '$1 == "Tcp:" { if (!col) { for (i = 2; i <= NF; i++) if ($i == "OutSegs") col = i } else print $col }' \
        /proc/net/snmp
}

window_begin() {
    WINDOW_SEGS0=$(tcp_out_segments)
    ((${#WINDOW_PIDS[@]} > 0)) || return 0
    [[ -z $WINDOW_PERF_PID ]] || perf_command enable
    WINDOW_T0=$(cpu_ticks_split "${WINDOW_PIDS[@]}")
    printf 'begin %s pids %s ticks %s\n' "$(date +%s.%N)" "${WINDOW_PIDS[*]}" "$WINDOW_T0" \
        >"$WORK/$WINDOW_NAME.window"
}

# Sets WINDOW_COUNTERS (not in a subshell: perf is this shell's child and must be waited for).
window_end() {
    local segments=$(($(tcp_out_segments) - ${WINDOW_SEGS0:-0}))
    if ((${#WINDOW_PIDS[@]} == 0)); then
        WINDOW_COUNTERS="- - - - - $segments"
        return 0
    fi
    local t0 t1 t1_text counts="- - -"
    read -ra t0 <<<"${WINDOW_T0:-0 0}"
    t1_text=$(cpu_ticks_split "${WINDOW_PIDS[@]}")
    read -ra t1 <<<"$t1_text"
    printf 'end %s ticks %s\n' "$(date +%s.%N)" "$t1_text" >>"$WORK/$WINDOW_NAME.window"
    if [[ -n $WINDOW_PERF_PID ]]; then
        perf_command disable
        counters_detach
        counts=$(perf_counts "$WORK/$WINDOW_NAME.perf")
        local late
        late=$(comm -13 <(echo "$WINDOW_TIDS") <(thread_ids "${WINDOW_PIDS[@]}") | paste -sd ' ')
        if [[ -n $late ]]; then
            log "warning: $WINDOW_NAME: thread(s) $late started after perf attached: their" \
                "syscalls and io_uring events are not counted (their CPU time is)"
            echo "late threads $late" >>"$WORK/$WINDOW_NAME.window"
        fi
    fi
    # shellcheck disable=SC2034 # read by scripts/bench.sh
    WINDOW_COUNTERS="$((t1[0] - t0[0])) $((t1[1] - t0[1])) $counts $segments"
}

# Stop the attached perf (it prints its counts on SIGINT, then exits by that signal).
counters_detach() {
    [[ -n ${WINDOW_PERF_PID:-} ]] || return 0
    kill -INT "$WINDOW_PERF_PID" 2>/dev/null || true
    wait "$WINDOW_PERF_PID" 2>/dev/null || true
    forget_pid "$WINDOW_PERF_PID"
    exec {PERF_CTL_FD}>&- {PERF_ACK_FD}>&-
    rm -f "$WORK/$WINDOW_NAME.perf.ctl" "$WORK/$WINDOW_NAME.perf.ack"
    WINDOW_PERF_PID=
}

# "syscalls submits arms" from a `perf stat -x,` file. "<not counted>" with a run time of
# 0 means the threads never ran while counted (0 events); anything else unreadable is "-".
perf_counts() {
    awk -F, -v events="$PERF_EVENTS" '
    BEGIN { n = split(events, name, ",") }
    /^#/ || NF < 4 { next }
    {
        v = $1
        if (v ~ /^<not counted>/ && $4 + 0 == 0) v = 0
        if (v !~ /^[0-9]+$/) v = "-"
        count[$3] = v
    }
    END {
        for (i = 1; i <= n; i++) printf "%s%s", (name[i] in count ? count[name[i]] : "-"), (i < n ? " " : "\n")
    }' "$1"
}
