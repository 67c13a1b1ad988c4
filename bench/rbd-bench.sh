#!/usr/bin/env bash
# rbd-bench.sh - an RBD image on a throwaway single-OSD cluster (scripts/ceph-cluster.sh, bluestore
# in /dev/shm), driven in one run by: fio's rbd engine with librbd's cache off and on, qemu-nbd
# (qemu's rbd driver, --cache=none: librbd cache off) under fio's nbd engine, `pfnblock serve rbd:`
# under the same fio nbd engine, and `pfnblock bench --device rbd:` in process. Each workload runs
# on every client before the next workload starts, so drift in machine load hits all alike.
# Prints a markdown table of IOPS (median of REPS runs) and the ratio serve/qemu-nbd.
# Env: REPS (3), RUNTIME (8), RAMP (2), IMAGE_SIZE (512M), WORKLOADS ("randwrite:1 randwrite:16
#      randread:1 randread:16", RW:IODEPTH at 4 KiB).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; RUNTIME=${RUNTIME:-8}; RAMP=${RAMP:-2}; IMAGE_SIZE=${IMAGE_SIZE:-512M}
WORKLOADS=${WORKLOADS:-randwrite:1 randwrite:16 randread:1 randread:16}
dir="/dev/shm/pfnblock-ceph-bench.$$"
work=$(mktemp -d /tmp/rbd-bench.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  "$here/scripts/ceph-cluster.sh" stop "$dir" >/dev/null 2>&1 || true
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
      for _ in $(seq 100); do nbdinfo "nbd://127.0.0.1:$port/disk" >/dev/null 2>&1 && break; sleep 0.1; done
      fio --ioengine=nbd --uri="nbd://127.0.0.1:$port/disk" $(fio_common "$rw" "$qd") >"$out"
      stop_pid "$p"
      fio_iops "$rw" "$out" ;;
    pfnblock-serve)
      "$here/artifacts/cli/PfnBlock.Cli" serve --export "disk=rbd:rbd/bench,conf=$conf,lock-wait=20" --listen "tcp:127.0.0.1:$port" >"$work/serve.log" 2>&1 &
      p=$!; pids+=("$p")
      wait_serving "$work/serve.log" "$p"
      fio --ioengine=nbd --uri="nbd://127.0.0.1:$port/disk" $(fio_common "$rw" "$qd") >"$out"
      stop_pid "$p"
      fio_iops "$rw" "$out" ;;
    pfnblock-bench)
      "$here/pfnblock" bench --device "rbd:rbd/bench,conf=$conf,lock-wait=20" --rw "$rw" --bs 4k --iodepth "$qd" \
        --runtime "$RUNTIME" --ramp "$RAMP" --json >"$out"
      fio_iops "$rw" "$out" ;;
  esac
}

clients="fio-rbd-nocache fio-rbd-cache qemu-nbd pfnblock-serve pfnblock-bench"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); Ceph $(ceph --version | cut -d' ' -f3); image $IMAGE_SIZE, 4 KiB, ${RUNTIME}s + ${RAMP}s ramp, median of $REPS"
echo
echo "| workload | fio rbd (cache off) | fio rbd (cache on) | qemu-nbd + fio nbd | pfnblock serve + fio nbd | pfnblock bench (in process) | serve / qemu-nbd |"
echo "|---|---|---|---|---|---|---|"
for w in $WORKLOADS; do
  rw=${w%%:*}; qd=${w##*:}
  declare -A vals=()
  for c in $clients; do : >"$work/$c"; done
  for _ in $(seq "$REPS"); do
    for c in $clients; do run_client "$c" "$rw" "$qd" >>"$work/$c"; done
  done
  row="| 4k $rw QD$qd"
  for c in $clients; do vals[$c]=$(median <"$work/$c"); row+=" | ${vals[$c]}"; done
  row+=" | $(awk -v a="${vals[pfnblock-serve]}" -v b="${vals[qemu-nbd]}" 'BEGIN {printf "%.2f", a / b}') |"
  echo "$row"
done
