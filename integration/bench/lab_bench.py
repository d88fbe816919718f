#!/usr/bin/env python3
"""lab_bench.py — a whole cluster on this host, measured through margay-lab (root).

    MARGAY_LAB_BIN=target/release/margay-lab integration/bench/lab_bench.py [NODES PODS READY_N]

1. `margay-lab up --nodes NODES --pods-per-node PODS` (default 20 × 50): every agent's RSS
   (VmRSS, RssAnon; VmHWM) read from /proc/PID/status of the PIDs in the lab's state, with the
   lab's etcd beside it.
2. Pod ready → reachable from another node: READY_N (default 50) more pods created one at a time
   on node-1 (`margay-lab pod create`, which returns when the CNI ADD has returned — when the
   kubelet would call the pod ready); a prober in a pod on node-2 (one process, started before)
   pings each new address every 2 ms from the moment it learns it; the figure is ADD returned →
   first echo reply. Node-1 already holds PODS pods, so the series crosses into a new IPAM block
   (claimed, announced over BGP, installed on node-2) as a cluster does.

Prints `lab key=value ...` lines (for report.py). Everything lives in the lab's namespaces under a
private MARGAY_LAB_DIR; `margay-lab down` runs on exit, also on an error or Ctrl-C.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PROBER = r"""
import os, select, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xffff
for line in sys.stdin:
    ip = line.strip()
    t0 = time.monotonic(); seq = 0; done = None
    while done is None and time.monotonic() - t0 < 10:
        seq = (seq + 1) & 0xffff
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"margay"
        body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
        sock.sendto(body, (ip, 0))
        end = time.monotonic() + 0.002
        while done is None:
            left = end - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]: break
            pkt, addr = sock.recvfrom(2048)
            h = (pkt[0] & 0x0f) * 4
            typ, _, _, rid, _ = struct.unpack("!BBHHH", pkt[h:h + 8])
            if addr[0] == ip and typ == 0 and rid == ident: done = time.monotonic() - t0
    print("%s %s" % (ip, "timeout" if done is None else "%.6f" % done), flush=True)
"""


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


def main():
    nodes, pods, ready_n = (int(a) for a in (sys.argv[1:] + ["20", "50", "50"][len(sys.argv) - 1:]))
    lab = os.environ.get("MARGAY_LAB_BIN") or sys.exit("set MARGAY_LAB_BIN to the margay-lab binary")
    labdir = tempfile.mkdtemp(prefix="margay-lab-bench.")
    env = dict(os.environ, MARGAY_LAB_DIR=labdir)
    prober = None

    def state():
        with open(os.path.join(labdir, "state.json")) as f:
            return json.load(f)

    def cleanup(*_):
        if prober and prober.poll() is None:
            prober.kill()
            prober.wait(timeout=10)
        subprocess.run([lab, "down"], env=env, timeout=300)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        t = time.monotonic()
        sh(lab, "up", "--nodes", str(nodes), "--pods-per-node", str(pods), "--timeout", "900", env=env,
           stdout=subprocess.DEVNULL)
        up_s = time.monotonic() - t
        st = state()
        agents = [p for k, p in st["procs"].items() if k.startswith("agent-")]
        rss = [status_kib(p["pid"], "VmRSS") / 1024 for p in agents]
        anon = [status_kib(p["pid"], "RssAnon") / 1024 for p in agents]
        hwm = [status_kib(p["pid"], "VmHWM") / 1024 for p in agents]
        etcd = status_kib(st["procs"]["etcd"]["pid"], "VmRSS") / 1024
        print(f"lab nodes={nodes} pods={nodes * pods} up_s={up_s:.1f} agent_rss_mib_p50={statistics.median(rss):.1f} "
              f"agent_rss_mib_max={max(rss):.1f} agent_anon_mib_p50={statistics.median(anon):.1f} "
              f"agent_hwm_mib_max={max(hwm):.1f} etcd_rss_mib={etcd:.1f}", flush=True)

        src = next(p for p in st["pods"].values() if p["node"] == "node-2")
        prober = subprocess.Popen(["ip", "netns", "exec", src["netns"], "python3", "-u", "-c", PROBER],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lat, lost = [], 0
        for i in range(ready_n):
            name = f"default/ready-{i}"
            sh(lab, "pod", "create", name, "--node", "node-1", env=env, stderr=subprocess.DEVNULL)
            t_ready = time.monotonic()
            ip = state()["pods"][name]["ips"][0]
            prober.stdin.write(ip + "\n")
            prober.stdin.flush()
            handed = time.monotonic() - t_ready
            got_ip, took = prober.stdout.readline().split()
            assert got_ip == ip, (got_ip, ip)
            if took == "timeout":
                lost += 1
            else:
                lat.append((handed + float(took)) * 1000)
        node1 = next(n for n in state()["nodes"] if n["name"] == "node-1")
        blocks = len(subprocess.run(["ip", "-n", node1["netns"], "route", "show", "type", "blackhole"],
                                    capture_output=True, text=True, check=True).stdout.splitlines())
        print(f"lab ready_to_reachable n={ready_n} p50_ms={pct(lat, 0.5):.1f} p99_ms={pct(lat, 0.99):.1f} "
              f"max_ms={max(lat):.1f} unreachable={lost} node1_blocks={blocks}", flush=True)
    finally:
        cleanup()
        try:
            os.rmdir(labdir)
        except OSError:
            pass


if __name__ == "__main__":
    main()
