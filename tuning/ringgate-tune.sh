#!/usr/bin/env bash
# ringgate-tune.sh -- host tuning for the ringgate edge router.
#
#   check   report current vs recommended, with why and how to verify; changes nothing,
#           needs no privilege, exits 0 whatever it finds
#   apply   save the values it is about to change to a state file, then change them
#   revert  restore exactly the values saved by the last apply (or --state FILE)
#
# Areas: net (net.* sysctls, per network namespace), kernel (kernel.io_uring_disabled,
# fs.nr_open), limits (nofile, memlock), governor, idle (halt polling / C-states), irq,
# isolation, thp.
# See tuning/README.md.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=lib/sysctl.sh
. "$HERE/lib/sysctl.sh"
# shellcheck source=lib/limits.sh
. "$HERE/lib/limits.sh"
# shellcheck source=lib/cpu.sh
. "$HERE/lib/cpu.sh"
# shellcheck source=lib/idle.sh
. "$HERE/lib/idle.sh"
# shellcheck source=lib/thp.sh
. "$HERE/lib/thp.sh"

ALL_AREAS="net,kernel,limits,governor,idle,irq,isolation,thp"

usage() {
    cat <<EOF
usage: ringgate-tune.sh check|apply|revert [options]

  --workers-cpus LIST  CPUs ringgate's workers are pinned to (e.g. 1-3); the others
                       are housekeeping CPUs for IRQs. Default: all online CPUs.
  --only AREAS         comma list of: $ALL_AREAS
  --dry-run            apply/revert: print what would change, change nothing
  --state FILE         apply: save to FILE; revert: restore from FILE
                       (default: newest saved-* in \$RINGGATE_TUNING_STATE_DIR,
                       which defaults to /var/lib/ringgate-tuning)
  --force              revert: restore net.* values saved in another network namespace

Environment: RINGGATE_TUNING_STATE (exact state file), RINGGATE_TUNING_STATE_DIR.
Inside a child network namespace (ip netns exec) apply touches only area net.
EOF
}

run_areas() {
    area_sysctl
    area_limits
    area_governor
    area_idle
    area_irq
    area_isolation
    area_thp
}

cmd_check() {
    local where="initial network namespace"
    in_child_netns && where="child network namespace $(netns_id)"
    printf 'ringgate-tune check: kernel %s, uid %s, %s\n' \
        "$(read_value "$PROC_ROOT/sys/kernel/osrelease" || uname -r)" "$(id -u)" "$where"
    printf 'CPUs online %s; worker CPUs %s; housekeeping CPUs %s\n\n' \
        "$(cpulist_compress "$ONLINE_CPUS")" "$(cpulist_compress "$WORKER_CPUS")" \
        "$(h=$(cpulist_compress "$HOUSE_CPUS"); printf '%s' "${h:-none}")"
    printf '%-6s %-30s %-26s %s\n' STATUS SETTING CURRENT RECOMMENDED
    run_areas
    printf '\nsummary: %s ok, %s to tune, %s n/a, %s info. check changed nothing.\n' \
        "$N_OK" "$N_TUNE" "$N_NA" "$N_INFO"
    [ "$N_TUNE" -eq 0 ] || printf 'to change them: ringgate-tune.sh apply --dry-run, then apply (revert undoes it)\n'
    return 0
}

# show_value KIND VALUE -- a state value as a person reads it.
show_value() {
    case $1 in
        file) if [ "$2" = - ]; then printf 'absent'; else printf 'previous content'; fi ;;
        *) printf '%s' "$2" ;;
    esac
}

cmd_apply() {
    if [ "$DRY_RUN" != 1 ] && [ "$(id -u)" != 0 ]; then
        die "apply needs root (preview with --dry-run)"
    fi
    if in_child_netns && [ -z "$ONLY" ]; then
        ONLY=net
        printf 'note:    in a child network namespace: only per-namespace net.* sysctls are touched\n'
    fi
    run_areas

    local n=${#PLAN_KIND[@]} i path err changed=0
    if [ "$n" -eq 0 ]; then
        printf 'nothing to change (%s skipped); no state file written\n' "$N_SKIPPED"
        return 0
    fi
    if [ "$DRY_RUN" = 1 ]; then
        for i in "${!PLAN_KIND[@]}"; do
            printf 'would set: %s: %s -> %s\n' "${PLAN_LABEL[$i]}" \
                "$(show_value "${PLAN_KIND[$i]}" "${PLAN_OLD[$i]}")" \
                "$(show_value "${PLAN_KIND[$i]}" "${PLAN_NEW[$i]}" | sed 's/previous content/new content/')"
        done
        printf 'would save %s previous values to %s (dry run: nothing changed)\n' "$n" "$(state_new_path)"
        return 0
    fi

    path=$(state_new_path)
    state_save "$path"
    printf 'saved:   %s previous values to %s\n' "$n" "$path"
    for i in "${!PLAN_KIND[@]}"; do
        if err=$(entry_write "${PLAN_KIND[$i]}" "${PLAN_KEY[$i]}" "${PLAN_NEW[$i]}"); then
            changed=$((changed + 1))
            printf 'set:     %s: %s -> %s\n' "${PLAN_LABEL[$i]}" \
                "$(show_value "${PLAN_KIND[$i]}" "${PLAN_OLD[$i]}")" \
                "$(show_value "${PLAN_KIND[$i]}" "${PLAN_NEW[$i]}" | sed 's/previous content/new content/')"
        else
            case ${PLAN_LABEL[$i]} in
                irq*) err="${err:-write failed} (a managed or per-CPU IRQ: the kernel places it)" ;;
            esac
            skipped "${PLAN_LABEL[$i]}" "kernel refused: ${err:-write failed}"
        fi
    done
    printf 'done:    %s changed, %s skipped. Undo with: %s revert --state %s\n' \
        "$changed" "$N_SKIPPED" "$0" "$path"
}

cmd_revert() {
    if [ "$DRY_RUN" != 1 ] && [ "$(id -u)" != 0 ]; then
        die "revert needs root (preview with --dry-run)"
    fi
    local path
    path=$(state_latest)
    if [ -z "$path" ]; then
        printf 'nothing to revert: no state file (%s)\n' "${STATE_FILE:-$STATE_DIR/saved-*}"
        return 0
    fi
    printf 'reverting from %s\n' "$path"

    local -a kinds=() keys=() olds=()
    local kind key old saved_ns="" line
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            '# netns '*) saved_ns=${line#'# netns '} ;;
            '#'* | '') ;;
            *)
                IFS=$'\t' read -r kind key old <<<"$line"
                case $kind in sysctl | value | file) ;; *) die "$path: unknown entry: $line" ;; esac
                kinds+=("$kind") keys+=("$key") olds+=("$old")
                ;;
        esac
    done <"$path"

    local has_net=0 i
    for i in "${!kinds[@]}"; do
        case "${kinds[$i]}:${keys[$i]}" in sysctl:net.*) has_net=1 ;; esac
    done
    if [ "$has_net" = 1 ] && [ -n "$saved_ns" ] && [ "$saved_ns" != "$(netns_id)" ] && [ "$FORCE" != 1 ]; then
        die "$path holds net.* values of network namespace $saved_ns, this is $(netns_id): run revert there (ip netns exec NAME ...), or pass --force"
    fi

    local cur err failed=0 label
    for ((i = ${#kinds[@]} - 1; i >= 0; i--)); do
        kind=${kinds[$i]} key=${keys[$i]} old=${olds[$i]}
        label=$key
        if ! cur=$(entry_current "$kind" "$key"); then
            skipped "$label" "no longer present (device or IRQ gone)"
            continue
        fi
        if [ "$cur" = "$old" ]; then
            printf 'unchanged: %s = %s\n' "$label" "$(show_value "$kind" "$old")"
        elif [ "$DRY_RUN" = 1 ]; then
            printf 'would restore: %s = %s\n' "$label" "$(show_value "$kind" "$old")"
        elif err=$(entry_write "$kind" "$key" "$old"); then
            printf 'restored: %s = %s\n' "$label" "$(show_value "$kind" "$old")"
        else
            printf 'FAILED:  %s: %s\n' "$label" "${err:-write failed}"
            failed=$((failed + 1))
        fi
    done

    [ "$DRY_RUN" = 1 ] && return 0
    if [ "$failed" -gt 0 ]; then
        printf '%s values could not be restored; %s is kept\n' "$failed" "$path"
        return 1
    fi
    local base done_path
    base=$(basename -- "$path")
    case $base in
        saved-*) done_path="$(dirname -- "$path")/reverted-${base#saved-}" ;;
        *) done_path="$path.reverted-$(date -u +%Y%m%dT%H%M%SZ)" ;;
    esac
    mv -- "$path" "$done_path"
    printf 'reverted: every saved value is back; state retired to %s\n' "$done_path"
}

main() {
    local cmd="" workers_arg=""
    while [ $# -gt 0 ]; do
        case $1 in
            check | apply | revert)
                [ -z "$cmd" ] || { usage >&2; exit 2; }
                cmd=$1
                ;;
            --workers-cpus) workers_arg=${2:?--workers-cpus needs a CPU list}; shift ;;
            --workers-cpus=*) workers_arg=${1#*=} ;;
            --only) ONLY=${2:?--only needs a list}; shift ;;
            --only=*) ONLY=${1#*=} ;;
            --state) STATE_FILE=${2:?--state needs a path}; shift ;;
            --state=*) STATE_FILE=${1#*=} ;;
            --dry-run) DRY_RUN=1 ;;
            --force) FORCE=1 ;;
            -h | --help) usage; exit 0 ;;
            *) printf 'unknown argument: %s\n' "$1" >&2; usage >&2; exit 2 ;;
        esac
        shift
    done
    [ -n "$cmd" ] || { usage >&2; exit 2; }
    MODE=$cmd

    local area
    if [ -n "$ONLY" ]; then
        local IFS=,
        for area in $ONLY; do
            case ",$ALL_AREAS," in *",$area,"*) ;; *) printf 'unknown area: %s (areas: %s)\n' "$area" "$ALL_AREAS" >&2; exit 2 ;; esac
        done
        unset IFS
    fi

    ONLINE_CPUS=$(cpus_online)
    if [ -n "$workers_arg" ]; then
        WORKER_CPUS=$(cpulist_expand "$workers_arg") || { printf 'bad CPU list: %s\n' "$workers_arg" >&2; exit 2; }
        # shellcheck disable=SC2086 # one number a line, for sort
        WORKER_CPUS=$(printf '%s\n' $WORKER_CPUS | sort -n -u | tr '\n' ' ')
        WORKER_CPUS=${WORKER_CPUS% }
        local extra
        extra=$(cpus_minus "$WORKER_CPUS" "$ONLINE_CPUS")
        [ -z "$extra" ] || { printf 'CPUs %s are not online (online: %s)\n' "$(cpulist_compress "$extra")" "$(cpulist_compress "$ONLINE_CPUS")" >&2; exit 2; }
    else
        WORKER_CPUS=$ONLINE_CPUS
    fi
    HOUSE_CPUS=$(cpus_minus "$ONLINE_CPUS" "$WORKER_CPUS")
    in_child_netns || true # decide once, in this shell, before any $(...) asks

    case $MODE in
        check) cmd_check ;;
        apply) cmd_apply ;;
        revert) cmd_revert ;;
    esac
}

main "$@"
