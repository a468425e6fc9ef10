#!/usr/bin/env bash
# tuning/test.sh -- tests for tuning/ and deploy/. CI runs `bash tuning/test.sh`.
#
# 1. shellcheck on every shell script in tuning/ and deploy/ (and the sidecar script
#    embedded in deploy/k8s/daemonset.yaml).
# 2. `check` exits 0 and prints a line for every covered setting: as this user, as an
#    unprivileged user, and with /proc, /sys and /etc missing altogether.
# 3. apply -> verify -> revert -> verify, byte for byte, on a fake /proc + /sys + /etc
#    tree (sysctls, governor, IRQ affinity, THP, limits.d file), without touching the host.
# 4. As root with `ip`: the same round trip for net.* sysctls in a throwaway network
#    namespace against the real kernel; a revert from the wrong namespace is refused.
# 5. deploy/: systemd-analyze verify of the unit, YAML/TOML of the k8s manifests.
# 6. The host is unchanged afterwards, and the whole run stays under 30 s.
#
# The last line is "tuning: N passed, N failed, N skipped"; the exit status is 1 if any
# check failed.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$HERE")
TUNE="$HERE/ringgate-tune.sh"
BUDGET_S=30
PASSED=0
FAILED=0
SKIPPED=0
NS=""
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringgate-tune-test.XXXXXX")

cleanup() {
    if [ -n "$NS" ]; then ip netns del "$NS" 2>/dev/null || true; fi
    rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# State files of every run below go to the temp dir, never to /var/lib.
export RINGGATE_TUNING_STATE_DIR="$TMP/state"
unset RINGGATE_TUNING_STATE RINGGATE_TUNE_PROC_ROOT RINGGATE_TUNE_SYS_ROOT RINGGATE_TUNE_ETC_ROOT

pass() {
    PASSED=$((PASSED + 1))
    printf 'PASS  %s\n' "$*"
}
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL  %s\n' "$*"
}
skip() {
    SKIPPED=$((SKIPPED + 1))
    printf 'SKIP  %s\n' "$*"
}

# capture CMD... -- run it (bounded), output in OUT, status in RC.
capture() {
    set +e
    OUT=$(timeout 20 "$@" 2>&1)
    RC=$?
    set -e
}

# show_out -- the last output, indented, for a failure report.
show_out() {
    printf '%s\n' "$OUT" | sed 's/^/      | /' | tail -n 40
}

is_root() { [ "$(id -u)" = 0 ]; }

# Every setting `check` must report, by the name it prints.
SETTINGS=(
    net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.ip_local_port_range
    net.ipv4.tcp_tw_reuse net.core.netdev_max_backlog net.core.rmem_max net.core.wmem_max
    net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.core.busy_poll net.core.busy_read
    net.ipv4.tcp_fastopen kernel.io_uring_disabled fs.nr_open
    ulimit.nofile ulimit.memlock limits.d.ringgate systemd.LimitNOFILE systemd.LimitMEMLOCK
    cpu.governor cpu.idle irq.irqbalance irq.affinity cmdline.isolcpus cmdline.nohz_full
    cmdline.rcu_nocbs thp.enabled
)

# expect_all_settings WHAT -- OUT has a status line, a why and a verify for each setting.
expect_all_settings() {
    local what=$1 s missing=""
    for s in "${SETTINGS[@]}"; do
        grep -qE "^(ok|TUNE|n/a|info) +${s//./\\.}( |\$)" <<<"$OUT" || missing="$missing $s"
    done
    local whys verifies
    whys=$(grep -c '^      why:    ' <<<"$OUT" || true)
    verifies=$(grep -c '^      verify: ' <<<"$OUT" || true)
    if [ -n "$missing" ]; then
        fail "$what: no line for:$missing"
        show_out
    elif [ "$whys" -lt "${#SETTINGS[@]}" ] || [ "$verifies" -lt "${#SETTINGS[@]}" ]; then
        fail "$what: $whys why / $verifies verify lines for ${#SETTINGS[@]} settings"
    else
        pass "$what: all ${#SETTINGS[@]} settings reported with why and verify"
    fi
}

# host_snapshot -- everything apply could change on this host, for the before/after diff.
host_snapshot() {
    local f
    for f in net/core/somaxconn net/ipv4/tcp_max_syn_backlog net/ipv4/ip_local_port_range \
        net/ipv4/tcp_tw_reuse net/core/netdev_max_backlog net/core/rmem_max net/core/wmem_max \
        net/ipv4/tcp_rmem net/ipv4/tcp_wmem net/core/busy_poll net/core/busy_read \
        net/ipv4/tcp_fastopen kernel/io_uring_disabled fs/nr_open; do
        printf '%s=%s\n' "$f" "$(cat "/proc/sys/$f" 2>/dev/null || echo -)"
    done
    cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || true
    grep -H . /sys/module/haltpoll/parameters/guest_halt_poll_ns \
        /sys/devices/system/cpu/cpu*/cpuidle/state*/disable 2>/dev/null || true
    grep -H . /proc/irq/*/smp_affinity_list 2>/dev/null || true
    grep -H . /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null || true
    sha256sum /etc/security/limits.d/90-ringgate.conf 2>/dev/null || echo "no limits.d file"
    ls -A /var/lib/ringgate-tuning 2>/dev/null || echo "no state dir"
}

host_snapshot >"$TMP/host.before"

# ---------------------------------------------------------------------------
echo "== shellcheck"
if ! command -v shellcheck >/dev/null 2>&1 && [ "${CI:-}" = true ] && is_root &&
    command -v apt-get >/dev/null 2>&1; then
    echo "installing shellcheck (one-time, not counted in the time budget)"
    install_start=$SECONDS
    timeout 300 apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
        { timeout 300 apt-get update -qq >/dev/null 2>&1 &&
            timeout 300 apt-get install -y -qq shellcheck >/dev/null 2>&1; } || true
    BUDGET_S=$((BUDGET_S + SECONDS - install_start))
fi
if command -v shellcheck >/dev/null 2>&1; then
    scripts=()
    while IFS= read -r -d '' f; do
        case $f in
            *.sh) scripts+=("$f") ;;
            *) head -n 1 -- "$f" | grep -qE '^#!.*(/|env )(ba|da)?sh' && scripts+=("$f") ;;
        esac
    done < <(find "$HERE" "$REPO/deploy" -type f -print0 2>/dev/null)
    capture shellcheck -x "${scripts[@]}"
    if [ "$RC" = 0 ]; then
        pass "shellcheck: ${#scripts[@]} scripts clean"
    else
        fail "shellcheck"
        show_out
    fi
    if python3 -c 'import yaml' 2>/dev/null; then
        python3 - "$REPO/deploy/k8s/daemonset.yaml" >"$TMP/reloader.sh" <<'EOF'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "config-reloader":
            print(c["command"][-1])
EOF
        capture shellcheck -s sh "$TMP/reloader.sh"
        if [ "$RC" = 0 ] && [ -s "$TMP/reloader.sh" ]; then
            pass "shellcheck: config-reloader script in daemonset.yaml clean"
        else
            fail "shellcheck: config-reloader script"
            show_out
        fi
    else
        skip "shellcheck of the sidecar script: python3 yaml module missing"
    fi
else
    skip "shellcheck not installed (apt-get install -y shellcheck)"
fi

# ---------------------------------------------------------------------------
echo "== check"
capture bash "$TUNE" check
if [ "$RC" = 0 ]; then pass "check exits 0 (uid $(id -u))"; else
    fail "check exited $RC"
    show_out
fi
expect_all_settings "check (uid $(id -u))"
if grep -q '^summary: .* check changed nothing' <<<"$OUT"; then pass "check prints its summary"; else
    fail "check summary line missing"
fi

capture bash "$TUNE" check --workers-cpus 0
if [ "$RC" = 0 ]; then pass "check --workers-cpus 0 exits 0"; else fail "check --workers-cpus 0 exited $RC"; fi
capture bash "$TUNE" check --workers-cpus 0,4095
if [ "$RC" = 2 ]; then pass "check refuses offline worker CPUs (exit 2)"; else
    fail "check --workers-cpus 0,4095 exited $RC"
fi

mkdir -p "$TMP/empty"
capture env RINGGATE_TUNE_PROC_ROOT="$TMP/empty" RINGGATE_TUNE_SYS_ROOT="$TMP/empty" \
    RINGGATE_TUNE_ETC_ROOT="$TMP/empty" bash "$TUNE" check
if [ "$RC" = 0 ]; then pass "check exits 0 with /proc, /sys and /etc missing"; else
    fail "check without /proc,/sys exited $RC"
    show_out
fi
expect_all_settings "check without /proc,/sys"

if is_root && command -v setpriv >/dev/null 2>&1 &&
    setpriv --reuid=65534 --regid=65534 --clear-groups -- test -r "$TUNE" 2>/dev/null; then
    capture setpriv --reuid=65534 --regid=65534 --clear-groups -- bash "$TUNE" check
    if [ "$RC" = 0 ]; then pass "check exits 0 as an unprivileged user"; else
        fail "check as nobody exited $RC"
        show_out
    fi
    expect_all_settings "check (unprivileged)"
    capture setpriv --reuid=65534 --regid=65534 --clear-groups -- bash "$TUNE" apply
    if [ "$RC" != 0 ] && grep -q 'needs root' <<<"$OUT"; then
        pass "apply as an unprivileged user refuses and changes nothing"
    else
        fail "apply as nobody: exit $RC"
        show_out
    fi
else
    skip "unprivileged check: needs root, setpriv and a repo readable by nobody"
fi

# ---------------------------------------------------------------------------
echo "== apply/revert on a fake /proc, /sys, /etc"
FAKE="$TMP/fake"
put() {
    mkdir -p -- "$(dirname -- "$1")"
    printf '%s\n' "$2" >"$1"
}
make_fake_tree() {
    local p="$FAKE/proc/sys" c
    put "$p/net/core/somaxconn" 128
    put "$p/net/ipv4/tcp_max_syn_backlog" 256
    put "$p/net/ipv4/ip_local_port_range" "32768 60999"
    put "$p/net/ipv4/tcp_tw_reuse" 0
    put "$p/net/core/netdev_max_backlog" 1000
    put "$p/net/core/rmem_max" 212992
    put "$p/net/core/wmem_max" 212992
    put "$p/net/ipv4/tcp_rmem" "4096 87380 6291456"
    put "$p/net/ipv4/tcp_wmem" "4096 16384 4194304"
    put "$p/net/core/busy_poll" 0
    put "$p/net/core/busy_read" 0
    put "$p/net/ipv4/tcp_fastopen" 1
    put "$p/kernel/io_uring_disabled" 2
    put "$p/kernel/osrelease" 6.1.0-fake
    put "$p/fs/nr_open" 1048576
    put "$FAKE/proc/cmdline" "BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet"
    put "$FAKE/proc/irq/10/smp_affinity_list" 0-3
    put "$FAKE/proc/irq/11/smp_affinity_list" 1
    put "$FAKE/proc/irq/12/smp_affinity_list" 0
    put "$FAKE/sys/devices/system/cpu/online" 0-3
    for c in 0 1 2 3; do
        put "$FAKE/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor" powersave
        put "$FAKE/sys/devices/system/cpu/cpu$c/cpufreq/scaling_available_governors" "performance powersave"
    done
    put "$FAKE/sys/kernel/mm/transparent_hugepage/enabled" always
    put "$FAKE/sys/devices/system/cpu/cpuidle/current_driver" intel_idle
    local s name latency
    for c in 0 1 2 3; do
        for s in "0 POLL 0" "1 C1 2" "2 C1E 10" "3 C6 133"; do
            read -r s name latency <<<"$s"
            put "$FAKE/sys/devices/system/cpu/cpu$c/cpuidle/state$s/name" "$name"
            put "$FAKE/sys/devices/system/cpu/cpu$c/cpuidle/state$s/latency" "$latency"
            put "$FAKE/sys/devices/system/cpu/cpu$c/cpuidle/state$s/disable" 0
        done
    done
    mkdir -p "$FAKE/etc/security/limits.d"
}
fake() {
    capture env RINGGATE_TUNE_PROC_ROOT="$FAKE/proc" RINGGATE_TUNE_SYS_ROOT="$FAKE/sys" \
        RINGGATE_TUNE_ETC_ROOT="$FAKE/etc" RINGGATE_TUNING_STATE_DIR="$TMP/fake-state" \
        bash "$TUNE" "$@" --workers-cpus 1-3
}
# expect_file PATH CONTENT -- the first line of PATH is CONTENT.
expect_file() {
    local got
    got=$(head -n 1 -- "$1" 2>/dev/null || echo "<missing>")
    [ "$got" = "$2" ] || { FAKE_BAD="$FAKE_BAD ${1#"$FAKE"/}=$got(want $2)"; }
}

if is_root; then
    make_fake_tree
    cp -a "$FAKE" "$TMP/fake.orig"

    fake apply --dry-run
    if [ "$RC" = 0 ] && diff -r "$TMP/fake.orig" "$FAKE" >/dev/null && [ ! -e "$TMP/fake-state" ] &&
        grep -q '^would set: thp.enabled: always -> madvise' <<<"$OUT"; then
        pass "apply --dry-run lists the changes and changes nothing"
    else
        fail "apply --dry-run (exit $RC)"
        show_out
    fi

    fake apply
    FAKE_BAD=""
    if [ "$RC" != 0 ]; then
        fail "apply on the fake tree exited $RC"
        show_out
    else
        s="$FAKE/proc/sys"
        expect_file "$s/net/core/somaxconn" 65535
        expect_file "$s/net/ipv4/tcp_max_syn_backlog" 65535
        expect_file "$s/net/ipv4/ip_local_port_range" "10000 65535"
        expect_file "$s/net/ipv4/tcp_tw_reuse" 1
        expect_file "$s/net/core/netdev_max_backlog" 16384
        expect_file "$s/net/core/rmem_max" 16777216
        expect_file "$s/net/core/wmem_max" 16777216
        expect_file "$s/net/ipv4/tcp_rmem" "4096 131072 16777216"
        expect_file "$s/net/ipv4/tcp_wmem" "4096 16384 16777216"
        expect_file "$s/net/core/busy_poll" 50
        expect_file "$s/net/core/busy_read" 50
        expect_file "$s/net/ipv4/tcp_fastopen" 3
        expect_file "$s/kernel/io_uring_disabled" 0
        expect_file "$s/fs/nr_open" 1048576
        expect_file "$FAKE/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor" powersave
        expect_file "$FAKE/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor" performance
        expect_file "$FAKE/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor" performance
        expect_file "$FAKE/proc/irq/10/smp_affinity_list" 0
        expect_file "$FAKE/proc/irq/11/smp_affinity_list" 0
        expect_file "$FAKE/proc/irq/12/smp_affinity_list" 0
        expect_file "$FAKE/sys/kernel/mm/transparent_hugepage/enabled" madvise
        c="$FAKE/sys/devices/system/cpu"
        expect_file "$c/cpu0/cpuidle/state3/disable" 0
        expect_file "$c/cpu1/cpuidle/state3/disable" 1
        expect_file "$c/cpu3/cpuidle/state3/disable" 1
        expect_file "$c/cpu1/cpuidle/state2/disable" 0
        grep -q '^ringgate hard memlock unlimited$' "$FAKE/etc/security/limits.d/90-ringgate.conf" 2>/dev/null ||
            FAKE_BAD="$FAKE_BAD limits.d-file"
        if [ -z "$FAKE_BAD" ]; then
            pass "apply set every knob of the fake tree to its recommendation"
        else
            fail "apply left:$FAKE_BAD"
            show_out
        fi
        if grep -q 'isolcpus=managed_irq,domain,1-3 nohz_full=1-3 rcu_nocbs=1-3 irqaffinity=0' <<<"$OUT"; then
            pass "apply prints the kernel command line for isolation"
        else
            fail "apply did not print the isolation line"
        fi
        saved=$(find "$TMP/fake-state" -name 'saved-*' | wc -l)
        if [ "$saved" = 1 ] && grep -q $'^sysctl\tnet.core.somaxconn\t128$' "$TMP"/fake-state/saved-*; then
            pass "apply saved the previous values first"
        else
            fail "state file: $saved saved-* files, or old value missing"
        fi
    fi

    fake check
    bad=$(grep -E '^TUNE ' <<<"$OUT" | grep -vE ' (ulimit\.|systemd\.|cmdline\.)' || true)
    if [ "$RC" = 0 ] && [ -z "$bad" ]; then pass "check after apply: everything apply manages is ok"; else
        fail "check after apply still wants:"
        printf '%s\n' "$bad"
    fi

    fake apply
    if grep -q '^nothing to change' <<<"$OUT" && [ "$(find "$TMP/fake-state" -name 'saved-*' | wc -l)" = 1 ]; then
        pass "a second apply changes nothing and saves nothing"
    else
        fail "second apply"
        show_out
    fi

    fake revert
    if [ "$RC" = 0 ] && diff -r "$TMP/fake.orig" "$FAKE" >"$TMP/fake.diff" 2>&1; then
        pass "revert restored the fake tree byte for byte"
    else
        fail "revert (exit $RC)"
        show_out
        sed 's/^/      diff| /' "$TMP/fake.diff" | head -n 20
    fi
    fake revert
    if [ "$RC" = 0 ] && grep -q '^nothing to revert' <<<"$OUT"; then
        pass "a second revert finds nothing to revert"
    else
        fail "second revert"
        show_out
    fi

    # A KVM guest: the haltpoll cpuidle driver, halt polling off.
    HP="$TMP/fake-haltpoll"
    put "$HP/sys/devices/system/cpu/online" 0-3
    put "$HP/sys/devices/system/cpu/cpuidle/current_driver" haltpoll
    put "$HP/sys/module/haltpoll/parameters/guest_halt_poll_ns" 0
    hp() {
        capture env RINGGATE_TUNE_PROC_ROOT="$HP/proc" RINGGATE_TUNE_SYS_ROOT="$HP/sys" \
            RINGGATE_TUNE_ETC_ROOT="$HP/etc" RINGGATE_TUNING_STATE_DIR="$TMP/hp-state" \
            bash "$TUNE" "$@" --workers-cpus 1-3
    }
    hp check --only idle
    hp_check=$OUT
    hp apply --only idle
    hp_poll=$(cat "$HP/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    hp check --only idle
    hp_after=$OUT
    hp revert
    if grep -q '^TUNE   cpu.idle  *halt poll 0 ns' <<<"$hp_check" && [ "$hp_poll" = 200000 ] &&
        grep -q '^ok     cpu.idle' <<<"$hp_after" &&
        [ "$(cat "$HP/sys/module/haltpoll/parameters/guest_halt_poll_ns")" = 0 ]; then
        pass "a KVM guest: halt polling 0 -> 200000 ns by apply, back to 0 by revert"
    else
        fail "haltpoll guest: check/apply/revert (poll after apply: $hp_poll)"
        printf '%s\n' "$hp_check" "$hp_after" | sed 's/^/      | /' | head -n 20
    fi
else
    skip "fake-tree apply/revert: apply needs root"
fi

# ---------------------------------------------------------------------------
echo "== apply/revert of net.* sysctls in a throwaway network namespace"
NS_KEYS=(net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.ip_local_port_range
    net.ipv4.tcp_tw_reuse net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_fastopen)
NS_BASE=(1024 512 "32768 60999" 2 "4096 87380 6291456" "4096 16384 4194304" 1)
NS_WANT=(65535 65535 "10000 65535" 1 "4096 131072 16777216" "4096 16384 16777216" 3)
nsx() { timeout 20 ip netns exec "$NS" "$@"; }
ns_read() { nsx cat "/proc/sys/${1//.//}" 2>/dev/null | tr -s ' \t' '  '; }
# ns_expect WHAT VALUES... -- each NS_KEYS[i] reads VALUES[i].
ns_expect() {
    local what=$1 i bad=""
    shift
    local -a want=("$@")
    for i in "${!NS_KEYS[@]}"; do
        [ "$(ns_read "${NS_KEYS[$i]}")" = "${want[$i]}" ] ||
            bad="$bad ${NS_KEYS[$i]}=$(ns_read "${NS_KEYS[$i]}")(want ${want[$i]})"
    done
    if [ -z "$bad" ]; then pass "$what"; else fail "$what:$bad"; fi
}

if ! is_root || ! command -v ip >/dev/null 2>&1; then
    skip "netns round trip: needs root and ip"
elif ! ip netns add "rgtune-$$" 2>/dev/null; then
    skip "netns round trip: cannot create a network namespace here"
else
    NS="rgtune-$$"
    for i in "${!NS_KEYS[@]}"; do
        # shellcheck disable=SC2016 # $1/$2 belong to the inner sh
        nsx sh -c 'printf "%s\n" "$2" > "/proc/sys/$1"' _ "${NS_KEYS[$i]//.//}" "${NS_BASE[$i]}"
    done
    ns_expect "netns baseline set" "${NS_BASE[@]}"

    capture ip netns exec "$NS" bash "$TUNE" apply
    if [ "$RC" = 0 ] && grep -q 'only per-namespace net.\* sysctls are touched' <<<"$OUT"; then
        pass "apply in the netns exits 0 and limits itself to net.*"
    else
        fail "apply in the netns (exit $RC)"
        show_out
    fi
    outside=$(grep -E '^set: ' <<<"$OUT" | grep -vE '^set: +net\.' || true)
    if [ -z "$outside" ]; then pass "apply in the netns changed nothing host-wide"; else
        fail "apply in the netns changed: $outside"
    fi
    if grep -q '^skipped: ' <<<"$OUT"; then pass "global knobs are reported as skipped: <reason>"; else
        skip "no global net.* knob to skip on this kernel"
    fi
    ns_expect "apply raised every per-netns sysctl to its recommendation" "${NS_WANT[@]}"

    capture bash "$TUNE" revert
    if [ "$RC" != 0 ] && grep -q 'network namespace' <<<"$OUT"; then
        pass "revert from the host namespace is refused (values belong to the netns)"
    else
        fail "revert from the wrong namespace: exit $RC"
        show_out
    fi

    capture ip netns exec "$NS" bash "$TUNE" revert
    if [ "$RC" = 0 ]; then pass "revert in the netns exits 0"; else
        fail "revert in the netns exited $RC"
        show_out
    fi
    ns_expect "revert restored every per-netns sysctl exactly" "${NS_BASE[@]}"
fi

# ---------------------------------------------------------------------------
echo "== deploy"
UNIT="$REPO/deploy/systemd/ringgate.service"
if command -v systemd-analyze >/dev/null 2>&1; then
    # The binary is not installed here: verify a copy whose ExecStart points at a stub.
    mkdir -p "$TMP/unit"
    sed 's#/usr/local/bin/ringgate#/bin/true#g' "$UNIT" >"$TMP/unit/ringgate.service"
    capture systemd-analyze verify "$TMP/unit/ringgate.service"
    if [ "$RC" = 0 ] && [ -z "$OUT" ]; then
        pass "systemd-analyze verify ringgate.service: no warning"
    else
        fail "systemd-analyze verify (exit $RC)"
        show_out
    fi
else
    skip "systemd-analyze not installed"
fi
lacking=""
# shellcheck disable=SC2016 # $MAINPID is systemd's, matched literally
for want in 'ExecReload=/bin/kill -HUP $MAINPID' 'KillSignal=SIGTERM' 'Restart=on-failure' \
    'LimitNOFILE=1048576' 'LimitMEMLOCK=infinity'; do
    grep -qxF -- "$want" "$UNIT" || lacking="$lacking [$want]"
done
if [ -z "$lacking" ]; then pass "ringgate.service has the reload, drain, restart and limit directives"; else
    fail "ringgate.service lacks$lacking"
fi

# The router binary, when built, checks that the deploy files speak its CLI and config.
DRAIN_S=10 # ringgate's default --drain-seconds
RINGGATE_BIN=""
for b in "$REPO/target/release/ringgate" "$REPO/target/debug/ringgate"; do
    if [ -x "$b" ]; then
        RINGGATE_BIN=$b
        break
    fi
done
if [ -n "$RINGGATE_BIN" ] && capture "$RINGGATE_BIN" --help && [ "$RC" = 0 ] && grep -q -- '--check' <<<"$OUT"; then
    HELP=$OUT
    d=$(sed -n 's/.*--drain-seconds.*\[default: \([0-9]*\)\].*/\1/p' <<<"$HELP")
    [ -z "$d" ] || DRAIN_S=$d
    unknown=""
    for flag in $(grep -E '^Exec' "$UNIT" | grep -oE -- '--[a-z][a-z-]+' | sort -u) \
        $(grep -E '^ +- --' "$REPO/deploy/k8s/daemonset.yaml" | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
        grep -q -- "$flag" <<<"$HELP" || unknown="$unknown $flag"
    done
    if [ -z "$unknown" ]; then pass "every flag in the unit and the DaemonSet is in ringgate --help"; else
        fail "flags unknown to $RINGGATE_BIN:$unknown"
    fi
    if python3 -c 'import yaml' 2>/dev/null; then
        python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["routing.toml"])' \
            "$REPO/deploy/k8s/configmap.yaml" >"$TMP/routing.toml"
        capture "$RINGGATE_BIN" --config "$TMP/routing.toml" --check
        if [ "$RC" = 0 ]; then pass "ringgate --check accepts the ConfigMap's routing.toml"; else
            fail "ringgate --check rejects the ConfigMap's routing.toml"
            show_out
        fi
    fi
else
    skip "ringgate binary not built: deploy files not checked against its CLI"
fi

if python3 -c 'import yaml' 2>/dev/null; then
    capture python3 - "$REPO/deploy/k8s" "$UNIT" "$DRAIN_S" <<'EOF'
import glob, os, re, sys, yaml
k8s, unit, drain = sys.argv[1], sys.argv[2], int(sys.argv[3])
docs = {}
for path in sorted(glob.glob(os.path.join(k8s, "*.yaml"))):
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            docs[doc["kind"]] = doc
missing = {"Namespace", "ConfigMap", "DaemonSet", "Kustomization"} - set(docs)
assert not missing, f"missing kinds: {missing}"
toml_text = docs["ConfigMap"]["data"]["routing.toml"]
try:
    import tomllib
    cfg = tomllib.loads(toml_text)
    assert cfg["partitions"] and "default_backend" in cfg, "routing.toml lacks partitions/default_backend"
except ImportError:
    pass
spec = docs["DaemonSet"]["spec"]["template"]["spec"]
assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
rg = next(c for c in spec["containers"] if c["name"] == "ringgate")
res = rg["resources"]
assert res["requests"] == res["limits"], "requests must equal limits (Guaranteed QoS)"
assert re.fullmatch(r"[1-9][0-9]*", str(res["limits"]["cpu"])), "CPU must be an integer for exclusive cores"
for c in spec["containers"]:
    assert c["resources"]["requests"] == c["resources"]["limits"], c["name"] + ": requests != limits"
assert rg["livenessProbe"]["httpGet"]["path"] == "/health"
assert rg["readinessProbe"]["httpGet"]["path"] == "/ready"
grace = spec["terminationGracePeriodSeconds"]
pre = rg["lifecycle"]["preStop"]["sleep"]["seconds"]
stop = int(re.search(r"^TimeoutStopSec=(\d+)", open(unit).read(), re.M).group(1))
margin = 5
assert grace >= pre + drain + margin and stop >= drain + margin, \
    f"drain budget: drain {drain}s, grace {grace}s, preStop {pre}s, TimeoutStopSec {stop}s"
print("ok")
EOF
    if [ "$RC" = 0 ]; then pass "k8s manifests parse; ConfigMap TOML, QoS, probes and drain budget consistent"; else
        fail "k8s manifests"
        show_out
    fi
else
    skip "k8s manifests: python3 yaml module missing (pip install pyyaml)"
fi

# ---------------------------------------------------------------------------
echo "== host"
host_snapshot >"$TMP/host.after"
if diff -u "$TMP/host.before" "$TMP/host.after" >"$TMP/host.diff"; then
    pass "the host is unchanged"
else
    fail "the host changed:"
    head -n 20 "$TMP/host.diff"
fi
if [ "$SECONDS" -lt "$BUDGET_S" ]; then pass "finished in ${SECONDS}s (< ${BUDGET_S}s)"; else
    fail "took ${SECONDS}s (budget ${BUDGET_S}s)"
fi

echo "tuning: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" = 0 ]
