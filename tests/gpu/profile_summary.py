"""Per-kernel table from an ncu CSV of gpu__time_duration.sum (tests/gpu/run.sh, step 6).

Usage: python3 profile_summary.py PROFILE.csv STEPS
Groups the launches by kernel name and grid size (one row per matrix shape: the QKV, Wo, gate|up and
down products differ by grid), and prints per step (a decode step or a prefill): launches, total
microseconds, mean per launch, and the share of the step."""
import collections
import csv
import sys

UNIT_NS = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "second": 1e9}


def main():
    path, steps = sys.argv[1], max(1, int(sys.argv[2]))
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own log lines before the CSV
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        try:
            ns = float(r["Metric Value"].replace(",", "")) * UNIT_NS.get(r.get("Metric Unit", "nsecond"), 1.0)
        except (KeyError, ValueError):
            continue
        rows.append((r.get("Kernel Name", "?")[:60], r.get("Grid Size", "?"), ns))
    if not rows:
        print("profile: no kernel timings in", path)
        return
    groups = collections.defaultdict(list)
    for name, grid, ns in rows:
        groups[(name, grid)].append(ns)
    total = sum(ns for _, _, ns in rows)
    print(f"per step ({steps} steps profiled, {len(rows)} launches): "
          f"{len(rows) / steps:.0f} launches, {total / steps / 1e3:.1f} us of kernel time")
    print(f"{'kernel':60} {'grid':>14} {'n/step':>6} {'us/step':>8} {'us each':>8} {'share':>6}")
    for (name, grid), v in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        s = sum(v)
        print(f"{name:60} {grid:>14} {len(v) / steps:6.0f} {s / steps / 1e3:8.1f} {s / len(v) / 1e3:8.2f} "
              f"{100 * s / total:5.1f}%")


if __name__ == "__main__":
    main()
