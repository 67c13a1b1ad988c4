#!/usr/bin/env bash
# stack-bench.sh - the cost of one level of stacking: pfnblock bench on a one-line dm-linear table
# over a pmem namespace vs the same namespace alone, interleaved rep by rep (A B A B ...) so each
# ratio compares runs made seconds apart on the same noisy machine. One job, iodepth 1:
#   4k randread and 4k randwrite, and 1M read and write.
# Prints a markdown row per workload: medians [min..max] of REPS runs (M IOPS or GB/s) and the
# ratio of the medians (linear / raw), plus the median of the per-pair ratios.
# Env: REPS (7), RUNTIME (3), RAMP (1), SIZE (1G).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-7}; RUNTIME=${RUNTIME:-3}; RAMP=${RAMP:-1}; SIZE=${SIZE:-1G}
work=$(mktemp -d /tmp/pfnblock-stack-bench.XXXXXX)
ns=/dev/shm/pfnblock-stack-bench-ns.$$
cleanup() { rm -rf -- "$work" "$ns"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
pfnblock namespace create --path "$ns" --size "$SIZE" --force >/dev/null
sectors=$(( $(pfnblock namespace info --path "$ns" --json | jq -r .data_size) / 512 ))
echo "0 $sectors linear pmem:$ns 0" > "$work/linear.table"
pfnblock bench --device "pmem:$ns" --rw write --bs 1M --size "$((sectors / 2048))M" --ramp 0 >/dev/null   # touch every page once

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# REPS=$REPS RUNTIME=$RUNTIME RAMP=$RAMP SIZE=$SIZE; table: $(cat "$work/linear.table")"
med() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }
range() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4g [%.4g..%.4g]", m, a[1], a[NR]}'; }

one() { # one DEVICE RW BS FIELD SCALE -> prints the figure
  pfnblock bench --device "$1" --rw "$2" --bs "$3" --runtime "$RUNTIME" --ramp "$RAMP" --json > "$work/out.json"
  jq -r "[.jobs[0].read.$4, .jobs[0].write.$4] | add / $5" "$work/out.json"
}

echo "| workload | pmem alone | linear over pmem | ratio of medians | median of pair ratios |"
echo "|---|---|---|---|---|"
for w in "randread 4k iops 1000000" "randwrite 4k iops 1000000" "read 1M bw_bytes 1000000000" "write 1M bw_bytes 1000000000"; do
  set -- $w
  : > "$work/raw"; : > "$work/lin"; : > "$work/pair"
  for ((r = 0; r < REPS; r++)); do
    a=$(one "pmem:$ns" "$1" "$2" "$3" "$4"); b=$(one "table:$work/linear.table" "$1" "$2" "$3" "$4")
    echo "$a" >> "$work/raw"; echo "$b" >> "$work/lin"; echo "$b $a" | awk '{print $1 / $2}' >> "$work/pair"
  done
  unit=$([ "$3" = iops ] && echo "M IOPS" || echo "GB/s")
  ratio=$(echo "$(med < "$work/lin") $(med < "$work/raw")" | awk '{printf "%.3f", $1 / $2}')
  echo "| $1 $2 ($unit) | $(range < "$work/raw") | $(range < "$work/lin") | $ratio | $(med < "$work/pair" | awk '{printf "%.3f", $1}') |"
done
