#!/usr/bin/env bash
# descriptors-bench.sh - every page-descriptor map of the 2015 thread, measured in one run:
#   1. pfnblock memmap on MEASURE-sized namespaces, extrapolated to 1 TiB (DRAM, device bytes,
#      open time, lookup, pin+unpin, 4 KiB DAX read), rounds interleaved over the maps;
#   2. NBD zero-copy 4 KiB random reads (fio nbd engine, iodepth 32) from `pfnblock serve` on a
#      namespace of each map, the maps interleaved within each repetition: each read reply is
#      pinned through the map's pin store while it waits to leave;
#   3. pfnblock copy from an O_DIRECT file into pmem (one map per rep, rotating) against fio's
#      io_uring O_DIRECT read of the same file with the same block size and depth (the peer):
#      into a fresh namespace, into a written one with and without io_uring fixed buffers, into null:;
#      and bench/copy-floor.c, the same reads with nothing of PfnBlock, into a reused buffer (fio's
#      destination) and into a /dev/shm mapping as large as the copy (the copy's): the floor.
# Env: REPS (3), RUNTIME (10), RAMP (2), OPS (1000000, per memmap loop), MEASURE (4G), NS_SIZE (1G), COPY_SIZE (1G), BS (1M), DEPTH (4),
#      PARTS ("1 2 3": which parts run), COPY_MAPS (the maps part 3 rotates through; default all),
#      SRC_DIR (/var/tmp: where part 3's source file lives; /dev/shm takes the disk out of the noise)
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
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; fi
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

SRC_FS=$(df -T "$SRC_DIR" | awk 'NR==2{print $2}')
echo "## 3. copy $COPY_SIZE from an O_DIRECT file on $SRC_FS ($SRC_DIR) into pmem vs fio io_uring O_DIRECT read, bs $BS, depth $DEPTH"
echo "#  per rep: fio; copy into a fresh namespace; copy into the same, now written namespace with and without"
echo "#  --fixed-buffers (which goes first alternates); copy into null:; bench/copy-floor.c (one rep of each"
echo "#  destination, their order rotating). Ratios are per rep, copy / fio and copy / probe of that rep."
gcc -O2 -o "$WORK/copy-floor" "$here/bench/copy-floor.c"
head -c "$COPY_SIZE" /dev/urandom > "$SRC"
# The file engine's own choice on tmpfs is the thread pool; the peer is io_uring, so ask for it.
FROM="file:$SRC,engine=io_uring"
NS_BYTES=$(( $(numfmt --from=iec "$COPY_SIZE") + (64 << 20) ))
copy() { "$here/pfnblock" copy --from "$FROM" --to "pmem:$NS" --size "$COPY_SIZE" --bs "$BS" --iodepth "$DEPTH" --json "$@"; }
# One unmeasured read first: the first read of a new file comes from the host's disk, every later
# one (fio's and the copy's alike) from the host's page cache; rep 1 would compare unlike reads.
fio --name=warm --filename="$SRC" --rw=read --bs="$BS" --iodepth="$DEPTH" --ioengine=io_uring --direct=1 --size="$COPY_SIZE" >/dev/null
for rep in $(seq 1 "$REPS"); do
  fio --name=read --filename="$SRC" --rw=read --bs="$BS" --iodepth="$DEPTH" --ioengine=io_uring --direct=1 --size="$COPY_SIZE" \
      --output-format=json --output="$WORK/fio.json" >/dev/null
  fbw=$(jq '.jobs[0].read.bw_bytes / 1048576' "$WORK/fio.json")
  # The floor, same reads with nothing of PfnBlock: into fio's reused buffer and into a mapping like the namespace's.
  "$WORK/copy-floor" "$SRC" $(( $(numfmt --from=iec "$COPY_SIZE") >> 20 )) $(( $(numfmt --from=iec "$BS") >> 10 )) "$DEPTH" 1 - $(( rep - 1 )) > "$WORK/probe.out"
  probe() { sed -n "s/^RESULT probe $1 MiB\/s=\([0-9.]*\).*/\1/p" "$WORK/probe.out"; }
  preuse=$(probe reuse); pshm=$(probe shm); pcold=$(probe shm-cold); pfresh=$(probe shm-fresh); panon=$(probe anon)
  n=$(echo $COPY_MAPS | wc -w)
  map=$(echo $COPY_MAPS | cut -d' ' -f$(( (rep - 1) % n + 1 )))
  rm -f "$NS"; "$here/pfnblock" namespace create --path "$NS" --size "$NS_BYTES" --map "$map" >/dev/null
  # Into the fresh namespace: tmpfs allocates and zeroes each page on first touch (real pmem
  # has nothing to allocate). Then the same namespace again, its pages present, as fio's buffer is.
  copy > "$WORK/fresh.json"
  if [ $(( rep % 2 )) -eq 1 ]; then copy --fixed-buffers > "$WORK/fixed.json"; copy > "$WORK/vec.json"
  else copy > "$WORK/vec.json"; copy --fixed-buffers > "$WORK/fixed.json"; fi
  # The same engine, chunk loop, bs and depth into null: (a 4 MiB bounce buffer reused, as fio
  # reuses its buffers): what the copy does when the destination is not 1 GiB of distinct pages.
  "$here/pfnblock" copy --from "$FROM" --to "null:$COPY_SIZE" --size "$COPY_SIZE" --bs "$BS" --iodepth "$DEPTH" --json > "$WORK/null.json"
  bw() { jq '.bytes_per_second / 1048576' "$1"; }
  fresh=$(bw "$WORK/fresh.json"); fixed=$(bw "$WORK/fixed.json"); vec=$(bw "$WORK/vec.json"); null=$(bw "$WORK/null.json")
  reg=$(jq '.registered_bytes' "$WORK/fixed.json"); errno=$(jq '.registration_errno' "$WORK/fixed.json")
  cpu=$(jq '.cpu_copied_bytes' "$WORK/vec.json")
  echo "$fbw" >> "$WORK/fio.bw"; echo "$vec" >> "$WORK/copy.bw"
  awk -v f="$fbw" -v c="$fixed" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.fixed"
  awk -v f="$fbw" -v c="$vec" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.vec"
  awk -v f="$fbw" -v c="$fresh" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.fresh"
  awk -v f="$fbw" -v c="$null" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.null"
  awk -v f="$fbw" -v c="$preuse" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.preuse"
  awk -v f="$preuse" -v c="$pshm" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.pshm"
  awk -v f="$preuse" -v c="$pcold" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.pcold"
  awk -v f="$preuse" -v c="$pfresh" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.pfresh"
  awk -v f="$preuse" -v c="$panon" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.panon"
  awk -v f="$pshm" -v c="$vec" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.vec-pshm"
  awk -v f="$pfresh" -v c="$fresh" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.fresh-pfresh"
  awk -v f="$preuse" -v c="$null" 'BEGIN { print 100 * c / f }' >> "$WORK/ratio.null-preuse"
  awk -v r="$rep" -v f="$fbw" -v c="$fixed" -v v="$vec" -v fr="$fresh" -v nu="$null" -v m="$map" -v reg="$reg" -v e="$errno" -v cpu="$cpu" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN { printf "  rep %s: fio %.0f MiB/s | written ns: READV %.0f (%.1f %%), fixed %.0f (%.1f %%) | fresh ns: READV %.0f (%.1f %%) | null: %.0f (%.1f %%) | map %s, registered bytes %s (errno %s), CPU-copied %s, load %s\n", r, f, v, 100 * v / f, c, 100 * c / f, fr, 100 * fr / f, nu, 100 * nu / f, m, reg, e, cpu, l }'
  awk -v r="$rep" -v f="$fbw" -v pr="$preuse" -v ps="$pshm" -v pc="$pcold" -v pf="$pfresh" -v pa="$panon" -v v="$vec" -v fr="$fresh" \
    'BEGIN { printf "  rep %s: probe reuse %.0f (%.1f %% of fio) | probe shm %.0f (%.1f %% of reuse), shm-cold %.0f (%.1f %%), shm-fresh %.0f (%.1f %%), anon %.0f (%.1f %%) | copy written / probe shm %.1f %%, copy fresh / probe shm-fresh %.1f %%\n", r, pr, 100 * pr / f, ps, 100 * ps / pr, pc, 100 * pc / pr, pf, 100 * pf / pr, pa, 100 * pa / pr, 100 * v / ps, 100 * fr / pf }'
done
printf 'RESULT fio-io_uring-direct-read MiB/s=%s\n' "$(median < "$WORK/fio.bw")"
printf 'RESULT pfnblock-copy-into-pmem  MiB/s=%s\n' "$(median < "$WORK/copy.bw")"
printf 'RESULT copy/fio %%, written namespace, READV (default) %s\n' "$(median < "$WORK/ratio.vec")"
printf 'RESULT copy/fio %%, written namespace, --fixed-buffers   %s\n' "$(median < "$WORK/ratio.fixed")"
printf 'RESULT copy/fio %%, fresh namespace, READV (default)   %s\n' "$(median < "$WORK/ratio.fresh")"
printf 'RESULT copy/fio %%, into null: (4 MiB reused buffer)   %s\n' "$(median < "$WORK/ratio.null")"
printf 'RESULT probe reuse / fio %%                          %s\n' "$(median < "$WORK/ratio.preuse")"
printf 'RESULT probe shm / probe reuse %% (the floor)         %s\n' "$(median < "$WORK/ratio.pshm")"
printf 'RESULT probe shm-cold / probe reuse %%                %s\n' "$(median < "$WORK/ratio.pcold")"
printf 'RESULT probe shm-fresh / probe reuse %%               %s\n' "$(median < "$WORK/ratio.pfresh")"
printf 'RESULT probe anon / probe reuse %%                    %s\n' "$(median < "$WORK/ratio.panon")"
printf 'RESULT copy written / probe shm %%                    %s\n' "$(median < "$WORK/ratio.vec-pshm")"
printf 'RESULT copy fresh / probe shm-fresh %%               %s\n' "$(median < "$WORK/ratio.fresh-pfresh")"
printf 'RESULT copy into null: / probe reuse %%              %s\n' "$(median < "$WORK/ratio.null-preuse")"
