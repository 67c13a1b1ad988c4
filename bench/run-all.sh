#!/usr/bin/env bash
# run-all.sh - every comparison of docs/BENCHMARKS.md in one command: runs each bench/*-bench.sh
# (each interleaves PfnBlock with its peers in the same run and prints markdown table rows with
# medians, ranges and same-run ratios), keeps every log, collects the table rows into one
# summary (markdown and JSON), and draws the plots (bench/PfnBlock.Plot, ScottPlot PNGs).
#
#   bench/run-all.sh                 # full settings of each script (about an hour on 2 vCPUs)
#   QUICK=1 bench/run-all.sh         # short runs (REPS=1, short RUNTIME): checks the pipeline, not figures
#   ONLY="stack nbd" bench/run-all.sh    SKIP="crashtest" bench/run-all.sh
#   OUT=dir (default artifacts/bench/<UTC stamp>); PLOTS=docs/plots to refresh the committed plots.
# Ends with the summary; exits non-zero if any script failed (the others still run).
set -uo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$here/artifacts/bench/$stamp}
PLOTS=${PLOTS:-$OUT}
mkdir -p "$OUT" "$PLOTS"
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

if [ -n "${QUICK:-}" ]; then
  # Every script reads these; values too small to mean anything, large enough to exercise each path.
  export REPS=1 RUNTIME=2 RAMP=1 SLICES=4 SIZE=${SIZE:-256M} SIZE_MIB=256 COPY_SIZE=256M SEEDS=1 STATES=2000 RECORD_OPS=500 NJOBS=1
fi

echo "building (Release) ..." >&2
dotnet build "$here/PfnBlock.slnx" -c Release --nologo -v q >/dev/null || { echo "build failed" >&2; exit 1; }
plot="$here/bench/PfnBlock.Plot/bin/Release/net10.0/pfnblock-plot"

machine="$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
failed=()
summary="$OUT/summary.md"
{ echo "# PfnBlock benchmarks $stamp"; echo; echo "$machine${QUICK:+ — QUICK run, figures not meaningful}"; echo; } > "$summary"
export TLB_TSV="$OUT/tlb.tsv"   # tlb-bench.sh's table, drawn below
for script in "$here"/bench/*-bench.sh; do
  name=$(basename "$script" -bench.sh)
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  if [[ " ${SKIP:-} " == *" $name "* ]]; then continue; fi
  echo "== $name ($(date -u +%T))" >&2
  log="$OUT/$name.log"
  start=$(date +%s)
  if bash "$script" > "$log" 2> "$OUT/$name.err"; then status=ok; else status="FAILED ($?)"; failed+=("$name"); fi
  { echo "## $name — $status, $(( $(date +%s) - start )) s"; echo; grep -E '^\|' "$log" || echo "(no table rows; see $name.log)"; echo; } >> "$summary"
done

# JSON: every table row of every script, cells split.
for f in "$OUT"/*.log; do
  name=$(basename "$f" .log)
  grep -E '^\|' "$f" | grep -vE '^\|[-| ]+\|$' | jq -R --arg s "$name" '{script: $s, cells: (split("|")[1:-1] | map(gsub("^ +| +$"; "")))}'
done | jq -s --arg m "$machine" --arg t "$stamp" '{timestamp: $t, machine: $m, rows: .}' > "$OUT/summary.json"

# Plots: IOPS over time of a raw pmem namespace, random writes then random reads (the steady state
# every other figure builds on), and the stacking ratios if the stack script ran.
ns=/dev/shm/pfnblock-run-all.$$
trap 'rm -f "$ns"' EXIT
if "$here/pfnblock" namespace create --path "$ns" --size "${SIZE:-1G}" --force >/dev/null; then
  for rw in randwrite randread; do
    "$here/pfnblock" bench --device "pmem:$ns" --rw "$rw" --runtime "${RUNTIME:-10}" --json > "$OUT/timeline-$rw.json" 2>/dev/null
  done
  "$plot" timeline "$PLOTS/pmem-iops-over-time.png" "pmem namespace, 4 KiB, 1 job, iodepth 1 ($stamp)" \
    "randwrite=$OUT/timeline-randwrite.json" "randread=$OUT/timeline-randread.json" >/dev/null
  rm -f "$ns"
fi
if [ -s "$OUT/tlb.tsv" ]; then
  "$plot" lines "$PLOTS/tlb-iops.png" "4 KiB random I/O, 4 KiB vs 2 MiB pages behind the mapping ($stamp)" "working set (MiB, log)" "IOPS (1 job, QD1)" "$OUT/tlb.tsv" >/dev/null
fi
if [ -f "$OUT/stack.log" ]; then
  # Rows: | workload | A | B | ratio [min..max] |
  grep -E '^\| (rand)?(read|write) ' "$OUT/stack.log" | awk -F'|' '{
      w = $2; gsub(/^ +| +$/, "", w); v = $5
      match(v, /[0-9.]+ \[/);    med = substr(v, RSTART, RLENGTH - 2)
      match(v, /\[[0-9.]+\.\./); lo = substr(v, RSTART + 1, RLENGTH - 3)
      match(v, /\.\.[0-9.]+\]/); hi = substr(v, RSTART + 2, RLENGTH - 3)
      printf "%s\t%s\t%s\t%s\n", w, med, lo, hi }' > "$OUT/stack-ratios.tsv"
  [ -s "$OUT/stack-ratios.tsv" ] && "$plot" bars "$PLOTS/stack-ratios.png" "one dm-linear level over pmem: B/A, median of pairs [min..max]" "B/A" "$OUT/stack-ratios.tsv" >/dev/null
fi

cat "$summary"
echo "logs, summary.md, summary.json and plots in $OUT" >&2
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}" >&2; exit 1; fi
