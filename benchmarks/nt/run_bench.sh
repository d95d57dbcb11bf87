#!/usr/bin/env bash
# Timing runs of nt_kernels.py (neural-tangents 0.6.5) in the side venv.
# Each configuration runs in a fresh process. Results go to stdout as JSON
# lines; external wall times come from /usr/bin/time -f %e.
# Usage: bash benchmarks/nt/run_bench.sh [outfile.jsonl]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$HERE/.venv/bin/python"
SCRIPT="$HERE/nt_kernels.py"
OUT="${1:-/dev/stdout}"
COMMON=(--nonlin relu --W-std 1.5 --b-std 0.1 --seed 0)

[ -x "$PY" ] || { echo "run $HERE/setup_env.sh first" >&2; exit 1; }
: > "$OUT" 2>/dev/null || true

# 1. Headline: depth 10, B=64, d=32, three fresh processes, external wall time.
for i in 1 2 3; do
    tfile="$(mktemp)"
    line="$(/usr/bin/time -f %e -o "$tfile" "$PY" "$SCRIPT" --depth 10 --batch 64 --dim 32 \
            "${COMMON[@]}" 2>/dev/null)"
    wall="$(cat "$tfile")"; rm -f "$tfile"
    echo "{\"kind\": \"headline\", \"run\": $i, \"wall_external\": $wall, \"nt\": $line}" >> "$OUT"
done

# 2. Grid: depth x batch, d=32, one fresh process per cell (un-jitted calls).
for depth in 1 3 10; do
    for batch in 8 64 256; do
        line="$("$PY" "$SCRIPT" --depth "$depth" --batch "$batch" --dim 32 "${COMMON[@]}" 2>/dev/null)"
        echo "{\"kind\": \"grid\", \"nt\": $line}" >> "$OUT"
    done
done

# 3. Same grid with kernel_fn wrapped in jax.jit (first call = trace+compile).
for depth in 1 3 10; do
    for batch in 8 64 256; do
        line="$("$PY" "$SCRIPT" --depth "$depth" --batch "$batch" --dim 32 "${COMMON[@]}" --jit 2>/dev/null)"
        echo "{\"kind\": \"grid_jit\", \"nt\": $line}" >> "$OUT"
    done
done
