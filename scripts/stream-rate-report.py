#!/usr/bin/env python3
"""Reports how well a run's stream held its rate, from DIR/stream.jsonl.

usage: stream-rate-report.py DIR [--json]

For each batch record: its window rate (rate_hz) against the run's --rate
(from DIR/summary.json), and its window's lateness p99 and max. Prints the
share of batch records within ±2% and +-5% of the set rate, and the
distribution of the per-window lateness figures. Reports only: targets and
the machine they were measured on are in the README.
"""
import json
import math
import sys


def pct(xs, p):
    s = sorted(xs)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    d = args[0]
    summary = json.load(open(f"{d}/summary.json"))
    hz = summary["settings"]["stream"]["rate_hz"]
    if hz is None:
        sys.exit("the run used --rate max: there is no schedule to compare with")
    recs = [json.loads(line) for line in open(f"{d}/stream.jsonl")]
    rates = [r["rate_hz"] for r in recs if r["rate_hz"] is not None]
    p99 = [r["lateness_p99_us"] for r in recs if r["lateness_p99_us"] is not None]
    mx = [r["lateness_max_us"] for r in recs if r["lateness_max_us"] is not None]
    within = lambda tol: sum(1 for x in rates if abs(x - hz) <= tol * hz)
    out = {
        "records": len(recs),
        "rate_hz_set": hz,
        "within_2pct": within(0.02),
        "within_5pct": within(0.05),
        "share_within_2pct": within(0.02) / max(1, len(rates)),
        "rate_hz_min": min(rates, default=None),
        "rate_hz_max": max(rates, default=None),
        "window_lateness_p99_us_median": pct(p99, 50),
        "window_lateness_p99_us_p99": pct(p99, 99),
        "window_lateness_max_us_max": max(mx, default=None),
    }
    if "--json" in sys.argv:
        print(json.dumps(out))
        return
    print(
        f"{out['within_2pct']} of {len(rates)} batch records within ±2% of {hz:g} Hz "
        f"({100 * out['share_within_2pct']:.1f}%), {out['within_5pct']} within ±5%; "
        f"window rate {out['rate_hz_min']:.1f} to {out['rate_hz_max']:.1f} Hz"
    )
    print(
        f"lateness per 100-vector window: p99 median {out['window_lateness_p99_us_median']:.1f} µs, "
        f"p99 of the windows' p99 {out['window_lateness_p99_us_p99']:.1f} µs, "
        f"largest max {out['window_lateness_max_us_max']:.1f} µs"
    )


main()
