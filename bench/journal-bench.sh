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
# MEMBERS=file: the issue's setting — the members are O_DIRECT files on the root filesystem (a
# disk: /var/tmp/pfnblock-journal-bench.PID.*, SIZE each, written in full first so no read finds a
# hole; removed on every path), the journals still pmem namespaces; the journal defaults to 64 MiB
# there (about 7 k records: the steady state comes within seconds) and QD32 rows are added
# (--iodepth 32, one job). BURST=SECONDS adds, first of all, B alone on its fresh, empty journal for
# that long (ramp 0: what the journal absorbs while it has room), then A alone as long; FILL is
# the seconds of writes that fill the journal before the STEADY row (its unmeasured ramp;
# default 3).
# Usage: bench/journal-bench.sh   (RUNTIME, SLICES, SIZE, JOURNAL, ROWS, STEADY, CPU, ROUNDS, MEMBERS,
#        BURST, FILL, DEPTHS from the environment; ROWS is a regex over the row names, e.g. ROWS=write-back;
#        DEPTHS the iodepths of the 4 KiB rows, default "1", with MEMBERS=file "1 32")
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
MEMBERS=${MEMBERS:-pmem}
if [ "$MEMBERS" = file ]; then d_size=512M; d_journal=64M; d_depths="1 32"; else d_size=256M; d_journal=512M; d_depths=1; fi
RUNTIME=${RUNTIME:-8}; SLICES=${SLICES:-8}; SIZE=${SIZE:-$d_size}; JOURNAL=${JOURNAL:-$d_journal}; ROWS=${ROWS:-.}; STEADY=${STEADY:-0}; CPU=${CPU:-0}; ROUNDS=${ROUNDS:-3}
BURST=${BURST:-0}; FILL=${FILL:-3}; DEPTHS=${DEPTHS:-$d_depths}
ns=/dev/shm/pfnblock-journal-bench.$$
disk=/var/tmp/pfnblock-journal-bench.$$
out=$(mktemp /tmp/pfnblock-journal-bench.XXXXXX)
cleanup() { rm -f -- "$ns".* "$disk".* "$out" "$out.time" "$out.json"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
# member NAME: the spec of one array member (a pmem namespace, or an O_DIRECT file written in full).
member() {
  if [ "$MEMBERS" = file ]; then
    dd if=/dev/zero of="$disk.$1" bs=1M count=$(( $(numfmt --from=iec "$SIZE") >> 20 )) oflag=direct status=none
    echo "file:$disk.$1"
  else
    pfnblock namespace create --path "$ns.$1" --size "$SIZE" --force >/dev/null
    echo "pmem:$ns.$1"
  fi
}
array() { local specs=(); for n in "$@"; do specs+=("$(member "$n")"); done; (IFS=+; echo "raid5:${specs[*]},chunk=64K"); }
pfnblock namespace create --path "$ns.j" --size "$JOURNAL" --force >/dev/null
pfnblock namespace create --path "$ns.k" --size "$JOURNAL" --force >/dev/null
plain=$(array r0 r1 r2 r3)
journalled="$(array s0 s1 s2 s3),journal=pmem:$ns.j"
writeback="$(array t0 t1 t2 t3),journal=pmem:$ns.k,journal_mode=write-back"

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$MEMBERS" = file ]; then
  # The members really are O_DIRECT: the open flags of the process's descriptors of them (O_DIRECT is octal 040000).
  "$here/pfnblock" bench --device "$plain" --rw randwrite --bs 4k --runtime 3 --ramp 0 >/dev/null & pid=$! # (the wrapper execs: this pid)
  direct=0
  for ((try = 0; try < 50 && direct == 0; try++)); do
    sleep 0.1
    for fd in /proc/$pid/fd/*; do
      [[ "$(readlink "$fd" 2>/dev/null)" == "$disk".r* ]] && (( 8#$(awk '/^flags/ {print $2}' "/proc/$pid/fdinfo/${fd##*/}" 2>/dev/null || echo 0) & 8#40000 )) && direct=$((direct + 1))
    done
  done
  wait $pid
  echo "# members: 4 files of $SIZE on $(df --output=source "$(dirname "$disk")" | tail -1) ($(findmnt -no FSTYPE -T "$(dirname "$disk")")), $direct of A's 4 descriptors O_DIRECT; journals on pmem namespaces in /dev/shm"
fi
echo "# RUNTIME=$RUNTIME SLICES=$SLICES SIZE=$SIZE JOURNAL=$JOURNAL MEMBERS=$MEMBERS; A = raid5 of 4 $MEMBERS members, no journal"
echo "# commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "| B | workload | A | B | B/A, median of pairs [min..max] |"
echo "|---|---|---|---|---|"
# iops SPEC SECONDS DEPTH [RAMP]: one job's write IOPS alone.
iops() { pfnblock bench --device "$1" --rw randwrite --bs 4k --jobs 1 --iodepth "$3" --runtime "$2" --ramp "${4:-1}" --json | jq -r '.jobs[0].write.iops'; }
if [ "$BURST" != 0 ]; then
  # Burst: B alone on its fresh journal (nothing written yet: it has room), then A alone as long.
  for depth in $DEPTHS; do
    b=$(iops "$writeback" "$BURST" "$depth" 0); a=$(iops "$plain" "$BURST" "$depth" 0)
    echo "| raid5 + write-back journal, burst (B alone on an empty journal, then A alone) | randwrite 4096 ×1 QD$depth, ${BURST} s each | $(jq -n "$a / 1e3 * 10 | round / 10") k IOPS | $(jq -n "$b / 1e3 * 10 | round / 10") k IOPS | $(jq -n "$b / $a * 1000 | round / 1000") |"
    # (A clean stop writes every record out before the process ends: the next run finds the journal empty again.)
  done
fi
run() { # NAME SPEC RW BS JOBS [FLAGS]
  [[ "$1 $3 $4 ${6:-}" =~ $ROWS ]] || return 0
  pfnblock bench --device "$plain" --vs "$2" --rw "$3" --bs "$4" --jobs "$5" ${6:-} \
    --runtime "$RUNTIME" --slices "$SLICES" --ramp 1 --json > "$out"
  jq -r --arg name "$1" --arg jobs "$5" --arg flags "${6:+ $6}" '.comparisons[0] | if .unit == "IOPS"
      then "| \($name) | \(.rw) \(.bs) ×\($jobs)\($flags) | \(.median_a / 1e2 | round / 10) k IOPS | \(.median_b / 1e2 | round / 10) k IOPS | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |"
      else "| \($name) | \(.rw) \(.bs) ×\($jobs)\($flags) | \(.median_a / 1e9 * 100 | round / 100) GB/s | \(.median_b / 1e9 * 100 | round / 100) GB/s | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |" end' "$out"
}
for depth in $DEPTHS; do
  qd=; [ "$depth" = 1 ] || qd="--iodepth $depth"
  run "raid5 + write-through journal" "$journalled" randwrite 4k 1 "$qd"
  run "raid5 + write-back journal" "$writeback" randwrite 4k 1 "$qd"
  run "raid5 + write-through journal" "$journalled" randwrite 4k 1 "${qd:+$qd }--fua"
  run "raid5 + write-back journal" "$writeback" randwrite 4k 1 "${qd:+$qd }--fua"
done
run "raid5 + write-through journal" "$journalled" write 192k 1
run "raid5 + write-back journal" "$writeback" write 192k 1
if [ "$STEADY" != 0 ]; then
  # Steady state: B alone, its journal filled first (the run's unmeasured ramp: a process of its own would drain the
  # journal at its clean stop), then measured; A alone as long.
  for depth in $DEPTHS; do
    b=$(iops "$writeback" "$STEADY" "$depth" "$FILL"); a=$(iops "$plain" "$STEADY" "$depth" "$FILL")
    echo "| raid5 + write-back journal, steady (B alone after a ${FILL} s fill, then A alone) | randwrite 4096 ×1 QD$depth, ${STEADY} s each | $(jq -n "$a / 1e3 * 10 | round / 10") k IOPS | $(jq -n "$b / 1e3 * 10 | round / 10") k IOPS | $(jq -n "$b / $a * 1000 | round / 1000") |"
  done
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
