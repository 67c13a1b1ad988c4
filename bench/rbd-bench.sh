#!/usr/bin/env bash
# rbd-bench.sh - an RBD image on a throwaway single-OSD cluster (scripts/ceph-cluster.sh, bluestore
# in /dev/shm), driven in one run by: fio's rbd engine with librbd's cache off and on, qemu-nbd
# (qemu's rbd driver, --cache=none: librbd cache off) under fio's nbd engine, `pfnblock serve rbd:`
# under the same fio nbd engine, `pfnblock bench --device rbd:` in process, and the same two
# PfnBlock clients with a pmem writecache in front of the image (a fresh CACHE-sized namespace in
# /dev/shm for every run, so every run starts with an empty cache; the in-process run lasts
# WC_RUNTIME seconds, no ramp, so it measures the cache while it has room). Each workload runs on
# every client before the next workload starts (REPS rounds, clients interleaved), so drift in
# machine load hits all alike. Prints a markdown table of IOPS (median of REPS runs) and ratios,
# then every round's figures and serve / qemu-nbd within each round;
# with TIMELINE=FILE.svg, then plots IOPS over time as a writecache over the image fills
# (bench/writecache-timeline.sh with the image as origin).
# Env: REPS (3), RUNTIME (8), RAMP (2), IMAGE_SIZE (512M), CACHE (3G), WC_RUNTIME (2), CLIENTS
#      (all), WORKLOADS ("randwrite:1 randwrite:16 randread:1 randread:16", RW:IODEPTH at 4 KiB),
#      TIMELINE (unset), TIMELINE_RUNTIME (30), TIMELINE_CACHE (256M).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; RUNTIME=${RUNTIME:-8}; RAMP=${RAMP:-2}; IMAGE_SIZE=${IMAGE_SIZE:-512M}; CACHE=${CACHE:-3G}; WC_RUNTIME=${WC_RUNTIME:-2}
WORKLOADS=${WORKLOADS:-randwrite:1 randwrite:16 randread:1 randread:16}
dir="/dev/shm/pfnblock-ceph-bench.$$"
work=$(mktemp -d /tmp/rbd-bench.XXXXXX)
cache=/dev/shm/pfnblock-rbd-bench-cache.$$
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  "$here/scripts/ceph-cluster.sh" stop "$dir" >/dev/null 2>&1 || true
  rm -f -- "$cache"
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v fio >/dev/null || { echo "rbd-bench: fio is required" >&2; exit 1; }
[ -f /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] || { echo "rbd-bench: qemu-nbd's rbd driver needs qemu-block-extra" >&2; exit 1; }
"$here/pfnblock" --help >/dev/null # build once

conf=$("$here/scripts/ceph-cluster.sh" start "$dir" | tail -1)
export CEPH_CONF=$conf
rbd create --size "$IMAGE_SIZE" rbd/bench
# Written once in full, so reads hit real objects.
rbd bench --io-type write --io-size 4M --io-threads 4 --io-total "$IMAGE_SIZE" --io-pattern seq rbd/bench >/dev/null
port=$((30000 + $$ % 2000))
# The writecache over the image: default watermarks (50/45), so write-back starts at half the cache.
echo "0 $(( $(rbd info --format json rbd/bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])') / 512 )) writecache p rbd:rbd/bench,conf=$conf,lock-wait=20 pmem:$cache 4096 0" >"$work/wc.table"
fresh_cache() { # an empty cache for every run: a cache that filled in the last run would measure write-back
  rm -f -- "$cache"
  "$here/pfnblock" namespace create --path "$cache" --size "$CACHE" --force >/dev/null
  fallocate -l "$(stat -c %s "$cache")" "$cache"
}

stop_pid() { # SIGTERM, then SIGKILL after 10 s (a client stuck in librbd ignores TERM)
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
fio_iops() { # fio_iops RW JSONFILE
  # fio's nbd engine prints a line before the JSON document.
  python3 -c 'import json,sys; t=open(sys.argv[2]).read(); j=json.loads(t[t.index("{"):])["jobs"][0]; print(round(j["read" if "read" in sys.argv[1] else "write"]["iops"]))' "$1" "$2"
}
fio_common() { echo --max_latency=30s --name=job --rw="$1" --bs=4k --iodepth="$2" --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based --size="$IMAGE_SIZE" --output-format=json --randrepeat=0; }

wait_serving() { # wait_serving LOG PID
  for _ in $(seq 300); do
    grep -q '^serving' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$1" >&2; return 1; }
    sleep 0.1
  done
  return 1
}

run_client() { # run_client CLIENT RW QD -> IOPS
  local client=$1 rw=$2 qd=$3 out="$work/out.json" p
  case "$client" in
    fio-rbd-nocache|fio-rbd-cache)
      local cache=false; [ "$client" = fio-rbd-cache ] && cache=true
      CEPH_ARGS="--rbd_cache=$cache" fio --ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench $(fio_common "$rw" "$qd") >"$out"
      fio_iops "$rw" "$out" ;;
    qemu-nbd)
      qemu-nbd -f raw --cache=none -b 127.0.0.1 -p "$port" -x disk --persistent "rbd:rbd/bench:conf=$conf" >"$work/qemu.log" 2>&1 &
      p=$!; pids+=("$p")
      for _ in $(seq 600); do nbdinfo "nbd://127.0.0.1:$port/disk" >/dev/null 2>&1 && break; sleep 0.1; done
      fio --ioengine=nbd --uri="nbd://127.0.0.1:$port/disk" $(fio_common "$rw" "$qd") >"$out"
      stop_pid "$p"
      fio_iops "$rw" "$out" ;;
    pfnblock-serve|pfnblock-serve-wc)
      local dev="rbd:rbd/bench,conf=$conf,lock-wait=20"
      [ "$client" = pfnblock-serve-wc ] && { fresh_cache; dev="table:$work/wc.table"; }
      "$here/artifacts/cli/PfnBlock.Cli" serve --export "disk=$dev" --listen "tcp:127.0.0.1:$port" --control none >"$work/serve.log" 2>&1 &
      p=$!; pids+=("$p")
      wait_serving "$work/serve.log" "$p"
      fio --ioengine=nbd --uri="nbd://127.0.0.1:$port/disk" $(fio_common "$rw" "$qd") >"$out"
      stop_pid "$p"
      fio_iops "$rw" "$out" ;;
    pfnblock-bench)
      "$here/pfnblock" bench --device "rbd:rbd/bench,conf=$conf,lock-wait=20" --rw "$rw" --bs 4k --iodepth "$qd" \
        --runtime "$RUNTIME" --ramp "$RAMP" --json >"$out"
      fio_iops "$rw" "$out" ;;
    pfnblock-bench-wc)
      fresh_cache
      "$here/pfnblock" bench --device "table:$work/wc.table" --rw "$rw" --bs 4k --iodepth "$qd" \
        --runtime "$WC_RUNTIME" --ramp 0 --json >"$out"
      fio_iops "$rw" "$out" ;;
  esac
}

rounds=()
clients=${CLIENTS:-fio-rbd-nocache fio-rbd-cache qemu-nbd pfnblock-serve pfnblock-bench pfnblock-serve-wc pfnblock-bench-wc}
ratio() { awk -v a="${vals[$1]:-}" -v b="${vals[$2]:-}" 'BEGIN {if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b}'; }
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); Ceph $(ceph --version | cut -d' ' -f3); image $IMAGE_SIZE, 4 KiB, ${RUNTIME}s + ${RAMP}s ramp (cached in process: ${WC_RUNTIME}s, no ramp, cache $CACHE), median of $REPS"
echo "# clients: $clients"
echo
echo "| workload | $(echo "$clients" | sed 's/ / | /g') | serve / qemu-nbd | cached serve / qemu-nbd | cached serve / fio rbd cache on | cached bench / bench |"
echo "|---|$(for _ in $clients; do printf -- '---|'; done)---|---|---|---|"
for w in $WORKLOADS; do
  rw=${w%%:*}; qd=${w##*:}
  declare -A vals=()
  for c in $clients; do : >"$work/$c"; done
  for _ in $(seq "$REPS"); do
    for c in $clients; do run_client "$c" "$rw" "$qd" >>"$work/$c"; done
  done
  row="| 4k $rw QD$qd"
  for c in $clients; do vals[$c]=$(median <"$work/$c"); row+=" | ${vals[$c]}"; done
  row+=" | $(ratio pfnblock-serve qemu-nbd) | $(ratio pfnblock-serve-wc qemu-nbd) | $(ratio pfnblock-serve-wc fio-rbd-cache) | $(ratio pfnblock-bench-wc pfnblock-bench) |"
  echo "$row"
  # Every round's figure, and serve / qemu-nbd within each round (the two ran back to back, so a
  # round's ratio is less exposed to drift in machine load than the ratio of the medians).
  rounds+=("# rounds, 4k $rw QD$qd:$(for c in $clients; do printf ' %s %s;' "$c" "$(paste -sd' ' "$work/$c")"; done)")
  if [ -s "$work/qemu-nbd" ] && [ -s "$work/pfnblock-serve" ]; then
    rounds+=("#   serve / qemu-nbd per round: $(paste -d' ' "$work/pfnblock-serve" "$work/qemu-nbd" | awk '{printf "%.2f ", $1 / $2}')(median $(paste -d' ' "$work/pfnblock-serve" "$work/qemu-nbd" | awk '{printf "%.4f\n", $1 / $2}' | median))")
  fi
  unset vals
done
printf '%s\n' "${rounds[@]}"
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -n "${TIMELINE:-}" ]; then
  echo
  ORIGIN_SPEC="rbd:rbd/bench,conf=$conf,lock-wait=20" ORIGIN_BYTES=$(rbd info --format json rbd/bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])') \
    TITLE="4 KiB random writes through a pmem write cache over a Ceph RBD image" \
    RUNTIME=${TIMELINE_RUNTIME:-30} CACHE=${TIMELINE_CACHE:-256M} SVG=$TIMELINE "$here/bench/writecache-timeline.sh"
fi
