"""Print the engine ratios of issue #2 from a pytest-benchmark JSON file.

Usage: python benches/report.py .benchmarks/engine.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (label, numerator benchmark, denominator benchmark, goal, goal is a minimum?)
RATIOS = [
    ("pure tick / native tick", "test_tick[pure]", "test_tick[native]", 20.0, True),
    ("naive peer tick / native tick", "test_tick_naive_peer", "test_tick[native]", 500.0, True),
    (
        "native tick / orjson.dumps(full state)",
        "test_tick[native]",
        "test_orjson_dumps_full_state",
        0.25,
        False,
    ),
    (
        "native msgpack snapshot / ormsgpack.packb(dicts)",
        "test_snapshot[msgpack-native]",
        "test_ormsgpack_packb_full_state",
        1.0,
        False,
    ),
]


def main(path: str) -> int:
    benchmarks = json.loads(Path(path).read_text())["benchmarks"]
    medians = {b["name"]: b["stats"]["median"] for b in benchmarks}
    machine = json.loads(Path(path).read_text())["machine_info"]
    print(
        f"\nEngine ratios (medians; {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"python {machine.get('python_version')})"
    )
    ops = {b["name"]: b.get("extra_info", {}).get("ops") for b in benchmarks}
    for name in sorted(medians):
        per_op = f"   ({medians[name] / ops[name] * 1e9:,.0f} ns per payload)" if ops[name] else ""
        print(f"  {name:<45} {medians[name] * 1e6:>12.1f} µs{per_op}")
    missed = 0
    for label, top, bottom, goal, minimum in RATIOS:
        if top not in medians or bottom not in medians:
            print(f"  {label:<50} n/a (not run)")
            continue
        ratio = medians[top] / medians[bottom]
        ok = ratio >= goal if minimum else ratio <= goal
        missed += not ok
        sign = ">=" if minimum else "<="
        print(f"  {label:<50} {ratio:>10.3f}   goal {sign} {goal:<6} {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
