#!/usr/bin/env python3
"""Median per configuration of run-matrix.sh's results, as a Markdown table.

usage: medians.py RESULTS [REDIS_BENCHMARK]
Each column's median is taken on its own (the p99 median and the rate median may come from
different repetitions); n is the number of repetitions of that configuration.
"""
import re
import statistics
import sys
from collections import defaultdict

KEYS = ("workload", "mode", "partitions", "impl")
COLS = ("records_per_s", "p50_us", "p99_us", "p999_us", "max_us")


def parse(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def main():
    groups = defaultdict(list)
    order = []
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            r = parse(line)
            key = tuple(r[k] for k in KEYS)
            if key not in groups:
                order.append(key)
            groups[key].append(r)
    print("| workload | mode | P | impl | n | records/s | p50 µs | p99 µs | p99.9 µs | max µs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        rows = groups[key]
        med = [statistics.median(float(r[c]) for r in rows) for c in COLS]
        rate = f"{med[0] / 1e6:.3f} M"
        lat = " | ".join(f"{v:.0f}" if v >= 100 else f"{v:.1f}" for v in med[1:])
        w, m, p, impl = key
        print(f"| {w} | {m} | {p} | {impl} | {len(rows)} | {rate} | {lat} |")
    if len(sys.argv) > 2:
        by_c = defaultdict(list)
        with open(sys.argv[2]) as f:
            for line in f:
                m = re.search(r"c=(\d+) GET: ([0-9.]+) requests per second", line)
                if m:
                    by_c[m.group(1)].append(float(m.group(2)))
        print()
        print("| redis-benchmark -t get -n 2000000 -P 1000 | n | median GET/s | runs |")
        print("|---|---|---|---|")
        for c, v in sorted(by_c.items()):
            runs = ", ".join(f"{x / 1e6:.2f} M" for x in v)
            print(f"| -c {c} | {len(v)} | {statistics.median(v) / 1e6:.2f} M | {runs} |")


if __name__ == "__main__":
    main()
