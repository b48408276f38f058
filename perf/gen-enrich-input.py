#!/usr/bin/env python3
"""Deterministic JSON Lines input for the enrich rows of perf/run.

usage: gen-enrich-input.py N OUT [--zipf S]

Writes N lines (about 100 bytes each), line i (from 0) shaped like
  {"id":0,"ts":1765090000000000,"sym":"SYM0487","px":987.87,"qty":488,"side":"S","key":"k:670487"}
id = i, ts = 1765090000000000 + i; sym, px (two decimals), qty, side (B or S) and the key
index (0..999999, so every key is in k:0..k:999999) are drawn from random.Random(42): the same
N gives the same bytes on every run. OUT `-` writes to stdout.

--zipf S: the key index is drawn Zipf(S) over 1..1000000 instead (rank k with probability
proportional to 1/k^S, key k:(k-1)), from its own random.Random(7): skewed traffic, as hot
instruments or users make it, the same stream for every tool that reads the file.
"""
import bisect
import itertools
import random
import sys

KEYS = 1000000


def zipf_keys(s):
    """An endless seeded stream of key indexes drawn Zipf(s) over 0..KEYS-1."""
    cdf = list(itertools.accumulate(1.0 / (k ** s) for k in range(1, KEYS + 1)))
    total = cdf[-1]
    rng = random.Random(7)
    while True:
        yield bisect.bisect_left(cdf, rng.random() * total)


def main():
    if len(sys.argv) not in (3, 5) or (len(sys.argv) == 5 and sys.argv[3] != "--zipf"):
        sys.exit("usage: gen-enrich-input.py N OUT [--zipf S]")
    zipf = zipf_keys(float(sys.argv[4])) if len(sys.argv) == 5 else None
    n = int(sys.argv[1])
    out = sys.stdout if sys.argv[2] == "-" else open(sys.argv[2], "w", encoding="ascii", newline="\n")
    rng = random.Random(42)
    r = rng.randrange
    ts0 = 1765090000000000
    chunk = []
    for i in range(n):
        chunk.append(
            f'{{"id":{i},"ts":{ts0 + i},"sym":"SYM{r(10000):04d}","px":{r(100, 100000) / 100:.2f},'
            f'"qty":{r(1, 1000)},"side":"{"BS"[r(2)]}",'
            f'"key":"k:{next(zipf) if zipf else r(KEYS)}"}}\n')
        if len(chunk) == 8192:
            out.write("".join(chunk))
            chunk.clear()
    out.write("".join(chunk))
    out.close()


if __name__ == "__main__":
    main()
