#!/usr/bin/env bash
# stack-bench.sh - the cost of one level of stacking: a one-line dm-linear table over a pmem
# namespace (B) against the same namespace alone (A), one job, iodepth 1, in the same process:
# `pfnblock bench --vs` alternates A and B in short slices (A B, B A, A B, ...) and reports the
# median of the per-pair ratios B/A, which machine drift moves far less than either figure.
# Workloads: 4k randread, 4k randwrite, 1M read, 1M write, after two rows comparing the namespace
# with itself (the noise floor of the method); then dm-stripe over two namespaces (64 KiB chunks)
# against one namespace of their combined size, at one and two jobs (STRIPED=0 skips); then dm-stripe
# over the two halves of that same namespace, against it: the same pages and the same footprint on
# both sides (pages of different namespaces read up to 25 % apart on this VM, see docs/BENCHMARKS.md).
# Prints a markdown table.
# Env: RUNTIME (seconds per workload and device, 40), SLICES (pairs, 40), SIZE (1G), LINEAR=0 skips the linear rows.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-40}; SLICES=${SLICES:-40}; SIZE=${SIZE:-1G}
work=$(mktemp -d /tmp/pfnblock-stack-bench.XXXXXX)
ns=/dev/shm/pfnblock-stack-bench-ns.$$
cleanup() { rm -rf -- "$work" "$ns" "$ns".b "$ns".big; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
pfnblock namespace create --path "$ns" --size "$SIZE" --force >/dev/null
bytes=$(pfnblock namespace info --path "$ns" --json | jq -r .data_size)
echo "0 $((bytes / 512)) linear pmem:$ns 0" > "$work/linear.table"
pfnblock bench --device "pmem:$ns" --rw write --bs 1M --size "$((bytes >> 20))M" --ramp 0 >/dev/null   # touch every page once

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# RUNTIME=$RUNTIME SLICES=$SLICES SIZE=$SIZE; B = table: $(cat "$work/linear.table")"
echo "| workload | pmem alone (A) | linear over pmem (B) | B/A, median of pairs [min..max] |"
echo "|---|---|---|---|"
# The first two rows compare the namespace with itself: the noise floor of the method on this machine.
linear_rows="randread:4k:self randwrite:4k:self randread:4k randwrite:4k read:1M write:1M"
[ "${LINEAR:-1}" = 0 ] && linear_rows=
for w in $linear_rows; do
  w=${w//:/ }
  set -- $w
  b="table:$work/linear.table"; [ "${3:-}" = self ] && b="pmem:$ns"
  pfnblock bench --device "pmem:$ns" --vs "$b" --rw "$1" --bs "$2" \
    --runtime "$RUNTIME" --slices "$SLICES" --ramp 1 --json > "$work/out.json"
  jq -r --arg self "${3:-}" '.comparisons[0] | (if $self == "self" then " (A vs A)" else "" end) as $tag | if .unit == "IOPS"
      then "| \(.rw) \(.bs)\($tag) | \(.median_a / 1e6 * 1000 | round / 1000) M IOPS | \(.median_b / 1e6 * 1000 | round / 1000) M IOPS | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |"
      else "| \(.rw) \(.bs)\($tag) | \(.median_a / 1e9 * 100 | round / 100) GB/s | \(.median_b / 1e9 * 100 | round / 100) GB/s | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |" end' "$work/out.json"
done
if [ "${STRIPED:-1}" != 0 ]; then
  # A second namespace of the same size; the stripe set covers both data areas, 64 KiB chunks.
  # A is then a namespace twice as large, so that both sides spread random I/O over the same
  # number of bytes (a 2x larger footprint alone costs TLB and cache misses).
  pfnblock namespace create --path "$ns.b" --size "$SIZE" --force >/dev/null
  pfnblock namespace create --path "$ns.big" --size "$(( 2 * $(stat -c %s "$ns") ))" --force >/dev/null
  for n in "$ns.b" "$ns.big"; do
    nb=$(pfnblock namespace info --path "$n" --json | jq -r .data_size)
    pfnblock bench --device "pmem:$n" --rw write --bs 1M --size "$((nb >> 20))M" --ramp 0 >/dev/null
  done
  echo "0 $(( (bytes / 512) / 128 * 128 * 2 )) striped 2 128 pmem:$ns 0 pmem:$ns.b 0" > "$work/striped.table"
  echo "# striped: $(cat "$work/striped.table"); A = pmem:$ns.big (twice SIZE)"
  striped() { # TABLE LABEL
    local table=$1 label=$2
    for w in "randread 4k 1" "randwrite 4k 1" "randread 4k 2" "read 1M 1" "write 1M 1"; do
      set -- $w "$table" "$label"
      pfnblock bench --device "pmem:$ns.big" --vs "table:$4" --rw "$1" --bs "$2" --jobs "$3" \
        --runtime "$RUNTIME" --slices "$SLICES" --ramp 1 --json > "$work/out.json"
      jq -r --arg jobs "$3" --arg what "$5" '.comparisons[0] | if .unit == "IOPS"
          then "| \(.rw) \(.bs) ×\($jobs), \($what) | \(.median_a / 1e6 * 1000 | round / 1000) M IOPS | \(.median_b / 1e6 * 1000 | round / 1000) M IOPS | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |"
          else "| \(.rw) \(.bs) ×\($jobs), \($what) | \(.median_a / 1e9 * 100 | round / 100) GB/s | \(.median_b / 1e9 * 100 | round / 100) GB/s | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |" end' "$work/out.json"
    done
  }
  striped "$work/striped.table" "striped over 2"
  # dm-stripe names a device and an offset per stripe: the same namespace twice, at 0 and at half.
  bigbytes=$(pfnblock namespace info --path "$ns.big" --json | jq -r .data_size)
  half=$(( (bigbytes / 512 / 2) / 128 * 128 ))
  echo "0 $(( 2 * half )) striped 2 128 pmem:$ns.big 0 pmem:$ns.big $half" > "$work/halves.table"
  echo "# striped over halves: $(cat "$work/halves.table"); A = pmem:$ns.big"
  striped "$work/halves.table" "striped over A's halves"
fi
