#!/usr/bin/env bash
# nbd-floor.sh - the NBD servers one after another under the same client, to tell a server's own
# cost from what the kernel and the client impose. Servers (SERVERS, default "k p r f n"):
#   k  nbdkit -f -U SOCK memory BYTES allocator=sparse
#   p  pfnblock serve --export pmem0=pmem:NS (a 1088 MiB namespace on /dev/shm)
#   r  pfnblock serve --export ram0=ram:BYTES
#   f  bench/nbd-floor.c on a /dev/shm file (only the system calls and copies; glibc memcpy writes)
#   n  bench/nbd-floor.c --nt (non-temporal stores and a fence per write, as pmem's)
# Every export is BYTES = the namespace's data area (~1 GiB), written whole by fio first.
# Modes:
#   stat     ROUNDS rounds; in each, every server in turn under fio --ioengine=nbd --bs=BS --rw=RW
#            --iodepth=QD --runtime=5, with `perf stat -e EVENTS -p PID -- sleep 3` from 1 s in;
#            prints the server's task-clock and every other event per request (fio's IOPS x 3 s)
#            and the median per server. EVENTS defaults to task-clock,context-switches; add
#            syscalls:sys_enter_recvfrom,... to count system calls (tracepoints slow every call).
#   profile  one `perf record -F 2999 -g -p PID -- sleep 4` per server under the same load; prints
#            the share of samples by DSO and the top symbols (pfnblock with its perf map on).
#   copy     ROUNDS rounds of `nbdcopy SRC URI` (overwrite) and `nbdcopy URI null:` per server, SRC a
#            random file of BYTES in /dev/shm; GB/s and server CPU seconds per GB, medians.
# Env: SERVERS, ROUNDS (5), BS (4k), RW (randwrite), QD (32), EVENTS. Needs root for perf, gcc.
# Everything it starts is stopped, and its files removed, on every exit path.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-stat}
case "$MODE" in stat|profile|copy) ;; *) echo "usage: $0 [stat|profile|copy]" >&2; exit 2 ;; esac
SERVERS=${SERVERS:-k p r f n}; ROUNDS=${ROUNDS:-5}; BS=${BS:-4k}; RW=${RW:-randwrite}; QD=${QD:-32}
EVENTS=${EVENTS:-task-clock,context-switches}
for c in fio nbdkit nbdinfo nbdcopy perf gcc jq bc; do command -v "$c" >/dev/null || { echo "$0: needs $c" >&2; exit 1; }; done
WORK=$(mktemp -d /tmp/nbd-floor.XXXXXX)
NS=/dev/shm/nbd-floor-ns.$$; FF=/dev/shm/nbd-floor-f.$$; FN=/dev/shm/nbd-floor-n.$$; SRC=/dev/shm/nbd-floor-src.$$
PIDS=(); FIO=   # the servers this script started; the fio run in flight, if any
cleanup() {
  local p
  for p in $FIO "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf -- "$WORK" "$NS" "$FF" "$FN" "$SRC"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

"$here/pfnblock" namespace create --path "$NS" --size 1088M --force >/dev/null
BYTES=$("$here/pfnblock" namespace info --path "$NS" --json | jq -r .data_size)
gcc -O2 -pthread -o "$WORK/nbd-floor" "$here/bench/nbd-floor.c"
declare -A URI PID
perfmap=0; [ "$MODE" = profile ] && perfmap=1
start() { # start KEY URI COMMAND... : one server in the background, its pid and URI recorded
  local key=$1 uri=$2; shift 2
  DOTNET_PerfMapEnabled=$perfmap DOTNET_EnableWriteXorExecute=$((1 - perfmap)) "$@" > "$WORK/$key.out" 2>&1 &
  PID[$key]=$!; PIDS+=("$!"); URI[$key]=$uri
}
for s in $SERVERS; do
  case $s in
    k) start k "nbd+unix:///?socket=$WORK/k.sock" nbdkit -f -U "$WORK/k.sock" memory "$BYTES" allocator=sparse ;;
    p) start p "nbd+unix:///pmem0?socket=$WORK/p.sock" "$here/pfnblock" serve --export "pmem0=pmem:$NS" --listen "unix:$WORK/p.sock" ;;
    r) start r "nbd+unix:///ram0?socket=$WORK/r.sock" "$here/pfnblock" serve --export "ram0=ram:$BYTES" --listen "unix:$WORK/r.sock" ;;
    f) start f "nbd+unix:///?socket=$WORK/f.sock" "$WORK/nbd-floor" "$WORK/f.sock" "$FF" "$BYTES" ;;
    n) start n "nbd+unix:///?socket=$WORK/n.sock" "$WORK/nbd-floor" "$WORK/n.sock" "$FN" "$BYTES" --nt ;;
    *) echo "$0: unknown server '$s' (k p r f n)" >&2; exit 2 ;;
  esac
done
for s in $SERVERS; do
  for _ in $(seq 300); do nbdinfo --size "${URI[$s]}" >/dev/null 2>&1 && break; sleep 0.1; done
  nbdinfo --size "${URI[$s]}" >/dev/null || { echo "$0: server $s did not start:" >&2; cat "$WORK/$s.out" >&2; exit 1; }
  fio --name=fill --ioengine=nbd --uri="${URI[$s]}" --size="$BYTES" --bs=1m --rw=write --iodepth=8 --output=/dev/null
done
echo "# $(date -u +%FT%TZ) $MODE: servers $SERVERS, exports of $BYTES bytes, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"

# medians FILE : "server key=median [min..max]" for every key=value field of "round N server ..." lines
medians() {
  awk '{ for (i = 4; i <= NF; i++) { split($i, kv, "="); k = $3 SUBSEP kv[1]; n[k]++; v[k, n[k]] = kv[2]; if (!(k in seen)) { seen[k] = 1; order[++m] = k } } }
    END { for (j = 1; j <= m; j++) { k = order[j]; c = n[k]
            for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (v[k, b] + 0 < v[k, a] + 0) { t = v[k, a]; v[k, a] = v[k, b]; v[k, b] = t }
            split(k, sk, SUBSEP); med = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
            printf "%s %s=%s [%s..%s]\n", sk[1], sk[2], med, v[k, 1], v[k, c] } }' "$1"
}
load() { # load KEY SECONDS : fio on KEY's export in the background; FIO holds its pid
  fio --name=nbd --ioengine=nbd --uri="${URI[$1]}" --size="$BYTES" --bs="$BS" --rw="$RW" --iodepth="$QD" \
    --runtime="$2" --time_based --output-format=json --output="$WORK/fio.json" >/dev/null 2>&1 &
  FIO=$!
}
finish_load() { wait "$FIO"; FIO=; } # reaped: its pid may be reused, so cleanup must not kill it
case "$MODE" in
stat)
  echo "# fio --ioengine=nbd --bs=$BS --rw=$RW --iodepth=$QD; perf stat -e $EVENTS over 3 s; per request"
  for r in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
      load "$s" 5; sleep 1
      perf stat -x, -e "$EVENTS" -p "${PID[$s]}" -- sleep 3 2> "$WORK/stat.csv"
      finish_load
      iops=$(jq '.jobs[0].read.iops + .jobs[0].write.iops' "$WORK/fio.json")
      awk -F, -v s="$s" -v r="$r" -v iops="$iops" 'BEGIN { req = iops * 3; printf "round %d %s IOPS=%.0f", r, s, iops }
        $1 ~ /^[0-9.]+$/ { n = $3; sub(/^syscalls:sys_enter_/, "", n)
          if (n == "task-clock") printf " cpu_us/req=%.2f", $1 * 1000 / req; else printf " %s/req=%.3f", n, $1 / req }
        END { print "" }' "$WORK/stat.csv" | tee -a "$WORK/rounds"
    done
  done
  echo "# medians [min..max] of $ROUNDS rounds"; medians "$WORK/rounds" ;;
profile)
  for s in $SERVERS; do
    load "$s" 6; sleep 1
    perf record -F 2999 -g -o "$WORK/$s.data" -p "${PID[$s]}" -- sleep 4 >/dev/null 2>&1
    finish_load
    echo "## $s: IOPS $(jq '.jobs[0].read.iops + .jobs[0].write.iops' "$WORK/fio.json"); samples by DSO, then by symbol"
    perf report -i "$WORK/$s.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v -e '^#' -e '^$' | head -n 8 || true
    perf report -i "$WORK/$s.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v -e '^#' -e '^$' | head -n 20 || true
  done ;;
copy)
  head -c "$BYTES" /dev/urandom > "$SRC"
  hz=$(getconf CLK_TCK)
  cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
  for r in $(seq "$ROUNDS"); do
    for dir in write read; do
      for s in $SERVERS; do
        c0=$(cpu "${PID[$s]}"); t0=$(date +%s.%N)
        if [ "$dir" = write ]; then nbdcopy "$SRC" "${URI[$s]}"; else nbdcopy "${URI[$s]}" null:; fi
        t1=$(date +%s.%N); c1=$(cpu "${PID[$s]}")
        awk -v s="$s" -v d="$dir" -v r="$r" -v b="$BYTES" -v t="$(echo "$t1 - $t0" | bc)" -v c=$((c1 - c0)) -v hz="$hz" \
          'BEGIN { printf "round %d %s-%s GB/s=%.3f srv_cpu_s/GB=%.3f\n", r, s, d, b / t / 1e9, c / hz / (b / 1e9) }' | tee -a "$WORK/rounds"
      done
    done
  done
  echo "# medians [min..max] of $ROUNDS rounds"; medians "$WORK/rounds" ;;
esac
