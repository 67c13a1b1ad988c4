#!/usr/bin/env bash
# crashtest-soak.sh - soak-length crash-state exploration: every structure with a crash-test
# target, many seeds, larger workloads and budgets than CI's (10 000 states per structure).
# One line per run; every inconsistent state's reproducer (seed, crash point, landed stores, the
# --replay line) is kept in $OUT. Exits 1 when any run found one.
# Env: SEEDS (20), FIRST_SEED (1), STATES (200000), OPS_BTT (400), OPS_NAMESPACE (40),
#      STRUCTURES ("btt namespace"), OUT (/tmp/crashtest-soak.<pid>).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
SEEDS=${SEEDS:-20}; FIRST_SEED=${FIRST_SEED:-1}; STATES=${STATES:-200000}
OPS_BTT=${OPS_BTT:-400}; OPS_NAMESPACE=${OPS_NAMESPACE:-40}
STRUCTURES=${STRUCTURES:-btt namespace}
OUT=${OUT:-/tmp/crashtest-soak.$$}
mkdir -p "$OUT"
command -v jq >/dev/null || { echo "crashtest-soak: jq is required (apt-get install jq)" >&2; exit 1; }
"$here/pfnblock" --help >/dev/null   # build once

echo "# $(date -u +%FT%TZ) $(nproc) CPUs; seeds $FIRST_SEED..$((FIRST_SEED + SEEDS - 1)), $STATES states per run; results in $OUT"
bad=0
for s in $STRUCTURES; do
  ops_var="OPS_${s^^}"; ops=${!ops_var:-100}
  total=0; found=0
  for seed in $(seq "$FIRST_SEED" $((FIRST_SEED + SEEDS - 1))); do
    f="$OUT/$s-$seed.json"
    rc=0; "$here/pfnblock" crashtest --structure "$s" --ops "$ops" --states "$STATES" --seed "$seed" --json > "$f" || rc=$?
    if [ "$rc" -gt 1 ] || ! jq -e . "$f" >/dev/null 2>&1; then echo "crashtest-soak: $s seed $seed failed to run (exit $rc)" >&2; bad=1; continue; fi
    jq -r --arg s "$s" '"\($s) seed \(.seed) ops \(.ops): \(.states_explored) states, \(.exhaustive_crash_points)/\(.crash_points) crash points exhaustive, \(.inconsistent_states) inconsistent, \(.states_per_second | floor) states/s"' "$f"
    n=$(jq -r .inconsistent_states "$f"); total=$((total + $(jq -r .states_explored "$f"))); found=$((found + n))
    if [ "$n" -gt 0 ]; then
      bad=1
      jq -r --arg s "$s" --arg ops "$ops" '.reproducers[] | "  reproduce: pfnblock crashtest --structure \($s) --ops \($ops) --seed \(.seed) --replay \(.replay)\n    \(.failure)"' "$f"
    fi
  done
  echo "SUMMARY $s: $total states, $found inconsistent"
done
exit $bad
