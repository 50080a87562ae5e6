"""Engine benchmarks on the standard workload (see workload).

`make bench-engine` runs them and prints the ratios issue #2 asks for (benches/report.py):
native vs pure tick, native vs the naive peer path, native tick vs ``orjson.dumps`` of the
whole state, native msgpack snapshot vs ``ormsgpack.packb`` of the same data as dicts.

A *tick* is what the server does every flush interval: ingest one tick of per-item JSON merge
payloads (as Redis delivers them; in one ``merge_many`` batch call), take the changes for two
cursors (the 100 ms and the 250 ms tier) and encode each as msgpack and as JSON.

Also the cost of one demo-feed step (goal: under 250 µs, so that the feed stays a small
fraction of a core at 1,000 updates/s); `report.py` prints its median with the others.
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import ormsgpack
import pytest

from conftest import engine_or_skip
from dashboard_server.ingest.demo import DemoFeed
from workload import SECTIONS, Workload

TICKS = 60
SEED = 7


class Scenario:
    """A loaded document and the pre-generated ticks to feed it, one per benchmark round."""

    def __init__(self, engine_name: str) -> None:
        workload = Workload(seed=SEED)
        self.initial = copy.deepcopy(workload.state)
        self.ticks = [workload.tick() for _ in range(TICKS)]
        self.final = workload.state
        self.engine = engine_or_skip(engine_name)
        self.doc = self.engine.StateDoc(sections=SECTIONS)
        for section, items in self.initial.items():
            for key, item in items.items():
                self.doc.replace(f"/{section}/{key}", item)
        self.versions = [self.doc.version, self.doc.version]
        self.next_tick = 0

    def setup_round(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        payloads = self.ticks[self.next_tick % TICKS]
        self.next_tick += 1
        cursors = (self.versions[-1], self.versions[-2])
        return (self.doc, payloads, cursors), {}


def run_tick(doc: Any, payloads: list[tuple[str, bytes]], cursors: tuple[int, int]) -> int:
    doc.merge_many(payloads)  # the batch ingest: one call for the whole tick
    size = 0
    for seq, cursor in enumerate(cursors):
        changes = doc.changes_since(cursor)
        for fmt in ("msgpack", "json"):
            size += len(changes.encode(fmt, "changes", None, seq, 1_795_775_400_100) or b"")
    return size


@pytest.mark.parametrize("engine_name", ["native", "pure"])
def test_tick(benchmark: Any, engine_name: str) -> None:
    scenario = Scenario(engine_name)
    benchmark.group = "tick"

    def measured(doc: Any, payloads: list[tuple[str, bytes]], cursors: tuple[int, int]) -> int:
        size = run_tick(doc, payloads, cursors)
        scenario.versions.append(doc.version)
        return size

    rounds = TICKS - 2 if engine_name == "native" else 20  # 2 warm-up ticks: TICKS in all
    assert (
        benchmark.pedantic(measured, setup=scenario.setup_round, rounds=rounds, warmup_rounds=2) > 0
    )
    if scenario.next_tick == TICKS:  # every tick applied exactly once: the doc is the workload's
        assert scenario.doc.get("") == scenario.final


def merge_into(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = value


def test_tick_naive_peer(benchmark: Any) -> None:
    """The peers' way: keep a copy of the state, diff two whole trees, serialise the patch."""
    workload = Workload(seed=SEED)
    ticks = [workload.tick() for _ in range(4)]
    state = copy.deepcopy(Workload(seed=SEED).state)
    previous = copy.deepcopy(state)
    benchmark.group = "tick"
    rounds = iter(ticks)

    def naive_tick() -> int:
        nonlocal previous
        for path, payload in next(rounds):
            _, section, key = path.split("/")
            patch = orjson.loads(payload)
            if patch is None:
                state[section].pop(key, None)
            elif key in state[section]:
                merge_into(state[section][key], patch)
            else:
                state[section][key] = patch
        patch_ops = jsonpatch.make_patch(previous, state).patch
        size = len(orjson.dumps(patch_ops))
        previous = copy.deepcopy(state)
        return size

    assert benchmark.pedantic(naive_tick, rounds=3, warmup_rounds=1) > 0


@pytest.fixture(scope="module")
def full_state() -> dict[str, Any]:
    return Workload(seed=SEED).state


def test_orjson_dumps_full_state(benchmark: Any, full_state: dict[str, Any]) -> None:
    benchmark.group = "full state"
    assert len(benchmark(orjson.dumps, full_state)) > 800_000


def test_ormsgpack_packb_full_state(benchmark: Any, full_state: dict[str, Any]) -> None:
    benchmark.group = "snapshot msgpack"
    assert len(benchmark(ormsgpack.packb, full_state)) > 500_000


@pytest.mark.parametrize("engine_name", ["native", "pure"])
@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_snapshot(benchmark: Any, engine_name: str, fmt: str, full_state: dict[str, Any]) -> None:
    engine = engine_or_skip(engine_name)
    doc = engine.StateDoc(sections=SECTIONS)
    doc.replace("", full_state)
    benchmark.group = f"snapshot {fmt}"
    encode: Callable[[], bytes] = lambda: doc.encode_snapshot(fmt, None, 1, "epoch", 0)  # noqa: E731
    assert len(benchmark(encode)) > 500_000


INTERLEAVED_WARMUP = 5
INTERLEAVED_ROUNDS = 60


def test_interleaved_baselines(benchmark: Any, full_state: dict[str, Any]) -> None:
    """The engine and its baselines timed round by round in one window, so that the machine's
    load weighs on both sides of each ratio alike (a baseline timed in a window of its own can
    meet a quieter or a busier machine than the engine did). ``report.py`` takes the ratios
    against orjson and ormsgpack from these medians."""
    scenario = Scenario("native")
    doc = scenario.engine.StateDoc(sections=SECTIONS)
    doc.replace("", full_state)
    timings: dict[str, list[float]] = {
        "tick[native]": [],
        "orjson.dumps(full state)": [],
        "snapshot[msgpack-native]": [],
        "ormsgpack.packb(full state)": [],
    }

    def one_round(record: bool) -> None:
        (tick_doc, payloads, cursors), _ = scenario.setup_round()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("tick[native]", lambda: run_tick(tick_doc, payloads, cursors)),
            ("orjson.dumps(full state)", lambda: orjson.dumps(full_state)),
            ("snapshot[msgpack-native]", lambda: doc.encode_snapshot("msgpack", None, 1, "e", 0)),
            ("ormsgpack.packb(full state)", lambda: ormsgpack.packb(full_state)),
        ]
        for name, step in steps:
            started = time.perf_counter()
            step()
            elapsed = time.perf_counter() - started
            if record:
                timings[name].append(elapsed)
        scenario.versions.append(tick_doc.version)

    def measured() -> int:
        for _ in range(INTERLEAVED_WARMUP):
            one_round(False)
        for _ in range(INTERLEAVED_ROUNDS):
            one_round(True)
        return INTERLEAVED_ROUNDS

    benchmark.group = "interleaved"
    assert benchmark.pedantic(measured, rounds=1, iterations=1) == INTERLEAVED_ROUNDS
    benchmark.extra_info["interleaved_medians"] = {
        name: statistics.median(values) for name, values in timings.items()
    }
    benchmark.extra_info["rounds"] = INTERLEAVED_ROUNDS


class NullSink:
    """A feed sink that does nothing: only the feed's own work is measured."""

    def merge(self, path: str, patch: Any) -> None: ...
    def replace(self, path: str, value: Any) -> None: ...
    def remove(self, path: str) -> None: ...
    def publish_event(self, channel: str, data: dict[str, Any]) -> None: ...


def test_demo_feed_step(benchmark: Any) -> None:
    benchmark.group = "demo feed"
    feed = DemoFeed(NullSink(), symbols=50, updates_per_second=1000.0, seed=1)
    feed.step()
    benchmark(feed.step)


# -- ingest: the JSON payloads as the server receives them ---------------------------------------

PAYLOADS = Path(__file__).parent / "payloads"
INGEST_OPS = 2000


def _perturb(value: Any, rng: random.Random) -> Any:
    """``value`` with about a quarter of its leaves changed as a live feed changes them."""
    if isinstance(value, dict):
        return {k: _perturb(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_perturb(v, rng) for v in value]
    if rng.random() >= 0.25 or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return round(value * rng.uniform(0.999, 1.001), 4)
    if isinstance(value, int):
        return value + rng.randrange(1, 100)
    if isinstance(value, str) and value[-1:].isdigit():
        return value[:-1] + str((int(value[-1]) + 1) % 10)
    return value


def _ingest_set(name: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(items to load first, ops) of an ingest benchmark."""
    rng = random.Random(11)
    if name == "replace-b25":
        # The original system's payloads (benches/payloads/), compact as a service sends them.
        samples = {p.stem: json.loads(p.read_bytes()) for p in sorted(PAYLOADS.glob("*.json"))}
        current = {f"/b25/{k}": v for k, v in samples.items()}
    else:
        # Whole items of the standard workload, as the Redis ingest replaces them.
        state = Workload(seed=SEED, symbols=100, orders=100, positions=100).state
        current = {f"/{s}/{k}": v for s in SECTIONS[:4] for k, v in list(state[s].items())[:100]}
    initial = [(p, orjson.dumps(v)) for p, v in current.items()]
    paths = list(current)
    ops = []
    for n in range(INGEST_OPS):
        path = paths[n % len(paths)]
        current[path] = _perturb(current[path], rng)
        ops.append((path, orjson.dumps(current[path])))
    return initial, ops


@pytest.mark.parametrize("kind", ["replace-generic", "replace-b25", "merge-tick"])
def test_ingest(benchmark: Any, kind: str) -> None:
    """``replace_bytes`` of whole items (the Redis ingest) and ``merge_bytes`` of a tick's
    payloads, one call per payload: the JSON fast path end to end, Python call included."""
    engine = engine_or_skip("native")
    if kind == "merge-tick":
        workload = Workload(seed=SEED)
        initial = [
            (f"/{s}/{k}", orjson.dumps(v))
            for s, items in workload.state.items()
            for k, v in items.items()
        ]
        ops = [op for _ in range(3) for op in workload.tick()]
    else:
        initial, ops = _ingest_set(kind)
    doc = engine.StateDoc(sections=(*SECTIONS, "b25"))
    for path, payload in initial:
        doc.replace_bytes(path, payload)
    benchmark.group = "ingest"
    benchmark.extra_info["ops"] = len(ops)
    apply = doc.merge_bytes if kind == "merge-tick" else doc.replace_bytes

    def run() -> int:
        return sum(apply(path, payload) for path, payload in ops)

    assert benchmark.pedantic(run, rounds=15, warmup_rounds=1) >= 0
