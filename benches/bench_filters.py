"""The cost of many distinct symbol filters: N groups of distinct 5-symbol filters vs one group.

The hub alone, without sockets (the write side is measured by bench_fanout): the standard
workload (500 symbols, 2,000 orders carrying a ``symbol`` field, see workload.py) in the native
engine, one tick merged per flush (1% of the leaves, 5 orders created and 5 removed), and
``Hub.flush`` timed (CPU time of this thread, ``time.thread_time``) for:

* ``unfiltered``: one group (every member subscribed to everything, no filter): one encode;
* ``filtered xN``: N groups, each one member with its own filter of 5 distinct symbols
  (``market_data``, ``orderbook``, ``orders``, ``positions`` filtered; ``account``,
  ``strategies`` whole), for each N in ``--groups``.

Per configuration: the median flush time over ``--flushes`` flushes, the time per group, and the
median bytes one member receives per flush. Snapshots are excluded (the first flush joins
everyone and is not timed). ``make bench-filters`` runs it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_server.config import DEFAULT_SYMBOL_FIELDS
from dashboard_server.core.engine import load_engine
from dashboard_server.core.messages import Messages
from dashboard_server.core.protocol import EVENTS_CHANNEL, ConnectParams
from dashboard_server.fanout.hub import Hub, SystemClock
from workload import SECTIONS, Workload


class Member:
    """A hub member that never lags."""

    def __init__(self, n: int) -> None:
        self.n = n

    def buffered(self) -> int:
        return 0


def run(engine_name: str, groups: int | None, flushes: int, seed: int) -> dict[str, Any]:
    """Flush timings for one configuration (``groups=None``: one unfiltered group)."""
    engine = load_engine(engine_name)
    workload = Workload(seed=seed)
    doc = engine.StateDoc(sections=SECTIONS, max_tombstones=100_000)
    for section, items in workload.state.items():
        for item, value in items.items():
            doc.replace(f"/{section}/{item}", value)
    hub: Hub[Member] = Hub(
        doc,
        messages=Messages(doc, epoch="bench"),
        sections=SECTIONS,
        clock=SystemClock(),
        high_water=1 << 30,
        low_water=1 << 20,
        lag_timeout=1e9,
        symbol_fields=dict(DEFAULT_SYMBOL_FIELDS),
    )
    channels = frozenset(SECTIONS) | {EVENTS_CHANNEL}
    symbols = sorted(workload.state["market_data"])
    rng = random.Random(seed)
    first: Member | None = None
    for i in range(groups or 1):
        member = Member(i)
        filt = None if groups is None else frozenset(rng.sample(symbols, 5))
        hub.add(member, ConnectParams("tui", "msgpack", "changes", channels, 100, symbols=filt))
        first = first or member
    hub.flush(100)  # the snapshots
    times: list[float] = []
    sizes: list[int] = []
    for _ in range(flushes):
        for path, payload in workload.tick():
            if payload == b"null":
                doc.remove(path)
            else:
                doc.merge_bytes(path, payload)
        started = time.thread_time()
        result = hub.flush(100)
        times.append(time.thread_time() - started)
        sizes.append(sum(len(d.payload) for d in result.deliveries if first in d.members))
    median = statistics.median(times)
    return {
        "config": "unfiltered" if groups is None else f"filtered x{groups}",
        "groups": groups or 1,
        "flush_ms": median * 1000,
        "per_group_us": median / (groups or 1) * 1e6,
        "member_bytes": statistics.median(sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default="1,10,100,1000", help="comma-separated N")
    parser.add_argument("--flushes", type=int, default=30)
    parser.add_argument("--engine", default="native")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [run(args.engine, None, args.flushes, args.seed)]
    for n in (int(x) for x in args.groups.split(",")):
        rows.append(run(args.engine, n, args.flushes, args.seed))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"engine {args.engine}, {args.flushes} flushes, load average {load}")
    header = ("config", "flush ms", "per group us", "bytes/member", "vs 1 group")
    print(f"{header[0]:<18}{header[1]:>10}{header[2]:>14}{header[3]:>14}{header[4]:>12}")
    base = rows[0]["flush_ms"]
    for row in rows:
        print(
            f"{row['config']:<18}{row['flush_ms']:>10.2f}{row['per_group_us']:>14.1f}"
            f"{row['member_bytes']:>14.0f}{row['flush_ms'] / base:>11.1f}x"
        )


if __name__ == "__main__":
    main()
