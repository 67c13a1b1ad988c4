#!/usr/bin/env bash
# rbd-hops.sh - where a QD1 4 KiB random write's time goes in an NBD server over librbd:
# `pfnblock serve rbd:` and `qemu-nbd` (qemu's rbd driver, --cache=none), alternating ROUNDS times
# on one throwaway single-OSD cluster (scripts/ceph-cluster.sh), each under fio's nbd engine for
# RUNTIME seconds while `perf record` takes syscall and scheduler tracepoints of the server for
# 2 s (no PMU needed; needs root). bench/rbd-hops.py turns each capture into per-request stages:
# submit (request received -> librbd's messenger sends it to the OSD), OSD (send -> reply read),
# complete (OSD reply read -> NBD reply sent), the client's turnaround, and context switches in
# the server per request. Prints fio's IOPS too.
# Env: ROUNDS (3), RUNTIME (5), IMAGE_SIZE (512M), CONF (an existing cluster's ceph.conf with
#      pool rbd; default: start one and stop it on exit).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}; RUNTIME=${RUNTIME:-5}; IMAGE_SIZE=${IMAGE_SIZE:-512M}
dir="/dev/shm/pfnblock-ceph-hops.$$"
work=$(mktemp -d /tmp/rbd-hops.XXXXXX)
image="hops$$"
pid=""
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  [ -n "${conf:-}" ] && rbd --conf "$conf" rm --no-progress "rbd/$image" >/dev/null 2>&1 || true
  [ -z "${CONF:-}" ] && "$here/scripts/ceph-cluster.sh" stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
command -v perf >/dev/null || { echo "rbd-hops: perf is required" >&2; exit 1; }
"$here/pfnblock" --help >/dev/null # build once
conf=${CONF:-$("$here/scripts/ceph-cluster.sh" start "$dir" | tail -1)}
rbd --conf "$conf" create --size "$IMAGE_SIZE" "rbd/$image"
rbd --conf "$conf" bench --io-type write --io-size 4M --io-threads 4 --io-total "$IMAGE_SIZE" --io-pattern seq "rbd/$image" >/dev/null
port=$((32000 + $$ % 2000))
events=syscalls:sys_exit_recvfrom,syscalls:sys_exit_recvmsg,syscalls:sys_enter_sendmsg,syscalls:sys_exit_read,sched:sched_switch

measure() { # measure NAME: fio against the server $pid on $port, perf on it meanwhile
  fio --ioengine=nbd --uri="nbd://127.0.0.1:$port/disk" --name=job --rw=randwrite --bs=4k --iodepth=1 \
    --runtime="$RUNTIME" --time_based --size="$IMAGE_SIZE" --randrepeat=0 --output-format=json >"$work/fio.json" 2>/dev/null &
  local f=$!
  sleep 2
  timeout 2 perf record -q -o "$work/perf.data" -p "$pid" -e "$events" >/dev/null 2>&1 || true
  wait "$f"
  local iops; iops=$(python3 -c 'import json,sys; t=open(sys.argv[1]).read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"]))' "$work/fio.json")
  echo "== $1 round $r: fio $iops IOPS, load $(cut -d' ' -f1 /proc/loadavg)"
  perf script -i "$work/perf.data" 2>/dev/null >"$work/perf.txt"
  python3 "$here/bench/rbd-hops.py" "$work/perf.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
wait_port() { for _ in $(seq 300); do nbdinfo "nbd://127.0.0.1:$port/disk" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); Ceph $(ceph --version | cut -d' ' -f3); 4 KiB randwrite QD1"
for r in $(seq "$ROUNDS"); do
  "$here/artifacts/cli/PfnBlock.Cli" serve --export "disk=rbd:rbd/$image,conf=$conf,lock-wait=20" --listen "tcp:127.0.0.1:$port" --control none >"$work/serve.log" 2>&1 &
  pid=$!; wait_port; measure "pfnblock serve"
  qemu-nbd -f raw --cache=none -b 127.0.0.1 -p "$port" -x disk --persistent "rbd:rbd/$image:conf=$conf" >"$work/qemu.log" 2>&1 &
  pid=$!; wait_port; measure "qemu-nbd"
done
