#!/usr/bin/env bash
# md-bench.sh - md arrays over pmem namespaces against one namespace alone, in the same process:
# `pfnblock bench --vs` alternates A (a pmem namespace) and B (the array) in short slices and
# reports the median of the per-pair ratios B/A. B is a mirror of two namespaces, then a RAID5
# of four (64 KiB chunks: a 192 KiB full stripe). Every namespace is SIZE; the arrays are
# formatted on first open (mirror:/raid5: specs). Prints a markdown table.
# Then it times an unthrottled mirror rebuild onto a fresh namespace (speed_limit_max raised):
# `serve` with a two-leg mirror, `ctl md … fail 1`, then `ctl md … add SPARE --watch`, wall time
# of the add until the array is idle again; REBUILD_SIZE (1G) per member.
# With ROWS containing "floor": bench/raid5-floor.c (built with gcc), the physical floor of a RAID5
# 4 KiB write against a raw one: the same memory operations with no block layer, CPU ns per write.
# Env: RUNTIME (seconds per workload and device, 20), SLICES (pairs, 20), SIZE (512M),
# ROWS ("arrays rebuild", or any of those and "floor": which parts run), ARRAYS ("mirror raid5":
# which arrays' rows "arrays" runs), REBUILD_SIZE (1G).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-20}; SLICES=${SLICES:-20}; SIZE=${SIZE:-512M}; ROWS=${ROWS:-arrays rebuild}; REBUILD_SIZE=${REBUILD_SIZE:-1G}
ARRAYS=${ARRAYS:-mirror raid5}
ns=/dev/shm/pfnblock-md-bench.$$
out=$(mktemp /tmp/pfnblock-md-bench.XXXXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; rm -f -- "$ns".* "$out"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null   # build once, outside the timed runs
echo "# $(date -u +%FT%TZ) $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # NAME SPEC RW BS JOBS
  pfnblock bench --device "pmem:$ns.raw" --vs "$2" --rw "$3" --bs "$4" --jobs "$5" \
    --runtime "$RUNTIME" --slices "$SLICES" --ramp 1 --json > "$out"
  jq -r --arg name "$1" --arg jobs "$5" '.comparisons[0] | if .unit == "IOPS"
      then "| \($name) | \(.rw) \(.bs) ×\($jobs) | \(.median_a / 1e6 * 1000 | round / 1000) M IOPS | \(.median_b / 1e6 * 1000 | round / 1000) M IOPS | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |"
      else "| \($name) | \(.rw) \(.bs) ×\($jobs) | \(.median_a / 1e9 * 100 | round / 100) GB/s | \(.median_b / 1e9 * 100 | round / 100) GB/s | \(.ratio_median * 1000 | round / 1000) [\(.ratio_min * 1000 | round / 1000)..\(.ratio_max * 1000 | round / 1000)] |" end' "$out"
}
rebuild() { # an unthrottled mirror rebuild onto a fresh, page-allocated namespace
  local n
  for n in b0 b1 bs; do
    pfnblock namespace create --path "$ns.$n" --size "$REBUILD_SIZE" --force >/dev/null
    fallocate -l "$(stat -c %s "$ns.$n")" "$ns.$n"   # tmpfs pages allocated: the copy, not page allocation, is timed
  done
  cat > "$ns.yaml" <<Y
devices:
  rb: mirror:pmem:$ns.b0+pmem:$ns.b1,name=rb
exports:
  - { name: rb, device: "@rb" }
listen: [ "unix:$ns.nbd" ]
Y
  # Not through the pfnblock() function: a function run in the background is a subshell, and $!
  # would be the subshell, whose kill leaves the server running. The script execs the binary.
  "$here/pfnblock" serve --config "$ns.yaml" --control "$ns.ctl" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 200); do [ -S "$ns.ctl" ] && break; sleep 0.1; done
  pfnblock ctl md rb speed 1000 2147483647 --control "$ns.ctl" >/dev/null
  pfnblock ctl md rb fail 1 --control "$ns.ctl" >/dev/null
  local sectors t0 t1
  sectors=$(pfnblock ctl md rb --json --control "$ns.ctl" | jq -r '.sectors')
  # The peer in the same run: raw pmem sequential 1 MiB writes to the spare (a rebuild reads as much as it writes).
  pfnblock bench --device "pmem:$ns.bs" --rw write --bs 1M --runtime 2 --ramp 0 --json > "$out"
  jq -r '"| raw pmem write 1M (the spare, just before) | | 2 s | \(.jobs[0].write.bw_bytes / 1e9 * 100 | round / 100) GB/s |"' "$out"
  t0=$(date +%s.%N)
  pfnblock ctl md rb add "pmem:$ns.bs" --watch --control "$ns.ctl" >/dev/null
  t1=$(date +%s.%N)
  pfnblock ctl md rb --json --control "$ns.ctl" | jq -e '.degraded == 0' >/dev/null || { echo "rebuild did not finish" >&2; exit 1; }
  # What the watch costs with nothing to follow (client start, first poll): subtracted in the last column.
  local i0 i1
  i0=$(date +%s.%N); pfnblock ctl md rb --watch --control "$ns.ctl" >/dev/null; i1=$(date +%s.%N)
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  awk -v s="$sectors" -v a="$t0" -v b="$t1" -v c="$i0" -v d="$i1" 'BEGIN { t = b - a; o = d - c; printf "| mirror rebuild, speed_limit_max raised | %.0f MiB per member | %.2f s (idle watch: %.2f s) | %.2f GB/s; %.2f GB/s without the idle watch (goal ≥ 1 GB/s) |\n", s * 512 / 1048576, t, o, s * 512 / t / 1e9, s * 512 / (t - o) / 1e9 }'
}

arrays() {
for n in raw m0 m1 r0 r1 r2 r3; do pfnblock namespace create --path "$ns.$n" --size "$SIZE" --force >/dev/null; done
bytes=$(pfnblock namespace info --path "$ns.raw" --json | jq -r .data_size)
pfnblock bench --device "pmem:$ns.raw" --rw write --bs 1M --size "$((bytes >> 20))M" --ramp 0 >/dev/null   # touch every page once
mirror="mirror:pmem:$ns.m0+pmem:$ns.m1"
raid5="raid5:pmem:$ns.r0+pmem:$ns.r1+pmem:$ns.r2+pmem:$ns.r3,chunk=64K"
echo "# RUNTIME=$RUNTIME SLICES=$SLICES SIZE=$SIZE; A = pmem:$ns.raw"
echo "| B | workload | pmem alone (A) | B | B/A, median of pairs [min..max] |"
echo "|---|---|---|---|---|"
case " $ARRAYS " in *" mirror "*)
  run mirror "$mirror" randread 4k 1
  run mirror "$mirror" randread 4k 2
  run mirror "$mirror" randwrite 4k 1
  run mirror "$mirror" write 1M 1 ;;
esac
case " $ARRAYS " in *" raid5 "*)
  run raid5 "$raid5" randread 4k 1
  run raid5 "$raid5" randwrite 4k 1
  run raid5 "$raid5" write 192k 1
  run raid5 "$raid5" read 1M 1 ;;
esac
rm -f -- "$ns".raw "$ns".m? "$ns".r?   # room in /dev/shm for the rebuild's namespaces
}

case " $ROWS " in *" arrays "*) arrays ;; esac
case " $ROWS " in *" floor "*)
  gcc -O2 -mavx512f -o "$ns.floor" "$here/bench/raid5-floor.c"
  echo "# the RAID5 4 KiB write's physical floor (bench/raid5-floor.c, SIZE per file), load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$ns.floor" "$(( $(numfmt --from=iec "$SIZE") >> 20 ))" 15 ;;
esac
case " $ROWS " in *" rebuild "*)
  echo "# REBUILD_SIZE=$REBUILD_SIZE: wall time of \`ctl md rb add SPARE --watch\` (client start and 250 ms polls included; an idle watch measures that part)"
  echo "| workload | data | time | rate |"
  echo "|---|---|---|---|"
  rebuild ;;
esac
