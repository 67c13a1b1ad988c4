#!/usr/bin/env bash
# crashtest-bench.sh - the crash-state explorer's costs, in one run:
#   1. states explored per second per structure: pfnblock crashtest --json over SEEDS seeds;
#   2. tracing built in but off: 4 KiB random-write IOPS (pfnblock bench, 1 job, iodepth 1) on a
#      raw pmem namespace and on a sector (BTT) namespace, for the default build (hooks compiled in,
#      tracing off) against a build with -p:PfnBlockPmemTracing=false (no hooks: the same code path
#      without them), and for the default build with PFNBLOCK_PMEM_TRACING=1 (tracing on, nothing
#      recording: each hook reads a thread-static), interleaved run by run, REPS rounds, the order
#      rotated each round;
#   3. tracing on and recording: the BTT workload's own time untraced and recorded, in-process
#      (crashtest's untraced_seconds and record_seconds, --ops RECORD_OPS, no exploration).
# Prints medians [min..max] and the median of the per-round ratios.
# Env: REPS (5), RUNTIME (5), SIZE (1G), SEEDS (3), STATES (20000), RECORD_OPS (3000), DIR (/dev/shm).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-5}; RUNTIME=${RUNTIME:-5}; SIZE=${SIZE:-1G}; SEEDS=${SEEDS:-3}; STATES=${STATES:-20000}
RECORD_OPS=${RECORD_OPS:-3000}; DIR=${DIR:-/dev/shm}
work=$(mktemp -d /tmp/crashtest-bench.XXXXXX)
raw=$DIR/crashtest-bench-raw.$$ sec=$DIR/crashtest-bench-sector.$$
trap 'rm -rf -- "$work" "$raw" "$sec"' EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { echo "crashtest-bench: jq is required (apt-get install jq)" >&2; exit 1; }

# Two builds of the same source: hooks compiled in (default) and compiled out.
dotnet publish "$here/src/PfnBlock.Cli" -c Release -p:PfnBlockPmemTracing=false -o "$work/untraced" --nologo -v quiet >&2
dotnet publish "$here/src/PfnBlock.Cli" -c Release -o "$work/traced" --nologo -v quiet >&2
with=("$work/traced/PfnBlock.Cli") without=("$work/untraced/PfnBlock.Cli")
if "${without[@]}" crashtest --structure btt --ops 1 --states 1 >/dev/null 2>&1; then
  echo "crashtest-bench: the -p:PfnBlockPmemTracing=false build still traces" >&2; exit 1
fi
"${with[@]}" namespace create --path "$raw" --size "$SIZE" >/dev/null
"${with[@]}" namespace create --path "$sec" --size "$SIZE" --mode sector --sector-size 4096 >/dev/null

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# REPS=$REPS RUNTIME=$RUNTIME SIZE=$SIZE SEEDS=$SEEDS STATES=$STATES RECORD_OPS=$RECORD_OPS"
stats() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4g [%.4g..%.4g]", m, a[1], a[NR]}'; }
med() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f", m}'; }

echo
echo "## 1. states explored per second (pfnblock crashtest --states $STATES, seeds 1..$SEEDS)"
echo "| structure | ops | states/s | inconsistent |"
echo "|---|---|---|---|"
for s in btt namespace; do
  ops=$([ "$s" = btt ] && echo 200 || echo 20)
  echo "CMD: pfnblock crashtest --structure $s --ops $ops --states $STATES --seed N --json" >&2
  : > "$work/$s.sps"; bad=0
  for seed in $(seq 1 "$SEEDS"); do
    "${with[@]}" crashtest --structure "$s" --ops "$ops" --states "$STATES" --seed "$seed" --json > "$work/out.json"
    jq -r .states_per_second "$work/out.json" >> "$work/$s.sps"
    bad=$((bad + $(jq -r .inconsistent_states "$work/out.json")))
  done
  echo "| $s | $ops | $(stats < "$work/$s.sps") | $bad |"
done

echo
echo "## 2. 4 KiB randwrite IOPS (M), tracing off vs compiled out vs on (not recording), interleaved"
bench() { # bench BUILD-VAR ENV SPEC -> IOPS in millions
  local -n bin=$1
  env $2 "${bin[@]}" bench --device "$3" --rw randwrite --bs 4k --jobs 1 --iodepth 1 --runtime "$RUNTIME" --ramp 1 --json \
    | jq -r '.jobs[0].write.iops / 1000000'
}
echo "CMD: pfnblock bench --device pmem:NS --rw randwrite --bs 4k --jobs 1 --iodepth 1 --runtime $RUNTIME --ramp 1 --json" >&2
for dev in raw sec; do
  spec="pmem:${!dev}"
  : > "$work/$dev.off"; : > "$work/$dev.none"; : > "$work/$dev.on"; : > "$work/$dev.r-off"; : > "$work/$dev.r-on"
  for i in $(seq 1 "$REPS"); do
    declare -A got=()
    for k in $(seq 0 2); do
      case $(( (i + k) % 3 )) in
        0) got[off]=$(bench with "PFNBLOCK_PMEM_TRACING=0" "$spec");;
        1) got[none]=$(bench without "PFNBLOCK_PMEM_TRACING=0" "$spec");;
        2) got[on]=$(bench with "PFNBLOCK_PMEM_TRACING=1" "$spec");;
      esac
    done
    echo "${got[off]}" >> "$work/$dev.off"; echo "${got[none]}" >> "$work/$dev.none"; echo "${got[on]}" >> "$work/$dev.on"
    awk -v a="${got[off]}" -v b="${got[none]}" 'BEGIN {print a / b}' >> "$work/$dev.r-off"
    awk -v a="${got[on]}" -v b="${got[none]}" 'BEGIN {print a / b}' >> "$work/$dev.r-on"
  done
done
echo "| device | hooks compiled out | built in, off | ratio off/out | on, not recording | ratio on/out |"
echo "|---|---|---|---|---|---|"
for dev in raw sec; do
  name=$([ $dev = raw ] && echo "raw pmem namespace" || echo "sector (BTT) namespace")
  echo "| $name | $(stats < "$work/$dev.none") | $(stats < "$work/$dev.off") | $(med < "$work/$dev.r-off") | $(stats < "$work/$dev.on") | $(med < "$work/$dev.r-on") |"
done

echo
echo "## 3. recording: the BTT workload untraced vs recorded (in-process, --ops $RECORD_OPS)"
echo "CMD: pfnblock crashtest --structure btt --ops $RECORD_OPS --states 0 --seed N --json" >&2
: > "$work/rec.ratio"; : > "$work/rec.un"; : > "$work/rec.on"
for seed in $(seq 1 "$REPS"); do
  "${with[@]}" crashtest --structure btt --ops "$RECORD_OPS" --states 0 --seed "$seed" --json > "$work/out.json"
  jq -r ".untraced_seconds * 1e6 / $RECORD_OPS" "$work/out.json" >> "$work/rec.un"
  jq -r ".record_seconds * 1e6 / $RECORD_OPS" "$work/out.json" >> "$work/rec.on"
  jq -r '.record_seconds / .untraced_seconds' "$work/out.json" >> "$work/rec.ratio"
done
echo "| µs per operation, untraced | recorded | ratio recorded/untraced |"
echo "|---|---|---|"
echo "| $(stats < "$work/rec.un") | $(stats < "$work/rec.on") | $(med < "$work/rec.ratio") |"
