#!/usr/bin/env bash
# Runs the whole PfnBlock test suite: installs the peer programs the interop tests drive
# (Debian packages), builds, runs every test, and ends with "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

need=()
command -v fio >/dev/null || need+=(fio)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v nbdfuse >/dev/null || need+=(nbdfuse)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v pmempool >/dev/null || need+=(pmdk-tools)
command -v gcc >/dev/null || need+=(gcc)
command -v mdadm >/dev/null || need+=(mdadm)
[ -f /usr/include/libpmemblk.h ] || need+=(libpmemblk-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing peer tools: ${need[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || { echo "could not install ${need[*]}" >&2; exit 1; }
fi

results="$here/artifacts/test-results"
rm -rf "$results"
dotnet test "$here/PfnBlock.slnx" -c Release --nologo \
  --logger "trx;LogFileName=results.trx" --logger "console;verbosity=normal" \
  --results-directory "$results" --blame-hang-timeout 10m "$@"
rc=$?

passed=0; failed=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
  f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
done
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; echo "test run failed before reporting results (exit $rc)" >&2; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
