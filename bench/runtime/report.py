"""Markdown report for bench/runtime/run.sh: medians over rounds, ratios
against the baselines of the same run, and the issue's targets.

    /usr/bin/python3 bench/runtime/report.py bench/results/runtime-<stamp>
"""
import csv
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
LABEL = {
    "node-http": "node:http (baseline)",
    "opr-node": "opr-runtime + Node worker",
    "python-asyncio": "asyncio (baseline)",
    "opr-python": "opr-runtime + Python worker (async main)",
    "opr-python-sync": "opr-runtime + Python worker (sync main)",
    "bun-serve": "Bun.serve (baseline)",
    "opr-bun": "opr-runtime + Bun (Node worker)",
}
BASELINE = {"opr-node": "node-http", "opr-python": "python-asyncio",
            "opr-python-sync": "python-asyncio", "opr-bun": "bun-serve"}
ORDER = ["node-http", "opr-node", "python-asyncio", "opr-python", "opr-python-sync",
         "bun-serve", "opr-bun"]
MEMORY_TARGET_MIB = {"opr-node": 40, "opr-python": 25, "opr-python-sync": 25}
P50_TARGET_US = 300
NODE_RPS_RATIO_TARGET = 0.70


def rows(name):
    with open(out / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


results, memory = rows("results.tsv"), rows("memory.tsv")
load = [float(r["load1"]) for r in rows("loadavg.tsv")]
rounds = len({r["round"] for r in results})

med = {}  # (server, c) -> {rps, p50, p99}
for r in results:
    med.setdefault((r["server"], int(r["concurrency"])), []).append(r)
for key, rs in med.items():
    med[key] = {k: statistics.median(float(r[k]) for r in rs) for k in ("rps", "p50_us", "p99_us")}
    med[key]["errors"] = sum(int(r["errors"]) + int(r["non2xx"]) for r in rs)
mem = {}
for r in memory:
    mem.setdefault(r["server"], []).append(r)
mem = {s: {k: statistics.median(int(r[k + "_kib"]) for r in rs) / 1024
           for k in ("rss", "anon", "file", "pss")} | {"procs": max(int(r["processes"]) for r in rs)}
       for s, rs in mem.items()}


def ratio(server, c, key):
    base = BASELINE.get(server)
    if not base or (base, c) not in med or (server, c) not in med:
        return ""
    return "%.2f" % (med[(server, c)][key] / med[(base, c)][key])


print(f"Medians of {rounds} round(s); ratios are against the baseline of the same language in the same run.\n")
print("| Server | Concurrency | req/s | p50 (µs) | p99 (µs) | req/s ÷ baseline | p50 ÷ baseline | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for c in (1, 32):
    for s in ORDER:
        if (s, c) not in med:
            continue
        m = med[(s, c)]
        print(f"| {LABEL[s]} | {c} | {m['rps']:.0f} | {m['p50_us']:.0f} | {m['p99_us']:.0f} "
              f"| {ratio(s, c, 'rps')} | {ratio(s, c, 'p50_us')} | {m['errors']} |")

print("\nIdle memory: sum of VmRSS over the process tree after start and 100 requests "
      "(median over rounds; Python with OPEN_RUNTIMES_CPUS=1).\n")
print("| Server | Processes | VmRSS (MiB) | of which RssAnon | of which RssFile | PSS (MiB) |")
print("|---|---:|---:|---:|---:|---:|")
for s in ORDER:
    if s in mem:
        m = mem[s]
        print(f"| {LABEL[s]} | {m['procs']} | {m['rss']:.1f} | {m['anon']:.1f} | {m['file']:.1f} | {m['pss']:.1f} |")

spin = (out / "spin").exists()
print(f"\nLoad average (1 min): {load[0]:.2f} before the run, "
      f"{min(load[1:]):.2f}–{max(load[1:]):.2f} during it (the benchmark itself keeps both cores busy)."
      + (" SPIN=1: idle-priority busy loops kept every CPU awake (they add one per CPU to the load average)." if spin else "") + "\n")


def verdict(ok):
    return "met" if ok else "**missed**"


print("| Target | Measured | Result |")
print("|---|---|---|")
for s in ("opr-node", "opr-python", "opr-python-sync", "opr-bun"):
    if (s, 1) in med:
        p50 = med[(s, 1)]["p50_us"]
        print(f"| {LABEL[s]}: p50 < {P50_TARGET_US} µs at concurrency 1 | {p50:.0f} µs | {verdict(p50 < P50_TARGET_US)} |")
for c in (1, 32):
    r = ratio("opr-node", c, "rps")
    if r:
        print(f"| Node throughput ≥ {NODE_RPS_RATIO_TARGET:.0%} of node:http (concurrency {c}) "
              f"| {float(r):.0%} | {verdict(float(r) >= NODE_RPS_RATIO_TARGET)} |")
for s, limit in MEMORY_TARGET_MIB.items():
    if s in mem:
        rss = mem[s]["rss"]
        print(f"| {LABEL[s]}: idle memory (VmRSS) ≤ {limit} MB | {rss:.1f} MiB = {rss * 1.048576:.1f} MB "
              f"| {verdict(rss * 1.048576 <= limit)} |")
