"""The wiring of an instance in a shared version space (``replication_url`` set).

Every such instance is an **edge**: its document is a :class:`~dashboard_server.core.shifted.
ShiftedDoc` fed by a :class:`~dashboard_server.ingest.replication.follower.StreamFollower`
through the instance's write side, and its epoch is the lineage's. A **writer** candidate
(``replication_role: writer``) runs in addition an
:class:`~dashboard_server.ingest.replication.leader.IngestLeader` whose source feeds (the
configured sources, or the demo feed when there are none) write into an ingest document of its
own; only the lease holder's feeds run. docs/operations.md, "One version space", has the design.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dashboard_server.core.shifted import ShiftedDoc
from dashboard_server.ingest.feed import Feed
from dashboard_server.ingest.replication.follower import StreamFollower
from dashboard_server.ingest.replication.leader import IngestLeader
from dashboard_server.ingest.writer import StateWriter

if TYPE_CHECKING:
    from dashboard_server.server.app import DashboardServer

__all__ = ["replication_feeds", "replication_health"]


def replication_feeds(
    server: DashboardServer, source_feeds: Callable[[StateWriter], list[Feed]]
) -> list[Feed]:
    """The follower, and for a writer candidate the leader over ``source_feeds(writer)``."""
    c = server.config
    assert c.replication_url is not None and isinstance(server.doc, ShiftedDoc)
    follower = StreamFollower(
        server.writer,
        server.doc,
        url=c.replication_url,
        partition=c.replication_partition,
        sections=c.sections,
        on_epoch=server.set_epoch,
        timeout=c.redis_health_timeout_s,
        check_s=c.redis_health_interval_s,
        backoff_initial=c.redis_backoff_initial_s,
        backoff_max=c.redis_backoff_max_s,
    )
    feeds: list[Feed] = [follower]
    if c.replication_role == "writer":

        def new_doc() -> Any:
            return server.engine.StateDoc(sections=c.sections, max_tombstones=c.max_tombstones)

        ingest = new_doc()
        leader = IngestLeader(
            ingest,
            [],
            new_doc=new_doc,
            url=c.replication_url,
            partition=c.replication_partition,
            sections=c.sections,
            lease_ms=c.replication_lease_ms,
            flush_ms=c.replication_flush_ms,
            checkpoint_s=c.replication_checkpoint_s,
            timeout=c.redis_health_timeout_s,
            max_pending_events=c.max_pending_events,
        )
        writer = StateWriter(ingest, leader, server.writer.metrics, sections=c.sections)
        leader.feeds = source_feeds(writer)
        leader.before_flush = writer.apply_pending
        feeds.append(leader)
    return feeds


def replication_health(server: DashboardServer) -> dict[str, Any]:
    """The ``replication`` part of ``/health``."""
    c = server.config
    body: dict[str, Any] = {"partition": c.replication_partition, "role": c.replication_role}
    for feed in server.feeds:
        if isinstance(feed, StreamFollower):
            body["entries"] = feed.entries
            if feed.last_entry_at is not None:
                body["last_entry_s"] = round(time.monotonic() - feed.last_entry_at, 3)
        elif isinstance(feed, IngestLeader):
            body["active"] = feed.active
            body["takeovers"] = feed.takeovers
            body["sources"] = {f.name: f.health().state.value for f in feed.feeds}
    return body
