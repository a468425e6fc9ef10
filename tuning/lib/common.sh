# shellcheck shell=bash disable=SC2034 # globals here are read by the other lib files
# Shared by ringgate-tune.sh and its area files: where the kernel knobs live, how a
# finding is reported, CPU-list arithmetic, and the apply plan with its state file.
# Sourced, never run.
#
# Invariants:
#   * Reading never fails the script: a missing or unreadable file is a finding ("n/a"),
#     not an error, so `check` exits 0 in any container or CI runner.
#   * Nothing is written before every value it replaces is in the state file.

# Roots of the kernel interfaces. Tests point these at a fake tree so that apply/revert
# can be exercised without touching the host.
PROC_ROOT=${RINGGATE_TUNE_PROC_ROOT:-/proc}
SYS_ROOT=${RINGGATE_TUNE_SYS_ROOT:-/sys}
ETC_ROOT=${RINGGATE_TUNE_ETC_ROOT:-/etc}
LIMITS_FILE="$ETC_ROOT/security/limits.d/90-ringgate.conf"
STATE_DIR=${RINGGATE_TUNING_STATE_DIR:-/var/lib/ringgate-tuning}
# An exact state file path; --state overrides it.
STATE_FILE=${RINGGATE_TUNING_STATE:-}

# Set by the command line in ringgate-tune.sh.
MODE=check
DRY_RUN=0
FORCE=0
ONLY=""
WORKER_CPUS=""   # space-separated CPU numbers
HOUSE_CPUS=""    # online CPUs that are not worker CPUs

N_OK=0
N_TUNE=0
N_NA=0
N_INFO=0
N_SKIPPED=0

# ---------------------------------------------------------------------------
# Output

# report STATUS NAME CURRENT RECOMMENDED WHY VERIFY -- one finding of `check`.
# STATUS is ok (meets the recommendation), TUNE (differs), n/a (cannot be read here)
# or info (guidance only, nothing to compare).
report() {
    local status=$1 name=$2 current=$3 recommended=$4 why=$5 verify=$6
    case $status in
        ok) N_OK=$((N_OK + 1)) ;;
        TUNE) N_TUNE=$((N_TUNE + 1)) ;;
        n/a) N_NA=$((N_NA + 1)) ;;
        *) N_INFO=$((N_INFO + 1)) ;;
    esac
    printf '%-6s %-30s %-26s %s\n' "$status" "$name" "$current" "$recommended"
    printf '      why:    %s\n' "$why"
    printf '      verify: %s\n' "$verify"
}

# skipped NAME REASON -- apply/revert could not change NAME here.
skipped() {
    N_SKIPPED=$((N_SKIPPED + 1))
    printf 'skipped: %s: %s\n' "$1" "$2"
}

die() {
    printf 'ringgate-tune: %s\n' "$*" >&2
    exit 1
}

# area_selected AREA -- true when AREA is in --only (or --only was not given).
area_selected() {
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}

# ---------------------------------------------------------------------------
# Reading and writing kernel values

# normalize STRING -- whitespace runs become one space, no leading/trailing space.
# Multi-field sysctls (tcp_rmem) read back with tabs; they are compared and stored this way.
normalize() {
    local -a words=()
    read -r -d '' -a words <<<"$1" || true
    printf '%s' "${words[*]}"
}

# read_value PATH -- print the normalized content; status 1 when missing or unreadable.
read_value() {
    local content=""
    [ -e "$1" ] || return 1
    # Builtins only: check runs hundreds of these, and a fork each adds up on a busy host.
    { exec 9<"$1"; } 2>/dev/null || return 1
    IFS= read -r -d '' content <&9 || true
    exec 9<&-
    normalize "$content"
}

# can_write PATH -- status 0 when this process may write PATH. A read-only mount or a
# read-only sysctl (a global knob seen from a child network namespace) answers no.
can_write() {
    [ -e "$1" ] || return 1
    if [ "$DRY_RUN" = 1 ] && [ "$(id -u)" != 0 ]; then
        return 0 # a preview by a normal user: assume root could
    fi
    [ -w "$1" ]
}

# write_value PATH VALUE -- write and read back; status 1 with a reason on stdout when
# the kernel refused or kept another value.
write_value() {
    local path=$1 value=$2 err got
    if ! err=$({ printf '%s\n' "$value" >"$path"; } 2>&1); then
        printf '%s' "${err##*: }"
        return 1
    fi
    got=$(read_value "$path") || {
        printf 'written but unreadable'
        return 1
    }
    case $got in
        "$(normalize "$value")") return 0 ;;
        *"[$value]"*) return 0 ;; # sysfs choice lists: "always [madvise] never"
    esac
    printf 'kernel kept %s' "$got"
    return 1
}

sysctl_path() {
    printf '%s/sys/%s' "$PROC_ROOT" "${1//.//}"
}

# ---------------------------------------------------------------------------
# CPU lists ("0-3,8") and their arithmetic, on space-separated numbers.

# cpulist_expand LIST -- "0-2,5" -> "0 1 2 5" (in the order written: kernel lists are
# sorted; user input is sorted by the caller); status 1 on a malformed list.
cpulist_expand() {
    local list=${1// /} part lo hi i out=""
    local -a parts=()
    [ -n "$list" ] || return 0
    IFS=, read -r -a parts <<<"$list"
    for part in "${parts[@]}"; do
        case $part in
            *-*) lo=${part%-*} hi=${part#*-} ;;
            *) lo=$part hi=$part ;;
        esac
        [[ $lo =~ ^[0-9]+$ && $hi =~ ^[0-9]+$ ]] || return 1
        lo=$((10#$lo)) hi=$((10#$hi))
        [ "$lo" -le "$hi" ] || return 1
        for ((i = lo; i <= hi; i++)); do out="$out $i"; done
    done
    printf '%s\n' "${out# }"
}

# cpulist_compress "0 1 2 5" -> "0-2,5"
cpulist_compress() {
    local cpu start="" prev="" out=""
    for cpu in $1; do
        if [ -z "$start" ]; then
            start=$cpu
        elif [ "$cpu" -ne $((prev + 1)) ]; then
            out="$out,$(cpu_range "$start" "$prev")"
            start=$cpu
        fi
        prev=$cpu
    done
    [ -n "$start" ] && out="$out,$(cpu_range "$start" "$prev")"
    printf '%s' "${out#,}"
}

cpu_range() {
    if [ "$1" = "$2" ]; then printf '%s' "$1"; else printf '%s-%s' "$1" "$2"; fi
}

# cpus_minus A B -- members of A not in B.
cpus_minus() {
    local a out=""
    for a in $1; do
        case " $2 " in *" $a "*) ;; *) out="$out $a" ;; esac
    done
    printf '%s' "${out# }"
}

# cpus_intersect A B -- members of A also in B.
cpus_intersect() {
    local a out=""
    for a in $1; do
        case " $2 " in *" $a "*) out="$out $a" ;; esac
    done
    printf '%s' "${out# }"
}

# cpus_online -- online CPUs, from sysfs or, failing that, the CPU count.
cpus_online() {
    local list n
    if list=$(read_value "$SYS_ROOT/devices/system/cpu/online") && [ -n "$list" ]; then
        cpulist_expand "$list" && return 0
    fi
    n=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
    cpulist_expand "0-$((n - 1))"
}

# ---------------------------------------------------------------------------
# Processes and namespaces

# pids_named COMM -- PIDs whose /proc/PID/comm is COMM (no pgrep: procps may be absent).
pids_named() {
    local f comm out=""
    for f in "$PROC_ROOT"/[0-9]*/comm; do
        comm=""
        { read -r comm <"$f"; } 2>/dev/null || continue
        if [ "$comm" = "$1" ]; then
            f=${f%/comm}
            out="$out ${f##*/}"
        fi
    done
    printf '%s' "${out# }"
}

netns_id() {
    readlink /proc/self/ns/net 2>/dev/null || echo unknown
}

# in_child_netns -- true inside `ip netns exec`: this is not the host's network
# namespace, so host-wide knobs (kernel.*, /sys, IRQs, limits) must be left alone.
# PID 1's namespace is the reference when we may read it; otherwise (a hardened PID 1)
# `ip netns identify` names the namespace we were started in. Cached: asked often.
IN_CHILD_NETNS=""
in_child_netns() {
    if [ -z "$IN_CHILD_NETNS" ]; then
        local init name
        IN_CHILD_NETNS=no
        if init=$(readlink /proc/1/ns/net 2>/dev/null) && [ -n "$init" ]; then
            [ "$init" = "$(netns_id)" ] || IN_CHILD_NETNS=yes
        elif command -v ip >/dev/null 2>&1 &&
            name=$(ip netns identify "$$" 2>/dev/null) && [ -n "$name" ]; then
            IN_CHILD_NETNS=yes
        fi
    fi
    [ "$IN_CHILD_NETNS" = yes ]
}

# ---------------------------------------------------------------------------
# The apply plan: every change is planned first, saved, then made.
#   kind  sysctl  key = dotted name        old/new = normalized value
#         value   key = path of a knob     old/new = normalized value
#         file    key = path of a file     old = base64 of the content, or "-" if absent
PLAN_KIND=()
PLAN_KEY=()
PLAN_OLD=()
PLAN_NEW=()
PLAN_LABEL=()

plan_add() {
    PLAN_KIND+=("$1")
    PLAN_KEY+=("$2")
    PLAN_OLD+=("$3")
    PLAN_NEW+=("$4")
    PLAN_LABEL+=("$5")
}

entry_path() {
    case $1 in
        sysctl) sysctl_path "$2" ;;
        *) printf '%s' "$2" ;;
    esac
}

# entry_current KIND KEY -- the value as the state file would store it.
entry_current() {
    local kind=$1 key=$2 path
    path=$(entry_path "$kind" "$key")
    case $kind in
        file)
            if [ -e "$path" ]; then base64 -w0 <"$path"; else printf -- '-'; fi
            ;;
        value)
            local v
            v=$(read_value "$path") || return 1
            # sysfs choice lists store the chosen word: "always [madvise] never" -> madvise
            case $v in *'['*']'*) v=${v#*\[} v=${v%%\]*} ;; esac
            printf '%s' "$v"
            ;;
        *) read_value "$path" ;;
    esac
}

# entry_write KIND KEY VALUE -- VALUE as stored (base64 or "-" for files).
entry_write() {
    local kind=$1 key=$2 value=$3 path err
    path=$(entry_path "$kind" "$key")
    case $kind in
        file)
            if [ "$value" = - ]; then
                err=$(rm -f -- "$path" 2>&1) || {
                    printf '%s' "$err"
                    return 1
                }
            else
                err=$({ mkdir -p -- "$(dirname -- "$path")" &&
                    printf '%s' "$value" | base64 -d >"$path"; } 2>&1) || {
                    printf '%s' "$err"
                    return 1
                }
            fi
            ;;
        *) write_value "$path" "$value" ;;
    esac
}

state_new_path() {
    if [ -n "$STATE_FILE" ]; then
        printf '%s' "$STATE_FILE"
    else
        printf '%s/saved-%s' "$STATE_DIR" "$(date -u +%Y%m%dT%H%M%S.%NZ)"
    fi
}

# state_latest -- the state file revert should use: --state / $RINGGATE_TUNING_STATE, or the
# newest saved-* in the state directory. Each revert retires its file, so repeated reverts
# unwind repeated applies in reverse order.
state_latest() {
    if [ -n "$STATE_FILE" ]; then
        [ -f "$STATE_FILE" ] && printf '%s' "$STATE_FILE"
        return 0
    fi
    local f last=""
    for f in "$STATE_DIR"/saved-*; do
        [ -f "$f" ] && last=$f
    done
    printf '%s' "$last"
}

# state_save PATH -- write the header and every planned entry's current (old) value.
state_save() {
    local path=$1 i tmp
    [ -e "$path" ] && die "state file $path exists: revert it first or pass another --state"
    mkdir -p -- "$(dirname -- "$path")" || die "cannot create $(dirname -- "$path")"
    tmp="$path.tmp.$$"
    {
        printf '# ringgate-tune state v1\n'
        printf '# created %s on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -n)"
        printf '# netns %s\n' "$(netns_id)"
        printf '# restore with: ringgate-tune.sh revert --state %s\n' "$path"
        for i in "${!PLAN_KIND[@]}"; do
            printf '%s\t%s\t%s\n' "${PLAN_KIND[$i]}" "${PLAN_KEY[$i]}" "${PLAN_OLD[$i]}"
        done
    } >"$tmp" || die "cannot write $tmp"
    chmod 600 "$tmp"
    sync "$tmp" 2>/dev/null || true
    mv -- "$tmp" "$path" || die "cannot write $path"
}
