#!/usr/bin/env bash
# writecache-timeline.sh - IOPS over time as a write cache fills: 4 KiB random writes, one job,
# iodepth 1, through a writecache (default watermarks 50/45) over an O_DIRECT file, sampled every
# 250 ms by `pfnblock bench` (its JSON "timeline"). Prints the samples as a markdown table (one row
# per second) and writes an SVG plot (no plotting package needed).
# Env: RUNTIME (seconds, 20), ORIGIN (1G), CACHE (512M), FUA (empty, or --fua), SVG (writecache-fill.svg), DISKDIR (/var/tmp);
#      ORIGIN_SPEC and ORIGIN_BYTES use that device as the origin instead of a file (bench/rbd-bench.sh
#      passes an RBD image), TITLE the plot's title.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-20}; ORIGIN=${ORIGIN:-1G}; CACHE=${CACHE:-512M}; FUA=${FUA:-}; SVG=${SVG:-writecache-fill.svg}; DISKDIR=${DISKDIR:-/var/tmp}
work=$(mktemp -d /tmp/pfnblock-wc-timeline.XXXXXX)
file=$DISKDIR/pfnblock-wc-timeline-origin.$$
cache=/dev/shm/pfnblock-wc-timeline-cache.$$
cleanup() { rm -rf -- "$work" "$file" "$cache"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

pfnblock() { "$here/pfnblock" "$@"; }
pfnblock --help >/dev/null
pfnblock namespace create --path "$cache" --size "$CACHE" --force >/dev/null
fallocate -l "$(stat -c %s "$cache")" "$cache"
if [ -n "${ORIGIN_SPEC:-}" ]; then
  echo "0 $(( ORIGIN_BYTES / 512 )) writecache p $ORIGIN_SPEC pmem:$cache 4096 0" > "$work/wc.table"
else
  truncate -s "$ORIGIN" "$file"
  echo "0 $(( $(stat -c %s "$file") / 512 )) writecache p file:$file pmem:$cache 4096 0" > "$work/wc.table"
fi
echo "# $(date -u +%FT%TZ) $(nproc) vCPU, load $(cut -d' ' -f1-3 /proc/loadavg); RUNTIME=$RUNTIME ORIGIN=${ORIGIN_SPEC:-$ORIGIN} CACHE=$CACHE $FUA"
pfnblock bench --device "table:$work/wc.table" --rw randwrite --bs 4k $FUA --runtime "$RUNTIME" --ramp 0 --json > "$work/out.json"
TITLE=${TITLE:-4 KiB random writes through a pmem write cache over an O_DIRECT file} python3 - "$work/out.json" "$SVG" <<'PY'
import json, os, sys
doc = json.load(open(sys.argv[1]))
job = doc["jobs"][0] if "jobs" in doc else doc
samples = [(s["t"], s["write_iops"]) for s in job["timeline"]]
print("| second | write IOPS (mean of the 250 ms samples) |")
print("|---|---|")
for sec in range(int(samples[-1][0] + 0.999)):
    xs = [i for t, i in samples if sec < t <= sec + 1]
    if xs: print(f"| {sec}–{sec + 1} | {round(sum(xs) / len(xs)):,} |".replace(",", " "))
w, h, pad = 720, 320, 50
tmax = max(t for t, _ in samples); imax = max(i for _, i in samples) * 1.1 or 1
pts = " ".join(f"{pad + t / tmax * (w - 2 * pad):.1f},{h - pad - i / imax * (h - 2 * pad):.1f}" for t, i in samples)
ticks = "".join(f'<text x="{pad - 6}" y="{h - pad - f * (h - 2 * pad) + 4:.0f}" text-anchor="end" font-size="11">{round(imax * f / 1000):,}k</text>' for f in (0, .25, .5, .75, 1))
xt = "".join(f'<text x="{pad + s / tmax * (w - 2 * pad):.0f}" y="{h - pad + 16}" text-anchor="middle" font-size="11">{s}</text>' for s in range(0, int(tmax) + 1, max(1, int(tmax) // 10)))
open(sys.argv[2], "w").write(f'''<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{os.environ["TITLE"]}</text>
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>
{ticks}{xt}<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="12">seconds</text>
<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle" font-size="12">write IOPS</text>
<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{pts}"/>
</svg>
''')
PY
