#!/usr/bin/env bash
# writecache-bench.sh - a pmem write cache (dm-writecache table) in front of an O_DIRECT file,
# against the file alone and against raw pmem, 4 KiB random writes at iodepth 1 and 32, plain
# and FUA. Each pair runs in ONE process: `pfnblock bench --device A --vs B` alternates A and B
# in short slices and reports the median of the per-pair ratios B/A (machine drift moves that
# far less than either figure). The cache is made afresh for every pair and is large enough
# that it never reaches its high watermark during the run: this measures "while the cache has
# room" (the cache gets RUNTIME/2 seconds of writes; at ~1.2 M IOPS that is ~5 GB: a 3 GiB cache
# filled within a row once commits were batched, and the row then measured write-back to the file).
# Prints a markdown table.
# SUITE=read measures the read cache (read_cache 80) instead: 4 KiB random reads over a working
# set WSET (32M, written to the file first) that fits the cache, and a 70/30 random read/write
# mix, each against the file alone, the same writecache without read_cache, and raw pmem. The
# read cache lives in the process's DRAM, so it fills during the pair's unmeasured first slices
# (a slice of ~20 k misses covers most of 8 192 blocks) and the measured slices are mostly hits.
# Env: RUNTIME (seconds per pair, 2), SLICES (pairs, 8), ORIGIN (1G), CACHE (8G), DISKDIR (/var/tmp);
# to run only some rows: QDS ("1 32"), FUAS ("plain fua"), PEERS ("file pmem"; for SUITE=read
# "file nocache pmem"), WORKLOADS (SUITE=read: "randread randrw").
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-2}; SLICES=${SLICES:-8}; ORIGIN=${ORIGIN:-1G}; CACHE=${CACHE:-8G}; DISKDIR=${DISKDIR:-/var/tmp}
QDS=${QDS:-1 32}; FUAS=${FUAS:-plain fua}; SUITE=${SUITE:-write}; WSET=${WSET:-32M}; WORKLOADS=${WORKLOADS:-randread randrw}
if [ "$SUITE" = read ]; then PEERS=${PEERS:-file nocache pmem}; else PEERS=${PEERS:-file pmem}; fi
work=$(mktemp -d /tmp/pfnblock-wc-bench.XXXXXX)
file=$DISKDIR/pfnblock-wc-bench-origin.$$
cache=/dev/shm/pfnblock-wc-bench-cache.$$
cache2=/dev/shm/pfnblock-wc-bench-cache2.$$
raw=/dev/shm/pfnblock-wc-bench-pmem.$$
cleanup() { rm -rf -- "$work" "$file" "$cache" "$cache2" "$raw"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
truncate -s "$ORIGIN" "$file"
origin_sectors=$(( $(stat -c %s "$file") / 512 ))
table=$work/wc.table
echo "0 $origin_sectors writecache p file:$file pmem:$cache 4096 4 high_watermark 90 low_watermark 80" > "$table"
# Raw pmem of the origin's size, every page allocated and touched once (as the cache's will be).
pfnblock namespace create --path "$raw" --size "$ORIGIN" --force >/dev/null
fallocate -l "$(stat -c %s "$raw")" "$raw"

# A fresh, zeroed cache namespace with its pages allocated (tmpfs allocates on first touch otherwise).
fresh_cache() { # $1 path (default $cache)
  local c=${1:-$cache}
  rm -f -- "$c"
  pfnblock namespace create --path "$c" --size "$CACHE" --force >/dev/null
  fallocate -l "$(stat -c %s "$c")" "$c"
}

row() { # $1 label A, $2 label B, $3 json
  jq -r --arg a "$1" --arg b "$2" '.comparisons[0] |
    "| \(.rw) 4k qd\(.iodepth // "?")\(if .fua then " FUA" else "" end) | \($a) \(.median_a | round) IOPS | \($b) \(.median_b | round) IOPS | \(.ratio_median * 100 | round / 100) [\(.ratio_min * 100 | round / 100)..\(.ratio_max * 100 | round / 100)] |"' "$3"
}

if [ "$SUITE" = read ]; then
  # The working set holds data on the disk (a sparse file's holes would read without I/O).
  dd if=/dev/urandom of="$file" bs=1M count=$(( $(numfmt --from=iec "$WSET") >> 20 )) oflag=direct conv=notrunc status=none
  rtable=$work/wc-rc.table; ntable=$work/wc-norc.table
  echo "0 $origin_sectors writecache p file:$file pmem:$cache 4096 6 high_watermark 90 low_watermark 80 read_cache 80" > "$rtable"
  echo "0 $origin_sectors writecache p file:$file pmem:$cache2 4096 4 high_watermark 90 low_watermark 80" > "$ntable"
  echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# RUNTIME=$RUNTIME SLICES=$SLICES WSET=$WSET CACHE=$CACHE; B: $(cat "$rtable")"
  echo "| workload | A | B (read_cache 80) | B/A, median of pairs [min..max] |"
  echo "|---|---|---|---|"
  for wl in $WORKLOADS; do
    case $wl in randread) rw="--rw randread" ;; randrw) rw="--rw randrw --rwmixread 70" ;; *) echo "unknown workload $wl" >&2; exit 2 ;; esac
    for qd in $QDS; do
      for peer in $PEERS; do
        fresh_cache
        case $peer in file) dev="file:$file" ;; nocache) fresh_cache "$cache2"; dev="table:$ntable" ;; pmem) dev="pmem:$raw" ;; *) echo "unknown peer $peer" >&2; exit 2 ;; esac
        # shellcheck disable=SC2086 # $rw is two or four words
        pfnblock bench --device "$dev" --vs "table:$rtable" $rw --bs 4k --iodepth "$qd" --size "$WSET" \
          --runtime "$RUNTIME" --slices "$SLICES" --ramp 0 --json > "$work/$peer.json"
        label=$peer; [ "$peer" = nocache ] && label="writecache, no read_cache"
        row "$label" "writecache" "$work/$peer.json" | sed "s/qd?/qd$qd/; s/^| randrw /| randrw 70\/30 /"
      done
    done
  done
  exit 0
fi

echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# RUNTIME=$RUNTIME SLICES=$SLICES ORIGIN=$ORIGIN CACHE=$CACHE; table: $(cat "$table")"
echo "| workload | A | B | B/A, median of pairs [min..max] |"
echo "|---|---|---|---|"
for qd in $QDS; do
  for mode in $FUAS; do
    fua=""; [ "$mode" = fua ] && fua=--fua
    for peer in $PEERS; do
      case $peer in file) dev="file:$file" ;; pmem) dev="pmem:$raw" ;; *) echo "unknown peer $peer" >&2; exit 2 ;; esac
      fresh_cache
      pfnblock bench --device "$dev" --vs "table:$table" --rw randwrite --bs 4k --iodepth "$qd" $fua \
        --runtime "$RUNTIME" --slices "$SLICES" --ramp 0 --json > "$work/$peer.json"
      row "$peer" "writecache" "$work/$peer.json" | sed "s/qd?/qd$qd/; s/4k qd$qd |/4k qd$qd${fua:+ FUA} |/"
    done
  done
done
