# shellcheck shell=bash
# limits area: the nofile and memlock resource limits, for a shell (pam_limits,
# ulimit) and for systemd (LimitNOFILE=, LimitMEMLOCK=). Sourced by ringgate-tune.sh.
#
# A running process's limits cannot be changed from here; apply writes a limits.d
# file for the ringgate user's future sessions and prints the systemd lines.

NOFILE_REC=1048576
RINGGATE_USER=${RINGGATE_TUNE_USER:-ringgate}

limits_file_content() {
    cat <<EOF
# Written by ringgate-tune.sh apply; ringgate-tune.sh revert restores what was here.
# pam_limits applies it to login shells and su/sudo sessions of this user; systemd
# services take LimitNOFILE=/LimitMEMLOCK= from their unit instead.
$RINGGATE_USER soft nofile $NOFILE_REC
$RINGGATE_USER hard nofile $NOFILE_REC
$RINGGATE_USER soft memlock unlimited
$RINGGATE_USER hard memlock unlimited
EOF
}

# proc_limit PID "Max open files" -- "soft/hard" as /proc/PID/limits shows them.
proc_limit() {
    local line
    line=$(grep -- "^$2 " "$PROC_ROOT/$1/limits" 2>/dev/null) || return 1
    line=${line#"$2"}
    # shellcheck disable=SC2086 # split the columns
    set -- $line
    printf '%s/%s' "$1" "$2"
}

# limit_at_least VALUE MIN -- VALUE is unlimited/infinity or a number >= MIN.
limit_at_least() {
    case $1 in
        unlimited | infinity) return 0 ;;
        *[!0-9]* | "") return 1 ;;
    esac
    [ "$1" -ge "$2" ]
}

area_limits() {
    area_selected limits || return 0
    local pid where nofile memlock soft status why verify

    pid=$(pids_named ringgate)
    pid=${pid%% *}
    if [ -n "$pid" ] && nofile=$(proc_limit "$pid" "Max open files") &&
        memlock=$(proc_limit "$pid" "Max locked memory"); then
        where="ringgate pid $pid"
        case $memlock in unlimited/unlimited) ;; *) memlock="$memlock B" ;; esac
    else
        where="this shell"
        nofile="$(ulimit -Sn)/$(ulimit -Hn)"
        memlock="$(ulimit -Sl)/$(ulimit -Hl)"
        case $memlock in unlimited/unlimited) ;; *) memlock="$memlock KiB" ;; esac
    fi

    why="every client and upstream connection is a file descriptor; the usual 1024 caps a worker at a few hundred proxied connections"
    verify="grep 'open files' /proc/\$(pidof ringgate)/limits; ulimit -n in the shell that starts it"
    soft=${nofile%%/*}
    if limit_at_least "$soft" "$NOFILE_REC"; then status=ok; else status=TUNE; fi
    if [ "$MODE" = check ]; then
        report "$status" ulimit.nofile "$nofile ($where)" ">= $NOFILE_REC" "$why" "$verify"
    fi

    why="io_uring rings count as locked memory on kernels < 5.12 (registered buffers on all): a low limit fails ring setup (ENOBUFS/ENOMEM in monoio) and ringgate falls back to epoll"
    verify="grep 'locked memory' /proc/\$(pidof ringgate)/limits shows unlimited; ringgate's startup log shows no memlock warning"
    soft=${memlock%%/*}
    if [ "$soft" = unlimited ]; then status=ok; else status=TUNE; fi
    if [ "$MODE" = check ]; then
        report "$status" ulimit.memlock "$memlock ($where)" "unlimited" "$why" "$verify"
    fi

    # The pam_limits file apply manages.
    local want have current
    want=$(limits_file_content)
    if [ -f "$LIMITS_FILE" ]; then
        have=$(cat -- "$LIMITS_FILE" 2>/dev/null || true)
        if [ "$have" = "$want" ]; then current=present status=ok; else current="present, differs" status=TUNE; fi
    elif [ -d "$(dirname -- "$LIMITS_FILE")" ]; then
        current=absent status=TUNE
    else
        current="no limits.d dir" status=n/a
    fi
    why="pam_limits gives $RINGGATE_USER's login/su/sudo sessions nofile $NOFILE_REC and memlock unlimited (for starting ringgate by hand)"
    verify="su -s /bin/sh $RINGGATE_USER -c 'ulimit -n; ulimit -l' prints $NOFILE_REC and unlimited"
    if [ "$MODE" = check ]; then
        report "$status" limits.d.ringgate "$current" "$LIMITS_FILE" "$why" "$verify"
    elif [ "$status" = ok ]; then
        printf 'ok:      %s is in place\n' "$LIMITS_FILE"
    elif [ "$status" = n/a ]; then
        skipped limits.d.ringgate "$(dirname -- "$LIMITS_FILE") does not exist (no pam_limits here)"
    elif ! { [ -w "$(dirname -- "$LIMITS_FILE")" ] || [ "$DRY_RUN" = 1 ]; }; then
        skipped limits.d.ringgate "$(dirname -- "$LIMITS_FILE") is not writable here"
    else
        local old=-
        [ -f "$LIMITS_FILE" ] && old=$(base64 -w0 <"$LIMITS_FILE")
        plan_add file "$LIMITS_FILE" "$old" "$(printf '%s\n' "$want" | base64 -w0)" limits.d.ringgate
    fi

    # systemd's view of the installed unit.
    local shown load unit_nofile unit_memlock
    why="a systemd service ignores limits.conf: its unit must say LimitNOFILE=$NOFILE_REC"
    verify="systemctl show ringgate -p LimitNOFILE; grep 'open files' /proc/\$(systemctl show -p MainPID --value ringgate)/limits"
    local why_mem="a systemd service ignores limits.conf: its unit must say LimitMEMLOCK=infinity"
    local verify_mem="systemctl show ringgate -p LimitMEMLOCK"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
        shown=$(systemctl show ringgate.service -p LoadState -p LimitNOFILE -p LimitMEMLOCK 2>/dev/null); then
        load=$(printf '%s\n' "$shown" | sed -n 's/^LoadState=//p')
        unit_nofile=$(printf '%s\n' "$shown" | sed -n 's/^LimitNOFILE=//p')
        unit_memlock=$(printf '%s\n' "$shown" | sed -n 's/^LimitMEMLOCK=//p')
        if [ "$MODE" = check ]; then
            if [ "$load" != loaded ]; then
                report info systemd.LimitNOFILE "unit $load" "LimitNOFILE=$NOFILE_REC" "$why" "$verify"
                report info systemd.LimitMEMLOCK "unit $load" "LimitMEMLOCK=infinity" "$why_mem" "$verify_mem"
            else
                if limit_at_least "$unit_nofile" "$NOFILE_REC"; then status=ok; else status=TUNE; fi
                report "$status" systemd.LimitNOFILE "$unit_nofile" "LimitNOFILE=$NOFILE_REC" "$why" "$verify"
                if [ "$unit_memlock" = infinity ]; then status=ok; else status=TUNE; fi
                report "$status" systemd.LimitMEMLOCK "$unit_memlock" "LimitMEMLOCK=infinity" "$why_mem" "$verify_mem"
            fi
        fi
    elif [ "$MODE" = check ]; then
        report n/a systemd.LimitNOFILE "systemd not running" "LimitNOFILE=$NOFILE_REC" "$why" "$verify"
        report n/a systemd.LimitMEMLOCK "systemd not running" "LimitMEMLOCK=infinity" "$why_mem" "$verify_mem"
    fi

    if [ "$MODE" = apply ]; then
        cat <<EOF
note:    limits of running processes are not changed. To raise them:
           shell (root, or within the hard limit):  ulimit -n $NOFILE_REC; ulimit -l unlimited
           login sessions of $RINGGATE_USER: $LIMITS_FILE (written by apply), then log in again
           systemd: deploy/systemd/ringgate.service has LimitNOFILE=$NOFILE_REC and
                    LimitMEMLOCK=infinity; for another unit: systemctl edit UNIT, add them
                    under [Service], then systemctl restart UNIT
EOF
    fi
}
