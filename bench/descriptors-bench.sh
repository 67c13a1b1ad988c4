#!/usr/bin/env bash
# descriptors-bench.sh - every page-descriptor map of the 2015 thread, measured in one run:
#   1. pfnblock memmap on MEASURE-sized namespaces, extrapolated to 1 TiB (DRAM, device bytes,
#      open time, lookup, pin+unpin, 4 KiB DAX read), rounds interleaved over the maps;
#   2. NBD zero-copy 4 KiB random reads (fio nbd engine, iodepth 32) from `pfnblock serve` on a
#      namespace of each map, the maps interleaved within each repetition: each read reply is
#      pinned through the map's pin store while it waits to leave;
#   3. pfnblock copy from an O_DIRECT file into pmem (one map per rep, rotating) against fio's
#      io_uring O_DIRECT read of the same file with the same block size and depth (the peer).
# Env: REPS (3), RUNTIME (10), RAMP (2), OPS (1000000, per memmap loop), MEASURE (4G), NS_SIZE (1G), COPY_SIZE (1G), BS (1M), DEPTH (4),
#      PARTS ("1 2 3": which parts run), COPY_MAPS (the maps part 3 rotates through; default all)
set -euo pipefail
export LC_ALL=C
REPS=${REPS:-3}; RUNTIME=${RUNTIME:-10}; RAMP=${RAMP:-2}
OPS=${OPS:-1000000}; MEASURE=${MEASURE:-4G}; NS_SIZE=${NS_SIZE:-1G}; COPY_SIZE=${COPY_SIZE:-1G}; BS=${BS:-1M}; DEPTH=${DEPTH:-4}
MAPS="none dense device huge temporary on-demand"
PARTS=${PARTS:-1 2 3}; COPY_MAPS=${COPY_MAPS:-$MAPS}
part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }
here=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/descriptors-bench.XXXXXX)
SRC=/var/tmp/descriptors-bench-src.$$.img
NS=/dev/shm/descriptors-bench-ns.$$
SERVER=
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf -- "$WORK" "$SRC" "$NS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
for t in fio jq nbdinfo; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done
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
    "$here/pfnblock" serve --export "ns=pmem:$NS" --listen "unix:$SOCK" >"$WORK/serve.out" 2>&1 &
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

echo "## 3. copy $COPY_SIZE from an O_DIRECT file on $(df -T /var/tmp | awk 'NR==2{print $2}') into pmem vs fio io_uring O_DIRECT read, bs $BS, depth $DEPTH"
head -c "$COPY_SIZE" /dev/urandom > "$SRC"
rm -f "$NS"
"$here/pfnblock" namespace create --path "$NS" --size "$(( $(numfmt --from=iec "$COPY_SIZE") + (64 << 20) ))" >/dev/null
# One unmeasured read first: the first read of a new file comes from the host's disk, every later
# one (fio's and the copy's alike) from the host's page cache; rep 1 would compare unlike reads.
fio --name=warm --filename="$SRC" --rw=read --bs="$BS" --iodepth="$DEPTH" --ioengine=io_uring --direct=1 --size="$COPY_SIZE" >/dev/null
for rep in $(seq 1 "$REPS"); do
  fio --name=read --filename="$SRC" --rw=read --bs="$BS" --iodepth="$DEPTH" --ioengine=io_uring --direct=1 --size="$COPY_SIZE" \
      --output-format=json --output="$WORK/fio.json" >/dev/null
  fbw=$(jq '.jobs[0].read.bw_bytes / 1048576' "$WORK/fio.json")
  n=$(echo $COPY_MAPS | wc -w)
  map=$(echo $COPY_MAPS | cut -d' ' -f$(( (rep - 1) % n + 1 )))
  rm -f "$NS"; "$here/pfnblock" namespace create --path "$NS" --size "$(( $(numfmt --from=iec "$COPY_SIZE") + (64 << 20) ))" --map "$map" >/dev/null
  # A first, unmeasured pass gives the fresh namespace its pages (tmpfs allocates them on first
  # touch); fio reads into a buffer it reuses, so only the second pass compares like with like.
  "$here/pfnblock" copy --from "file:$SRC" --to "pmem:$NS" --size "$COPY_SIZE" --bs "$BS" --iodepth "$DEPTH" --json > /dev/null
  "$here/pfnblock" copy --from "file:$SRC" --to "pmem:$NS" --size "$COPY_SIZE" --bs "$BS" --iodepth "$DEPTH" --json > "$WORK/copy.json"
  cbw=$(jq '.bytes_per_second / 1048576' "$WORK/copy.json")
  cpu=$(jq '.cpu_copied_bytes' "$WORK/copy.json")
  echo "$fbw" >> "$WORK/fio.bw"; echo "$cbw" >> "$WORK/copy.bw"
  awk -v r="$rep" -v f="$fbw" -v c="$cbw" -v m="$map" -v cpu="$cpu" -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN { printf "  rep %s: fio %.0f MiB/s, copy (map %s) %.0f MiB/s = %.1f %%, CPU-copied bytes %s, load %s\n", r, f, m, c, 100 * c / f, cpu, l }'
done
printf 'RESULT fio-io_uring-direct-read MiB/s=%s\n' "$(median < "$WORK/fio.bw")"
printf 'RESULT pfnblock-copy-into-pmem  MiB/s=%s\n' "$(median < "$WORK/copy.bw")"
