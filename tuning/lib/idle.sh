# shellcheck shell=bash
# idle area: how deep an idle worker core sleeps. Sourced by ringgate-tune.sh.
#
# A request that arrives at a sleeping core first pays for waking it. A proxy hands every
# request across cores twice (client -> proxy -> backend and back), so at low and moderate
# rates, where the cores do go idle between requests, that wake-up is most of the latency
# and much of the CPU.
# - KVM guest (cpuidle driver "haltpoll"): an idle vCPU halts, and waking it is a round
#   trip through the host (an IPI exit, then the host rescheduling the vCPU). Guest halt
#   polling spins for up to guest_halt_poll_ns before halting. Hosts that want idle guests
#   to cost nothing set it to 0; the kernel's default is 200000.
# - Bare metal (intel_idle, acpi_idle, ...): deep C-states flush caches and take tens to
#   hundreds of microseconds to leave. Worker cores keep only the states that exit within
#   IDLE_MAX_EXIT_US; the others are disabled per CPU (cpuidle stateN/disable).
# Either way the worker cores burn more power (and, in a VM, host CPU) while idle.

IDLE_HALT_POLL_NS=200000
IDLE_MAX_EXIT_US=10

area_idle() {
    area_selected idle || return 0
    local driver
    driver=$(read_value "$SYS_ROOT/devices/system/cpu/cpuidle/current_driver") || driver=""
    case $driver in
        haltpoll) idle_halt_poll ;;
        "" | none)
            local why="no cpuidle driver: the kernel idles with a plain halt (or idle=poll); nothing to tune here"
            if [ "$MODE" = check ]; then
                report n/a cpu.idle "no cpuidle driver" "-" "$why" "cat /sys/devices/system/cpu/cpuidle/current_driver"
            else
                skipped cpu.idle "no cpuidle driver"
            fi
            ;;
        *) idle_cstates "$driver" ;;
    esac
}

# The KVM guest case: guest halt polling.
idle_halt_poll() {
    local f="$SYS_ROOT/module/haltpoll/parameters/guest_halt_poll_ns" cur
    local rec="halt poll >= $IDLE_HALT_POLL_NS ns"
    local why="in a KVM guest an idle vCPU halts and every wake-up is a round trip through the host; at 0 each cross-core hand-off of a request waits for one (measured on a 2-vCPU guest: every proxy added 136-160 us to a one-connection median without it, 17-39 us with 200000). Polling burns host CPU while idle"
    local verify="cat /sys/module/haltpoll/parameters/guest_halt_poll_ns; state0 (poll) usage in /sys/devices/system/cpu/cpu*/cpuidle/state0/usage grows; one-connection latency drops"
    if ! cur=$(entry_current value "$f"); then
        if [ "$MODE" = check ]; then
            report n/a cpu.idle "haltpoll, no poll knob" "$rec" "$why" "$verify"
        else
            skipped cpu.idle "no $f"
        fi
        return 0
    fi
    if [ "$cur" -ge "$IDLE_HALT_POLL_NS" ] 2>/dev/null; then
        if [ "$MODE" = check ]; then
            report ok cpu.idle "halt poll $cur ns" "$rec" "$why" "$verify"
        else
            printf 'ok:      guest_halt_poll_ns = %s\n' "$cur"
        fi
    elif [ "$MODE" = check ]; then
        report TUNE cpu.idle "halt poll $cur ns" "$rec" "$why" "$verify"
    elif ! can_write "$f"; then
        skipped cpu.idle "read-only here (container or read-only /sys)"
    else
        plan_add value "$f" "$cur" "$IDLE_HALT_POLL_NS" "cpu.idle guest_halt_poll_ns"
    fi
}

# The bare-metal case: disable, on worker CPUs, the idle states slower to leave than
# IDLE_MAX_EXIT_US.
idle_cstates() {
    local driver=$1 cpu d latency name disabled deep="" deep_cpus=0 on=0
    local rec="states exiting in <= $IDLE_MAX_EXIT_US us"
    local why="deep C-states take tens to hundreds of us to leave and flush caches: the first request after an idle gap pays it; worker cores keep only shallow states"
    local verify="grep -H . /sys/devices/system/cpu/cpu<worker>/cpuidle/state*/{name,latency,disable}; turbostat shows worker cores out of deep C-states"
    for cpu in $WORKER_CPUS; do
        local found=0
        for d in "$SYS_ROOT/devices/system/cpu/cpu$cpu/cpuidle"/state[0-9]*; do
            latency=$(read_value "$d/latency") || continue
            [ "$latency" -gt "$IDLE_MAX_EXIT_US" ] 2>/dev/null || continue
            disabled=$(entry_current value "$d/disable") || continue
            [ "$disabled" = 0 ] || continue
            name=$(read_value "$d/name" || echo "${d##*/}")
            found=1
            on=$((on + 1))
            word_in "$name" "$deep" || deep="${deep:+$deep }$name"
            [ "$MODE" = apply ] || continue
            if can_write "$d/disable"; then
                plan_add value "$d/disable" 0 1 "cpu$cpu idle state $name (exit $latency us)"
            else
                skipped "cpu$cpu idle state $name" "read-only here"
            fi
        done
        deep_cpus=$((deep_cpus + found))
    done
    [ "$MODE" = check ] || {
        [ "$on" -gt 0 ] || printf 'ok:      no idle state slower than %s us is enabled on CPUs %s\n' \
            "$IDLE_MAX_EXIT_US" "$(cpulist_compress "$WORKER_CPUS")"
        return 0
    }
    if [ "$on" -eq 0 ]; then
        report ok cpu.idle "$driver, shallow only" "$rec" "$why" "$verify"
    else
        report TUNE cpu.idle "$driver, $deep on $deep_cpus CPUs" "$rec" "$why" "$verify"
    fi
}
