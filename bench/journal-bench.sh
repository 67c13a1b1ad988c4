#!/usr/bin/env bash
# RAID5 write journal: 4 KiB random writes and full-stripe writes at one thread on a raid5 of 4 pmem
# namespaces without a journal (A) against the same geometry with a write-through journal and with a
# write-back journal on a fifth namespace (B), in the same run, as interleaved slices (pfnblock bench
# --vs); the 4 KiB rows also with FUA on every write (A and B alike). About 2.5 minutes by default.
# The writes go anywhere in the array (3 × SIZE); the journal (JOURNAL, 512 MiB: about 116 k records
# of 4 KiB writes) absorbs a burst and the write-out merges the records of a stripe. Interleaving
# lets B's write-out drain during A's slices; STEADY=SECONDS adds B alone for that long after a
# fill of the journal (the write-out's pace), and A alone as long. CPU=SECONDS adds the CPU time per
# 4 KiB random write of A and of the write-back B (user + system of the whole process, all its
# threads: front end and write-out), each as the difference between a run of SECONDS + 3 and one
# of 3 (start-up, JIT and the drain of a full journal at exit cancel), A and B alternating ROUNDS
# times (default 3): on a loaded machine the figure that says what each write costs, where IOPS
# say mostly how much CPU the scheduler gave the process.
# Usage: bench/journal-bench.sh   (RUNTIME, SLICES, SIZE, JOURNAL, ROWS, STEADY, CPU, ROUNDS from the
#        environment; ROWS is a regex over the row names, e.g. ROWS=write-back)
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-8}; SLICES=${SLICES:-8}; SIZE=${SIZE:-256M}; JOURNAL=${JOURNAL:-512M}; ROWS=${ROWS:-.}; STEADY=${STEADY:-0}; CPU=${CPU:-0}; ROUNDS=${ROUNDS:-3}
ns=/dev/shm/pfnblock-journal-bench.$$
out=$(mktemp /tmp/pfnblock-journal-bench.XXXXXX)
cleanup() { rm -f -- "$ns".* "$out" "$out.time" "$out.json"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
for n in r0 r1 r2 r3 s0 s1 s2 s3 t0 t1 t2 t3; do pfnblock namespace create --path "$ns.$n" --size "$SIZE" --force >/dev/null; done
pfnblock namespace create --path "$ns.j" --size "$JOURNAL" --force >/dev/null
pfnblock namespace create --path "$ns.k" --size "$JOURNAL" --force >/dev/null
plain="raid5:pmem:$ns.r0+pmem:$ns.r1+pmem:$ns.r2+pmem:$ns.r3,chunk=64K"
journalled="raid5:pmem:$ns.s0+pmem:$ns.s1+pmem:$ns.s2+pmem:$ns.s3,chunk=64K,journal=pmem:$ns.j"
writeback="raid5:pmem:$ns.t0+pmem:$ns.t1+pmem:$ns.t2+pmem:$ns.t3,chunk=64K,journal=pmem:$ns.k,journal_mode=write-back"

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# RUNTIME=$RUNTIME SLICES=$SLICES SIZE=$SIZE JOURNAL=$JOURNAL; A = raid5 of 4 pmem namespaces, no journal"
echo "# commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "| B | workload | A | B | B/A, median of pairs [min..max] |"
echo "|---|---|---|---|---|"
run() { # NAME SPEC RW BS JOBS [FLAGS]
  [[ "$1 $3 $4 ${6:-}" =~ $ROWS ]] || return 0
  pfnblock bench --device "$plain" --vs "$2" --rw "$3" --bs "$4" --jobs "$5" ${6:-} \
    --runtime "$RUNTIME" --slices "$SLICES" --ramp 1 --json > "$out"
  jq -r --arg name "$1" --arg jobs "$5" --arg flags "${6:+ $6}" '.comparisons[0] | if .unit == "IOPS"
      then "| \($name) | \(.rw) \(.bs) ×\($jobs)\($flags) | \(.median_a / 1e3 | round) k IOPS | \(.median_b / 1e3 | round) k IOPS | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |"
      else "| \($name) | \(.rw) \(.bs) ×\($jobs)\($flags) | \(.median_a / 1e9 * 100 | round / 100) GB/s | \(.median_b / 1e9 * 100 | round / 100) GB/s | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |" end' "$out"
}
run "raid5 + write-through journal" "$journalled" randwrite 4k 1
run "raid5 + write-back journal" "$writeback" randwrite 4k 1
run "raid5 + write-through journal" "$journalled" randwrite 4k 1 --fua
run "raid5 + write-back journal" "$writeback" randwrite 4k 1 --fua
run "raid5 + write-through journal" "$journalled" write 192k 1
run "raid5 + write-back journal" "$writeback" write 192k 1
if [ "$STEADY" != 0 ]; then
  # Steady state: B alone, its journal filled first (a run as long as it takes to fill it), then measured; A alone as long.
  iops() { pfnblock bench --device "$1" --rw randwrite --bs 4k --jobs 1 --runtime "$2" --json | jq -r '.jobs[0].write.iops'; }
  iops "$writeback" 3 >/dev/null
  b=$(iops "$writeback" "$STEADY"); a=$(iops "$plain" "$STEADY")
  echo "| raid5 + write-back journal, steady (B alone after a fill, then A alone) | randwrite 4096 ×1, ${STEADY} s each | $(jq -n "$a / 1e3 | round") k IOPS | $(jq -n "$b / 1e3 | round") k IOPS | $(jq -n "$b / $a * 1000 | round / 1000") |"
fi
if [ "$CPU" != 0 ]; then
  # One run: "IOS CPU_SECONDS IOPS" (the ramp off, so every write the process did is counted).
  cpurun() {
    /usr/bin/time -f '%U %S' -o "$out.time" "$here/pfnblock" bench --device "$1" --rw randwrite --bs 4k --jobs 1 --runtime "$2" --ramp 0 --json > "$out.json"
    echo "$(jq -r '.jobs[0].write.total_ios' "$out.json") $(awk '{print $1 + $2}' "$out.time") $(jq -r '.jobs[0].write.iops' "$out.json")"
  }
  # CPU µs per write of one round: (cpu_long − cpu_short) / (ios_long − ios_short); and the long run's IOPS.
  perio() {
    read -r i1 c1 _ <<< "$(cpurun "$1" 3)"; read -r i2 c2 r2 <<< "$(cpurun "$1" $((CPU + 3)))"
    echo "$(jq -n "($c2 - $c1) * 1e6 / ($i2 - $i1) * 100 | round / 100") $(jq -n "$r2 / 1e3 | round")"
  }
  ca=(); cb=(); ra=(); rb=()
  for ((i = 0; i < ROUNDS; i++)); do
    read -r c r <<< "$(perio "$plain")"; ca+=("$c"); ra+=("$r")
    read -r c r <<< "$(perio "$writeback")"; cb+=("$c"); rb+=("$r")
  done
  echo "| CPU per write (A, B alternating; ${CPU} s runs, load $(cut -d' ' -f1 /proc/loadavg)) | randwrite 4096 ×1 | ${ca[*]} µs (${ra[*]} k IOPS) | ${cb[*]} µs (${rb[*]} k IOPS) | CPU B/A $(printf '%s\n' "${ca[@]}" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p" | xargs -I{} jq -n "$(printf '%s\n' "${cb[@]}" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p") / {} * 1000 | round / 1000") (medians) |"
fi
