"""Print the engine ratios of issue #2 from a pytest-benchmark JSON file; exit 1 if one is missed.

Usage: python benches/report.py .benchmarks/engine.json

The ratios against orjson and ormsgpack come from ``test_interleaved_baselines`` when it ran (the
engine and the baseline timed round by round in the same window); the others from the medians
of their own benchmarks. Every figure is printed whatever happens; the exit status is 1 when a
goal is missed or a ratio could not be computed, so that ``make bench`` fails loudly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (label, numerator, denominator, goal, goal is a minimum?); a name in "interleaved:" is a
# median of test_interleaved_baselines
RATIOS = [
    ("pure tick / native tick", "test_tick[pure]", "test_tick[native]", 20.0, True),
    ("naive peer tick / native tick", "test_tick_naive_peer", "test_tick[native]", 500.0, True),
    (
        "native tick / orjson.dumps(full state)",
        "interleaved:tick[native]",
        "interleaved:orjson.dumps(full state)",
        0.25,
        False,
    ),
    (
        "native msgpack snapshot / ormsgpack.packb(dicts)",
        "interleaved:snapshot[msgpack-native]",
        "interleaved:ormsgpack.packb(full state)",
        1.0,
        False,
    ),
]

# used when the interleaved benchmark did not run (a -k selection)
FALLBACK = {
    "interleaved:tick[native]": "test_tick[native]",
    "interleaved:orjson.dumps(full state)": "test_orjson_dumps_full_state",
    "interleaved:snapshot[msgpack-native]": "test_snapshot[msgpack-native]",
    "interleaved:ormsgpack.packb(full state)": "test_ormsgpack_packb_full_state",
}


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    benchmarks = data["benchmarks"]
    medians = {b["name"]: b["stats"]["median"] for b in benchmarks}
    rounds = {b["name"]: b["stats"]["rounds"] for b in benchmarks}
    for b in benchmarks:
        for name, median in b.get("extra_info", {}).get("interleaved_medians", {}).items():
            medians[f"interleaved:{name}"] = median
            rounds[f"interleaved:{name}"] = b["extra_info"].get("rounds", 0)
    machine = data["machine_info"]
    print(
        f"\nEngine ratios (medians; {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"python {machine.get('python_version')})"
    )
    ops = {b["name"]: b.get("extra_info", {}).get("ops") for b in benchmarks}
    for name in sorted(medians):
        per_op = (
            f"   ({medians[name] / ops[name] * 1e9:,.0f} ns per payload)" if ops.get(name) else ""
        )
        print(f"  {name:<50} {medians[name] * 1e6:>12.1f} µs  ({rounds[name]} rounds){per_op}")
    missed = 0
    for label, top, bottom, goal, minimum in RATIOS:
        top = top if top in medians else FALLBACK.get(top, top)
        bottom = bottom if bottom in medians else FALLBACK.get(bottom, bottom)
        if top not in medians or bottom not in medians:
            print(f"  {label:<50} n/a (not run)")
            continue
        ratio = medians[top] / medians[bottom]
        ok = ratio >= goal if minimum else ratio <= goal
        missed += not ok
        sign = ">=" if minimum else "<="
        source = " (interleaved)" if top.startswith("interleaved:") else ""
        print(
            f"  {label:<50} {ratio:>10.3f}   goal {sign} {goal:<6} "
            f"{'met' if ok else 'MISSED'}{source}"
        )
    if missed:
        print(f"\n{missed} engine goal(s) MISSED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
