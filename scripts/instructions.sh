#!/usr/bin/env bash
# User-space instructions per request of one or more ringgate builds, under callgrind.
#
# On this kind of VM a CPU-time A/B of a change worth 1-3 % of user time drowns in the
# noise (one path's CPU per request moves by 10-20 % between runs). An instruction count is
# deterministic to ~0.3 %: it prices a change of the proxy's own code, not of the kernel
# (system time is not counted) and not of instructions whose cost is not their count
# (`rdtsc` in the VM's clock, cache misses). Use it next to scripts/bench.sh, not instead.
#
# Each build runs under `valgrind --tool=callgrind` with instrumentation off; it is switched
# on just before ringgate-load sends N Commands (POST, user id only in the JSON body) over
# C keep-alive connections, and the counts are dumped right after, so start-up is not
# counted. The backend is nginx `return 200` (benches/peers/nginx-backend.conf.in's role).
#
# Usage: scripts/instructions.sh BINARY [BINARY ...]     (N=4000 C=4 by default)
# KEEP=DIR keeps each build's callgrind output as DIR/<n>-<binary name>.cg (n counting the
# builds of this run; an earlier run's files are overwritten), for
# `callgrind_annotate --inclusive=yes`.
# Needs valgrind and nginx (installed with apt-get if missing). ~35 s per build.
set -euo pipefail
N=${N:-4000}
C=${C:-4}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD=${LOAD:-$REPO_ROOT/target/release/ringgate-load}
(($# >= 1)) || { echo "usage: $0 BINARY [BINARY ...]" >&2; exit 2; }
for tool in valgrind nginx; do
    command -v "$tool" >/dev/null || apt-get install -y "$tool" >/dev/null
done
[[ -x $LOAD ]] || cargo build --release -p ringgate-load --manifest-path "$REPO_ROOT/Cargo.toml"

W=$(mktemp -d /tmp/ringgate-instructions.XXXXXX)
chmod 755 "$W"
NGINX_PID=''
RG_PID=''
cleanup() {
    [[ -n $RG_PID ]] && kill -9 "$RG_PID" 2>/dev/null
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

# shellcheck source=scripts/bench/one-worker.sh
source "$REPO_ROOT/scripts/bench/one-worker.sh"
start_return200 "$W"

kept=0
for bin in "$@"; do
    port=$(free_port)
    one_worker_config "$W/rg.toml" "$port"
    rm -f "$W"/cg.out*
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.out" \
        "$bin" --config "$W/rg.toml" >"$W/rg.log" 2>&1 &
    RG_PID=$!
    for _ in $(seq 300); do grep -q "listening" "$W/rg.log" && break; sleep 0.1; done
    callgrind_control -i on "$RG_PID" >/dev/null 2>&1
    "$LOAD" --target "127.0.0.1:$port" -c "$C" -n "$N" --mix commands=100,queries=0 \
        --warmup 0s --fail-on-error >"$W/load.txt"
    callgrind_control -d "$RG_PID" >/dev/null 2>&1
    kill -9 "$RG_PID" 2>/dev/null
    wait "$RG_PID" 2>/dev/null || true
    RG_PID=''
    ir=$(grep -hE "^summary:" "$W"/cg.out.* | head -1 | awk '{print $2}')
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        kept=$((kept + 1))
        cp "$(ls "$W"/cg.out.* | head -1)" "$KEEP/$kept-$(basename "$bin").cg"
    fi
    printf '%-40s %12d instructions  %8d per request\n' "$bin" "$ir" $((ir / N))
done
