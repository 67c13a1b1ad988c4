#!/usr/bin/env bash
# foundation-bench.sh - pfnblock's bio path side by side with its peers, interleaved rep by rep
# so every ratio compares runs made minutes apart on the same noisy machine:
#   pmem   : pfnblock bench on a 1 GiB pmem namespace in /dev/shm
#            vs fio's libpmem engine on a 1 GiB /dev/shm file (PMEM_IS_PMEM_FORCE=1, NT + drain writes)
#   file   : pfnblock bench --device file:F (O_DIRECT, io_uring) vs fio --ioengine=io_uring --direct=1
#            on the same ext4 file, 4k randread and randwrite at each iodepth of FILE_QDS (SKIP_FILE=1 skips)
#   btt    : pfnblock bench on a 1 GiB sector namespace (BTT, 4 KiB sectors)
#            vs fio's pmemblk engine (PMDK libpmemblk) on a 1 GiB pool, both filled first (SKIP_BTT=1 skips)
#   limits : ../shared/bench/peers/01-membw.sh rnd4k kernels (raw memcpy / NT ceilings)
# Prints one markdown table row per workload: medians [min..max] of REPS runs and the ratio of medians.
# Each run is a new process whose mapping is cold: where the hypervisor shadows the guest's page
# tables (a PVM guest), every page's first touch costs ~6 us and a 1 s ramp does not warm 1 GiB
# (bench/first-touch.c shows it); RAMP=5 does. docs/BENCHMARKS.md §1 "On the PVM host".
# Env: REPS (3), RUNTIME (5), RAMP (1), SIZE (1G), EXT4_DIR (/var/tmp), FILE_QDS ("1 8 32"), SKIP_FILE,
#      SKIP_MEMBW, ONLY_FILE; PFNBLOCK=path runs that binary instead of this checkout's ./pfnblock (so a
#      run is not rebuilt halfway when sources change under it); BASELINE=path also runs that (older)
#      binary's file rows in the same interleaving and prints them as a before/after table.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; RUNTIME=${RUNTIME:-5}; RAMP=${RAMP:-1}; SIZE=${SIZE:-1G}; FILE_QDS=${FILE_QDS:-1 8 32}
EXT4_DIR=${EXT4_DIR:-/var/tmp}
peers=$here/../shared/bench/peers
work=$(mktemp -d /tmp/pfnblock-bench.XXXXXX)
ns=/dev/shm/pfnblock-bench-ns.$$
raw=/dev/shm/pfnblock-bench-fio.$$
extfile=$EXT4_DIR/pfnblock-bench-file.$$
sec=/dev/shm/pfnblock-bench-sector.$$
pool=/dev/shm/pfnblock-bench-pool.$$
cleanup() { rm -rf -- "$work" "$ns" "$raw" "$extfile" "$sec" "$pool"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

command -v fio >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; }
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
dpkg -s fio-engine-libpmem >/dev/null 2>&1 || fio --enghelp=libpmem >/dev/null 2>&1 || \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio-engine-libpmem >/dev/null 2>&1 || true

pfnblock() { "${PFNBLOCK:-$here/pfnblock}" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
pfnblock namespace create --path "$ns" --size "$SIZE" --force >/dev/null
fallocate -l "$SIZE" "$raw"
if [ -z "${ONLY_FILE:-}" ]; then
  # Both written whole before the rows: on tmpfs a fallocated page that was never written is a hole
  # to SEEK_HOLE and mincore, and pfnblock answers a read of a hole as zeros after asking the kernel
  # (one lseek per read), where fio's mapping faults the page in once. Written, both read memory.
  pfnblock bench --device "pmem:$ns" --rw write --bs 4k --size "$(pfnblock namespace info --path "$ns" --json | jq -r .data_size)" --ramp 0 >/dev/null
  dd if=/dev/zero of="$raw" bs=1M count="$(numfmt --from=iec "$SIZE" | awk '{print int($1 / 1048576)}')" conv=notrunc status=none
fi
if [ -z "${SKIP_BTT:-}" ] && [ -z "${ONLY_FILE:-}" ]; then
  command -v pmempool >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pmdk-tools >/dev/null
  pfnblock namespace create --path "$sec" --size 1G --mode sector --sector-size 4096 --force >/dev/null
  pfnblock bench --device "pmem:$sec" --rw write --bs 4k --size 1000M --ramp 0 >/dev/null      # fill every sector once
  rm -f "$pool"
  PMEM_IS_PMEM_FORCE=1 fio --name=fill --thread --direct=1 --ioengine=pmemblk --filename="$pool,4096,1024" --size=972M \
    --bs=4k --rw=write --output=/dev/null                                                       # creates and fills the pool
fi
echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# fio $(fio --version), REPS=$REPS RUNTIME=$RUNTIME RAMP=$RAMP SIZE=$SIZE"

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3g [%.3g..%.3g]", m, a[1], a[NR]}'; }
med() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }

# IOPS are reported in millions, bandwidth in GB/s (10^9 bytes).
scale() { [ "$1" = iops ] && echo 1000000 || echo 1000000000; }
# ours LABEL FIELD ARGS... : one pfnblock bench run, appends FIELD (iops or bw_bytes) to $work/LABEL.ours
ours() { local label=$1 field=$2; shift 2
  pfnblock bench "$@" --runtime "$RUNTIME" --ramp "$RAMP" --json > "$work/out.json"
  jq -r "[.jobs[0].read.$field, .jobs[0].write.$field] | add / $(scale "$field")" "$work/out.json" >> "$work/$label.ours"
  jq -r '.jobs[0].alloc_bytes_per_io' "$work/out.json" >> "$work/$label.alloc"
  jq -r '.jobs[0].cpu_ns_per_io' "$work/out.json" >> "$work/$label.ourscpu"
}
# peer LABEL FIELD ARGS... : one fio run, appends FIELD to $work/LABEL.peer
peer() { local label=$1 field=$2; shift 2
  fio "$@" --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based --group_reporting --output-format=json > "$work/out.json"
  jq -r "[.jobs[0].read.$field, .jobs[0].write.$field] | add / $(scale "$field")" "$work/out.json" >> "$work/$label.peer"
  # fio's usr_cpu/sys_cpu are percent of one CPU over the job's runtime: ns of CPU per I/O = %/100 * 1e9 / IOPS
  jq -r '.jobs[0] | (.usr_cpu + .sys_cpu) * 1e7 / ([.read.iops, .write.iops] | add)' "$work/out.json" >> "$work/$label.peercpu"
}

P=(--name=libpmem --ioengine=libpmem --filename="$raw" --size="$SIZE" --iodepth=1)
declare -a rows=()
run_pair() { # LABEL FIELD "OURS ARGS" "PEER ARGS"
  local label=$1 field=$2 o=$3 p=$4
  # shellcheck disable=SC2086
  ours "$label" "$field" --device "pmem:$ns" $o
  # shellcheck disable=SC2086
  PMEM_IS_PMEM_FORCE=1 peer "$label" "$field" "${P[@]}" $p
}
for rep in $(seq "$REPS"); do
  echo "# rep $rep/$REPS" >&2
  if [ -z "${ONLY_FILE:-}" ]; then
  run_pair 4k-randread-1j  iops "--rw randread --bs 4k --jobs 1"  "--rw=randread --bs=4k --numjobs=1"
  run_pair 4k-randwrite-1j iops "--rw randwrite --bs 4k --jobs 1" "--rw=randwrite --bs=4k --direct=1 --sync=1 --numjobs=1"
  # One job at iodepth 32: the job's I/Os go under one plug and the memory device copies them side
  # by side. fio's libpmem engine is synchronous, so its row is the same one-at-a-time loop as above.
  run_pair 4k-randread-1j-qd32  iops "--rw randread --bs 4k --jobs 1 --iodepth 32"  "--rw=randread --bs=4k --numjobs=1"
  run_pair 4k-randwrite-1j-qd32 iops "--rw randwrite --bs 4k --jobs 1 --iodepth 32" "--rw=randwrite --bs=4k --direct=1 --sync=1 --numjobs=1"
  run_pair 4k-randread-2j  iops "--rw randread --bs 4k --jobs 2"  "--rw=randread --bs=4k --numjobs=2"
  run_pair 4k-randwrite-2j iops "--rw randwrite --bs 4k --jobs 2" "--rw=randwrite --bs=4k --direct=1 --sync=1 --numjobs=2"
  run_pair 1m-read-1j  bw_bytes "--rw read --bs 1M --jobs 1"  "--rw=read --bs=1m --numjobs=1"
  run_pair 1m-write-1j bw_bytes "--rw write --bs 1M --jobs 1" "--rw=write --bs=1m --direct=1 --sync=1 --numjobs=1"
  fi
  if [ -z "${SKIP_BTT:-}" ] && [ -z "${ONLY_FILE:-}" ]; then
    for rw in randwrite randread; do
      for j in 1 2; do
        ours "btt-4k-$rw-${j}j" iops --device "pmem:$sec" --rw "$rw" --bs 4k --jobs "$j"
        PMEM_IS_PMEM_FORCE=1 peer "btt-4k-$rw-${j}j" iops --name=pmemblk --thread --direct=1 --ioengine=pmemblk \
          --filename="$pool,4096,1024" --size=972M --iodepth=1 --bs=4k --rw="$rw" --numjobs="$j"
      done
    done
  fi
  if [ -z "${SKIP_FILE:-}" ]; then
    [ -f "$extfile" ] || fio --name=lay --filename="$extfile" --size="$SIZE" --rw=write --bs=1m --direct=1 --iodepth=8 --ioengine=io_uring --output=/dev/null
    for qd in $FILE_QDS; do
      for rw in randread randwrite; do
        ours "file-4k-$rw-qd$qd" iops --device "file:$extfile" --rw "$rw" --bs 4k --iodepth "$qd"
        if [ -n "${BASELINE:-}" ]; then
          "$BASELINE" bench --device "file:$extfile" --rw "$rw" --bs 4k --iodepth "$qd" --runtime "$RUNTIME" --ramp "$RAMP" --json > "$work/out.json"
          jq -r '.jobs[0] | ([.read.iops, .write.iops] | add / 1000000), .cpu_ns_per_io' "$work/out.json" | paste - - >> "$work/file-4k-$rw-qd$qd.base"
        fi
        peer "file-4k-$rw-qd$qd" iops --name=uring --ioengine=io_uring --filename="$extfile" --size="$SIZE" --direct=1 --bs=4k --rw="$rw" --iodepth="$qd"
      done
    done
  fi
done

echo
echo "| workload | pfnblock (M IOPS or GB/s) | peer (same unit) | ratio of medians | pfnblock bytes alloc/IO | CPU ns/IO pfnblock / peer |"
echo "|---|---|---|---|---|---|"
for f in "$work"/*.ours; do
  label=$(basename "$f" .ours)
  o=$(median < "$f"); p=$(median < "$work/$label.peer")
  r=$(awk -v a="$(med < "$f")" -v b="$(med < "$work/$label.peer")" 'BEGIN {printf "%.2f", a/b}')
  a=$(med < "$work/$label.alloc" | awk '{printf "%.4f", $1}')
  c=$(awk -v a="$(med < "$work/$label.ourscpu")" -v b="$(med < "$work/$label.peercpu")" 'BEGIN {printf "%.0f / %.0f", a, b}')
  echo "| $label | $o | $p | $r | $a | $c |"
done

if [ -z "${ONLY_FILE:-}" ]; then
  # Issue 12's goal: 2 jobs >= 1.9x one. Each rep's pair ran in the same pass, so the ratio is taken
  # per rep before the median (the spread of a depth-1 row between reps is wider than the goal's margin).
  echo
  echo "| pfnblock, 2 jobs / 1 job (per rep) | median [min..max] |"
  echo "|---|---|"
  for rw in randread randwrite; do
    echo "| 4k-$rw | $(paste "$work/4k-$rw-2j.ours" "$work/4k-$rw-1j.ours" | awk '{print $1 / $2}' | median) |"
  done
fi

if [ -n "${BASELINE:-}" ] && [ -z "${SKIP_FILE:-}" ]; then
  echo
  echo "| file workload (same run) | before: $BASELINE (M IOPS) | after | after / before | CPU ns/IO before / after |"
  echo "|---|---|---|---|---|"
  for f in "$work"/file-*.base; do
    label=$(basename "$f" .base)
    b=$(cut -f1 "$f" | median); a=$(median < "$work/$label.ours")
    r=$(awk -v x="$(med < "$work/$label.ours")" -v y="$(cut -f1 "$f" | med)" 'BEGIN {printf "%.2f", x/y}')
    c=$(awk -v x="$(cut -f2 "$f" | med)" -v y="$(med < "$work/$label.ourscpu")" 'BEGIN {printf "%.0f / %.0f", x, y}')
    echo "| $label | $b | $a | $r | $c |"
  done
fi

if [ -z "${SKIP_BTT:-}" ] && [ -z "${ONLY_FILE:-}" ]; then
  echo
  echo "| BTT vs raw pmem (both pfnblock, same run) | BTT | raw | BTT / raw |"
  echo "|---|---|---|---|"
  for f in "$work"/btt-*.ours; do
    label=$(basename "$f" .ours); rawlabel=${label#btt-}
    [ -f "$work/$rawlabel.ours" ] || continue
    b=$(med < "$f"); r=$(med < "$work/$rawlabel.ours")
    echo "| $label | $(printf '%.3g' "$b") | $(printf '%.3g' "$r") | $(awk -v a="$b" -v c="$r" 'BEGIN {printf "%.2f", a/c}') |"
  done
fi

if [ -z "${SKIP_MEMBW:-}" ]; then
  echo
  echo "# raw limits (01-membw.sh rnd4k kernels, same machine, after the runs above)"
  KERNELS="rnd4k_memcpy_rd rnd4k_nt512_wr" THREADS="1" REPS="$REPS" SECS=3 bash "$peers/01-membw.sh" 2>/dev/null | grep RESULT | tee "$work/membw" || true
  # Issue 12's goal: one job's 4 KiB random reads >= 0.8x and writes >= 0.7x these one-thread ceilings.
  ceiling() { sed -n "s/.*membw-$1-1t .*Mops\/s=\([0-9.]*\).*/\1/p" "$work/membw"; }
  rd=$(ceiling rnd4k_memcpy_rd); wr=$(ceiling rnd4k_nt512_wr)
  if [ -n "$rd" ] && [ -n "$wr" ]; then
    echo
    echo "| pfnblock, one job | M IOPS | ceiling (01-membw, M/s) | ratio |"
    echo "|---|---|---|---|"
    for label in 4k-randread-1j 4k-randread-1j-qd32 4k-randwrite-1j 4k-randwrite-1j-qd32; do
      [ -f "$work/$label.ours" ] || continue
      c=$rd; case $label in *write*) c=$wr ;; esac
      o=$(med < "$work/$label.ours")
      echo "| $label | $(printf '%.3g' "$o") | $c | $(awk -v a="$o" -v b="$c" 'BEGIN {printf "%.2f", a/b}') |"
    done
  fi
fi
