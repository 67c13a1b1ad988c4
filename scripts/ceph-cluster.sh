#!/usr/bin/env bash
# ceph-cluster.sh - a throwaway Ceph cluster on loopback for tests, benchmarks and trying PfnBlock's
# rbd: device without a real cluster.
#
#   scripts/ceph-cluster.sh start DIR [OSDS]   1 monitor and OSDS bluestore OSDs (default 1), pool "rbd"
#                                              replicated OSDS times (1 or 3); prints the ceph.conf path
#   scripts/ceph-cluster.sh stop DIR           kills the recorded daemons, removes DIR and the store files
#   scripts/ceph-cluster.sh status DIR         the recorded daemons and whether each still runs
#   scripts/ceph-cluster.sh kill-osd DIR N     SIGKILLs OSD N (tests: I/O must continue on the others)
#
# Everything lives under DIR (config, monitor and OSD data, pid files, admin sockets, logs) except the
# bluestore block files, which are sparse files in $CEPH_STORE (default /dev/shm) so the OSDs run at
# memory speed; they count against RAM only as far as data is written (cap: $CEPH_OSD_SIZE, 8G each:
# bluestore needs room beyond the data, e.g. for the RocksDB log that takes small writes first).
# Auth is off, every daemon binds 127.0.0.1 in its own port range ($CEPH_PORT, default derived from
# DIR), and daemons are started in the foreground by this script, so their pids are ours: teardown
# kills exactly those pids (also when start fails half-way). Ceph comes from Debian; it is installed
# (ceph-mon ceph-osd ceph-common, no recommends) when missing. Starts in about 12 s.
set -Eeuo pipefail
export LC_ALL=C

usage() { sed -n '3,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")

install_ceph() {
  command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v rbd >/dev/null && return
  echo "ceph-cluster: installing Ceph from Debian (ceph-mon ceph-osd ceph-common)" >&2
  local sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ceph-mon ceph-osd ceph-common >/dev/null
}

# Kills every daemon recorded under DIR (TERM, then KILL after 3 s), by pid only.
kill_recorded() {
  local pids=() f p
  for f in "$dir"/run/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    # Only a process that still runs the program we started (a recycled pid is left alone).
    if [ -n "$p" ] && grep -qa -- "--conf" "/proc/$p/cmdline" 2>/dev/null && grep -qa -- "$dir/ceph.conf" "/proc/$p/cmdline" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null && pids+=("$p")
    fi
    rm -f "$f"
  done
  local i
  for i in $(seq 30); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && return
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}

stop_cluster() {
  kill_recorded
  if [ -f "$dir/store-path" ]; then rm -rf "$(cat "$dir/store-path")"; fi
  rm -rf "$dir"
}

# Starts a daemon in the foreground (so its pid is ours) and records the pid.
run_daemon() {
  local name=$1; shift
  "$@" --conf "$dir/ceph.conf" -f >>"$dir/log/$name.stdout" 2>&1 &
  echo $! >"$dir/run/$name.pid"
}

# Each cluster gets $span TCP ports from 21000 up: the monitor's two (v2, v1), then the daemons'
# range. An OSD binds eight (public, cluster and two heartbeat addresses, each v2 and v1), so 48
# hold 6 OSDs. (With 20 the range held two: a third OSD could not bind, never came up, and the
# three-OSD test ran on two, where killing one leaves fewer than min_size and I/O stops.)
span=50 slots=160
# True when nothing listens on TCP ports $1 .. $1+$span-1 (read from /proc: no ss needed).
port_range_free() {
  local hex p
  for hex in $(awk 'NR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    p=$((16#$hex))
    if [ "$p" -ge "$1" ] && [ "$p" -le $(($1 + span - 1)) ]; then return 1; fi
  done
  return 0
}

start_cluster() {
  local osds=${1:-1}
  case "$osds" in 1|2|3|4|5) ;; *) echo "ceph-cluster: OSDS must be 1..5" >&2; exit 2 ;; esac
  [ -e "$dir/ceph.conf" ] && { echo "ceph-cluster: $dir already holds a cluster (stop it first)" >&2; exit 1; }
  install_ceph
  # Port range: the one derived from DIR, or the next whose $span ports nothing listens on. Two
  # clusters must never share one: a second monitor that cannot bind would leave this script
  # configuring the first cluster (it once set another cluster's pool to size 3). The choice is
  # made under a lock held until this cluster's monitor answers with this cluster's fsid.
  exec 8>"${CEPH_STORE:-/dev/shm}/pfnblock-ceph-ports.lock"
  flock 8
  local port=${CEPH_PORT:-}
  if [ -z "$port" ]; then
    local slot=$(( $(printf %s "$dir" | cksum | cut -d' ' -f1) % slots )) k
    for k in $(seq 0 $((slots - 1))); do
      port=$((21000 + (slot + k) % slots * span))
      port_range_free "$port" && break
    done
  fi
  local store="${CEPH_STORE:-/dev/shm}/pfnblock-ceph.$(printf %s "$dir" | cksum | cut -d' ' -f1)"
  local size=$((osds >= 3 ? 3 : 1)) minsize=$((osds >= 3 ? 2 : 1))
  mkdir -p "$dir"/{run,log,mon,osd} "$store"
  echo "$store" >"$dir/store-path"
  trap 'echo "ceph-cluster: start failed; logs were in $dir/log (removed)" >&2; tail -n 20 "$dir"/log/* >&2 2>/dev/null || true; stop_cluster' ERR INT TERM

  local fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$dir/ceph.conf" <<EOF
# Throwaway test cluster made by scripts/ceph-cluster.sh; stop it with: scripts/ceph-cluster.sh stop $dir
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_port_min = $((port + 2))
ms_bind_port_max = $((port + span - 1))
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $dir/run
admin_socket = $dir/run/\$cluster-\$name.asok
log_file = $dir/log/\$cluster-\$name.log
mon_cluster_log_file = $dir/log/\$cluster.log
mon_data = $dir/mon/\$cluster-\$id
osd_data = $dir/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_path = $store/\$cluster-\$id.block
bluestore_block_size = ${CEPH_OSD_SIZE:-8G}
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 939524096
osd_pool_default_size = $size
osd_pool_default_min_size = $minsize
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
# A SIGKILLed client's watch (and so its exclusive lock) expires after 5 s instead of 30.
osd_client_watch_timeout = 5
# A killed OSD is marked down within a few seconds, so I/O moves on to the other replicas.
osd_heartbeat_interval = 1
osd_heartbeat_grace = 4
mon_osd_min_down_reporters = 1
[client]
# Clients ping their watches every objecter tick (5 s by default): with the 5 s watch timeout
# above, a loaded machine would let a live client's watch (and lock) lapse. Ping every second.
objecter_tick_interval = 1
# One admin socket per client process, or concurrent clients collide on one file.
admin_socket = $dir/run/\$cluster-\$name.\$pid.\$cctid.asok
log_file = $dir/log/\$cluster-\$name.\$pid.log
client_mount_timeout = 15
EOF
  local c=(--conf "$dir/ceph.conf")
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]" "$dir/monmap" >/dev/null
  ceph-mon "${c[@]}" --mkfs -i a --monmap "$dir/monmap" >>"$dir/log/mkfs.log" 2>&1
  run_daemon mon.a ceph-mon -i a
  local answered; answered=$(timeout 30 ceph "${c[@]}" fsid 2>/dev/null || true)
  if [ "$answered" != "$fsid" ]; then
    echo "ceph-cluster: the monitor on 127.0.0.1:$port answers as cluster '${answered:-nothing}', not this one ($fsid): is the port taken?" >&2
    false
  fi
  flock -u 8
  local i uuid id
  for i in $(seq 0 $((osds - 1))); do
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(timeout 60 ceph "${c[@]}" osd new "$uuid" 2>>"$dir/log/mkfs.log")
    mkdir -p "$dir/osd/ceph-$id"
    ceph-osd "${c[@]}" -i "$id" --mkfs --osd-uuid "$uuid" >>"$dir/log/mkfs.log" 2>&1
    run_daemon "osd.$id" ceph-osd -i "$id"
  done
  # Every OSD up before the cluster is handed out. The probe write below needs only min_size of
  # them, and on a loaded machine the last OSD can still be booting then: a test that kills one of
  # three (size 3, min_size 2) while only two are up leaves one, and every write blocks until the
  # client's op timeout (seen as EIO from rbd: after a 60 s stall).
  local up=0
  for i in $(seq 240); do
    up=$(timeout 30 ceph "${c[@]}" osd stat -f json 2>/dev/null | sed -n 's/.*"num_up_osds":\([0-9]*\).*/\1/p')
    [ "${up:-0}" -eq "$osds" ] && break
    sleep 0.5
  done
  [ "${up:-0}" -eq "$osds" ] || { echo "ceph-cluster: only ${up:-0} of $osds OSDs came up within 2 minutes" >&2; false; }
  timeout 60 ceph "${c[@]}" osd pool create rbd 8 8 >/dev/null 2>&1
  timeout 60 ceph "${c[@]}" osd pool set rbd size "$size" --yes-i-really-mean-it >/dev/null 2>&1
  timeout 60 ceph "${c[@]}" osd pool set rbd min_size "$minsize" >/dev/null 2>&1
  timeout 60 rbd "${c[@]}" pool init rbd >/dev/null 2>&1
  # "All PGs active" cannot be read without a manager: a real write that completes says it.
  timeout 60 rados "${c[@]}" -p rbd put ceph-cluster-probe "$dir/ceph.conf"
  timeout 60 rados "${c[@]}" -p rbd rm ceph-cluster-probe
  trap - ERR INT TERM
  echo "$dir/ceph.conf"
}

status_cluster() {
  [ -f "$dir/ceph.conf" ] || { echo "ceph-cluster: no cluster in $dir" >&2; exit 1; }
  local f p down=0
  for f in "$dir"/run/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null; then echo "$(basename "$f" .pid) pid $p running"; else echo "$(basename "$f" .pid) pid $p gone"; down=1; fi
  done
  return $down
}

case "$cmd" in
  start) start_cluster "${3:-1}" ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
  kill-osd)
    [ $# -ge 3 ] || usage
    p=$(cat "$dir/run/osd.$3.pid")
    kill -KILL "$p"
    rm -f "$dir/run/osd.$3.pid" ;;
  *) usage ;;
esac
