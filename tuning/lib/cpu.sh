# shellcheck shell=bash
# CPU areas: frequency governor ("governor"), interrupt placement ("irq") and core
# isolation on the kernel command line ("isolation"). Sourced by ringgate-tune.sh.
#
# Worker CPUs are where ringgate pins its workers (--workers-cpus, default all online
# CPUs); housekeeping CPUs are the rest, and take IRQs and everything else.

# word_in WORD LIST -- WORD is one of the space-separated LIST.
word_in() {
    case " $2 " in *" $1 "*) return 0 ;; esac
    return 1
}

area_governor() {
    area_selected governor || return 0
    local cpu f gov seen="" bad="" avail
    local why="powersave/schedutil raise the clock only after load arrives, so the first requests of every burst run slow; performance keeps worker cores at full clock"
    local verify
    verify="cat /sys/devices/system/cpu/cpu{$(cpulist_compress "$WORKER_CPUS")}/cpufreq/scaling_governor; grep MHz /proc/cpuinfo stays near max under load (or turbostat)"
    for cpu in $WORKER_CPUS; do
        f="$SYS_ROOT/devices/system/cpu/cpu$cpu/cpufreq/scaling_governor"
        gov=$(read_value "$f") || continue
        case " $seen " in *" $gov "*) ;; *) seen="${seen:+$seen }$gov" ;; esac
        [ "$gov" = performance ] && continue
        bad="$bad $cpu"
        [ "$MODE" = apply ] || continue
        avail=$(read_value "$SYS_ROOT/devices/system/cpu/cpu$cpu/cpufreq/scaling_available_governors" || echo "")
        if [ -n "$avail" ] && ! word_in performance "$avail"; then
            skipped "cpu$cpu governor" "driver offers only: $avail"
        elif ! can_write "$f"; then
            skipped "cpu$cpu governor" "read-only here (container or read-only /sys)"
        else
            plan_add value "$f" "$gov" performance "cpu$cpu governor"
        fi
    done
    if [ -z "$seen" ]; then
        if [ "$MODE" = check ]; then
            report n/a cpu.governor "no cpufreq" performance "$why" "$verify"
        else
            skipped cpu.governor "no cpufreq interface (a VM, or no cpufreq driver): the host or firmware sets the clock"
        fi
    elif [ "$MODE" = check ]; then
        if [ -z "$bad" ]; then
            report ok cpu.governor "$seen" performance "$why" "$verify"
        else
            report TUNE cpu.governor "$seen" "performance" "$why" "$verify"
        fi
    elif [ -z "$bad" ]; then
        printf 'ok:      cpu governor = performance on CPUs %s\n' "$(cpulist_compress "$WORKER_CPUS")"
    fi
}

irqbalance_banned() {
    local f="$ETC_ROOT/default/irqbalance" v
    [ -r "$f" ] || return 1
    v=$(sed -n 's/^[[:space:]]*IRQBALANCE_BANNED_CPULIST=["'\'']\{0,1\}\([0-9,-]*\).*/\1/p' "$f" | tail -n 1)
    [ -n "$v" ] || return 1
    printf '%s' "$v"
}

area_irq() {
    area_selected irq || return 0
    local workers hk irqbalance_pids banned banned_cpus
    workers=$(cpulist_compress "$WORKER_CPUS")
    hk=$(cpulist_compress "$HOUSE_CPUS")
    irqbalance_pids=$(pids_named irqbalance)

    # irqbalance: it rewrites smp_affinity every 10 s unless told to keep off the workers.
    local why_ib="irqbalance moves IRQs every 10 s and would put them back on worker cores unless those are banned"
    local verify_ib="systemctl status irqbalance; grep BANNED /etc/default/irqbalance"
    banned=$(irqbalance_banned || true)
    banned_cpus=$(cpulist_expand "$banned" 2>/dev/null || true)
    local ib_status ib_current
    if [ -z "$irqbalance_pids" ]; then
        ib_status=ok ib_current="not running"
    elif [ -n "$banned" ] && [ -z "$(cpus_minus "$WORKER_CPUS" "$banned_cpus")" ]; then
        ib_status=ok ib_current="running, bans $banned"
    else
        ib_status=TUNE ib_current="running${banned:+, bans $banned}"
    fi
    if [ "$MODE" = check ]; then
        report "$ib_status" irq.irqbalance "$ib_current" "stopped, or IRQBALANCE_BANNED_CPULIST=$workers" "$why_ib" "$verify_ib"
    fi

    # Each IRQ's allowed CPUs.
    local f list cpus total=0 on_workers=0 irq
    local why="a NIC or disk interrupt landing on a worker core preempts the request in flight there; keep IRQs on housekeeping cores"
    local verify="grep -H . /proc/irq/*/smp_affinity_list; the worker columns of /proc/interrupts stop growing (except LOC/RES/per-CPU)"
    local -a movable=()
    for f in "$PROC_ROOT"/irq/[0-9]*/smp_affinity_list; do
        list=$(read_value "$f") || continue
        total=$((total + 1))
        cpus=$(cpulist_expand "$list" 2>/dev/null) || continue
        [ -n "$(cpus_intersect "$cpus" "$WORKER_CPUS")" ] || continue
        on_workers=$((on_workers + 1))
        movable+=("$f" "$list")
    done

    local rec
    if [ -n "$hk" ]; then rec="only on CPUs $hk"; else rec="needs a housekeeping CPU"; fi
    if [ "$MODE" = check ]; then
        if [ "$total" -eq 0 ]; then
            report n/a irq.affinity "unreadable" "$rec" "$why" "$verify"
        elif [ "$on_workers" -eq 0 ]; then
            report ok irq.affinity "0 of $total on workers" "$rec" "$why" "$verify"
        elif [ -z "$hk" ]; then
            report info irq.affinity "$on_workers of $total on workers" "$rec (--workers-cpus)" "$why" "$verify"
        else
            report TUNE irq.affinity "$on_workers of $total on workers" "$rec" "$why" "$verify"
        fi
        return 0
    fi

    if [ "$total" -eq 0 ]; then
        skipped irq.affinity "/proc/irq is not readable here"
    elif [ "$on_workers" -eq 0 ]; then
        printf 'ok:      no IRQ may run on worker CPUs %s\n' "$workers"
    elif [ -z "$hk" ]; then
        skipped irq.affinity "every online CPU is a worker CPU ($workers): leave one for housekeeping, e.g. --workers-cpus $(cpulist_compress "$(cpus_minus "$WORKER_CPUS" "${WORKER_CPUS%% *}")")"
    elif [ -n "$irqbalance_pids" ] && [ "$ib_status" != ok ]; then
        skipped irq.affinity "irqbalance is running and would undo it: set IRQBALANCE_BANNED_CPULIST=$workers in /etc/default/irqbalance and restart it (or stop it), then apply again"
    else
        local i
        for ((i = 0; i < ${#movable[@]}; i += 2)); do
            f=${movable[$i]}
            irq=${f%/smp_affinity_list}
            irq=${irq##*/}
            if can_write "$f"; then
                plan_add value "$f" "${movable[$((i + 1))]}" "$hk" "irq $irq affinity"
            else
                skipped "irq $irq affinity" "read-only here"
            fi
        done
    fi
}

# cmdline_cpus PARAM -- CPU numbers in PARAM=... of /proc/cmdline (isolcpus flags dropped).
cmdline_cpus() {
    local word value part cpus=""
    local cmdline
    cmdline=$(read_value "$PROC_ROOT/cmdline") || return 1
    for word in $cmdline; do
        case $word in "$1="*) value=${word#*=} ;; *) continue ;; esac
        local IFS=,
        for part in $value; do
            case $part in [0-9]*) cpus="$cpus,$part" ;; esac
        done
        unset IFS
    done
    cpulist_expand "${cpus#,}" 2>/dev/null || true
}

area_isolation() {
    area_selected isolation || return 0
    local workers hk param cpus have status why verify rec
    workers=$(cpulist_compress "$WORKER_CPUS")
    hk=$(cpulist_compress "$HOUSE_CPUS")
    local have_cmdline=1
    read_value "$PROC_ROOT/cmdline" >/dev/null || have_cmdline=0

    if [ "$MODE" = check ]; then
        for param in isolcpus nohz_full rcu_nocbs; do
            case $param in
                isolcpus)
                    rec="isolcpus=managed_irq,domain,$workers"
                    why="the scheduler keeps other tasks (and managed IRQs) off worker cores; only pinned ringgate workers run there"
                    verify="cat /sys/devices/system/cpu/isolated shows $workers; ps -eLo psr,comm | awk '\$1==<worker>' lists only ringgate workers and kernel threads"
                    ;;
                nohz_full)
                    rec="nohz_full=$workers"
                    why="stops the periodic scheduler tick on a core running one task: no 1-4 ms timer interrupts through a request"
                    verify="cat /sys/devices/system/cpu/nohz_full; LOC counts of worker CPUs in /proc/interrupts grow slowly under load"
                    ;;
                rcu_nocbs)
                    rec="rcu_nocbs=$workers"
                    why="moves RCU callback processing off worker cores into rcuo kthreads on housekeeping cores"
                    verify="ps -eo psr,comm | grep rcuo runs on housekeeping CPUs; grep rcu_nocbs /proc/cmdline"
                    ;;
            esac
            if [ "$have_cmdline" = 0 ]; then
                report n/a "cmdline.$param" "no /proc/cmdline" "$rec" "$why" "$verify"
                continue
            fi
            cpus=$(cmdline_cpus "$param")
            have=$(cpulist_compress "$cpus")
            if [ -z "$hk" ]; then
                status=info rec="keep a housekeeping CPU (--workers-cpus)"
            elif [ -n "$cpus" ] && [ -z "$(cpus_minus "$WORKER_CPUS" "$cpus")" ]; then
                status=ok
            else
                status=TUNE
            fi
            report "$status" "cmdline.$param" "${have:-unset}" "$rec" "$why" "$verify"
        done
        return 0
    fi

    # apply never edits the bootloader: print the exact lines instead.
    if [ -z "$hk" ]; then
        skipped isolation "every online CPU is a worker CPU ($workers): isolating them all leaves the kernel no CPU; pick workers with --workers-cpus and rerun"
        return 0
    fi
    local args="isolcpus=managed_irq,domain,$workers nohz_full=$workers rcu_nocbs=$workers irqaffinity=$hk"
    cat <<EOF
note:    core isolation is a boot-time setting; apply does not edit the bootloader.
         Add to the kernel command line, then reboot:
           Debian/Ubuntu (GRUB): in /etc/default/grub append to GRUB_CMDLINE_LINUX_DEFAULT:
             $args
           then: update-grub && reboot
           RHEL/Fedora: grubby --update-kernel=ALL --args="$args" && reboot
           systemd-boot: append to /etc/kernel/cmdline, reinstall the entry (kernel-install add), reboot
         Start ringgate on the isolated CPUs (systemd: CPUAffinity=$workers).
EOF
}
