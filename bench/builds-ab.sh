#!/usr/bin/env bash
# builds-ab.sh - the same `pfnblock bench` workload on two builds of pfnblock, alternating runs
# (A B, B A, A B, ...) so that machine drift hits both alike; prints per workload the median
# IOPS and median latency (p50, which other processes' load moves far less than IOPS: a
# preempted I/O lands in the tail) of each build, each with the median of the per-pair ratios
# B/A [min..max]. For changes that
# cannot be compared inside one process with `bench --vs` (the block layer's own accounting).
# A is built from the git revision BASE (default main) in a temporary directory, B is this checkout.
# The first rows compare B with itself: the noise floor of the method on this machine.
# Env: BASE (main), PAIRS (10), RUNTIME (seconds per run, 3), SIZE (namespace, 1G),
# A_CLI (a PfnBlock.Cli executable built from BASE already, instead of building it here).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
BASE=${BASE:-main}; PAIRS=${PAIRS:-10}; RUNTIME=${RUNTIME:-3}; SIZE=${SIZE:-1G}
work=$(mktemp -d /tmp/pfnblock-builds-ab.XXXXXX)
ns=/dev/shm/pfnblock-builds-ab-ns.$$
cleanup() { rm -rf -- "$work" "$ns"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

if [ -n "${A_CLI:-}" ]; then
  a=$A_CLI   # a build of BASE made already (its PfnBlock.Cli executable)
else
  mkdir "$work/base"
  git -C "$here" archive "$BASE" | tar -x -C "$work/base"
  echo "building $BASE ($(git -C "$here" rev-parse --short "$BASE"))…" >&2
  dotnet publish "$work/base/src/PfnBlock.Cli" -c Release -o "$work/base-cli" --nologo -v quiet >&2
  a="$work/base-cli/PfnBlock.Cli"
fi
"$here/pfnblock" --help >/dev/null   # build B once, outside the timed runs
b="$here/artifacts/cli/PfnBlock.Cli"

"$b" namespace create --path "$ns" --size "$SIZE" --force >/dev/null
bytes=$("$b" namespace info --path "$ns" --json | jq -r .data_size)
echo "0 $((bytes / 512)) linear pmem:$ns 0" > "$work/linear.table"
"$b" bench --device "pmem:$ns" --rw write --bs 1M --size "$((bytes >> 20))M" --ramp 0 >/dev/null   # touch every page once

# "IOPS p50-latency-ns" of one run.
run() {
  "$1" bench --device "$2" --rw "$3" --bs 4k --runtime "$RUNTIME" --ramp 1 --json |
    jq -r '.jobs[0] | "\(.read.iops + .write.iops) \(if .read.total_ios > 0 then .read else .write end | .lat_ns.percentile["50.000000"])"'
}

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# A = ${A_CLI:-$BASE ($(git -C "$here" rev-parse --short "$BASE"))}, B = $(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet || echo +changes); PAIRS=$PAIRS RUNTIME=$RUNTIME"
echo "| device, workload (4 KiB, 1 job, iodepth 1) | A IOPS | B IOPS | B/A IOPS [min..max] | A p50 | B p50 | B/A p50 latency [min..max] |"
echo "|---|---|---|---|---|---|---|"
for w in "null:1G randread self" "null:1G randread" "pmem:$ns randread" "pmem:$ns randwrite" "table:$work/linear.table randread"; do
  set -- $w
  first=$a; [ "${3:-}" = self ] && first=$b
  : > "$work/pairs"
  for i in $(seq "$PAIRS"); do
    # Alternate which build goes first, so neither always runs on a warmer or cooler machine.
    if [ $((i % 2)) = 1 ]; then x=$(run "$first" "$1" "$2"); y=$(run "$b" "$1" "$2")
    else y=$(run "$b" "$1" "$2"); x=$(run "$first" "$1" "$2"); fi
    echo "$x $y" >> "$work/pairs"
  done
  label="${1%%:*} $2"; [ "${3:-}" = self ] && label="$label (B vs B)"
  jq -R -s -r --arg name "$label" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    [split("\n")[] | select(length > 0) | split(" ") | map(tonumber)] as $p
    | def r3: . * 1000 | round / 1000;
      def ratios(i): $p | map(.[i + 2] / .[i]);
      def col(i): "\(ratios(i) | median | r3) [\(ratios(i) | min | r3)..\(ratios(i) | max | r3)]";
    "| \($name) | \($p | map(.[0]) | median / 1e6 | r3) M | \($p | map(.[2]) | median / 1e6 | r3) M | \(col(0)) | \($p | map(.[1]) | median) ns | \($p | map(.[3]) | median) ns | \(col(1)) |"' "$work/pairs"
done
