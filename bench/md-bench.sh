#!/usr/bin/env bash
# md-bench.sh - md arrays over pmem namespaces against one namespace alone, in the same process:
# `pfnblock bench --vs` alternates A (a pmem namespace) and B (the array) in short slices and
# reports the median of the per-pair ratios B/A. B is a mirror of two namespaces, then a RAID5
# of four (64 KiB chunks: a 192 KiB full stripe). Every namespace is SIZE; the arrays are
# formatted on first open (mirror:/raid5: specs). Prints a markdown table.
# Env: RUNTIME (seconds per workload and device, 20), SLICES (pairs, 20), SIZE (512M).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-20}; SLICES=${SLICES:-20}; SIZE=${SIZE:-512M}
ns=/dev/shm/pfnblock-md-bench.$$
out=$(mktemp /tmp/pfnblock-md-bench.XXXXXX)
cleanup() { rm -f -- "$ns".* "$out"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
for n in raw m0 m1 r0 r1 r2 r3; do pfnblock namespace create --path "$ns.$n" --size "$SIZE" --force >/dev/null; done
bytes=$(pfnblock namespace info --path "$ns.raw" --json | jq -r .data_size)
pfnblock bench --device "pmem:$ns.raw" --rw write --bs 1M --size "$((bytes >> 20))M" --ramp 0 >/dev/null   # touch every page once
mirror="mirror:pmem:$ns.m0+pmem:$ns.m1"
raid5="raid5:pmem:$ns.r0+pmem:$ns.r1+pmem:$ns.r2+pmem:$ns.r3,chunk=64K"

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# RUNTIME=$RUNTIME SLICES=$SLICES SIZE=$SIZE; A = pmem:$ns.raw"
echo "| B | workload | pmem alone (A) | B | B/A, median of pairs [min..max] |"
echo "|---|---|---|---|---|"
run() { # NAME SPEC RW BS JOBS
  pfnblock bench --device "pmem:$ns.raw" --vs "$2" --rw "$3" --bs "$4" --jobs "$5" \
    --runtime "$RUNTIME" --slices "$SLICES" --ramp 1 --json > "$out"
  jq -r --arg name "$1" --arg jobs "$5" '.comparisons[0] | if .unit == "IOPS"
      then "| \($name) | \(.rw) \(.bs) ×\($jobs) | \(.median_a / 1e6 * 1000 | round / 1000) M IOPS | \(.median_b / 1e6 * 1000 | round / 1000) M IOPS | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |"
      else "| \($name) | \(.rw) \(.bs) ×\($jobs) | \(.median_a / 1e9 * 100 | round / 100) GB/s | \(.median_b / 1e9 * 100 | round / 100) GB/s | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |" end' "$out"
}
run mirror "$mirror" randread 4k 1
run mirror "$mirror" randread 4k 2
run mirror "$mirror" randwrite 4k 1
run mirror "$mirror" write 1M 1
run raid5 "$raid5" randread 4k 1
run raid5 "$raid5" randwrite 4k 1
run raid5 "$raid5" write 192k 1
run raid5 "$raid5" read 1M 1
