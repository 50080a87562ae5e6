"""The GC policy freezes after full collections, unfreezes on schedule, and cleans up."""

from __future__ import annotations

import gc

from dashboard_server.server.gcpolicy import GcPolicy


def test_freezes_after_full_collections_and_unfreezes_every_interval() -> None:
    now = [0.0]
    policy = GcPolicy(unfreeze_interval=300.0, clock=lambda: now[0])
    policy.install()
    try:
        assert policy.on_collect in gc.callbacks
        gc.collect()  # a full collection: its survivors are frozen
        assert gc.get_freeze_count() > 0 and policy.freezes == 1
        policy.on_collect("stop", {"generation": 1})  # not a full one: nothing happens
        assert policy.freezes == 1
        now[0] = 301.0
        gc.collect()  # the interval has passed: everything goes back to be walked
        assert gc.get_freeze_count() == 0 and policy.unfreezes == 1
        gc.collect()
        assert gc.get_freeze_count() > 0 and policy.freezes == 2
    finally:
        policy.uninstall()
    assert policy.on_collect not in gc.callbacks and gc.get_freeze_count() == 0


def test_installs_are_counted() -> None:
    first, second = GcPolicy(), GcPolicy()
    first.install()
    second.install()
    try:
        assert gc.callbacks.count(first.on_collect) == 1
        assert second.on_collect not in gc.callbacks
        second.uninstall()
        assert first.on_collect in gc.callbacks
    finally:
        first.uninstall()
    assert first.on_collect not in gc.callbacks
    first.uninstall()  # one too many: harmless
