#!/usr/bin/env bash
# rbdcache-crash-soak.sh - the SIGKILL test of a pmem writecache over rbd: at soak length: KILLS
# (default 50) SIGKILLs of `pfnblock serve` of `writecache` over `rbd:` during writes and write-back,
# each followed by a restart that replays the cache and writes it all back, then `rbd export` (Ceph's
# own client) checking every acknowledged flushed write. Starts its own throwaway cluster
# (scripts/ceph-cluster.sh) and stops it on every way out. CI runs the same test with 10 kills.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir="/dev/shm/pfnblock-ceph-wcsoak.$$"
trap '"$here/scripts/ceph-cluster.sh" stop "$dir" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
PFNBLOCK_CEPH_CONF=$("$here/scripts/ceph-cluster.sh" start "$dir" | tail -1)
export PFNBLOCK_CEPH_CONF PFNBLOCK_RBDCACHE_KILLS=${KILLS:-50}
echo "# $(date -u +%FT%TZ): $PFNBLOCK_RBDCACHE_KILLS kills of serve writecache over rbd: on $PFNBLOCK_CEPH_CONF"
cd "$here"
dotnet build -c Release --nologo -v q >/dev/null
dotnet test -c Release --no-build --nologo --filter "FullyQualifiedName~RbdWriteCacheTests.SigkillDuringWritesAndWritebackNeverLosesAnAcknowledgedFlushedWrite" \
  --logger "console;verbosity=normal"
