#!/usr/bin/env bash
# btt-bench.sh - sector mode cost, in one run on /dev/shm:
#   * a raw PfnBlock namespace vs a sector (BTT, 4 KiB) namespace of the same size,
#   * PfnBlock's BTT vs fio's pmemblk engine (PMDK libpmemblk) on one pmemblk pool of that size,
# for 4 KiB random writes and reads with 1 and 2 jobs. The PfnBlock side is measured by the
# in-process loop `PfnBlock.TestHelper bench` (one thread per job, one synchronous bio at a time,
# uniform random 4 KiB offsets over the whole device, 1 s warm-up); fio runs as in
# shared/bench/peers/03-fio-pmemblk.sh (PMEM_IS_PMEM_FORCE=1, --thread, iodepth 1, 1 s ramp).
# Every device is filled once before it is measured. Each workload runs REPS times; the median
# and [min..max] of IOPS are printed as RESULT lines, then the ratios.
# Env: REPS (3), RUNTIME (5 s), SIZE_MIB (1024), DIR (/dev/shm).
set -euo pipefail
export LC_ALL=C
REPS=${REPS:-3}
RUNTIME=${RUNTIME:-5}
SIZE_MIB=${SIZE_MIB:-1024}
DIR=${DIR:-/dev/shm}
here=$(cd "$(dirname "$0")/.." && pwd)
RAW=$DIR/btt-bench-raw.$$ BTT=$DIR/btt-bench-btt.$$ POOL=$DIR/btt-bench-pmemblk.$$.pool
WORK=$(mktemp -d /tmp/btt-bench.XXXXXX)
trap 'rm -rf "$RAW" "$BTT" "$POOL" "$WORK"' EXIT
for c in fio jq; do command -v $c >/dev/null || { echo "btt-bench: $c is required (apt-get install $c)" >&2; exit 1; }; done

dotnet build "$here/tests/PfnBlock.TestHelper" -c Release -o "$here/artifacts/testhelper" --nologo -v quiet >&2
HELPER=(dotnet "$here/artifacts/testhelper/PfnBlock.TestHelper.dll")
PFN="$here/pfnblock"

stats() { sort -g | awk '{a[NR]=$1} END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.0f %.0f %.0f\n", m, a[1], a[NR] }'; }
declare -A MEDIAN
record() { # record LABEL FILE-OF-IOPS
  read -r m lo hi <<<"$(stats < "$2")"
  MEDIAN[$1]=$m
  printf 'RESULT  %-34s IOPS=%s [%s..%s]\n' "$1" "$m" "$lo" "$hi"
}
pfn_bench() { # pfn_bench LABEL SPEC RW JOBS
  local label=$1 spec=$2 rw=$3 jobs=$4 f="$WORK/$1" i
  echo "CMD: ${HELPER[*]} bench $spec $rw 4k $jobs $RUNTIME"
  : > "$f"
  for i in $(seq 1 "$REPS"); do "${HELPER[@]}" bench "$spec" "$rw" 4k "$jobs" "$RUNTIME" | jq -r .iops >> "$f"; done
  record "$label" "$f"
}
fio_bench() { # fio_bench LABEL RW JOBS
  local label=$1 rw=$2 jobs=$3 f="$WORK/$1" i
  local args=(--name=pmemblk --thread --direct=1 --ioengine=pmemblk "--filename=$POOL,4096,$SIZE_MIB" "--size=$((SIZE_MIB * 95 / 100))M"
              --iodepth=1 --bs=4k "--rw=$rw" "--numjobs=$jobs" "--runtime=$RUNTIME" --ramp_time=1 --time_based --group_reporting --output-format=json)
  echo "CMD: PMEM_IS_PMEM_FORCE=1 fio ${args[*]}"
  : > "$f"
  for i in $(seq 1 "$REPS"); do PMEM_IS_PMEM_FORCE=1 fio "${args[@]}" | jq -r '.jobs[0] | .read.iops + .write.iops' >> "$f"; done
  record "$label" "$f"
}
ratio() { awk -v a="${MEDIAN[$1]}" -v b="${MEDIAN[$2]}" -v l="$3" 'BEGIN { printf "RATIO   %-44s %.0f%%\n", l, 100 * a / b }'; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), fio $(fio --version), libpmemblk $(dpkg-query -W -f='${Version}' libpmemblk1 2>/dev/null), size ${SIZE_MIB} MiB, REPS=$REPS RUNTIME=${RUNTIME}s"

echo "## pmemblk pool: created and filled by fio (libpmemblk), then fio, then PfnBlock's BTT on the same pool"
PMEM_IS_PMEM_FORCE=1 fio --name=fill --thread --direct=1 --ioengine=pmemblk "--filename=$POOL,4096,$SIZE_MIB" --bs=4k --rw=write \
  "--size=$((SIZE_MIB * 95 / 100))M" --output-format=json > "$WORK/fill.json"
for rw in randwrite randread; do for j in 1 2; do fio_bench "fio-pmemblk-$rw-${j}j" $rw $j; done; done
for rw in randwrite randread; do for j in 1 2; do pfn_bench "pfnblock-btt-on-pool-$rw-${j}j" "pmem:$POOL" $rw $j; done; done
rm -f "$POOL"

echo "## PfnBlock namespaces: raw and sector (BTT, 4 KiB sectors), ${SIZE_MIB} MiB each"
echo "CMD: $PFN namespace create --path $RAW --size ${SIZE_MIB}M; $PFN namespace create --path $BTT --size ${SIZE_MIB}M --mode sector --sector-size 4096"
"$PFN" namespace create --path "$RAW" --size "${SIZE_MIB}M" > /dev/null
"$PFN" namespace create --path "$BTT" --size "${SIZE_MIB}M" --mode sector --sector-size 4096 > /dev/null
"${HELPER[@]}" bench "pmem:$RAW" fill 4k 1 0 > /dev/null
"${HELPER[@]}" bench "pmem:$BTT" fill 4k 1 0 > /dev/null
for rw in randwrite randread; do for j in 1 2; do
  pfn_bench "raw-$rw-${j}j" "pmem:$RAW" $rw $j
  pfn_bench "btt-$rw-${j}j" "pmem:$BTT" $rw $j
done; done

echo "## ratios (medians)"
for rw in randwrite randread; do for j in 1 2; do
  ratio "btt-$rw-${j}j" "raw-$rw-${j}j" "btt / raw $rw ${j}j"
  ratio "btt-$rw-${j}j" "fio-pmemblk-$rw-${j}j" "btt namespace / fio pmemblk $rw ${j}j"
  ratio "pfnblock-btt-on-pool-$rw-${j}j" "fio-pmemblk-$rw-${j}j" "pfnblock on pool / fio pmemblk $rw ${j}j"
done; done
