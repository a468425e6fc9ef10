#!/usr/bin/env bash
# Measure the copy path against the splice path for request and response bodies of several
# sizes, side by side in one run, to choose `limits.splice_threshold_bytes`.
#
# For each body size: ringgate (1 worker, pinned to CPU 0) with splicing off (threshold =
# max) and on (threshold = 1 byte), the same demo backend and wrk (both on CPU 1). Reports
# req/s and ringgate's CPU time per request (utime+stime from /proc over the run ÷ requests).
# Usage: [SIZES="16384 65536"] scripts/splice-threshold.sh [seconds-per-run]
# (needs wrk; builds release binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
cargo build --release -q --bin ringgate --bin ringgate-backend
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
tck=$(getconf CLK_TCK)

taskset -c 1 target/release/ringgate-backend --port 3199 --zone z >/dev/null &
pids+=($!)
sleep 0.3

run() { # threshold size direction
  local threshold=$1 size=$2 dir=$3 port=8299
  cat > "$tmp/rg.toml" <<TOML
default_backend = "127.0.0.1:3199"
[listener]
address = "127.0.0.1:$port"
[admin]
address = ""
[workers]
count = 1
cpus = [0]
[health]
enabled = false
[limits]
splice_threshold_bytes = $threshold
[partitions.z]
servers = ["127.0.0.1:3199"]
TOML
  target/release/ringgate --config "$tmp/rg.toml" >/dev/null 2>&1 &
  local rg=$!
  sleep 0.4
  local url="http://127.0.0.1:$port/p"
  local args=(-t1 -c8 -d"${secs}s" -H "X-User-Id: u")
  if [ "$dir" = request ]; then
    printf 'wrk.method="POST"\nwrk.body=string.rep("x", %d)\n' "$size" > "$tmp/body.lua"
    args+=(-s "$tmp/body.lua")
  else
    url="$url?resp_bytes=$size"
  fi
  taskset -c 1 wrk "${args[@]}" "$url" >/dev/null 2>&1 || true  # warm-up
  local c0 c1 out reqs rps
  c0=$(awk '{print $14+$15}' "/proc/$rg/stat")
  out=$(taskset -c 1 wrk "${args[@]}" "$url")
  c1=$(awk '{print $14+$15}' "/proc/$rg/stat")
  kill "$rg"; wait "$rg" 2>/dev/null || true
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  awk -v c="$((c1 - c0))" -v t="$tck" -v r="$reqs" -v rps="$rps" \
    'BEGIN { printf "%10.0f %12.1f", rps, (r > 0 ? c / t * 1e6 / r : 0) }'
}

printf '%-9s %9s | %10s %12s | %10s %12s | %s\n' direction size "copy req/s" "copy us/req" "splc req/s" "splc us/req" "splice/copy cpu"
for dir in request response; do
  for size in ${SIZES:-16384 32768 65536 262144 1048576 4194304}; do
    copy=$(run 18446744073709551615 "$size" "$dir")
    splc=$(run 1 "$size" "$dir")
    read -r _ ccpu <<<"$copy"
    read -r _ scpu <<<"$splc"
    ratio=$(awk -v a="$scpu" -v b="$ccpu" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-9s %9d | %s | %s | %s\n' "$dir" "$size" "$copy" "$splc" "$ratio"
  done
done
