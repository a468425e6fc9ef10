# The c=1 rows of scripts/bench.sh: folds the per-round rows of every path into one row
# (POSIX awk; mawk is fine).
#
# Input: c1 round rows, tab-separated, as rows.tsv (see table.awk) plus the round number
# in column 14. Output: one rows.tsv row per path, in first-seen order: req/s, p50, p99
# and p99.9 are the medians over the rounds; requests, failures, CPU ticks and perf counts
# are sums over the rounds (so the per-request columns are totals ÷ total requests); the
# added p50 / p99 over direct are the medians of the per-round differences against the
# direct cell of the same round (a disturbance in one round moves one sample, not the
# answer). A round without its direct cell adds no difference.

BEGIN { FS = OFS = "\t" }

{
    p = $1; r = $14
    if (!(p in rounds)) order[++paths] = p
    i = ++rounds[p]
    rps[p, i] = $3 + 0; p50[p, i] = $4 + 0; p99[p, i] = $5 + 0; p999[p, i] = $6 + 0
    n[p] += $7; err[p] += $8
    for (c = 9; c <= 13; c++) {
        if ($c == "-" || (p, c) in missing) missing[p, c] = 1
        else sum[p, c] += $c
    }
    round_of[p, i] = r
    if (p == "direct") { d50[r] = $4 + 0; d99[r] = $5 + 0 }
}

# Median of v[p, 1..count] (the array is sorted in place).
function median(v, p, count,    a, b, t) {
    for (a = 2; a <= count; a++)
        for (b = a; b > 1 && v[p, b - 1] > v[p, b]; b--) { t = v[p, b]; v[p, b] = v[p, b - 1]; v[p, b - 1] = t }
    return count % 2 ? v[p, (count + 1) / 2] : (v[p, count / 2] + v[p, count / 2 + 1]) / 2
}

END {
    for (j = 1; j <= paths; j++) {
        p = order[j]; count = rounds[p]
        diffs = 0
        if (p != "direct")
            for (i = 1; i <= count; i++)
                if (round_of[p, i] in d50) {
                    diffs++
                    a50[p, diffs] = p50[p, i] - d50[round_of[p, i]]
                    a99[p, diffs] = p99[p, i] - d99[round_of[p, i]]
                }
        add50 = diffs ? median(a50, p, diffs) : "-"
        add99 = diffs ? median(a99, p, diffs) : "-"
        line = p OFS "c1" OFS median(rps, p, count) OFS median(p50, p, count) OFS \
            median(p99, p, count) OFS median(p999, p, count) OFS n[p] OFS err[p]
        for (c = 9; c <= 13; c++) line = line OFS (((p, c) in missing) ? "-" : sum[p, c] + 0)
        print line, add50, add99
    }
}
