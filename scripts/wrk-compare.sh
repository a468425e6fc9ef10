#!/usr/bin/env bash
# Quick side-by-side with wrk: the direct path, ringgate (1 worker) and nginx (1 worker,
# upstream keepalive) against the same demo backend in the same run (HAProxy is in
# scripts/bench.sh). Proxies are pinned to CPU 0; the backend and wrk share CPU 1.
# Reports req/s, wrk's latency percentiles and each proxy's CPU time per request
# (utime+stime of all its processes from /proc over the run ÷ requests).
#
# Usage: scripts/wrk-compare.sh [seconds] [connections]     (needs wrk and nginx)
# The project's full harness is scripts/bench.sh (open-loop, coordinated-omission corrected).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install $tool)"; exit 1; }
done
cargo build --release -q --bin ringgate --bin ringgate-backend
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$tmp/nginx.pid" ]; then kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
tck=$(getconf CLK_TCK)
BE=3191 RG=8291 NG=8292

taskset -c 1 target/release/ringgate-backend --port $BE --zone zone_1 >/dev/null &
pids+=($!)

cat > "$tmp/rg.toml" <<TOML
default_backend = "127.0.0.1:$BE"
[listener]
address = "127.0.0.1:$RG"
[admin]
address = ""
[workers]
count = 1
cpus = [0]
[partitions.zone_1]
servers = ["127.0.0.1:$BE"]
TOML
target/release/ringgate --config "$tmp/rg.toml" >/dev/null 2>&1 &
pids+=($!)
rg_pid=$!

cat > "$tmp/nginx.conf" <<NGX
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be { server 127.0.0.1:$BE; keepalive 64; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
NGX
nginx -c "$tmp/nginx.conf" &
pids+=($!)

sleep 1

cat > "$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user_id":"alice","symbol":"BTCUSDT","side":"buy","price":50000.5,"quantity":1.25,"client_order_id":"c-000001","time_in_force":"GTC"}'
LUA

proc_cpu() { # all processes whose pid or parent pid is in $@
  local total=0 p
  for p in "$@"; do
    [ -n "$p" ] || continue
    for q in $p $(pgrep -P "$p" || true); do
      total=$((total + $(awk '{print $14+$15}' "/proc/$q/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}

measure() { # name port mix pids...
  local name=$1 port=$2 mix=$3; shift 3
  local args=(-t1 -c"$conns" -d"${secs}s" --latency)
  local url="http://127.0.0.1:$port/api/spot/user/data?user_id=alice"
  if [ "$mix" = command ]; then args+=(-s "$tmp/post.lua"); url="http://127.0.0.1:$port/api/spot/v2/order"; fi
  taskset -c 1 wrk -t1 -c"$conns" -d2s "${args[@]:3}" "$url" >/dev/null 2>&1 || true
  local c0 c1 out
  c0=$(proc_cpu "$@")
  out=$(taskset -c 1 wrk "${args[@]}" "$url")
  c1=$(proc_cpu "$@")
  local reqs rps p50 p99 errs
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  local cpu="-"
  if [ $# -gt 0 ]; then
    cpu=$(awk -v c="$((c1 - c0))" -v t="$tck" -v r="$reqs" 'BEGIN { printf "%.1f", (r > 0 ? c / t * 1e6 / r : 0) }')
  fi
  printf '%-8s %-8s %10s %9s %9s %12s %s\n' "$mix" "$name" "$rps" "$p50" "$p99" "$cpu" "$errs"
}

printf '%-8s %-8s %10s %9s %9s %12s\n' mix path "req/s" p50 p99 "cpu us/req"
for mix in query command; do
  measure direct $BE "$mix"
  measure ringgate $RG "$mix" "$rg_pid"
  measure nginx $NG "$mix" "$(cat "$tmp/nginx.pid")"
done
