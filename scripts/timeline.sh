#!/usr/bin/env bash
# Where one request's time goes at one connection: the hand-offs between ringgate's worker
# and the two cores' other processes, from io_uring tracepoints.
#
# ringgate (one worker) on PROXY_CPU; the load generator (ringgate-load, one closed-loop
# connection, Commands with the user id in the JSON body) and an nginx `return 200`
# backend on LOAD_CPU: the c=1 layout of scripts/bench.sh. While the load runs,
# `perf record -a` takes three io_uring tracepoints:
#   io_uring_task_add   bytes reached one of the worker's sockets (it runs in the sender's
#                       context: the load generator's or the backend's send)
#   io_uring_complete   the worker's ring posted the receive's completion (the worker took it)
#   io_uring_submit_req the worker submitted a send
# and each request is cut at those points (medians and 90th percentiles over the requests):
#   request waits for the worker   client's bytes arrive → the worker takes them
#   request handling               taken → the upstream send submitted
#   upstream                       upstream send → the answer's bytes arrive (the backend's
#                                  core woken, nginx's work, its send)
#   answer waits for the worker    answer arrives → the worker takes it
#   answer handling                taken → the client send submitted
#   client                         client send → the next request's bytes arrive (the load
#                                  generator's core woken, its work, its next send)
# The first, second, fourth and fifth are ringgate's; the other two are the other core's.
# A sleeping worker's wake-up shows in "waits for the worker". Tracing slows each step a
# little: the untraced cycle (1 / req/s of a run without perf) is printed next to the traced.
#
# Needs: a release build (built if missing), nginx and perf (installed with apt-get if
# missing), io_uring with multishot receives (the default; not `--ring epoll`).
#
# Usage: scripts/timeline.sh [ringgate arguments...]     e.g. scripts/timeline.sh --busy-poll
# Environment: PROXY_CPU (0), LOAD_CPU (1), DURATION (2s, the traced window), WARMUP (1s),
# RINGGATE (the binary; target/release/ringgate).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DURATION=${DURATION:-2s}
WARMUP=${WARMUP:-1s}
RG=${RINGGATE:-$REPO_ROOT/target/release/ringgate}
LOAD=$REPO_ROOT/target/release/ringgate-load
export PATH=$PATH:/usr/sbin:/sbin
for tool in nginx perf; do
    if ! command -v "$tool" >/dev/null; then
        pkg=$tool
        [[ $tool == perf ]] && pkg=linux-perf
        apt-get install -y "$pkg" >/dev/null
    fi
done
[[ -x $RG && -x $LOAD ]] || cargo build --release --workspace --manifest-path "$REPO_ROOT/Cargo.toml"

W=$(mktemp -d /tmp/ringgate-timeline.XXXXXX)
chmod 755 "$W"
NGINX_PID=''
RG_PID=''
cleanup() {
    [[ -n $RG_PID ]] && kill "$RG_PID" 2>/dev/null
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=scripts/bench/one-worker.sh
source "$REPO_ROOT/scripts/bench/one-worker.sh"
start_return200 "$W" "$LOAD_CPU"
PORT=$(free_port)
one_worker_config "$W/rg.toml" "$PORT" "$PROXY_CPU"
"$RG" --config "$W/rg.toml" "$@" >"$W/rg.log" 2>&1 &
RG_PID=$!
for _ in $(seq 100); do grep -q "listening" "$W/rg.log" && break; sleep 0.1; done
grep -q "listening" "$W/rg.log" || { cat "$W/rg.log" >&2; exit 1; }

cat >"$W/load.sh" <<LOADSH
#!/usr/bin/env bash
exec taskset -c "$LOAD_CPU" "$LOAD" --target "127.0.0.1:$PORT" -c 1 --mix commands=100,queries=0 \\
    --warmup "$WARMUP" --duration "$DURATION" --fail-on-error
LOADSH
chmod +x "$W/load.sh"
rps() { grep -oE '[0-9.]+ req/s' "$1" | head -1 | awk '{print $1}'; }
"$W/load.sh" >"$W/untraced.txt"
perf record -q -a -o "$W/perf.data" \
    -e io_uring:io_uring_task_add,io_uring:io_uring_complete,io_uring:io_uring_submit_req \
    -- "$W/load.sh" >"$W/traced.txt" 2>"$W/perf.err" || { cat "$W/perf.err" >&2; exit 1; }
perf script --ns -i "$W/perf.data" -F comm,time,event,trace 2>/dev/null >"$W/events.txt"

echo "ringgate $* — one connection, $DURATION traced"
echo "untraced: $(rps "$W/untraced.txt") req/s; traced: $(rps "$W/traced.txt") req/s"
python3 - "$W/events.txt" "$(rps "$W/untraced.txt")" <<'PY'
import re, statistics, sys

line_re = re.compile(r'^\s*(\S+)\s+([\d.]+):\s+io_uring:(\w+):\s+ring (0x[0-9a-f]+).*?user_data (0x[0-9a-f]+)(.*)$')
events = []
for line in open(sys.argv[1]):
    m = line_re.match(line)
    if m:
        comm, t, kind, ring, user_data, rest = m.groups()
        op = re.search(r'opcode (\w+)', rest)
        events.append((float(t) * 1e6, comm, kind, ring, user_data, op.group(1) if op else ''))
rings = {e[3] for e in events if e[1].startswith('ringgate-w') and e[2] == 'io_uring_submit_req'}
# The worker's receives are woken by two senders: the load generator (a request) and the
# backend, nginx (an answer).
steps = {k: [] for k in ('request waits for the worker', 'request handling', 'upstream',
                         'answer waits for the worker', 'answer handling', 'client')}
arrived = {}      # user_data -> (time, side) of bytes not yet taken
taken = None      # (time, side) of the last taken receive not yet followed by a send
sent = None       # (time, side) of the last send
for t, comm, kind, ring, user_data, op in events:
    if ring not in rings:
        continue
    if kind == 'io_uring_task_add' and op == 'RECV' and not comm.startswith('ringgate-w'):
        side = 'answer' if comm.startswith('nginx') else 'request'
        if user_data not in arrived:
            arrived[user_data] = (t, side)
            if sent is not None and sent[1] != side:
                steps['upstream' if side == 'answer' else 'client'].append(t - sent[0])
                sent = None
    elif kind == 'io_uring_complete' and user_data in arrived:
        t0, side = arrived.pop(user_data)
        steps[f'{side} waits for the worker'].append(t - t0)
        taken = (t, side)
    elif kind == 'io_uring_submit_req' and op == 'SEND' and taken is not None:
        steps[f'{taken[1]} handling'].append(t - taken[0])
        sent = (t, taken[1])
        taken = None
n = min(len(v) for v in steps.values())
if n < 100:
    sys.exit(f'too few requests traced ({n}): is ringgate on io_uring with multishot receives?')
print(f'{"step (µs)":<30} {"median":>8} {"p90":>8}   {"whose":<8} requests {n}')
ours = 0.0
for name, v in steps.items():
    v = sorted(v[len(v) // 10:])  # the first tenth warms up
    med, p90 = statistics.median(v), v[int(len(v) * 0.9)]
    whose = 'other' if name in ('upstream', 'client') else 'ringgate'
    if whose == 'ringgate':
        ours += med
    print(f'{name:<30} {med:8.1f} {p90:8.1f}   {whose}')
total = sum(statistics.median(sorted(v[len(v) // 10:])) for v in steps.values())
print(f'{"cycle (sum of medians)":<30} {total:8.1f}            ringgate {ours:.1f} ({100 * ours / total:.0f} %)')
untraced = float(sys.argv[2] or 0)
if untraced:
    print(f'{"cycle untraced (1 / req/s)":<30} {1e6 / untraced:8.1f}')
PY
