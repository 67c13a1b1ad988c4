#!/usr/bin/env bash
# nbd-bench.sh - pfnblock serve (Release build, a pmem namespace on /dev/shm) against nbdkit's
# memory plugin, in one run, both on unix sockets only. Same fio commands as
# ../shared/bench/peers/06-nbdkit-memory.sh (fio nbd engine: 4 KiB randread/randwrite at
# iodepth 1 and 32, 1 MiB sequential at iodepth 8) and nbdcopy of COPY_SIZE bytes each way.
# Each workload runs on nbdkit and then on pfnblock before the next one starts, so drift in
# machine load hits both alike. Server CPU time comes from /proc/PID/stat.
# Env: REPS (3), RUNTIME (10), RAMP (2), SIZE (4G, fio region), COPY_SIZE (1G), NJOBS ("1 2"
#      numjobs for the 4k qd32 rows), RESULTS (TSV to append to), REPORT (markdown table file),
#      SERVE_ARGS (more flags for pfnblock serve, e.g. "--splice-reads 0"),
#      ROWS (space-separated globs over the workload names of the summary table, e.g.
#      ROWS="4k-*-qd1-1j nbdcopy-*"; default: every row. Any nbdcopy row also runs the
#      first copy, which fills the exports),
#      PEER_ARGS (empty): flags, e.g. "--busy-poll 20": the fio rows also run on a third server,
#      "pfnpeer" (pfnblock serve SERVE_ARGS PEER_ARGS, its own namespace), after pfnblock, and a
#      second table sets it against pfnblock in the same run; SPLICE_PEER=SIZE is short for
#      PEER_ARGS="--splice-reads SIZE",
#      FLOOR (0): 1 runs the fio rows on a fourth server too, bench/nbd-floor.c (built with gcc):
#      only the system calls and copies any memory-backed NBD server must make, on a /dev/shm
#      file of the same size, after pfnblock on every row; a third table sets the CPU per
#      request of nbdkit and pfnblock against it (the share of the kernel and the copies);
#      FLOOR_ARGS="--nt" makes its writes non-temporal stores and a fence each, as pmem's,
#      FILL (0): 1 writes every fio export whole (1 MiB sequential, not measured) before the rows,
#      so reads meet data rather than holes,
#      QD1_PIN (same): how the iodepth-1 rows place the programs. "same": both servers (every
#      thread, for the row only) and fio on cpu QD1_CPU (0), and the same rows unpinned beside
#      them as 4k-*-qd1-1j-unpinned (QD1_UNPINNED=0 drops those); "none": unpinned only.
#      Why: this guest's idle driver halts an idle vCPU at once (cpuidle-haltpoll with
#      guest_halt_poll_ns=0) and waking it costs the host ~35 us, so a QD1 ping-pong between
#      two vCPUs measures that wake-up (twice per request) and where the scheduler put the
#      threads, not the server. On one cpu no vCPU wakes between request and reply.
SCRIPT_NAME=nbd-bench
# ---- common helpers (inlined in every peers script so each runs on its own) ----
set -euo pipefail
export LC_ALL=C
REPS=${REPS:-3}          # repetitions per workload; median [min..max] is reported
RUNTIME=${RUNTIME:-10}   # measured seconds per fio run
RAMP=${RAMP:-2}          # fio ramp_time seconds (run but not measured)
RESULTS=${RESULTS:-}     # optional TSV file that summary rows are appended to
KEEP=${KEEP:-}           # KEEP=1 keeps fio JSON under $WORK (printed at exit)
WORK=$(mktemp -d /tmp/peers.XXXXXX)
CLEANUP_FILES=()
CLEANUP_PIDS=()
FIO_PID=
cleanup() {
  local p f
  for p in $FIO_PID "${CLEANUP_PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  done
  for f in "${CLEANUP_FILES[@]}"; do rm -rf -- "$f"; done
  if [ -n "$KEEP" ]; then echo "# kept raw output in $WORK" >&2; else rm -rf -- "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

APT_UPDATED=
apt_install() { # apt_install PKG...
  [ -n "$APT_UPDATED" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need() { # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || { echo "# installing $2" >&2; apt_install "$2"; }
}
need_pkg() { # need_pkg DEBIAN_PACKAGE  (libraries/headers)
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || { echo "# installing $1" >&2; apt_install "$1"; }
}
need jq jq
need fio fio

stats() { # numbers on stdin -> "median min max"
  sort -g | awk '{a[NR]=$1} END { if (NR == 0) { print "nan nan nan"; exit }
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "%.4g %.4g %.4g\n", m, a[1], a[NR] }'
}
col() { awk -v c="$1" '{print $c}' "$2" | stats; }   # col N FILE -> stats of column N
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
emit() { # emit LABEL TEXT...   one summary row (stdout + optional RESULTS tsv)
  local label=$1; shift
  printf 'RESULT  %-34s %s\n' "$label" "$*"
  [ -z "$RESULTS" ] || printf '%s\t%s\t%s\n' "$SCRIPT_NAME" "$label" "$*" >> "$RESULTS"
}

# fio_rep LABEL FIO-ARGS...
#   Runs fio REPS times with --runtime/--ramp_time/--time_based/--group_reporting,
#   prints IOPS, MiB/s, mean and p99 total latency (submit to completion; median [min..max]),
#   fio's CPU% (usr+sys, mean per job) and, if SERVER_PID is set, the server
#   process' CPU% (of one core, over ramp+runtime) and its thread count mid-run.
fio_rep() {
  local label=$1; shift
  local rows="$WORK/$label.rows" i f fp c0 c1 t0 t1 thr srv
  local hz; hz=$(getconf CLK_TCK)
  echo "## $label"
  echo "CMD: $(env | grep -E '^PMEM_' | sort | tr '\n' ' ')${FIO_TASKSET:+$FIO_TASKSET }fio $* --runtime=$RUNTIME --ramp_time=$RAMP --time_based --group_reporting --lat_percentiles=1 --output-format=json"
  : > "$rows"
  for i in $(seq 1 "$REPS"); do
    f="$WORK/$label.$i.json"
    thr=-; srv=-
    if [ -n "${SERVER_PID:-}" ]; then c0=$(proc_ticks "$SERVER_PID"); fi
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # FIO_TASKSET is "taskset -c N" or empty
    ${FIO_TASKSET:-} fio "$@" --runtime="$RUNTIME" --ramp_time="$RAMP" --time_based --group_reporting --lat_percentiles=1 \
        --output-format=json --output="$f" >"$WORK/fio.out" 2>&1 &
    fp=$!; FIO_PID=$fp
    if [ -n "${SERVER_PID:-}" ]; then
      sleep $((RAMP + RUNTIME / 2))
      thr=$(ls "/proc/$SERVER_PID/task" 2>/dev/null | wc -l)
    fi
    if ! wait "$fp"; then FIO_PID=; echo "fio failed:"; cat "$WORK/fio.out"; return 1; fi
    FIO_PID=
    t1=$(date +%s.%N)
    if [ -n "${SERVER_PID:-}" ]; then
      c1=$(proc_ticks "$SERVER_PID")
      srv=$(awk -v a="$c0" -v b="$c1" -v h="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.0f", 100*(b-a)/h/(t1-t0)}')
    fi
    if [ "$(jq '.jobs[0].error' "$f")" != 0 ]; then echo "fio job error:"; cat "$WORK/fio.out"; jq '.jobs[0].error' "$f"; return 1; fi
    jq -r --arg thr "$thr" --arg srv "$srv" '.jobs[0] as $j
      | (if $j.read.iops > 0 then $j.read else $j.write end) as $d
      | [($j.read.iops + $j.write.iops), (($j.read.bw_bytes + $j.write.bw_bytes) / 1048576),
         ($d.lat_ns.mean / 1000), ((($d.lat_ns.percentile // $d.clat_ns.percentile // {})["99.000000"] // 0) / 1000),
         ($j.usr_cpu + $j.sys_cpu), $srv, $thr] | @tsv' "$f" >> "$rows"
    awk -v i="$i" '{printf "  rep %s: IOPS=%.0f MiB/s=%.1f lat_us=%.2f p99_us=%.2f fio_cpu%%=%.0f srv_cpu%%=%s srv_threads=%s\n", i, $1, $2, $3, $4, $5, $6, $7}' <(tail -n1 "$rows")
  done
  read -r im in ix <<<"$(col 1 "$rows")"
  read -r bm bn bx <<<"$(col 2 "$rows")"
  read -r lm ln lx <<<"$(col 3 "$rows")"
  read -r pm _ _ <<<"$(col 4 "$rows")"
  read -r cm _ _ <<<"$(col 5 "$rows")"
  srv=$(awk '$6 != "-" {print $6}' "$rows" | stats | awk '{print $1}'); [ "$srv" != nan ] || srv=-
  thr=$(awk '$7 != "-" {print $7}' "$rows" | sort -g | tail -n1)
  emit "$label" "IOPS=$im [$in..$ix] MiB/s=$bm [$bn..$bx] lat_us=$lm [$ln..$lx] p99_us=$pm fio_cpu%=$cm srv_cpu%=${srv:--} srv_threads=${thr:--}"
}
# ---- end of common helpers ----
need nbdkit nbdkit
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
here=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${SIZE:-4G}
COPY_SIZE=${COPY_SIZE:-1G}
NJOBS=${NJOBS:-1 2}
REPORT=${REPORT:-}
ROWS=${ROWS:-*}
want() { # want WORKLOAD : true if a ROWS glob matches it
  local - g
  set -f # split ROWS into words without expanding them against files
  for g in $ROWS; do
    # shellcheck disable=SC2053 # the glob is meant to match
    [[ $1 == $g ]] && return 0
  done
  return 1
}
SIZE_MIB=$(numfmt --from=iec "$SIZE" | awk '{print int($1 / 1048576)}')
COPY_MIB=$(numfmt --from=iec "$COPY_SIZE" | awk '{print int($1 / 1048576)}')
EXPORT_BYTES=
SRC=/dev/shm/nbd-bench-src.$$.img
NS=/dev/shm/nbd-bench-pmem.$$
CLEANUP_FILES+=("$SRC" "$SRC.chunk" "$NS" "$NS.splice")
[ -n "$RESULTS" ] || RESULTS="$WORK/results.tsv"

wait_server() { # wait_server URI
  local i
  for i in $(seq 1 300); do nbdinfo --size "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "server at $1 did not come up"; return 1
}
# copy_rep LABEL BYTES SRC DST : nbdcopy REPS times, GB/s = BYTES/elapsed (as in the peers scripts)
copy_rep() {
  local label=$1 bytes=$2 src=$3 dst=$4; shift 4
  local rows="$WORK/$label.rows" i t0 t1 c0 c1 hz tm
  hz=$(getconf CLK_TCK)
  echo "## $label"
  echo "CMD: nbdcopy $* $src $dst"
  : > "$rows"
  for i in $(seq 1 "$REPS"); do
    c0=$(proc_ticks "$SERVER_PID"); t0=$(date +%s.%N)
    { TIMEFORMAT='%U %S'; time timeout 300 nbdcopy "$@" "$src" "$dst" >"$WORK/nbdcopy.out" 2>&1; } 2>"$WORK/time.out" \
      || { echo "nbdcopy failed:"; cat "$WORK/nbdcopy.out"; return 1; }
    tm=$(tail -n1 "$WORK/time.out")
    t1=$(date +%s.%N); c1=$(proc_ticks "$SERVER_PID")
    awk -v b="$bytes" -v t0="$t0" -v t1="$t1" -v a="$c0" -v z="$c1" -v h="$hz" -v tm="$tm" 'BEGIN {
      split(tm, u, " "); el = t1 - t0
      printf "%.3f %.3f %.0f %.0f\n", b / el / 1e9, el, 100 * (z - a) / h / el, 100 * (u[1] + u[2]) / el }' >> "$rows"
    awk -v i="$i" '{printf "  rep %s: GB/s=%.3f secs=%.3f srv_cpu%%=%s nbdcopy_cpu%%=%s\n", i, $1, $2, $3, $4}' <(tail -n1 "$rows")
  done
  read -r gm gn gx <<<"$(col 1 "$rows")"
  read -r sm _ _ <<<"$(col 3 "$rows")"
  read -r cm _ _ <<<"$(col 4 "$rows")"
  emit "$label" "GB/s=$gm [$gn..$gx] srv_cpu%=$sm nbdcopy_cpu%=$cm"
}

# ---- servers ----
echo "# building pfnblock (Release)"
"$here/pfnblock" --help >/dev/null
KSOCK="$WORK/nbdkit.sock"; PSOCK="$WORK/pfnblock.sock"
KURI="nbd+unix:///?socket=$KSOCK"; PURI="nbd+unix:///pmem0?socket=$PSOCK"
KPID=; PPID_=; SPID=; FPID=
FSOCK="$WORK/floor.sock"; FURI="nbd+unix:///?socket=$FSOCK"; FLOOR=${FLOOR:-0}
if [ "$FLOOR" = 1 ]; then
  need gcc gcc
  gcc -O2 -pthread -o "$WORK/nbd-floor" "$here/bench/nbd-floor.c"
  CLEANUP_FILES+=("$NS.floor")
fi
SSOCK="$WORK/pfnpeer.sock"; SURI="nbd+unix:///pmem0?socket=$SSOCK"
SPLICE_PEER=${SPLICE_PEER:-}
PEER_ARGS=${PEER_ARGS:-${SPLICE_PEER:+--splice-reads $SPLICE_PEER}}
FILL=${FILL:-0}
# start_servers MIB : a pmem namespace whose data area holds at least MIB MiB (its info block
# and alignment take a little more), served by pfnblock; nbdkit memory of exactly the same
# byte size, so both exports are alike. Sets EXPORT_BYTES.
start_servers() {
  rm -f "$NS" "$KSOCK" "$PSOCK"
  "$here/pfnblock" namespace create --path "$NS" --size "$(($1 + 64))M" >/dev/null
  # Each server gets a control socket of its own in the bench's work directory (the default one in the
  # data directory would be taken by the first server only, and left behind if one were killed).
  echo "CMD: $here/pfnblock serve --export pmem0=pmem:$NS --listen unix:$PSOCK --control $WORK/pfnblock.ctl ${SERVE_ARGS:-}"
  # shellcheck disable=SC2086 # SERVE_ARGS holds separate flags
  "$here/pfnblock" serve --export "pmem0=pmem:$NS" --listen "unix:$PSOCK" --control "$WORK/pfnblock.ctl" ${SERVE_ARGS:-} > "$WORK/pfnblock.out" 2>&1 &
  PPID_=$!; CLEANUP_PIDS+=("$PPID_")
  wait_server "$PURI"
  EXPORT_BYTES=$(nbdinfo --size "$PURI")
  if [ -n "$PEER_ARGS" ] && [ "${2:-}" = fio ]; then
    rm -f "$NS.splice" "$SSOCK"
    "$here/pfnblock" namespace create --path "$NS.splice" --size "$(($1 + 64))M" >/dev/null
    echo "CMD: $here/pfnblock serve --export pmem0=pmem:$NS.splice --listen unix:$SSOCK --control $WORK/pfnpeer.ctl ${SERVE_ARGS:-} $PEER_ARGS"
    # shellcheck disable=SC2086 # SERVE_ARGS and PEER_ARGS hold separate flags
    "$here/pfnblock" serve --export "pmem0=pmem:$NS.splice" --listen "unix:$SSOCK" --control "$WORK/pfnpeer.ctl" ${SERVE_ARGS:-} $PEER_ARGS > "$WORK/pfnpeer.out" 2>&1 &
    SPID=$!; CLEANUP_PIDS+=("$SPID")
    wait_server "$SURI"
  fi
  if [ "$FLOOR" = 1 ] && [ "${2:-}" = fio ]; then
    rm -f "$FSOCK"
    echo "CMD: $WORK/nbd-floor $FSOCK $NS.floor $EXPORT_BYTES ${FLOOR_ARGS:-}"
    # shellcheck disable=SC2086 # FLOOR_ARGS is a list of flags
    "$WORK/nbd-floor" "$FSOCK" "$NS.floor" "$EXPORT_BYTES" ${FLOOR_ARGS:-} > "$WORK/floor.out" 2>&1 &
    FPID=$!; CLEANUP_PIDS+=("$FPID")
    wait_server "$FURI"
  fi
  echo "CMD: nbdkit -f --exit-with-parent -U $KSOCK memory $EXPORT_BYTES allocator=sparse"
  nbdkit -f --exit-with-parent -U "$KSOCK" memory "$EXPORT_BYTES" allocator=sparse &
  KPID=$!; CLEANUP_PIDS+=("$KPID")
  wait_server "$KURI"
  for u in "$KURI" "$PURI"; do nbdinfo "$u" | grep -E 'export-size|can_multi_conn|block_size_max|can_fua|can_flush' | sed 's/^/  /'; done
}
stop_servers() {
  kill -TERM "$PPID_" "$KPID" $SPID $FPID; wait "$PPID_" "$KPID" $SPID $FPID 2>/dev/null || true
  echo "# pfnblock serve output:"; sed 's/^/  /' "$WORK/pfnblock.out"
  SPID=; FPID=; rm -f "$NS.floor"
}
echo "# $(nbdkit --version), $(nbdcopy --version | head -n1), fio $(fio --version), .NET SDK $(dotnet --version 2>/dev/null)"
echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- nbdcopy: exports of COPY_SIZE, filled by the first copy (which allocates), then copied
# whole each way; the source file has exactly the export's size so no holes remain ----
if want nbdcopy-write-first || want nbdcopy-write || want nbdcopy-read-to-null; then
start_servers "$COPY_MIB"
head -c 512M /dev/urandom > "$SRC.chunk"; : > "$SRC"
while [ "$(stat -c %s "$SRC")" -lt "$EXPORT_BYTES" ]; do cat "$SRC.chunk" >> "$SRC"; done
rm -f "$SRC.chunk"; truncate -s "$EXPORT_BYTES" "$SRC"
for s in nbdkit pfnblock; do
  if [ $s = nbdkit ]; then SERVER_PID=$KPID; U=$KURI; else SERVER_PID=$PPID_; U=$PURI; fi
  REPS=1 copy_rep "$s-nbdcopy-write-first" "$EXPORT_BYTES" "$SRC" "$U"
done
for dir in write read; do
  if [ $dir = write ]; then want nbdcopy-write || continue; else want nbdcopy-read-to-null || continue; fi
  for s in nbdkit pfnblock; do
    if [ $s = nbdkit ]; then SERVER_PID=$KPID; U=$KURI; else SERVER_PID=$PPID_; U=$PURI; fi
    if [ $dir = write ]; then copy_rep "$s-nbdcopy-write" "$EXPORT_BYTES" "$SRC" "$U"
    else copy_rep "$s-nbdcopy-read-to-null" "$EXPORT_BYTES" "$U" null:; fi
  done
done
rm -f "$SRC"
stop_servers
fi

# ---- fio: exports of SIZE ----
start_servers "$SIZE_MIB" fio
if [ "$FILL" = 1 ]; then
  for u in "$KURI" "$PURI" ${SPID:+"$SURI"} ${FPID:+"$FURI"}; do
    echo "# filling $u"
    fio --name=fill --ioengine=nbd --uri="$u" --size="$SIZE" --bs=1m --rw=write --iodepth=8 --output=/dev/null
  done
fi
# ---- fio: the 06-nbdkit-memory.sh matrix, alternating servers per workload ----
both() { # both LABEL FIO-ARGS... (the URI is filled in per server)
  local label=$1; shift
  want "$label" || return 0
  SERVER_PID=$KPID fio_rep "nbdkit-$label" --name=nbd --ioengine=nbd --uri="$KURI" --size="$SIZE" "$@"
  SERVER_PID=$PPID_ fio_rep "pfnblock-$label" --name=nbd --ioengine=nbd --uri="$PURI" --size="$SIZE" "$@"
  [ -z "$SPID" ] || SERVER_PID=$SPID fio_rep "pfnpeer-$label" --name=nbd --ioengine=nbd --uri="$SURI" --size="$SIZE" "$@"
  [ -z "$FPID" ] || SERVER_PID=$FPID fio_rep "floor-$label" --name=nbd --ioengine=nbd --uri="$FURI" --size="$SIZE" "$@"
}
QD1_PIN=${QD1_PIN:-same}
QD1_CPU=${QD1_CPU:-0}
QD1_UNPINNED=${QD1_UNPINNED:-1}
ALL_CPUS=0-$(($(nproc) - 1))
pin_servers() { # pin_servers CPULIST : every thread of both servers (new threads inherit it)
  taskset -a -p -c "$1" "$KPID" >/dev/null
  taskset -a -p -c "$1" "$PPID_" >/dev/null
  [ -z "$SPID" ] || taskset -a -p -c "$1" "$SPID" >/dev/null
  [ -z "$FPID" ] || taskset -a -p -c "$1" "$FPID" >/dev/null
}
# qd1 LABEL FIO-ARGS... : the QD1 rows as QD1_PIN says (see the header)
qd1() {
  local label=$1; shift
  want "$label" || return 0
  if [ "$QD1_PIN" = same ]; then
    echo "# $label: both servers' threads and fio on cpu $QD1_CPU (taskset -a -p -c $QD1_CPU PID)"
    pin_servers "$QD1_CPU"
    FIO_TASKSET="taskset -c $QD1_CPU" both "$label" "$@"
    pin_servers "$ALL_CPUS"
    [ "$QD1_UNPINNED" = 0 ] || ROWS="*" both "$label-unpinned" "$@"
  else
    both "$label" "$@"
  fi
}
for rw in randread randwrite; do
  qd1 "4k-$rw-qd1-1j" --bs=4k --rw=$rw --iodepth=1 --numjobs=1
  for nj in $NJOBS; do both "4k-$rw-qd32-${nj}j" --bs=4k --rw=$rw --iodepth=32 --numjobs=$nj; done
done
both "1m-read-qd8-1j" --bs=1m --rw=read --iodepth=8 --numjobs=1
both "1m-read-qd32-1j" --bs=1m --rw=read --iodepth=32 --numjobs=1
both "1m-write-qd8-1j" --bs=1m --rw=write --iodepth=8 --numjobs=1

# ---- summary: medians side by side, ratios, server CPU per request ----
echo "## summary"
awk -F'\t' -v OFS=' | ' '
  function num(s, key,   m) { return match(s, key "=[0-9.e+]+") ? substr(s, RSTART + length(key) + 1, RLENGTH - length(key) - 1) + 0 : -1 }
  $1 == "nbd-bench" {
    split($2, p, "-"); srv = p[1]; w = substr($2, length(srv) + 2)
    if (!(w in seen)) { seen[w] = 1; order[++n] = w }
    v[srv, w] = ($3 ~ /GB\/s=/) ? num($3, "GB/s") : num($3, "IOPS")
    cpu[srv, w] = num($3, "srv_cpu%"); lat[srv, w] = num($3, "lat_us")
  }
  END {
    print "| workload | nbdkit | pfnblock | ratio | nbdkit lat us | pfnblock lat us | nbdkit srv CPU | pfnblock srv CPU | nbdkit us CPU/req | pfnblock us CPU/req | CPU/req ratio |"
    print "|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= n; i++) {
      w = order[i]; k = v["nbdkit", w]; f = v["pfnblock", w]; gb = (w ~ /nbdcopy/)
      ck = (gb || k <= 0) ? "" : sprintf("%.2f", cpu["nbdkit", w] / 100 / k * 1e6)
      cf = (gb || f <= 0) ? "" : sprintf("%.2f", cpu["pfnblock", w] / 100 / f * 1e6)
      print "| " w, (gb ? k " GB/s" : k), (gb ? f " GB/s" : f), (k > 0 ? sprintf("%.2fx", f / k) : "-"),
        (lat["nbdkit", w] >= 0 ? lat["nbdkit", w] : ""), (lat["pfnblock", w] >= 0 ? lat["pfnblock", w] : ""),
        cpu["nbdkit", w] "%", cpu["pfnblock", w] "%", ck, cf, (ck != "" && cf != "" && ck > 0 ? sprintf("%.2fx", cf / ck) : "") " |"
    }
  }' "$RESULTS" | tee "${REPORT:-/dev/null}"
# third_table SERVER : SERVER's fio rows against nbdkit's and pfnblock's in the same run
third_table() {
  awk -F'\t' -v OFS=' | ' -v x="$1" '
    function num(s, key) { return match(s, key "=[0-9.e+]+") ? substr(s, RSTART + length(key) + 1, RLENGTH - length(key) - 1) + 0 : -1 }
    $1 == "nbd-bench" && $2 !~ /nbdcopy/ {
      split($2, p, "-"); srv = p[1]; w = substr($2, length(srv) + 2)
      if (!(w in seen)) { seen[w] = 1; order[++n] = w }
      v[srv, w] = num($3, "IOPS"); cpu[srv, w] = num($3, "srv_cpu%")
    }
    END {
      print "| workload | nbdkit | pfnblock | " x " | " x "/pfnblock | nbdkit us CPU/req | pfnblock us CPU/req | " x " us CPU/req | " x "/pfnblock CPU/req | " x "/nbdkit CPU/req |"
      print "|---|---|---|---|---|---|---|---|---|---|"
      for (i = 1; i <= n; i++) {
        w = order[i]; k = v["nbdkit", w]; c = v["pfnblock", w]; s = v[x, w]
        if (s <= 0 || c <= 0) continue
        ck = k > 0 ? cpu["nbdkit", w] / 100 / k * 1e6 : 0; cc = cpu["pfnblock", w] / 100 / c * 1e6; cs = cpu[x, w] / 100 / s * 1e6
        print "| " w, k, c, s, sprintf("%.2fx", s / c), sprintf("%.2f", ck), sprintf("%.2f", cc), sprintf("%.2f", cs), sprintf("%.2fx", cs / cc), (ck > 0 ? sprintf("%.2fx", cs / ck) : "-") " |"
      }
    }' "$RESULTS" | tee -a "${REPORT:-/dev/null}"
}
if [ -n "$SPID" ]; then
  echo "## pfnpeer (serve ${SERVE_ARGS:-} $PEER_ARGS) against pfnblock (serve ${SERVE_ARGS:-}), same run"
  third_table pfnpeer
fi
if [ -n "$FPID" ]; then
  echo "## floor (bench/nbd-floor.c ${FLOOR_ARGS:-}: the system calls and copies only) against nbdkit and pfnblock, same run"
  third_table floor
fi
stop_servers
