# The Markdown tables of scripts/bench.sh from its rows.tsv (POSIX awk; mawk is fine): with
# tls=1 the table of the TLS cells (modes tls, tls-hs, tls-resume), otherwise the table of
# all the other cells.
#
# One row per cell, tab-separated: path, mode (a rate, "max", "c1", "wrk", "tls", "tls-hs" or
# "tls-resume"), req/s (tls-hs, tls-resume: connections, so handshakes, per second),
# p50, p99, p99.9 (µs), requests completed, requests failed, utime and stime of the proxy
# over the window (clock ticks), syscalls, io_uring submissions, io_uring poll arms (counts
# over the window; "-" when not measured), TCP segments the machine sent in the window
# (every path, direct included), added p50 and p99 over direct (µs; "-": taken
# here from the direct row of the same mode; the cells run in rounds bring the median of
# their per-round differences) and, for those cells, ringgate's CPU per request ÷ the
# path's as the median of the per-round ratios (scripts/bench/rounds.awk).
#
# Variables: tck (clock ticks per second), conns, max_conns, max_pipeline, c1_rounds,
# c1_duration, wrk_conns, wrk_rounds, rate_rounds, tls (1: the TLS table), tls_conns, tls_hs_conns.
#
# The TLS table has no "added over direct" column (there is no TLS direct path) and has the
# proxy core's busy share instead: CPU per request × rate, how much of its one core the proxy
# used; well below 100 %, the rate was the load CPU's limit, not the proxy's.

BEGIN { FS = "\t" }

(($2 ~ /^tls/) ? 1 : 0) != (tls == 1 ? 1 : 0) { next }

{
    k = $1 SUBSEP $2
    order[++rows] = k; path[k] = $1; mode[k] = $2
    rps[k] = $3; p50[k] = $4; p99[k] = $5; p999[k] = $6; n[k] = $7; err[k] = $8
    measured[k] = ($9 != "-" && $7 > 0)
    user[k] = measured[k] ? 1e6 * $9 / tck / $7 : -1
    sys[k] = measured[k] ? 1e6 * $10 / tck / $7 : -1
    cpu[k] = measured[k] ? user[k] + sys[k] : -1
    sc[k] = per_request($11, $7); subm[k] = per_request($12, $7); arm[k] = per_request($13, $7)
    seg[k] = per_request($14, $7)
    add50[k] = $15; add99[k] = $16; ratio[k] = $17
}

function per_request(count, requests) {
    return (count == "-" || requests == 0) ? "—" : sprintf("%.2f", count / requests)
}

function us(v) { return v < 0 ? "—" : sprintf("%.1f", v) }

# A latency column: "-" (not measured, e.g. ab's p99.9) as "—".
function lat(v) { return v == "-" ? "—" : sprintf("%.0f", v) }

function label(m) {
    if (m == "max") return "max (closed loop, c=" max_conns ", pipeline " max_pipeline ")"
    if (m == "c1") return "c=1 (closed loop; median of " c1_rounds " × " c1_duration ")"
    if (m == "wrk") return "wrk POST c=" wrk_conns " (field layout" (wrk_rounds > 1 ? "; median of " wrk_rounds " rounds" : "") ")"
    if (m == "tls") return "TLS keep-alive, wrk POST c=" tls_conns
    if (m == "tls-hs") return "TLS full handshake + 1 POST per connection, ab c=" tls_hs_conns
    if (m == "tls-resume") return "TLS resumed handshake + 1 POST per connection, wrk c=" tls_hs_conns
    return m " req/s (open loop, c=" conns (rate_rounds > 1 ? "; median of " rate_rounds " rounds" : "") ")"
}

END {
    if (tls == 1) { tls_table(); exit }
    print "| path | cell | req/s | p50 µs | p99 µs | p99.9 µs | errors | user µs/req | sys µs/req | CPU µs/req | syscalls/req | io_uring submits/req | poll arms/req | TCP segments/req | added p50 / p99 over direct (µs) | ringgate ÷ path: req/s (>1: ringgate more) | ringgate ÷ path: CPU/req (<1: ringgate cheaper) |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= rows; i++) {
        k = order[i]; m = mode[k]; d = "direct" SUBSEP m; r = "ringgate" SUBSEP m
        if (path[k] == "direct") added = "—"
        else if (add50[k] != "-" && add50[k] != "") added = sprintf("%+.0f / %+.0f", add50[k], add99[k])
        else if (d in p50) added = sprintf("%+.0f / %+.0f", p50[k] - p50[d], p99[k] - p99[d])
        else added = "—"
        thr = (path[k] == "direct" || !(r in rps) || rps[k] == 0) ? "—" : sprintf("%.2f×", rps[r] / rps[k])
        cr = (cpu[k] <= 0 || !(r in cpu) || cpu[r] <= 0) ? "—" : sprintf("%.2f×", cpu[r] / cpu[k])
        if (ratio[k] != "" && ratio[k] != "-") cr = sprintf("%.2f× (rounds)", ratio[k])
        printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
            path[k], label(m), rps[k], p50[k], p99[k], p999[k], err[k], us(user[k]), us(sys[k]),
            us(cpu[k]), sc[k], subm[k], arm[k], seg[k], added, thr, cr
    }
}

function tls_table(    i, k, r, thr, cr, busy) {
    print "| proxy | cell | req/s (handshake cells: = handshakes/s) | p50 µs | p99 µs | p99.9 µs | errors | user µs/req | sys µs/req | CPU µs/req (handshake cells: = per handshake) | proxy core busy | syscalls/req | io_uring submits/req | poll arms/req | TCP segments/req | ringgate ÷ proxy: req/s (>1: ringgate more) | ringgate ÷ proxy: CPU/req (<1: ringgate cheaper) |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= rows; i++) {
        k = order[i]; r = "ringgate" SUBSEP mode[k]
        thr = (path[k] == "ringgate" || !(r in rps) || rps[k] == 0) ? "—" : sprintf("%.2f×", rps[r] / rps[k])
        cr = (path[k] == "ringgate" || cpu[k] <= 0 || !(r in cpu) || cpu[r] <= 0) ? "—" : sprintf("%.2f×", cpu[r] / cpu[k])
        busy = cpu[k] < 0 ? "—" : sprintf("%.0f %%", cpu[k] * rps[k] / 1e4)
        printf "| %s | %s | %.0f | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
            path[k], label(mode[k]), rps[k], lat(p50[k]), lat(p99[k]), lat(p999[k]), err[k],
            us(user[k]), us(sys[k]), us(cpu[k]), busy, sc[k], subm[k], arm[k], seg[k], thr, cr
    }
}
