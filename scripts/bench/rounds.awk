# The cells of scripts/bench.sh measured in rounds (c1, and wrk with BENCH_WRK_ROUNDS > 1):
# folds the per-round rows of every path into one row per path and cell (POSIX awk; mawk is
# fine).
#
# Input: round rows, tab-separated, as rows.tsv (see table.awk) plus the round number in
# column 15. Output: one rows.tsv row per path and mode, in first-seen order:
# - req/s, p50, p99 and p99.9: the medians over the rounds;
# - requests, failures, CPU ticks, perf counts and TCP segments: sums over the rounds (so the
#   per-request columns are totals ÷ total requests);
# - the added p50 / p99 over direct: the medians of the per-round differences against the
#   direct cell of the same round;
# - column 17, ringgate's CPU per request ÷ the path's: the median of the per-round ratios
#   (ringgate and the path measured in the same round, a few seconds apart).
# Taken within a round, a disturbance of the host moves one sample, not the answer. A round
# without the direct (ringgate) cell adds no difference (ratio).

BEGIN { FS = OFS = "\t" }

{
    p = $1 OFS $2; r = $15
    if (!(p in rounds)) order[++paths] = p
    i = ++rounds[p]
    rps[p, i] = $3 + 0; p50[p, i] = $4 + 0; p99[p, i] = $5 + 0; p999[p, i] = $6 + 0
    n[p] += $7; err[p] += $8
    for (c = 9; c <= 14; c++) {
        if ($c == "-" || (p, c) in missing) missing[p, c] = 1
        else sum[p, c] += $c
    }
    round_of[p, i] = r
    cpu[p, i] = ($9 == "-" || $7 == 0) ? -1 : ($9 + $10) / $7
    if ($1 == "direct") { d50[$2, r] = $4 + 0; d99[$2, r] = $5 + 0 }
    if ($1 == "ringgate" && cpu[p, i] > 0) rg[$2, r] = cpu[p, i]
}

# Median of v[p, 1..count] (the array is sorted in place).
function median(v, p, count,    a, b, t) {
    for (a = 2; a <= count; a++)
        for (b = a; b > 1 && v[p, b - 1] > v[p, b]; b--) { t = v[p, b]; v[p, b] = v[p, b - 1]; v[p, b - 1] = t }
    return count % 2 ? v[p, (count + 1) / 2] : (v[p, count / 2] + v[p, count / 2 + 1]) / 2
}

END {
    for (j = 1; j <= paths; j++) {
        p = order[j]; count = rounds[p]; split(p, pm, OFS); path = pm[1]; mode = pm[2]
        diffs = 0; ratios = 0
        for (i = 1; i <= count; i++) {
            r = round_of[p, i]
            if (path != "direct" && (mode, r) in d50) {
                diffs++
                a50[p, diffs] = p50[p, i] - d50[mode, r]
                a99[p, diffs] = p99[p, i] - d99[mode, r]
            }
            if ((mode, r) in rg && cpu[p, i] > 0) ratio[p, ++ratios] = rg[mode, r] / cpu[p, i]
        }
        add50 = diffs ? median(a50, p, diffs) : "-"
        add99 = diffs ? median(a99, p, diffs) : "-"
        line = p OFS median(rps, p, count) OFS median(p50, p, count) OFS \
            median(p99, p, count) OFS median(p999, p, count) OFS n[p] OFS err[p]
        for (c = 9; c <= 14; c++) line = line OFS (((p, c) in missing) ? "-" : sum[p, c] + 0)
        print line, add50, add99, (ratios ? median(ratio, p, ratios) : "-")
    }
}
