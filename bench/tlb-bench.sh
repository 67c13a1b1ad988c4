#!/usr/bin/env bash
# tlb-bench.sh - the TLB experiment of the 2015 thread (Rik: large pages' TLB bonus; Linus: "very
# few people can actually measure that TLB advantage"): the same 4 KiB random read and write
# workload (`pfnblock bench`, one job, queue depth 1, on a pmem namespace) over working sets of
# WSETS, with the namespace's mapping backed by
#   4k      - a private tmpfs mounted huge=never (4 KiB pages, like /dev/shm here),
#   thp     - a private tmpfs mounted huge=always (2 MiB transparent pages, --page-size 2M),
#   hugetlb - a private hugetlbfs, pagesize=2M, the pool raised for the run and restored.
# The namespace is the working set: each run creates it, fills it once with a sequential write
# (so every page exists and the next open maps them all), runs randread then randwrite, and
# destroys it; never more than one namespace (at most 4 GiB) exists at a time. Repetitions,
# working sets and page sizes are interleaved; medians with ranges, and ratios to 4k of the same
# repetition. `perf stat -e dTLB-load-misses,dTLB-store-misses` is added where the counters exist.
# Env: REPS (3), RUNTIME (5), RAMP (1), WSETS ("64M 256M 1G 4G"), TLB_TSV (where to keep the table for the plot)
set -euo pipefail
export LC_ALL=C
REPS=${REPS:-3}; RUNTIME=${RUNTIME:-5}; RAMP=${RAMP:-1}; WSETS=${WSETS:-"64M 256M 1G 4G"}
KINDS="4k thp hugetlb"
here=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tlb-bench.XXXXXX)
TSV=${TLB_TSV:-$WORK/tlb.tsv}
MNT=$WORK/mnt
POOL=/proc/sys/vm/nr_hugepages
POOL_BEFORE=$(cat "$POOL")
cleanup() {
  # Every path: unmount, put the huge page pool back, remove the scratch directory.
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
  echo "$POOL_BEFORE" > "$POOL"
  rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
[ "$(id -u)" = 0 ] || { echo "needs root (mounts, the huge page pool)" >&2; exit 1; }
for t in jq numfmt perf; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done
median() { sort -g | awk '{a[NR]=$1} END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.4g\t%.4g\t%.4g\n", m, a[1], a[NR] }'; }
mkdir -p "$MNT"

# dTLB counters: perf may be permitted (perf_event_paranoid) and still have no PMU (a VM without one).
PERF=""
if perf stat -x, -e dTLB-load-misses,dTLB-store-misses -- true 2>&1 | grep -q "not supported"; then
  echo "# perf: allowed (running as root; perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)), but dTLB-load-misses/dTLB-store-misses are <not supported> here (no PMU in this guest): no TLB miss counts"
else
  PERF=1
fi

"$here/pfnblock" --help >/dev/null
echo "# machine: $(lscpu | sed -n 's/^Model name: *//p') ($(lscpu | sed -n 's/^Hypervisor vendor: *//p') guest), $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(date -u +%FT%TZ); REPS=$REPS RUNTIME=$RUNTIME RAMP=$RAMP WSETS=\"$WSETS\""

mount_for() { # kind bytes
  case "$1" in
    4k)      mount -t tmpfs -o huge=never,size=$(( $2 + (64 << 20) )) tlb-4k "$MNT" ;;
    thp)     mount -t tmpfs -o huge=always,size=$(( $2 + (64 << 20) )) tlb-thp "$MNT" ;;
    hugetlb) local pages=$(( $2 >> 21 ))
             echo $(( POOL_BEFORE + pages )) > "$POOL"
             [ "$(cat "$POOL")" -ge $(( POOL_BEFORE + pages )) ] || { echo "the kernel gave $(cat "$POOL") huge pages, not $(( POOL_BEFORE + pages ))" >&2; exit 1; }
             mount -t hugetlbfs -o pagesize=2M,size=$2 tlb-hugetlb "$MNT" ;;
  esac
}
unmount_for() {
  umount "$MNT"
  [ "$1" = hugetlb ] && echo "$POOL_BEFORE" > "$POOL"
  return 0
}

for rep in $(seq 1 "$REPS"); do
  for ws in $WSETS; do
    bytes=$(numfmt --from=iec "$ws")
    for kind in $KINDS; do
      mount_for "$kind" "$bytes"
      ns=$MNT/ns
      page=$([ "$kind" = 4k ] && echo 4k || echo 2M)
      "$here/pfnblock" namespace create --path "$ns" --size "$ws" --page-size "$page" > "$WORK/create.out"
      # One pass over the whole data area: every page faulted in once, so each later open maps all.
      data=$("$here/pfnblock" namespace info --path "$ns" --json | jq '.data_size')
      "$here/pfnblock" bench --device "pmem:$ns" --rw write --bs 1M --size $(( data >> 20 << 20 )) --ramp 0 --json > /dev/null
      pages=$("$here/pfnblock" namespace info --path "$ns" --json | jq -r '.page_backing | "\(.page_size) \(.huge_mapped_bytes) \(.mapped_bytes)"')
      for rw in randread randwrite; do
        cmd=("$here/pfnblock" bench --device "pmem:$ns" --rw "$rw" --bs 4k --runtime "$RUNTIME" --ramp "$RAMP" --json)
        if [ -n "$PERF" ]; then
          perf stat -x, -o "$WORK/perf.csv" -e dTLB-load-misses,dTLB-store-misses -- "${cmd[@]}" > "$WORK/bench.json"
          misses=$(awk -F, '/dTLB/{s+=$1} END{print s+0}' "$WORK/perf.csv")
        else
          "${cmd[@]}" > "$WORK/bench.json"; misses=NA
        fi
        iops=$(jq '.jobs[0] | (.read.iops + .write.iops)' "$WORK/bench.json")
        ios=$(jq '.jobs[0] | (.read.total_ios + .write.total_ios)' "$WORK/bench.json")
        per_io=$([ "$misses" = NA ] && echo NA || awk -v m="$misses" -v n="$ios" 'BEGIN{printf "%.3g", m / n}')
        echo "$iops" >> "$WORK/$rw.$ws.$kind"
        echo "$iops" > "$WORK/last.$rw.$ws.$kind.$rep"
        printf '  rep %s %-5s %-7s %-9s IOPS=%8.0f  dTLB-misses/IO=%s  (page_size mapped: %s)\n' "$rep" "$ws" "$kind" "$rw" "$iops" "$per_io" "$pages"
      done
      unmount_for "$kind"
    done
    # Same-repetition ratios to 4 KiB pages.
    for rw in randread randwrite; do
      for kind in thp hugetlb; do
        awk -v a="$(cat "$WORK/last.$rw.$ws.4k.$rep")" -v b="$(cat "$WORK/last.$rw.$ws.$kind.$rep")" 'BEGIN{print b / a}' >> "$WORK/ratio.$rw.$ws.$kind"
      done
    done
  done
done

echo "## medians [min..max] of $REPS interleaved runs; ratio = the same repetition's IOPS / 4k's"
printf 'series\tworking_set_mib\tiops\tmin\tmax\n' > "$TSV"
echo "| working set | workload | 4 KiB pages IOPS | THP 2 MiB IOPS | hugetlbfs 2 MiB IOPS | THP / 4k | hugetlb / 4k |"
echo "|---|---|---|---|---|---|---|"
for rw in randread randwrite; do
  for ws in $WSETS; do
    row="| $ws | 4 KiB $rw |"
    for kind in $KINDS; do
      read -r m lo hi < <(median < "$WORK/$rw.$ws.$kind")
      row="$row $(printf '%.0f [%.0f..%.0f]' "$m" "$lo" "$hi") |"
      printf '%s %s\t%s\t%s\t%s\t%s\n' "$kind" "$rw" "$(( $(numfmt --from=iec "$ws") >> 20 ))" "$m" "$lo" "$hi" >> "$TSV"
    done
    for kind in thp hugetlb; do
      read -r m lo hi < <(median < "$WORK/ratio.$rw.$ws.$kind")
      row="$row $(printf '%.3f [%.3f..%.3f]' "$m" "$lo" "$hi") |"
    done
    echo "$row"
    printf 'RESULT tlb %-9s %-5s 4k=%s thp=%s hugetlb=%s\n' "$rw" "$ws" "$(median < "$WORK/$rw.$ws.4k" | cut -f1)" "$(median < "$WORK/$rw.$ws.thp" | cut -f1)" "$(median < "$WORK/$rw.$ws.hugetlb" | cut -f1)"
  done
done
[ "$TSV" = "$WORK/tlb.tsv" ] || echo "# table for the plot: $TSV"
