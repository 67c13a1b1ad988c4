#!/usr/bin/env bash
# rbd-crash-soak.sh - the rbd: SIGKILL test at soak length: KILLS (default 50) SIGKILLs of
# `pfnblock serve rbd:` mid-write, each followed by `rbd export` (Ceph's own client) checking every
# acknowledged flushed write. Starts its own throwaway cluster (scripts/ceph-cluster.sh) and stops it
# on every way out. CI runs the same test with 10 kills.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir="/dev/shm/pfnblock-ceph-soak.$$"
trap '"$here/scripts/ceph-cluster.sh" stop "$dir" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM
PFNBLOCK_CEPH_CONF=$("$here/scripts/ceph-cluster.sh" start "$dir" | tail -1)
export PFNBLOCK_CEPH_CONF PFNBLOCK_RBD_KILLS=${KILLS:-50}
echo "# $(date -u +%FT%TZ): $PFNBLOCK_RBD_KILLS kills of serve rbd: on $PFNBLOCK_CEPH_CONF"
cd "$here"
dotnet build -c Release --nologo -v q >/dev/null
dotnet test -c Release --no-build --nologo --filter "FullyQualifiedName~RbdServeTests.SigkillMidWriteNeverLosesAnAcknowledgedFlushedWrite" \
  --logger "console;verbosity=normal"
