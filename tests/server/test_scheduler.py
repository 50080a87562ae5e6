"""The drift-free tick schedule, with made-up times (no sleeping)."""

from __future__ import annotations

import pytest
from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.core.ticker import Ticker


def test_deadlines_stay_on_the_grid_whatever_the_flush_takes() -> None:
    ticker = Ticker(0.1, start=50.0)
    deadlines = [ticker.deadline()]
    for work in (0.003, 0.07, 0.0, 0.099, 0.05):
        deadlines.append(ticker.advance(deadlines[-1] + work))  # woke on time, worked `work`
    assert deadlines == pytest.approx([50.1, 50.2, 50.3, 50.4, 50.5, 50.6])
    assert ticker.skipped == 0


def test_late_wakeups_do_not_accumulate_drift() -> None:
    ticker = Ticker(0.25, start=0.0)
    for k in range(1, 1001):
        assert ticker.deadline() == pytest.approx(0.25 * k)
        ticker.advance(0.25 * k + 0.2)  # every flush finishes 200 ms late
    assert ticker.deadline() == pytest.approx(0.25 * 1001)


def test_overrun_skips_missed_ticks_instead_of_bursting() -> None:
    ticker = Ticker(0.1, start=0.0)
    assert ticker.advance(0.35) == pytest.approx(0.4)  # ticks at 0.2 and 0.3 are skipped
    assert ticker.skipped == 2
    assert ticker.advance(0.4) == pytest.approx(0.5)  # exactly on a grid point: the next one


def test_early_advance_still_moves_forward() -> None:
    ticker = Ticker(0.1, start=0.0)
    assert ticker.advance(0.05) == pytest.approx(0.2)  # never the same deadline twice


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period"):
        Ticker(0, start=0.0)
