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
# qemu's rbd driver (qemu-img rbd:POOL/IMAGE) lives in qemu-block-extra.
[ -f /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] || need+=(qemu-block-extra)
# Ceph for the rbd: tests (about 48 s once): a throwaway cluster is started below.
ceph_need=()
command -v ceph-mon >/dev/null || ceph_need+=(ceph-mon)
command -v ceph-osd >/dev/null || ceph_need+=(ceph-osd)
command -v rbd >/dev/null || ceph_need+=(ceph-common)
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
if [ ${#need[@]} -gt 0 ] || [ ${#ceph_need[@]} -gt 0 ]; then
  echo "installing peer tools: ${need[*]} ${ceph_need[*]}" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
fi
if [ ${#need[@]} -gt 0 ]; then
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || { echo "could not install ${need[*]}" >&2; exit 1; }
fi
if [ ${#ceph_need[@]} -gt 0 ]; then
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${ceph_need[@]}" >/dev/null \
    || { echo "could not install ${ceph_need[*]}" >&2; exit 1; }
fi

# One single-OSD cluster for the whole run (the rbd: conformance sample and the Ceph test classes
# use it through $PFNBLOCK_CEPH_CONF), torn down on every way out of this script.
ceph_dir="/dev/shm/pfnblock-ceph-ci.$$"
trap '"$here/scripts/ceph-cluster.sh" stop "$ceph_dir" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
PFNBLOCK_CEPH_CONF=$("$here/scripts/ceph-cluster.sh" start "$ceph_dir" | tail -1) \
  || { echo "could not start the test Ceph cluster" >&2; exit 1; }
export PFNBLOCK_CEPH_CONF

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
