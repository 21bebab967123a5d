"""What the TorchScript sandbox costs, from scripts/bench-sandbox's CSVs.

Usage: python3 bench/sandbox_summary.py bench/results/sandbox-*.csv

Each round ran the same load against the sandboxed server and the open one
(`unsafe-off`) back to back; the ratio of their p50 latencies is taken per
round (paired), and the rounds of every file given are pooled. Printed per model
and concurrency: the rounds, the median ratio, a 95 % bootstrap interval of that
median, and the medians of p50 and req/s of each server.
"""

import csv
import random
import statistics
import sys


def rounds(path):
    """{(model, concurrency, round): {server: row}} of one CSV."""
    out = {}
    fields = ["label", "concurrency", "requests", "errors", "req_per_s", "p50_ms", "p99_ms", "mean_batch", "max_batch"]
    for r in csv.DictReader(open(path), fieldnames=fields):
        if r["label"] == "label":
            continue
        label = r["label"]
        if label.startswith(("required-", "unsafe-off-")):  # the first silero-only run's labels
            model, rest = "silero", label
            server = "sandboxed" if label.startswith("required-") else "open"
            rnd = rest.rsplit("-r", 1)[1]
        else:
            model, server, rnd = label.split("-", 2)
            rnd = rnd.lstrip("r")
        out.setdefault((model, r["concurrency"], f"{path}:{rnd}"), {})[server] = r
    return out


def main(paths):
    pooled = {}
    for path in paths:
        for (model, c, rnd), servers in rounds(path).items():
            if {"sandboxed", "open"} <= servers.keys():
                pooled.setdefault((model, c), []).append(servers)
    random.seed(1)
    print(f"{'model':8} {'conc':>4} {'rounds':>6} {'p50 ratio':>9} {'95% interval':>13}   "
          f"{'p50 ms sandboxed/open':>22} {'req/s sandboxed/open':>21}")
    for (model, c), rs in sorted(pooled.items()):
        ratios = sorted(float(r["sandboxed"]["p50_ms"]) / float(r["open"]["p50_ms"]) for r in rs)
        boot = sorted(statistics.median(random.choices(ratios, k=len(ratios))) for _ in range(4000))
        lo, hi = boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]
        med = lambda server, field: statistics.median(float(r[server][field]) for r in rs)
        print(f"{model:8} {c:>4} {len(ratios):>6} {statistics.median(ratios):>9.3f} {lo:>6.3f}-{hi:.3f}   "
              f"{med('sandboxed', 'p50_ms'):>10.3f} / {med('open', 'p50_ms'):<9.3f} "
              f"{med('sandboxed', 'req_per_s'):>9.0f} / {med('open', 'req_per_s'):<9.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
