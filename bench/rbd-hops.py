#!/usr/bin/env python3
"""rbd-hops.py PERF_SCRIPT_TEXT: per-request stages of an NBD server over librbd at QD1 4 KiB randwrite,
from `perf script` of bench/rbd-hops.sh's capture. t0 = the server thread's recv that completes a write
request, t1 = a msgr-worker's sendmsg to the OSD, t2 = its read of the OSD's reply, t3 = the sendmsg of the
NBD reply. Prints medians and means in microseconds, and context switches in the process per request."""
import re, sys, statistics
ev = []
for line in open(sys.argv[1]):
    m = re.match(r'\s*(.+?)\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s*(.*)', line)
    if m: ev.append((m.group(1).strip(), int(m.group(2)), float(m.group(3)), m.group(4), m.group(5)))
reqs, cur, switches = [], None, 0
for comm, tid, t, name, args in ev:
    msgr = comm.startswith('msgr-worker')
    if name == 'sched:sched_switch':
        if cur is not None: switches += 1
        continue
    if name in ('syscalls:sys_exit_recvfrom', 'syscalls:sys_exit_recvmsg') and not msgr:
        ret = int(args, 16) if args.startswith('0x') else -1
        if ret in (4124, 4096):
            cur = {'t0': t}; switches = 0
    elif cur is not None and name == 'syscalls:sys_enter_sendmsg' and msgr and 't1' not in cur:
        cur['t1'] = t
    elif cur is not None and name == 'syscalls:sys_exit_read' and msgr and 't1' in cur and 't2' not in cur and args == '0x110':
        cur['t2'] = t
    elif cur is not None and name == 'syscalls:sys_enter_sendmsg' and not msgr and 't2' in cur:
        cur['t3'] = t; cur['sw'] = switches
        reqs.append(cur); cur = None
for a, b in zip(reqs, reqs[1:]): a['next'] = b['t0']
full = [r for r in reqs if 'next' in r]
def us(xs): return f"median {statistics.median(xs)*1e6:6.0f} mean {statistics.mean(xs)*1e6:6.0f}"
print(f"requests {len(full)}")
print("submit   (recv -> OSD send)     ", us([r['t1'] - r['t0'] for r in full]))
print("OSD      (OSD send -> OSD reply)", us([r['t2'] - r['t1'] for r in full]))
print("complete (OSD reply -> NBD reply)", us([r['t3'] - r['t2'] for r in full]))
print("server   (recv -> NBD reply)    ", us([r['t3'] - r['t0'] for r in full]))
print("client   (NBD reply -> next recv)", us([r['next'] - r['t3'] for r in full]))
print("cycle                           ", us([r['next'] - r['t0'] for r in full]))
print(f"context switches in the server per request: median {statistics.median([r['sw'] for r in full])}")
