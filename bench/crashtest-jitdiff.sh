#!/usr/bin/env bash
# crashtest-jitdiff.sh - is "tracing built in but off" the same machine code as "no tracing hooks"?
# Builds the CLI twice (default, and -p:PfnBlockPmemTracing=false), runs a 2 s 4 KiB randwrite on a
# raw and on a sector namespace under each with the runtime's own disassembler
# (DOTNET_JitDisasm), and compares the tier-1 code of the two hot methods that carry hooks,
# PersistentMemory.CopyNonTemporal and Btt.Write, after normalising block labels and relocated
# addresses. Prints each method's code size per build and the differing lines (none expected).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/crashtest-jitdiff.XXXXXX)
trap 'rm -rf -- "$work" /dev/shm/crashtest-jitdiff-raw.$$ /dev/shm/crashtest-jitdiff-sec.$$' EXIT
dotnet publish "$here/src/PfnBlock.Cli" -c Release -p:PfnBlockPmemTracing=false -o "$work/untraced" --nologo -v quiet >&2
dotnet publish "$here/src/PfnBlock.Cli" -c Release -o "$work/traced" --nologo -v quiet >&2
"$work/traced/PfnBlock.Cli" namespace create --path /dev/shm/crashtest-jitdiff-raw.$$ --size 64M >/dev/null
"$work/traced/PfnBlock.Cli" namespace create --path /dev/shm/crashtest-jitdiff-sec.$$ --size 64M --mode sector --sector-size 4096 >/dev/null
for b in traced untraced; do for d in raw sec; do
  DOTNET_JitDisasm="CopyNonTemporal Write" DOTNET_JitStdOutFile="$work/$b-$d.txt" \
    "$work/$b/PfnBlock.Cli" bench --device "pmem:/dev/shm/crashtest-jitdiff-$d.$$" --rw randwrite --bs 4k --runtime 2 --ramp 1 >/dev/null
done; done
# The tier-1 listing of METHOD in FILE, without comments, block labels and relocated addresses.
tier1() { awk -v m="$2" 'index($0, "Assembly listing for method") && index($0, m) && index($0, "(Tier1)") {f=1} f {print} f && /^; Total bytes of code/ {exit}' "$1" \
  | grep -v '^;' | sed -E 's/G_M[0-9]+_IG[0-9]+/L/g; s/IG[0-9]+/IG/g; s/0x[0-9a-fA-F]{8,}/ADDR/g' | grep -v '^L: *;; offset' | grep -v '^ *$'; }
for spec in "PersistentMemory:CopyNonTemporal raw" "Btt:Write sec"; do
  read -r m d <<<"$spec"
  tier1 "$work/traced-$d.txt" "$m" > "$work/a.s"; tier1 "$work/untraced-$d.txt" "$m" > "$work/b.s"
  size() { awk -v m="$2" 'index($0, "Assembly listing for method") && index($0, m) && index($0, "(Tier1)") {f=1} f && /^; Total bytes of code/ {print $NF; exit}' "$1"; }
  echo "RESULT $m: tier-1 code $(size "$work/traced-$d.txt" "$m") bytes with hooks built in (tracing off), $(size "$work/untraced-$d.txt" "$m") bytes without; differing instructions: $(diff "$work/a.s" "$work/b.s" | grep -c '^[<>]' || true)"
  diff "$work/a.s" "$work/b.s" || true
done
