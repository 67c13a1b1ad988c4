#!/usr/bin/env bash
# rbd-crash-soak.sh [cache] - the rbd SIGKILL tests at soak length, KILLS (default 50) SIGKILLs each,
# on a throwaway cluster of their own (scripts/ceph-cluster.sh), stopped on every way out. CI runs
# the same tests with 10 kills.
#   (no argument)  `pfnblock serve rbd:` killed mid-write; after each kill `rbd export` (Ceph's own
#                  client) must hold every acknowledged flushed write.
#   cache          `pfnblock serve` of a pmem writecache over rbd: killed during writes and
#                  write-back; after each kill a restart replays the cache and writes it all back,
#                  then `rbd export` must hold every acknowledged flushed write.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
  "") test=RbdServeTests.SigkillMidWriteNeverLosesAnAcknowledgedFlushedWrite; what="serve rbd:"; export PFNBLOCK_RBD_KILLS=${KILLS:-50} ;;
  cache) test=RbdWriteCacheTests.SigkillDuringWritesAndWritebackNeverLosesAnAcknowledgedFlushedWrite; what="serve writecache over rbd:"; export PFNBLOCK_RBDCACHE_KILLS=${KILLS:-50} ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
dir="/dev/shm/pfnblock-ceph-soak.$$"
trap '"$here/scripts/ceph-cluster.sh" stop "$dir" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
PFNBLOCK_CEPH_CONF=$("$here/scripts/ceph-cluster.sh" start "$dir" | tail -1)
export PFNBLOCK_CEPH_CONF
echo "# $(date -u +%FT%TZ): ${KILLS:-50} kills of $what on $PFNBLOCK_CEPH_CONF"
cd "$here"
dotnet build -c Release --nologo -v q >/dev/null
dotnet test -c Release --no-build --nologo --filter "FullyQualifiedName~$test" --logger "console;verbosity=normal"
