# shellcheck shell=bash
# thp area: transparent huge pages. Sourced by ringgate-tune.sh.
#
# "always" lets any page fault stop to compact memory for a 2 MiB page, and lets
# khugepaged rewrite page tables under a running worker: rare stalls of tens to
# hundreds of microseconds, exactly the tail a router is judged by. "madvise" keeps huge
# pages for code that asks for them (MADV_HUGEPAGE); "never" is fine too.

area_thp() {
    area_selected thp || return 0
    local f="$SYS_ROOT/kernel/mm/transparent_hugepage/enabled" cur
    local why="'always' can stall a page fault on memory compaction and lets khugepaged collapse pages under a worker: rare 10-100s of us spikes in the tail; madvise/never avoid it"
    local verify="cat /sys/kernel/mm/transparent_hugepage/enabled shows [madvise]; grep -E 'compact_stall|thp_fault_alloc' /proc/vmstat stop growing under load"
    if ! cur=$(entry_current value "$f"); then
        if [ "$MODE" = check ]; then
            report n/a thp.enabled "no THP interface" "madvise (or never)" "$why" "$verify"
        else
            skipped thp.enabled "no $f (kernel without THP, or /sys not mounted)"
        fi
        return 0
    fi
    case $cur in
        madvise | never)
            if [ "$MODE" = check ]; then
                report ok thp.enabled "$cur" "madvise (or never)" "$why" "$verify"
            else
                printf 'ok:      transparent_hugepage/enabled = %s\n' "$cur"
            fi
            ;;
        *)
            if [ "$MODE" = check ]; then
                report TUNE thp.enabled "$cur" "madvise (or never)" "$why" "$verify"
            elif ! can_write "$f"; then
                skipped thp.enabled "read-only here (container or read-only /sys)"
            else
                plan_add value "$f" "$cur" madvise thp.enabled
            fi
            ;;
    esac
}
