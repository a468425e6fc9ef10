#!/usr/bin/env bash
# Sourced by scripts/instructions.sh and scripts/timeline.sh: a free loopback port, an nginx
# `return 200` backend in a work directory, and a one-worker ringgate config in front of it.
# shellcheck disable=SC2034  # BACKEND and NGINX_PID are for the sourcing script

# A TCP port free on 127.0.0.1 (the kernel's choice).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_return200 DIR [CPU]: one nginx worker answering every request with 200 and
# `{"ok":true}` on a free port (pinned to CPU if given). Sets BACKEND (its port) and
# NGINX_PID; DIR must exist and be readable by nginx's worker.
start_return200() {
    local dir=$1 cpu=${2:-}
    BACKEND=$(free_port)
    mkdir -p "$dir/nginx-tmp"
    cat >"$dir/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $dir/nginx.pid; error_log $dir/nginx.err warn;
events { worker_connections 1024; use epoll; }
http { access_log off; client_body_temp_path $dir/nginx-tmp; keepalive_requests 10000000;
 server { listen 127.0.0.1:$BACKEND; location / { return 200 '{"ok":true}'; } } }
NGX
    if [[ -n $cpu ]]; then
        taskset -c "$cpu" nginx -c "$dir/nginx.conf" &
    else
        nginx -c "$dir/nginx.conf" &
    fi
    NGINX_PID=$!
}

# one_worker_config FILE PORT [CPU]: ringgate on 127.0.0.1:PORT, one worker (pinned to CPU
# if given), no admin listener, no health checks, every partition on the backend above.
one_worker_config() {
    local file=$1 port=$2 cpus=''
    [[ -n ${3:-} ]] && cpus="cpus = [$3]"
    cat >"$file" <<TOML
default_backend = "zone_1"
[listener]
address = "127.0.0.1:$port"
[admin]
address = ""
[workers]
count = 1
$cpus
[health]
enabled = false
[partitions.zone_1]
servers = ["127.0.0.1:$BACKEND"]
[partitions.zone_2]
servers = ["127.0.0.1:$BACKEND"]
TOML
}
