#!/usr/bin/env python3
"""The table of perf/run: medians per configuration and ringwait / better baseline ratios.

usage: report.py RESULTS META STAMP
Each column's median is taken on its own; "better baseline" is the tokio variant with the
higher median throughput; ratio = ringwait's median records/s over it (and its p99 over
ringwait's, so > 1 means ringwait is better on both).
The enrich rows (workload=enrich) get their own table: see enrich_table.
"""
import statistics
import sys
from collections import defaultdict


def parse(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def fmt_us(v):
    return f"{v:.0f}" if v >= 100 else (f"{v:.1f}" if v >= 1 else f"{v:.2f}")


def main():
    rows = [parse(l) for l in open(sys.argv[1]) if l.strip()]
    meta = open(sys.argv[2]).read().strip() if len(sys.argv) > 2 else ""
    stamp = sys.argv[3] if len(sys.argv) > 3 else ""
    groups = defaultdict(list)
    order = []
    for r in rows:
        if r.get("workload") not in ("overhead", "delay", "redis"):
            continue
        key = (r["workload"], r["mode"], r["partitions"])
        if key not in groups:
            order.append(key)
        groups[key].append(r)
    med = lambda rs, c: statistics.median(float(r[c]) for r in rs)
    out = []
    out.append(f"# perf/run {stamp}\n")
    for l in meta.splitlines():
        out.append(l.lstrip("# ") + "  ")
    reps = max((int(r["rep"]) for r in rows if r.get("rep", "").isdigit()), default=0)
    if order:
        out.append(f"\nMedians of {reps} interleaved repetition(s); each column's median on its own. "
                   "ratio = ringwait records/s ÷ the better tokio variant's; p99 ratio = that "
                   "variant's p99 ÷ ringwait's (> 1: ringwait lower).\n")
        out.append("| workload | mode | P | impl | n | records/s | p50 µs | p99 µs | p99.9 µs | ratio | p99 ratio |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        out.append(f"\nMedians of {reps} interleaved repetition(s).")
    summary = []
    for key in order:
        by_impl = defaultdict(list)
        for r in groups[key]:
            by_impl[r["impl"]].append(r)
        base = [i for i in ("tokio-buffered", "tokio-buffered-unconstrained") if i in by_impl]
        better = max(base, key=lambda i: med(by_impl[i], "records_per_s")) if base else None
        for impl in ("ringwait", "tokio-buffered", "tokio-buffered-unconstrained",
                     "ringwait-builtin-server"):
            rs = by_impl.get(impl)
            if not rs:
                continue
            ratio = p99r = ""
            if impl == "ringwait" and better:
                ratio = f"**{med(rs, 'records_per_s') / med(by_impl[better], 'records_per_s'):.2f}×**"
                p99r = f"{med(by_impl[better], 'p99_us') / max(med(rs, 'p99_us'), 1e-9):.1f}×"
                summary.append((key, med(rs, "records_per_s"), med(rs, "p99_us"), ratio))
            w, m, p = key
            out.append(
                f"| {w} | {m} | {p} | {impl} | {len(rs)} | {med(rs, 'records_per_s') / 1e6:.3f} M | "
                f"{fmt_us(med(rs, 'p50_us'))} | {fmt_us(med(rs, 'p99_us'))} | "
                f"{fmt_us(med(rs, 'p999_us'))} | {ratio} | {p99r} |")
    lat = [r for r in rows if r.get("workload") == "latency"]
    if lat:
        out.append("\n## latency (open loop, 10% of the measured maximum, from the intended send time)\n")
        out.append("| impl | n | rate/s | p50 µs | p99 µs | p99.9 µs | max µs |")
        out.append("|---|---|---|---|---|---|---|")
        for impl in ("ringwait", "raw-loopback"):
            rs = [r for r in lat if r["impl"] == impl]
            if rs:
                out.append(f"| {impl} | {len(rs)} | {med(rs, 'records_per_s'):.0f} | "
                           f"{fmt_us(med(rs, 'p50_us'))} | {fmt_us(med(rs, 'p99_us'))} | "
                           f"{fmt_us(med(rs, 'p999_us'))} | {fmt_us(med(rs, 'max_us'))} |")
        rs = [r for r in lat if r["impl"] == "added" and r.get("raw_kept_rate", "yes") == "yes"]
        if rs:
            out.append(f"| **added by ringwait** | {len(rs)} | {med(rs, 'rate'):.0f} | "
                       f"{med(rs, 'added_p50_us'):.1f} | {med(rs, 'added_p99_us'):.1f} | "
                       f"{med(rs, 'added_p999_us'):.1f} | {med(rs, 'added_max_us'):.1f} |")
    rbv = []
    for l in open(sys.argv[1]):
        if "workload=redis-benchmark" in l and "GET:" in l:
            rbv.append(float(l.split("GET:")[1].split()[0]))
    if rbv:
        out.append(f"\nredis-benchmark -t get -P 1000 -c 1 (the store's ceiling): median "
                   f"{statistics.median(rbv) / 1e6:.2f} M GET/s ({', '.join(f'{v / 1e6:.2f}' for v in rbv)})")
    cg = [r for r in rows if r.get("workload") == "callgrind"]
    if cg:
        out.append("\n## callgrind instructions per record (overhead, P=1 ordered)\n")
        out.append("| impl | Ir per record | (Ir large − Ir small) / (records large − records small) |")
        out.append("|---|---|---|")
        per = {}
        for r in cg:
            try:
                d = (int(r["ir_large"]) - int(r["ir_small"])) / (
                    int(r["records_large"]) - int(r["records_small"]))
            except (ValueError, KeyError):
                continue
            per[r["impl"]] = d
            out.append(f"| {r['impl']} | {d:.0f} | {r['ir_large']} − {r['ir_small']} over "
                       f"{r['records_large']} − {r['records_small']} |")
        if "ringwait" in per and "tokio-buffered" in per and per["ringwait"] > 0:
            out.append(f"\ntokio-buffered / ringwait instructions per record: "
                       f"{per['tokio-buffered'] / per['ringwait']:.1f}×")
    out.extend(enrich_table([r for r in rows if r.get("workload") == "enrich"]))
    out.extend(enrich_table(
        [r for r in rows if r.get("workload") == "enrich-zipf"],
        "enrich-zipf (the same lines with keys drawn Zipf(0.99) over 1M keys; ordered; "
        "ringwait-cache: --cache-size 65536 --coalesce on; tokio-moka: a moka cache of 65,536; "
        "ratio against the tokio program of the same kind)"))
    out.extend(stream_table([r for r in rows if r.get("workload") == "stream"]))
    out.extend(kafka_table([r for r in rows if r.get("workload") == "kafka"]))
    print("\n".join(out))


def stream_table(rows):
    """The stream table: medians over repetitions of the ceiling's and the job's entries/s,
    their ratio per repetition (median), and the end-to-end latency at 10% of the rate."""
    if not rows:
        return []
    reps = defaultdict(dict)
    for r in rows:
        reps[r.get("rep")][r["part"]] = r
    full = [d for d in reps.values() if {"ceiling", "job", "latency"} <= d.keys()]
    if not full:
        return []
    med = lambda xs: statistics.median(xs)
    ceiling = med([float(d["ceiling"]["records_per_s"]) for d in full])
    job = med([float(d["job"]["records_per_s"]) for d in full])
    ratio = med([float(d["job"]["records_per_s"]) / float(d["ceiling"]["records_per_s"])
                 for d in full])
    lat = lambda c: med([float(d["latency"][c]) for d in full])
    n = full[0]["job"]["records"]
    return ["\n## stream (Redis stream -> enrich, built-in lookup -> Redis stream, exactly "
            "once; redis-server on the same 2 cores)\n",
            f"Medians of {len(full)} repetition(s), {n} entries each. ceiling = one client "
            "moving the same entries with XREADGROUP + XADD pipelined (no lookup, no "
            "acknowledgement, no exactly-once), the mean of a run before and one after the "
            "job; ratio = job ÷ ceiling per repetition (target "
            "≥ 0.80); latency = XADD of an input entry to its output entry visible, at 10% "
            "of the job's rate.\n",
            "| ceiling entries/s | job entries/s | ratio | latency rate/s | p50 µs | p99 µs | p99.9 µs |",
            "|---|---|---|---|---|---|---|",
            f"| {ceiling / 1e3:.0f} k | {job / 1e3:.0f} k | **{ratio:.2f}** | "
            f"{lat('rate'):.0f} | {fmt_us(lat('p50_us'))} | {fmt_us(lat('p99_us'))} | "
            f"{fmt_us(lat('p999_us'))} |"]


def kafka_table(rows):
    """The kafka table: medians over repetitions of the plain loop's and the job's
    messages/s, their ratio per repetition (median), the end-to-end latency at 10% of the
    job's rate, and the broker's own hop at that rate."""
    if not rows:
        return []
    reps = defaultdict(dict)
    for r in rows:
        reps[r.get("rep")][r["part"]] = r
    full = [d for d in reps.values() if {"ceiling", "job", "latency", "broker_hop"} <= d.keys()]
    if not full:
        return []
    med = lambda xs: statistics.median(xs)
    ceiling = med([float(d["ceiling"]["records_per_s"]) for d in full])
    job = med([float(d["job"]["records_per_s"]) for d in full])
    ratios = [float(d["job"]["records_per_s"]) / float(d["ceiling"]["records_per_s"])
              for d in full]
    lat = lambda part, c: med([float(d[part][c]) for d in full])
    n = full[0]["job"]["records"]
    return ["\n## kafka (Kafka -> enrich, built-in lookup -> Kafka, no loss and no duplicates "
            "through a crash; the broker on the same 2 cores)\n",
            f"Medians of {len(full)} repetition(s), {n} messages each, topics of 4 "
            "partitions. loop = a plain rdkafka consume->produce loop with no lookup (the "
            "job's client settings, offsets committed every 100 ms); ratio = job ÷ loop per "
            "repetition (target ≥ 0.80; per repetition: "
            + ", ".join(f"{x:.2f}" for x in ratios) + "); latency = the send of an input "
            "message to the read of its output, at 10% of the job's rate; hop = one send to "
            "read through the broker at that rate, no job (the job's path has two).\n",
            "| loop msg/s | job msg/s | ratio | latency rate/s | p50 µs | p99 µs | p99.9 µs | hop p50 µs | hop p99 µs |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {ceiling / 1e3:.0f} k | {job / 1e3:.0f} k | **{med(ratios):.2f}** | "
            f"{lat('latency', 'rate'):.0f} | {fmt_us(lat('latency', 'p50_us'))} | "
            f"{fmt_us(lat('latency', 'p99_us'))} | {fmt_us(lat('latency', 'p999_us'))} | "
            f"{fmt_us(lat('broker_hop', 'p50_us'))} | {fmt_us(lat('broker_hop', 'p99_us'))} |"]


ENRICH_ROWS = [  # (impl, store, partitions), in table order
    ("ringwait", "builtin", "1"),
    ("ringwait", "ringwait-serve", "1"),
    ("ringwait", "ringwait-serve", "2"),
    ("tokio-serde", "ringwait-serve", "1"),
    ("ringwait", "redis-server", "1"),
    ("ringwait", "redis-server", "2"),
    ("tokio-serde", "redis-server", "1"),
]


# The baseline a ringwait row is compared with.
BASELINE_OF = {"ringwait": "tokio-serde", "ringwait-cache": "tokio-moka"}


def enrich_table(rows, title="enrich (JSON Lines in, GET per line, each line out with one "
                 "field added; ordered)"):
    """The enrich table: per (impl, store, P) the medians over repetitions of records/s (N ÷
    the process's wall time, and the figure the program printed), p50/p99, CPU seconds
    (user+sys of the client process) per 1M records, the store process's CPU per 1M records,
    max RSS; ratio = ringwait ÷ tokio-serde on the same store (records/s; CPU: tokio's ÷
    ringwait's), P2÷P1 = partitions 2 ÷ partitions 1 records/s on the same store."""
    if not rows:
        return []
    groups = defaultdict(list)
    for r in rows:
        groups[(r["impl"], r["store"], r["partitions"])].append(r)
    keys = [k for k in ENRICH_ROWS if k in groups] + sorted(k for k in groups if k not in ENRICH_ROWS)
    med = lambda rs, c: statistics.median(float(r[c]) for r in rs if r.get(c, "") not in ("", "-"))
    per_m = lambda rs, c: statistics.median(float(r[c]) / float(r["records"]) * 1e6 for r in rs if c in r)
    n_rec = sorted({r["records"] for r in rows})
    out = [f"\n## {title}\n",
           f"Records per run: {', '.join(n_rec)}. records/s = records ÷ the process's wall time "
           "(start-up, connection, reading and writing included); self = what the program "
           "printed (ringwait: over its operators' active time; tokio-serde: from opening the "
           "files to the flushed output); p50/p99 intake → emit as each program measures it; "
           "CPU = user+sys of the client process (the built-in store's included), store CPU = "
           "the separate server process's; RSS = the client's maximum. Medians over "
           "repetitions. ratio = ringwait ÷ tokio-serde on the same store (records/s; for CPU "
           "tokio-serde's ÷ ringwait's, so > 1 means ringwait better); P2÷P1 = 2 partitions ÷ "
           "1 on the same store.\n",
           "| store | impl | P | n | records/s | self records/s | p50 µs | p99 µs | CPU s / 1M | store CPU s / 1M | max RSS MB | ratio | CPU ratio | P2÷P1 | same output |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        impl, store, p = key
        rs = groups[key]
        rps = med(rs, "records_per_s")
        ratio = cpur = p21 = ""
        base = groups.get((BASELINE_OF.get(impl, ""), store, "1"))
        if impl in BASELINE_OF and base:
            ratio = f"**{rps / med(base, 'records_per_s'):.2f}×**"
            cpur = f"{per_m(base, 'cpu_s') / max(per_m(rs, 'cpu_s'), 1e-9):.2f}×"
        one = groups.get((impl, store, "1"))
        if p != "1" and one:
            p21 = f"{rps / med(one, 'records_per_s'):.2f}×"
        store_cpu = f"{per_m(rs, 'store_cpu_s'):.2f}" if all("store_cpu_s" in r for r in rs) else "(in-process)"
        same = ",".join(sorted({r.get("same_output", "?") for r in rs}))
        out.append(f"| {store} | {impl} | {p} | {len(rs)} | {rps / 1e6:.3f} M | "
                   f"{med(rs, 'self_records_per_s') / 1e6:.3f} M | {fmt_us(med(rs, 'p50_us'))} | "
                   f"{fmt_us(med(rs, 'p99_us'))} | {per_m(rs, 'cpu_s'):.2f} | {store_cpu} | "
                   f"{med(rs, 'rss_kb') / 1024:.0f} | {ratio} | {cpur} | {p21} | {same} |")
    return out


if __name__ == "__main__":
    main()
