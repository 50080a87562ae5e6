"""The status board: the body of the ``status`` message from source healths and section ages."""

from __future__ import annotations

from typing import Any

from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.server.status import SourceHealth, StatusBoard


class Fake:
    def __init__(self) -> None:
        self.now = 100.0
        self.sources = [SourceHealth("redis", "ok", 0.0)]
        self.ages: dict[str, float | None] = {"a": 1.0, "b": None}

    def board(self, **limits: float) -> StatusBoard:
        return StatusBoard(
            feed=lambda: "generic" if self.sources else "none",
            sources=lambda: self.sources,
            section_ages=lambda: self.ages,
            stale_after={"a": 10.0, "b": 10.0, **limits},
            sections=("a", "b"),
            wall_ms=lambda: int(self.now * 1000),
            monotonic=lambda: self.now,
        )


def test_ok_then_down_then_back() -> None:
    fake = Fake()
    board = fake.board()
    body: dict[str, Any] = board.current()
    assert body == {
        "feed": "generic",
        "state": "ok",
        "sources": [
            {"name": "redis", "state": "ok", "error": None, "since": "1970-01-01T00:01:40.000Z"}
        ],
        "stale": [],
    }
    fake.now += 1
    assert board.current() is body  # nothing changed: the same object
    fake.sources = [SourceHealth("redis", "down", 0.5, "ConnectionError: refused")]
    down = board.current()
    assert down is not body and down["state"] == "down"
    assert down["sources"][0]["error"] == "ConnectionError: refused"
    assert down["sources"][0]["since"] == "1970-01-01T00:01:40.500Z"
    fake.now += 1
    fake.sources = [SourceHealth("redis", "down", 1.5, "ConnectionError: refused")]
    assert board.current() is down  # still down, for longer: no change
    fake.sources = [SourceHealth("redis", "ok", 0.0)]
    assert board.current()["state"] == "ok"


def test_stale_sections_degrade() -> None:
    fake = Fake()
    board = fake.board(b=0.0)  # b: never stale
    fake.ages = {"a": 11.0, "b": None}
    body = board.current()
    assert body["stale"] == ["a"] and body["state"] == "degraded"
    fake.ages = {"a": 0.1, "b": None}
    assert board.current()["stale"] == [] and board.current()["state"] == "ok"
    assert Fake().board().stale_sections() == []  # just started: nothing is stale yet


def test_a_section_never_updated_counts_from_the_start() -> None:
    fake = Fake()
    board = fake.board()
    fake.now += 11
    assert board.stale_sections() == ["b"]


def test_several_sources_and_none() -> None:
    fake = Fake()
    fake.sources = [SourceHealth("redis", "ok", 0.0), SourceHealth("nats", "connecting", 0.0)]
    body = fake.board().current()
    assert [s["name"] for s in body["sources"]] == ["redis", "nats"]
    assert body["feed"] == "generic" and body["state"] == "degraded"
    fake.sources = []
    body = fake.board().current()
    assert body["feed"] == "none" and body["state"] == "ok" and body["sources"] == []


def test_a_lagging_source_shows_its_lag_in_steps() -> None:
    fake = Fake()
    board = fake.board()
    fake.sources = [SourceHealth("redis", "ok", 0.0, None, 0.01)]
    quiet = board.current()
    assert "lag_s" not in quiet["sources"][0]
    fake.sources = [SourceHealth("redis", "ok", 0.0, None, 0.2)]
    assert board.current() is quiet  # below the threshold: nothing changes
    fake.sources = [SourceHealth("redis", "ok", 0.0, None, 1.7)]
    behind = board.current()
    assert behind["sources"][0]["lag_s"] == 1.5
    fake.sources = [SourceHealth("redis", "ok", 0.0, None, 1.9)]
    assert board.current() is behind  # the same step
