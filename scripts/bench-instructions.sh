#!/usr/bin/env bash
# Instructions per call of one function of a criterion bench, under callgrind: the noise-free
# figure next to criterion's nanoseconds, which swing ±25 % between runs on a shared VM.
#
# Usage: scripts/bench-instructions.sh BENCH FUNCTION FILTER [BENCH_BINARY ...]
#   BENCH     the bench target (benches/BENCH.rs), built with `cargo bench --no-run`
#   FUNCTION  the symbol callgrind counts from (instrumentation is on only inside it), as
#             callgrind names it, e.g. `route::decide`
#   FILTER    criterion's filter: the one benchmark to run (e.g. 'decision/command_load_200B_json$')
#   BENCH_BINARY ...  already built bench binaries to compare (default: this checkout's)
#
# Example (the routing decision of a Command whose user id is only in its JSON body):
#   scripts/bench-instructions.sh route route::decide 'decision/command_load_200B_json$'
# Needs valgrind and jq (installed with apt-get if missing). ~20 s per binary.
set -euo pipefail
(($# >= 3)) || { echo "usage: $0 BENCH FUNCTION FILTER [BENCH_BINARY ...]" >&2; exit 2; }
bench=$1 function=$2 filter=$3
shift 3
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in valgrind jq; do
    command -v "$tool" >/dev/null || apt-get install -y "$tool" >/dev/null
done
binaries=("$@")
if ((${#binaries[@]} == 0)); then
    # The executable cargo reports for the bench target.
    binary=$(cargo bench --manifest-path "$REPO_ROOT/Cargo.toml" --bench "$bench" --no-run \
        --message-format json 2>/dev/null |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "'"$bench"'"
                      and .executable != null) | .executable' | tail -1)
    [[ -n $binary ]] || { echo "no executable for bench $bench" >&2; exit 1; }
    binaries=("$binary")
fi
out=$(mktemp /tmp/ringgate-bench-instructions.XXXXXX)
trap 'rm -f "$out"' EXIT
for binary in "${binaries[@]}"; do
    valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect="$function" \
        "$binary" --bench --profile-time 2 "$filter" >/dev/null 2>&1
    # Total instructions collected, divided by the calls of FUNCTION recorded in the profile.
    python3 - "$out" "$function" "$binary" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ids = [m.group(1) for m in re.finditer(r'^c?fn=\((\d+)\) (.*)$', text, re.M)
       if m.group(2) == sys.argv[2]]
if not ids:
    sys.exit(f"{sys.argv[2]} not found in the profile (inlined? misspelt?)")
lines = text.split('\n')
calls = sum(int(lines[i + 1].split('=')[1].split()[0])
            for i, line in enumerate(lines[:-1])
            if line.split(' ')[0] == f'cfn=({ids[0]})' and lines[i + 1].startswith('calls='))
total = int(re.search(r'^totals: (\d+)', text, re.M).group(1))
print(f"{sys.argv[3]}  {total / calls:.0f} instructions per call of {sys.argv[2]} ({calls} calls)")
PY
done
