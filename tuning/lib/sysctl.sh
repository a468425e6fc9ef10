# shellcheck shell=bash
# sysctl area: the network stack knobs (area "net", per network namespace) and the
# kernel-wide ones ringgate depends on (area "kernel": io_uring switch, nofile ceiling).
# Sourced by ringgate-tune.sh.
#
# Comparisons never lower a value: "min" accepts anything at or above the
# recommendation and apply raises field by field; "range" accepts a wider port range;
# "bits" accepts extra flag bits.

# sysctl_meets CMP CURRENT RECOMMENDED
sysctl_meets() {
    local cmp=$1 cur=$2 rec=$3 i
    local -a c r
    read -ra c <<<"$cur"
    read -ra r <<<"$rec"
    [ "${#c[@]}" -eq "${#r[@]}" ] || return 1
    if [ "$cmp" != eq ]; then
        for i in "${c[@]}"; do [[ $i =~ ^[0-9]+$ ]] || return 1; done
    fi
    case $cmp in
        eq) [ "$cur" = "$rec" ] ;;
        min)
            for i in "${!r[@]}"; do [ "${c[$i]}" -ge "${r[$i]}" ] || return 1; done
            ;;
        range) [ "${c[0]}" -le "${r[0]}" ] && [ "${c[1]}" -ge "${r[1]}" ] ;;
        bits) [ $((c[0] & r[0])) -eq "${r[0]}" ] ;;
        *) return 1 ;;
    esac
}

# sysctl_target CMP CURRENT RECOMMENDED -- what apply writes: the recommendation, merged
# with the current value so that nothing already better is lowered.
sysctl_target() {
    local cmp=$1 cur=$2 rec=$3 i out=""
    local -a c r
    read -ra c <<<"$cur"
    read -ra r <<<"$rec"
    if [ "${#c[@]}" -ne "${#r[@]}" ] || [ "$cmp" = eq ]; then
        printf '%s' "$rec"
        return 0
    fi
    for i in "${c[@]}"; do
        if ! [[ $i =~ ^[0-9]+$ ]]; then
            printf '%s' "$rec"
            return 0
        fi
    done
    case $cmp in
        min)
            for i in "${!r[@]}"; do
                if [ "${c[$i]}" -gt "${r[$i]}" ]; then out="$out ${c[$i]}"; else out="$out ${r[$i]}"; fi
            done
            ;;
        range)
            if [ "${c[0]}" -lt "${r[0]}" ]; then out="${c[0]}"; else out="${r[0]}"; fi
            if [ "${c[1]}" -gt "${r[1]}" ]; then out="$out ${c[1]}"; else out="$out ${r[1]}"; fi
            ;;
        bits) out=$((c[0] | r[0])) ;;
    esac
    printf '%s' "${out# }"
}

sysctl_rec_text() {
    case $1 in
        min) printf '>= %s' "$2" ;;
        range) printf 'covers %s' "$2" ;;
        bits) printf 'has bits %s' "$2" ;;
        *) printf '= %s' "$2" ;;
    esac
}

# sysctl_item NAME CMP RECOMMENDED WHY VERIFY
sysctl_item() {
    local name=$1 cmp=$2 rec=$3 why=$4 verify=$5 area path cur rec_text absent_reason
    case $name in net.*) area=net ;; *) area=kernel ;; esac
    area_selected "$area" || return 0
    path=$(sysctl_path "$name")
    rec_text=$(sysctl_rec_text "$cmp" "$rec")

    if ! cur=$(read_value "$path"); then
        if [ -e "$path" ]; then
            absent_reason="unreadable here"
        elif [ "$area" = net ] && in_child_netns; then
            absent_reason="absent in this netns (a global knob: set it from the host)"
        else
            absent_reason="absent (older kernel, or /proc/sys not mounted here)"
        fi
        if [ "$MODE" = check ]; then
            report n/a "$name" "${absent_reason%% (*}" "$rec_text" "$why" "$verify"
        else
            skipped "$name" "$absent_reason"
        fi
        return 0
    fi

    if sysctl_meets "$cmp" "$cur" "$rec"; then
        if [ "$MODE" = check ]; then
            report ok "$name" "$cur" "$rec_text" "$why" "$verify"
        else
            printf 'ok:      %s = %s\n' "$name" "$cur"
        fi
        return 0
    fi

    if [ "$MODE" = check ]; then
        report TUNE "$name" "$cur" "$rec_text" "$why" "$verify"
    elif ! can_write "$path"; then
        if [ "$area" = net ] && in_child_netns; then
            skipped "$name" "not writable in this network namespace (a global knob: set it from the host; or /proc/sys is mounted read-only)"
        else
            skipped "$name" "not writable here (/proc/sys mounted read-only, as in most containers)"
        fi
    else
        plan_add sysctl "$name" "$cur" "$(sysctl_target "$cmp" "$cur" "$rec")" "$name"
    fi
}

area_sysctl() {
    sysctl_item net.core.somaxconn min 65535 \
        "caps every listen() backlog: a burst of client connects queues instead of being refused" \
        "ss -ltn 'sport = :8080' shows Send-Q = backlog; nstat -az TcpExtListenOverflows stays 0"
    sysctl_item net.ipv4.tcp_max_syn_backlog min 65535 \
        "half-open (SYN_RECV) queue: a reconnect storm after a failover fits without SYN drops or cookies" \
        "nstat -az TcpExtListenDrops TcpExtTCPReqQFullDrop stay flat during a reconnect burst"
    sysctl_item net.ipv4.ip_local_port_range range "10000 65535" \
        "more ephemeral ports for router->backend connections, so pool churn never hits EADDRNOTAVAIL; starts above the 8080/9901 listeners" \
        "ss -tan state time-wait | wc -l stays well below the range size; no upstream connect errors in ringgate metrics"
    sysctl_item net.ipv4.tcp_tw_reuse eq 1 \
        "new upstream connections may reuse TIME-WAIT ports when TCP timestamps make it safe (2 = loopback only)" \
        "sysctl net.ipv4.tcp_tw_reuse = 1; connection churn to backends does not exhaust ports"
    sysctl_item net.core.netdev_max_backlog min 16384 \
        "per-CPU queue between the NIC driver and the stack: absorbs packet bursts instead of dropping them" \
        "column 2 (drops) of /proc/net/softnet_stat stays 0 under load"
    sysctl_item net.core.rmem_max min 16777216 \
        "ceiling for SO_RCVBUF: lets large request/response bodies stream without window stalls" \
        "sysctl net.core.rmem_max; ss -tmi shows rb<N> in skmem on busy sockets"
    sysctl_item net.core.wmem_max min 16777216 \
        "ceiling for SO_SNDBUF: a slow reader's response buffers in the kernel, not in a worker" \
        "sysctl net.core.wmem_max; ss -tmi shows tb<N> in skmem on busy sockets"
    sysctl_item net.ipv4.tcp_rmem min "4096 131072 16777216" \
        "min/default/max TCP receive buffer: only max grows, so autotuning can open big windows while small requests keep small buffers" \
        "nstat -az TcpExtTCPRcvQDrop TcpExtPruneCalled stay 0; ss -tmi rcv_space grows on large bodies"
    sysctl_item net.ipv4.tcp_wmem min "4096 16384 16777216" \
        "min/default/max TCP send buffer: large bodies (splice path) keep the pipe full; default stays small" \
        "ss -tmi shows notsent/tb within limits; no sender stalls on large responses"
    sysctl_item net.core.busy_poll min 50 \
        "poll/epoll spin up to 50 us on the NIC queue instead of sleeping for an IRQ: lower, steadier wake-up latency for the epoll fallback, paid in CPU (io_uring uses it only via IORING_REGISTER_NAPI, kernel >= 6.9)" \
        "sysctl net.core.busy_poll; under load, worker cores show more %sys and p99 drops (needs a NAPI NIC)"
    sysctl_item net.core.busy_read min 50 \
        "default SO_BUSY_POLL for new sockets: blocking reads spin up to 50 us before sleeping" \
        "sysctl net.core.busy_read; nstat -az TcpExtBusyPollRxPackets grows under load"
    sysctl_item net.ipv4.tcp_fastopen bits 3 \
        "1 = client, 2 = server: data rides in the SYN and a new connection saves one round trip, client->router and router->backend, when the sockets opt in" \
        "nstat -az TcpExtTCPFastOpenPassive TcpExtTCPFastOpenActive grow"
    sysctl_item kernel.io_uring_disabled eq 0 \
        "0 = io_uring for all, 1 = only kernel.io_uring_group, 2 = off: ringgate's driver is io_uring; without it, it runs on the slower epoll fallback" \
        "ringgate's startup log names its driver (io_uring, or epoll with the reason); sysctl kernel.io_uring_disabled"
    sysctl_item fs.nr_open min 1048576 \
        "per-process ceiling for the nofile limit: LimitNOFILE=1048576 cannot exceed it" \
        "sysctl fs.nr_open; grep 'open files' /proc/\$(pidof ringgate)/limits"

    local disabled group
    if [ "$MODE" = check ] && area_selected kernel &&
        disabled=$(read_value "$(sysctl_path kernel.io_uring_disabled)") && [ "$disabled" = 1 ]; then
        group=$(read_value "$(sysctl_path kernel.io_uring_group)" || echo "?")
        report info kernel.io_uring_group "$group" "ringgate's user in GID $group" \
            "with io_uring_disabled = 1 only members of this group may create rings" \
            "id ringgate lists GID $group"
    fi
}
