#!/usr/bin/env bash
# descriptors-bench.sh - every page-descriptor map of the 2015 thread, measured in one run:
#   1. pfnblock memmap on MEASURE-sized namespaces, extrapolated to 1 TiB (DRAM, device bytes,
#      open time, lookup, pin+unpin, 4 KiB DAX read), rounds interleaved over the maps;
#   2. NBD zero-copy 4 KiB random reads (fio nbd engine, iodepth 32) from `pfnblock serve` on a
#      namespace of each map, the maps interleaved within each repetition: each read reply is
#      pinned through the map's pin store while it waits to leave;
#   3. pfnblock copy from an O_DIRECT file into pmem (one map per rep, rotating) against fio's
#      io_uring O_DIRECT read of the same file with the same block size and depth (the peer):
#      into a fresh namespace, into a written one with and without --poll and with io_uring fixed buffers,
#      into null:; and bench/copy-floor.c, the same reads with nothing of PfnBlock, into a reused
#      buffer (fio's destination) and into the namespace's own pages (the copy's): the floor.
# Env: REPS (3), RUNTIME (10), RAMP (2), OPS (1000000, per memmap loop), MEASURE (4G), NS_SIZE (1G), COPY_SIZE (1G), BS (1M), DEPTH (4),
#      PARTS ("1 2 3": which parts run), COPY_MAPS (the maps part 3 rotates through; default all),
#      SRC_DIR (/var/tmp: where part 3's source file lives; /dev/shm takes the disk out of the noise),
#      HUGE (0; 1 = part 3 also with 2 MiB pages: needs root, mounts a private tmpfs and hugetlbfs)
set -euo pipefail
export LC_ALL=C
REPS=${REPS:-3}; RUNTIME=${RUNTIME:-10}; RAMP=${RAMP:-2}
OPS=${OPS:-1000000}; MEASURE=${MEASURE:-4G}; NS_SIZE=${NS_SIZE:-1G}; COPY_SIZE=${COPY_SIZE:-1G}; BS=${BS:-1M}; DEPTH=${DEPTH:-4}
MAPS="none dense device huge temporary on-demand"
PARTS=${PARTS:-1 2 3}; COPY_MAPS=${COPY_MAPS:-$MAPS}
part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }
here=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/descriptors-bench.XXXXXX)
SRC_DIR=${SRC_DIR:-/var/tmp}
SRC=$SRC_DIR/descriptors-bench-src.$$.img
NS=/dev/shm/descriptors-bench-ns.$$
SERVER=
MOUNTS=; POOL_BEFORE=
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; fi
  for m in $MOUNTS; do umount "$m" || true; done
  [ -n "$POOL_BEFORE" ] && echo "$POOL_BEFORE" > /proc/sys/vm/nr_hugepages
  rm -rf -- "$WORK" "$SRC" "$NS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
for t in fio jq nbdinfo gcc; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done
median() { sort -g | awk '{a[NR]=$1} END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.4g [%.4g..%.4g]\n", m, a[1], a[NR] }'; }

"$here/pfnblock" --help >/dev/null
echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), fio $(fio --version), .NET $(dotnet --version)"
echo "# $(date -u +%FT%TZ)"

if part 1; then
echo "## 1. pfnblock memmap --size 1T --measure $MEASURE --ops $OPS --rounds $REPS"
"$here/pfnblock" memmap --size 1T --measure "$MEASURE" --ops "$OPS" --rounds "$REPS" --dir /dev/shm 2>/dev/null
fi

if part 2; then
echo "## 2. NBD 4 KiB randread, iodepth 32, $RUNTIME s per run, namespace $NS_SIZE, maps interleaved"
SOCK="$WORK/nbd.sock"; URI="nbd+unix:///ns?socket=$SOCK"
for rep in $(seq 1 "$REPS"); do
  for map in $MAPS; do
    rm -f "$NS" "$SOCK"
    "$here/pfnblock" namespace create --path "$NS" --size "$NS_SIZE" --map "$map" >/dev/null
    "$here/pfnblock" serve --export "ns=pmem:$NS" --listen "unix:$SOCK" --control "$WORK/serve.ctl" >"$WORK/serve.out" 2>&1 &
    SERVER=$!
    for i in $(seq 1 300); do nbdinfo --size "$URI" >/dev/null 2>&1 && break; sleep 0.1; done
    fio --name=randread --ioengine=nbd --uri="$URI" --rw=randread --bs=4k --iodepth=32 --numjobs=1 \
        --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based --output-format=json --output="$WORK/fio.json" >/dev/null
    iops=$(jq '.jobs[0].read.iops' "$WORK/fio.json")
    echo "$iops" >> "$WORK/nbd.$map"
    printf '  rep %s %-10s IOPS=%.0f\n' "$rep" "$map" "$iops"
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  done
done
for map in $MAPS; do printf 'RESULT nbd-4k-randread-qd32 %-10s IOPS=%s\n' "$map" "$(median < "$WORK/nbd.$map")"; done
fi
part 3 || exit 0

SRC_FS=$(df -T "$SRC_DIR" | awk 'NR==2{print $2}')
echo "## 3. copy $COPY_SIZE from an O_DIRECT file on $SRC_FS ($SRC_DIR) into pmem vs fio io_uring O_DIRECT read, bs $BS, depth $DEPTH"
echo "#  per rep: copy into a fresh namespace (4 KiB tmpfs pages); fio; bench/copy-floor.c into fio's kind of"
echo "#  reused buffer, into the very pages of that namespace, now written, and into scattered pages; copy into the"
echo "#  written namespace with --poll and without (the default; which first alternates), --fixed-buffers; copy into null:;"
echo "#  with HUGE=1 (root): fio with its buffer in 2 MiB hugetlbfs pages, the probe into and copies into a written"
echo "#  namespace on a private tmpfs mounted huge=always. Ratios are per rep; medians of them."
gcc -O2 -o "$WORK/copy-floor" "$here/bench/copy-floor.c"
head -c "$COPY_SIZE" /dev/urandom > "$SRC"
# The file engine's own choice on tmpfs is the thread pool; the peer is io_uring, so ask for it.
FROM="file:$SRC,engine=io_uring"
MIB=$(( $(numfmt --from=iec "$COPY_SIZE") >> 20 )); BS_KIB=$(( $(numfmt --from=iec "$BS") >> 10 ))
NS_BYTES=$(( $(numfmt --from=iec "$COPY_SIZE") + (64 << 20) ))
# Requests the source's block device completed (its /sys/dev/block stat): the destination's
# physical layout shows here (scattered 4 KiB pages: a 1 MiB read is 256 segments, split in two
# on a virtio disk's 254; contiguous pages merge, and so do adjacent reads, up to max_sectors_kb).
STAT=/sys/dev/block/$(stat -c '%Hd:%Ld' "$SRC")/stat
reads() { [ -r "$STAT" ] && awk '{print $1}' "$STAT" || echo 0; }
# row NAME MiB/s READS_BEFORE: one measurement of the rep, with the device's requests per MiB.
row() { echo "$2" >> "$WORK/bw.$1"; awk -v a="$3" -v b="$(reads)" -v m="$MIB" 'BEGIN { print (b - a) / m }' >> "$WORK/req.$1"; ROWS="$ROWS $1"; }
copy() { local ns=$1; shift; "$here/pfnblock" copy --from "$FROM" --to "pmem:$ns" --size "$COPY_SIZE" --bs "$BS" --iodepth "$DEPTH" --json "$@"; }
bw() { jq '.bytes_per_second / 1048576' "$1"; }
fio_read() { fio --name=read --filename="$SRC" --rw=read --bs="$BS" --iodepth="$DEPTH" --ioengine=io_uring --direct=1 --size="$COPY_SIZE" \
  --output-format=json --output="$WORK/fio.json" "$@" >/dev/null; jq '.jobs[0].read.bw_bytes / 1048576' "$WORK/fio.json"; }
probe() { sed -n "s/^RESULT probe $1 MiB\/s=\([0-9.]*\) .*requests\/MiB=\([0-9.]*\)/\1 \2/p" "$2"; }
probe_row() { # NAME MODE OUTPUT: a probe measurement as a row (its own request count)
  local v; v=$(probe "$2" "$3"); echo "${v% *}" >> "$WORK/bw.$1"; echo "${v#* }" >> "$WORK/req.$1"; ROWS="$ROWS $1"; }
HUGE_NS=
if [ "${HUGE:-0}" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "HUGE=1 needs root (mounts, the huge page pool)" >&2; exit 1; }
  mkdir -p "$WORK/huge" "$WORK/hugetlb"
  mount -t tmpfs -o huge=always,size=$(( NS_BYTES + (64 << 20) )) descriptors-bench-huge "$WORK/huge"; MOUNTS="$WORK/huge"
  POOL_BEFORE=$(cat /proc/sys/vm/nr_hugepages); echo $(( POOL_BEFORE + 4 )) > /proc/sys/vm/nr_hugepages
  mount -t hugetlbfs -o pagesize=2M descriptors-bench-hugetlb "$WORK/hugetlb"; MOUNTS="$WORK/hugetlb $MOUNTS"
  HUGE_NS=$WORK/huge/ns
  "$here/pfnblock" namespace create --path "$HUGE_NS" --size "$NS_BYTES" --page-size 2M >/dev/null
  copy "$HUGE_NS" >/dev/null # written once: every page allocated, as a pmem namespace's always are
  HUGE_OFF=$("$here/pfnblock" namespace info --path "$HUGE_NS" --json | jq '.data_offset')
fi
# One unmeasured read first: the first read of a new file comes from the host's disk, every later
# one (fio's and the copy's alike) from the host's page cache; rep 1 would compare unlike reads.
fio --name=warm --filename="$SRC" --rw=read --bs="$BS" --iodepth="$DEPTH" --ioengine=io_uring --direct=1 --size="$COPY_SIZE" >/dev/null
for rep in $(seq 1 "$REPS"); do
  ROWS=
  n=$(echo $COPY_MAPS | wc -w)
  map=$(echo $COPY_MAPS | cut -d' ' -f$(( (rep - 1) % n + 1 )))
  rm -f "$NS"; "$here/pfnblock" namespace create --path "$NS" --size "$NS_BYTES" --map "$map" >/dev/null
  # Into the fresh namespace: tmpfs allocates and zeroes each page on first touch (real pmem
  # has nothing to allocate). Everything after lands in the same namespace, now written.
  r0=$(reads); copy "$NS" > "$WORK/c.json"; row copy-fresh "$(bw "$WORK/c.json")" "$r0"
  r0=$(reads); row fio "$(fio_read)" "$r0"
  # The floor: the same reads with nothing of PfnBlock, into a reused buffer (fio's destination),
  # into the namespace's own data pages (the copy's), and into pages scattered on purpose.
  # The probe goes before the copies in odd reps and after them in even ones (no order bias).
  off=$("$here/pfnblock" namespace info --path "$NS" --json | jq '.data_offset')
  probe_4k() {
    "$WORK/copy-floor" -s "$MIB" -b "$BS_KIB" -d "$DEPTH" -r 1 -f $(( rep - 1 )) -m reuse,ns,scattered -n "$NS:$off" "$SRC" > "$WORK/probe.out"
    probe_row probe-reuse reuse "$WORK/probe.out"; probe_row probe-ns ns "$WORK/probe.out"; probe_row probe-scattered scattered "$WORK/probe.out"
  }
  [ $(( rep % 2 )) -eq 1 ] && probe_4k
  for variant in $([ $(( rep % 2 )) -eq 1 ] && echo "poll nopoll" || echo "nopoll poll"); do
    r0=$(reads); copy "$NS" $([ "$variant" = poll ] && echo --poll) > "$WORK/c.json"; row "copy-$variant" "$(bw "$WORK/c.json")" "$r0"
  done
  [ $(( rep % 2 )) -eq 0 ] && probe_4k
  r0=$(reads); copy "$NS" --fixed-buffers > "$WORK/c.json"; row copy-fixed "$(bw "$WORK/c.json")" "$r0"
  reg=$(jq '.registered_bytes' "$WORK/c.json"); errno=$(jq '.registration_errno' "$WORK/c.json")
  # The same engine, chunk loop, bs and depth into null: (a 4 MiB bounce buffer of 2 MiB pages, reused).
  r0=$(reads); "$here/pfnblock" copy --from "$FROM" --to "null:$COPY_SIZE" --size "$COPY_SIZE" --bs "$BS" --iodepth "$DEPTH" --json > "$WORK/c.json"
  row copy-null "$(bw "$WORK/c.json")" "$r0"
  if [ -n "$HUGE_NS" ]; then
    r0=$(reads); row fio-hugebuf "$(fio_read --mem=mmaphuge:"$WORK/hugetlb/fio.buf")" "$r0"; rm -f "$WORK/hugetlb/fio.buf"
    probe_huge() {
      "$WORK/copy-floor" -s "$MIB" -b "$BS_KIB" -d "$DEPTH" -r 1 -m ns -n "$HUGE_NS:$HUGE_OFF" "$SRC" > "$WORK/probe.out"
      probe_row probe-huge-ns ns "$WORK/probe.out"
    }
    [ $(( rep % 2 )) -eq 0 ] && probe_huge
    for variant in $([ $(( rep % 2 )) -eq 1 ] && echo "poll nopoll" || echo "nopoll poll"); do
      r0=$(reads); copy "$HUGE_NS" $([ "$variant" = poll ] && echo --poll) > "$WORK/c.json"; row "copy-huge-$variant" "$(bw "$WORK/c.json")" "$r0"
    done
    [ $(( rep % 2 )) -eq 1 ] && probe_huge
  fi
  line="  rep $rep (map $map, load $(cut -d' ' -f1 /proc/loadavg), fixed: registered $reg errno $errno):"
  for r in $ROWS; do line="$line $r $(tail -1 "$WORK/bw.$r" | xargs printf '%.0f') ($(tail -1 "$WORK/req.$r" | xargs printf '%.2f') req/MiB)"; done
  echo "$line"
  # Per-rep ratios: each row to fio, and the copies to the probe into their own pages.
  for r in $ROWS; do awk -v a="$(tail -1 "$WORK/bw.$r")" -v b="$(tail -1 "$WORK/bw.fio")" 'BEGIN { print 100 * a / b }' >> "$WORK/fio-ratio.$r"; done
  ratio() { awk -v a="$(tail -1 "$WORK/bw.$1")" -v b="$(tail -1 "$WORK/bw.$2")" 'BEGIN { print 100 * a / b }' >> "$WORK/ratio.$1-$2"; }
  ratio probe-ns probe-reuse; ratio probe-scattered probe-reuse; ratio copy-poll probe-ns; ratio copy-nopoll probe-ns; ratio copy-poll copy-nopoll
  ratio copy-null probe-reuse
  if [ -n "$HUGE_NS" ]; then ratio copy-huge-poll probe-huge-ns; ratio copy-huge-nopoll probe-huge-ns; ratio copy-huge-poll fio-hugebuf; ratio probe-huge-ns fio-hugebuf; ratio copy-huge-poll copy-huge-nopoll; fi
done
echo "| row | MiB/s, median [min..max] | device requests per MiB, median | / fio of the same rep, median [min..max] |"
echo "|---|---|---|---|"
for r in $ROWS; do
  printf '| %s | %s | %s | %s |\n' "$r" "$(median < "$WORK/bw.$r")" "$(median < "$WORK/req.$r" | cut -d' ' -f1)" "$(median < "$WORK/fio-ratio.$r")"
done
for f in "$WORK"/ratio.*; do printf 'RESULT %% %-34s %s\n' "${f#"$WORK"/ratio.}" "$(median < "$f")"; done
for r in $ROWS; do printf 'RESULT %-18s MiB/s=%s req/MiB=%s\n' "$r" "$(median < "$WORK/bw.$r")" "$(median < "$WORK/req.$r" | cut -d' ' -f1)"; done
