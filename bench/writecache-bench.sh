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
# Env: RUNTIME (seconds per pair, 2), SLICES (pairs, 8), ORIGIN (1G), CACHE (8G), DISKDIR (/var/tmp);
# to run only some rows: QDS ("1 32"), FUAS ("plain fua"), PEERS ("file pmem").
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-2}; SLICES=${SLICES:-8}; ORIGIN=${ORIGIN:-1G}; CACHE=${CACHE:-8G}; DISKDIR=${DISKDIR:-/var/tmp}
QDS=${QDS:-1 32}; FUAS=${FUAS:-plain fua}; PEERS=${PEERS:-file pmem}
work=$(mktemp -d /tmp/pfnblock-wc-bench.XXXXXX)
file=$DISKDIR/pfnblock-wc-bench-origin.$$
cache=/dev/shm/pfnblock-wc-bench-cache.$$
raw=/dev/shm/pfnblock-wc-bench-pmem.$$
cleanup() { rm -rf -- "$work" "$file" "$cache" "$raw"; }
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
fresh_cache() {
  rm -f -- "$cache"
  pfnblock namespace create --path "$cache" --size "$CACHE" --force >/dev/null
  fallocate -l "$(stat -c %s "$cache")" "$cache"
}

row() { # $1 label A, $2 label B, $3 json
  jq -r --arg a "$1" --arg b "$2" '.comparisons[0] |
    "| \(.rw) 4k qd\(.iodepth // "?")\(if .fua then " FUA" else "" end) | \($a) \(.median_a | round) IOPS | \($b) \(.median_b | round) IOPS | \(.ratio_median * 100 | round / 100) [\(.ratio_min * 100 | round / 100)..\(.ratio_max * 100 | round / 100)] |"' "$3"
}

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
