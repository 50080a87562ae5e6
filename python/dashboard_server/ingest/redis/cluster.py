"""The Redis transport against a Redis Cluster, and the choice between it and a single endpoint.

A cluster spreads the keys over several primaries by hash slot, and three things a single
endpoint does for free stop working: ``SCAN`` sees one node's keys, ``MGET`` of keys in different
slots is refused (``CROSSSLOT``), and keyspace notifications are published on the node that owns
the key only. :class:`ClusterRedisFeed` keeps the semantics of
:class:`~dashboard_server.ingest.redis.feed.RedisFeed` (same sources, same replace-semantics
reload, same race rule, same states and metrics) with a session that is cluster-aware:

- the topology (``CLUSTER SLOTS``) is read from any reachable node: the one of ``redis_url``,
  then every node seen before; a topology that does not cover the 16,384 slots (a failover under
  way) fails the attempt, which is retried with backoff;
- one command connection per primary: the reload ``SCAN``s every primary and reads the keys
  found with one ``MGET`` per hash slot (pipelined per node); keyspace ``set`` events are read
  the same way from the node that sent them;
- one pub/sub connection per primary, each read like a standalone server's
  (:class:`~dashboard_server.ingest.redis.subscriber.Subscriber`: a reader thread, the engine's
  scanner, batches applied before each fan-out flush): the classic patterns are PSUBSCRIBEd on
  the first primary only (a classic ``PUBLISH`` reaches every node of a cluster, so subscribing
  on more would duplicate every message), the keyspace patterns on every primary, and the
  sharded channels (``redis_sharded_channels``: ``SPUBLISH`` reaches only the shard that owns the
  channel) with ``SSUBSCRIBE`` on their owner;
- every pub/sub connection is PINGed; a node that stops answering ends the session, as does a
  changed topology (checked every ``health_interval``) or a ``MOVED``/``ASK`` reply, so a failover
  of a primary is followed by a new session on the new topology and a full reload (resync).

:class:`AutoRedisFeed` is what the server builds for ``redis_url``: it asks ``INFO cluster``
(unless ``redis_cluster`` says true or false) and then runs the matching feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from dashboard_server.core.sources import Source
from dashboard_server.ingest.feed import FeedHealth, FeedState, TaskFeed, describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis, glob_escape
from dashboard_server.ingest.redis.feed import SCAN_COUNT, RedisFeed
from dashboard_server.ingest.redis.subscriber import Subscriber
from dashboard_server.ingest.router import Resyncs, SourceRouter
from dashboard_server.telemetry.metrics import RedisMetrics

__all__ = ["AutoRedisFeed", "ClusterRedisFeed", "Topology", "TopologyChanged", "is_cluster"]

log = logging.getLogger(__name__)

SLOTS: Final = 16384


class TopologyChanged(ConnectionError):
    """The cluster's slots moved (failover, resharding): a new session starts and reloads."""


@dataclass(frozen=True, slots=True)
class Topology:
    """Which primary serves which slots, and every node known (replicas included)."""

    primaries: tuple[tuple[str, int], ...]
    """The primaries, sorted."""
    slot_owner: tuple[int, ...]
    """For each slot, the index of its primary in ``primaries``."""
    nodes: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    def owner(self, name: str | bytes) -> int:
        """The index of the primary that holds key (or sharded channel) ``name``."""
        return self.slot_owner[key_slot(name.encode() if isinstance(name, str) else name)]


def parse_slots(reply: Sequence[Any], default_host: str) -> Topology:
    """A :class:`Topology` from a ``CLUSTER SLOTS`` reply; :class:`TopologyChanged` if it does
    not cover every slot."""
    ranges: list[tuple[int, int, tuple[str, int]]] = []
    nodes: set[tuple[str, int]] = set()
    for entry in reply:
        start, end = int(entry[0]), int(entry[1])
        addresses = []
        for node in entry[2:]:
            host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
            addresses.append((host or default_host, int(node[1])))
        ranges.append((start, end, addresses[0]))
        nodes.update(addresses)
    primaries = tuple(sorted({r[2] for r in ranges}))
    index = {p: i for i, p in enumerate(primaries)}
    owner = [-1] * SLOTS
    for start, end, primary in ranges:
        owner[start : end + 1] = [index[primary]] * (end - start + 1)
    if -1 in owner:
        missing = owner.count(-1)
        raise TopologyChanged(f"the cluster does not cover every slot ({missing} uncovered)")
    return Topology(primaries, tuple(owner), frozenset(nodes))


def _node_url(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (scheme, credentials and options kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return parts._replace(netloc=netloc, path="/0").geturl()


async def cluster_slots(client: Redis) -> Any:
    """The raw ``CLUSTER SLOTS`` reply of one node."""
    return await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]


async def is_cluster(url: str, timeout: float) -> bool:
    """Whether the Redis at ``url`` runs in cluster mode (``INFO cluster``)."""
    client = connect_redis(url, timeout)
    try:
        info = await client.info("cluster")
        return bool(int(info.get("cluster_enabled", 0)))
    finally:
        await close_quietly(client, timeout=timeout)


class _Nodes:
    """One session's view of the cluster: its topology and a command client per primary."""

    def __init__(self, topology: Topology, clients: list[Redis]) -> None:
        self.topology = topology
        self.clients = clients

    async def mget_by_slot(self, keys: Sequence[bytes | str]) -> list[Any]:
        """The values of ``keys`` (in order): one MGET per hash slot, pipelined per primary."""
        by_node: dict[int, dict[int, list[int]]] = {}
        for i, key in enumerate(keys):
            raw = key.encode() if isinstance(key, str) else key
            slot = key_slot(raw)
            by_node.setdefault(self.topology.slot_owner[slot], {}).setdefault(slot, []).append(i)
        values: list[Any] = [None] * len(keys)

        async def read(node: int, groups: dict[int, list[int]]) -> None:
            async with self.clients[node].pipeline(transaction=False) as pipe:
                for indexes in groups.values():
                    pipe.mget([keys[i] for i in indexes])
                replies = await pipe.execute()
            for indexes, reply in zip(groups.values(), replies, strict=True):
                for i, value in zip(indexes, reply, strict=True):
                    values[i] = value

        await asyncio.gather(*(read(node, groups) for node, groups in by_node.items()))
        return values


class ClusterRedisFeed(RedisFeed):
    """The Redis feed for a Redis Cluster (see the module doc); ``url`` names any one node,
    ``sharded_channels`` the exact channels the backends ``SPUBLISH`` on."""

    def __init__(
        self,
        router: SourceRouter,
        *,
        url: str,
        sources: Sequence[Source],
        metrics: RedisMetrics,
        sharded_channels: Sequence[str] = (),
        **options: Any,
    ) -> None:
        super().__init__(router, url=url, sources=sources, metrics=metrics, **options)
        self.sharded_channels = tuple(sharded_channels)
        self.topology: Topology | None = None
        """The topology of the current (or last) session."""
        self._seeds: list[tuple[str, int]] = []
        parts = urlsplit(url if "://" in url else f"redis://{url}")
        self._seeds.append((parts.hostname or "127.0.0.1", parts.port or 6379))
        self._nodes: _Nodes | None = None
        self._fetch_from: dict[str, int] = {}
        self.sessions = 0
        """Sessions started (each one after a failure or a topology change reloads)."""

    # --- topology --------------------------------------------------------------------------

    def _client_for(self, host: str, port: int) -> Redis:
        return connect_redis(_node_url(self.url, host, port), self.health_timeout)

    async def discover(self) -> Topology:
        """The topology, asked of the seeds in turn (the last one that answered first)."""
        errors: list[str] = []
        for host, port in list(self._seeds):
            client = self._client_for(host, port)
            try:
                topology = parse_slots(await cluster_slots(client), host)
            except Exception as exc:
                errors.append(f"{host}:{port}: {describe_failure(exc)}")
                continue
            finally:
                await close_quietly(client, timeout=self.health_timeout)
            known = [(host, port), *sorted(topology.nodes - {(host, port)})]
            self._seeds = known + [s for s in self._seeds if s not in known]
            return topology
        raise ConnectionError("no cluster node answered: " + "; ".join(errors))

    # --- session ---------------------------------------------------------------------------

    async def _session(self) -> None:
        topology = await self.discover()
        self.topology = topology
        self.sessions += 1
        clients = [self._client_for(h, p) for h, p in topology.primaries]
        nodes = _Nodes(topology, clients)
        self._nodes = nodes
        subs: list[Subscriber] = []
        try:
            keyspace = [await self._keyspace_prefix(c) if self._watched else "" for c in clients]
            # keyspace events in cluster mode are all in db 0, on the key's primary
            self._keyspace = "__keyspace@0__:" if self._watched and all(keyspace) else ""
            if self._watched and any(keyspace) and not all(keyspace):
                log.warning("keyspace notifications are on some primaries only; scanning")
            classic = [glob_escape(prefix) + "*" for prefix in self._pubsub]
            watch = [self._keyspace + glob_escape(p) + "*" for p in self._watched]
            # one pub/sub connection per primary (each is PINGed: a dead primary ends the
            # session), read like a standalone server's: the classic patterns on the first, the
            # keyspace events and the sharded channels on the primary that holds their keys
            for i, (host, port) in enumerate(topology.primaries):
                sub = await Subscriber.connect(
                    _node_url(self.url, host, port),
                    self._on_batch,
                    self._conflate if i == 0 else [],
                    timeout=self.health_timeout,
                    max_delay=self.batch_delay,
                    max_payload=self._max_payload(),
                    scanner=self.scanner,
                )
                subs.append(sub)
                patterns = (classic if i == 0 else []) + (watch if self._keyspace else [])
                if patterns:
                    await sub.psubscribe(patterns, self.health_timeout)
                for channel in self.sharded_channels:  # one per call: each has its own slot
                    if topology.owner(channel) == i:
                        await sub.ssubscribe(channel, self.health_timeout)
            self.metrics.connects.inc()
            with contextlib.ExitStack() as pending:
                for sub in subs:  # a fan-out flush applies each connection's pending batch
                    pending.enter_context(self.router.writer.pending(sub.flush))
                async with asyncio.TaskGroup() as tasks:
                    for sub in subs:
                        tasks.create_task(self._read(sub))
                    reload = functools.partial(self.cluster_reload, nodes)
                    tasks.create_task(self._reload_loop(reload))
                    tasks.create_task(self._topology_loop(clients[0], topology))
                    if self._keyspace:
                        tasks.create_task(
                            self._fetch_loop(
                                lambda keys: _moved_is_topology(nodes.mget_by_slot(keys))
                            )
                        )
                    else:
                        for source in self._watched.values():
                            tasks.create_task(self._scan_loop(reload, source))
        finally:
            self._nodes = None
            self.lag_s = None
            self.router.writer.lag(self.name, None)
            for sub in subs:
                sub.flush()  # what was read before the end is applied
                sub.close()
            await close_quietly(*clients, timeout=self.health_timeout)

    async def _topology_loop(self, client: Redis, topology: Topology) -> None:
        """End the session when the slots move (a failover promoted a replica)."""
        while True:
            await asyncio.sleep(self.health_interval)
            seen = parse_slots(await cluster_slots(client), "")
            if seen.primaries != topology.primaries or seen.slot_owner != topology.slot_owner:
                raise TopologyChanged("the cluster's slots moved; resyncing")

    async def resync(self, source: Source) -> None:
        """Reload ``source`` on connections of its own (another transport reconnected)."""
        topology = await self.discover()
        clients = [self._client_for(h, p) for h, p in topology.primaries]
        try:
            await self.cluster_reload(_Nodes(topology, clients), "resync", [source])
        finally:
            await close_quietly(*clients, timeout=self.health_timeout)

    # --- reload ----------------------------------------------------------------------------

    async def cluster_reload(
        self, nodes: _Nodes, trigger: str, sources: Sequence[Source] | None = None
    ) -> None:
        """Make the keyed sources' state equal to what the cluster holds: the same rules as
        :meth:`RedisFeed.reload`, with a SCAN of every primary."""
        started = time.perf_counter()
        touched: set[str] = set()
        self._touched.append(touched)  # what pub/sub touches meanwhile wins over this reload
        keys = 0
        try:
            for source in self._keyed if sources is None else sources:
                keys += await _moved_is_topology(
                    self._reload_cluster_source(nodes, source, touched)
                )
        finally:
            self._touched.remove(touched)
        self.metrics.reloads.labels(trigger).inc()
        self.metrics.reload_seconds.observe(time.perf_counter() - started)
        self.metrics.reload_keys.set(keys)

    async def _reload_cluster_source(self, nodes: _Nodes, source: Source, touched: set[str]) -> int:
        seen: set[str] = set()
        pattern = glob_escape(source.prefix) + "*"
        counts = await asyncio.gather(
            *(
                self._scan_node(nodes, client, pattern, source, touched, seen)
                for client in nodes.clients
            )
        )
        out = source.outputs[0]
        if len(source.outputs) == 1 and out.section is not None and out.id == "key":
            for ident in list(self.router.writer.section_ids(out.section)):
                if ident not in seen and source.prefix + ident not in touched:
                    self.router.remove(source, ident)
        return sum(counts)

    async def _scan_node(
        self,
        nodes: _Nodes,
        client: Redis,
        pattern: str,
        source: Source,
        touched: set[str],
        seen: set[str],
    ) -> int:
        cursor = 0
        keys = 0
        while True:
            cursor, found = await client.scan(cursor, match=pattern, count=SCAN_COUNT)
            if found:
                batch = [k if isinstance(k, bytes) else k.encode() for k in found]
                values = await nodes.mget_by_slot(batch)
                self._apply_loaded(source, batch, values, touched, seen)
                keys += len(batch)
            if cursor == 0:
                return keys


async def _moved_is_topology(awaitable: Any) -> Any:
    """Await ``awaitable``; a MOVED/ASK reply (slots moving) becomes :class:`TopologyChanged`."""
    try:
        return await awaitable
    except (MovedError, AskError, ClusterDownError, TryAgainError) as exc:
        raise TopologyChanged(f"{type(exc).__name__}: {exc}") from None
    except ResponseError as exc:
        text = str(exc)
        if text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
            raise TopologyChanged(text) from None
        raise


FeedFactory = Callable[[bool], RedisFeed]


class AutoRedisFeed(TaskFeed):
    """The Redis feed of ``redis_url``: a cluster client or a single-endpoint one, chosen by
    ``mode`` (``true``, ``false``) or, for ``auto``, by ``INFO cluster`` at the first connect
    (retried with backoff until Redis answers). ``make(cluster)`` builds the chosen feed."""

    name = "redis"

    def __init__(
        self,
        make: FeedFactory,
        *,
        url: str,
        mode: str = "auto",
        timeout: float = 2.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        super().__init__()
        self.make = make
        self.url = url
        self.mode = mode
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.inner: RedisFeed | None = None
        self._error: str | None = None

    @property
    def cluster(self) -> bool | None:
        """Whether the chosen feed is the cluster one (``None``: not chosen yet)."""
        return None if self.inner is None else isinstance(self.inner, ClusterRedisFeed)

    def health(self) -> FeedHealth:
        """The chosen feed's health; before the choice, ``connecting`` (or ``down``)."""
        failed = super().health()
        if failed.state is FeedState.DOWN or self.inner is None:
            state = FeedState.DOWN if self._error else FeedState.CONNECTING
            return (
                failed
                if failed.state is FeedState.DOWN
                else FeedHealth(state, failed.since_s, self._error)
            )
        return self.inner.health()

    async def run(self, stop: asyncio.Event) -> None:
        """Choose the feed, then run it until ``stop``."""
        if self.inner is None:
            cluster = await self._detect(stop)
            if cluster is None:
                return
            self.inner = self.make(cluster)
            log.info("redis feed chosen", extra={"cluster": cluster, "mode": self.mode})
        await self.inner.run(stop)

    async def _detect(self, stop: asyncio.Event) -> bool | None:
        if self.mode != "auto":
            return self.mode == "true"
        failures = 0
        while not stop.is_set():
            try:
                return await is_cluster(self.url, self.timeout)
            except Exception as exc:
                self._error = describe_failure(exc)
                failures += 1
            delay = min(self.backoff_max, self.backoff_initial * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return None


def redis_feed(
    router: SourceRouter,
    *,
    url: str,
    sources: Sequence[Source],
    metrics: RedisMetrics,
    resyncs: Resyncs | None,
    mode: str,
    sharded_channels: Sequence[str] = (),
    **options: Any,
) -> AutoRedisFeed:
    """The feed the server runs for ``redis_url`` (see :class:`AutoRedisFeed`); ``options`` are
    those of :class:`RedisFeed` (intervals, timeouts, backoff)."""

    def make(cluster: bool) -> RedisFeed:
        if cluster:
            return ClusterRedisFeed(
                router,
                url=url,
                sources=sources,
                metrics=metrics,
                resyncs=resyncs,
                sharded_channels=sharded_channels,
                **options,
            )
        return RedisFeed(
            router, url=url, sources=sources, metrics=metrics, resyncs=resyncs, **options
        )

    return AutoRedisFeed(
        make,
        url=url,
        mode=mode,
        timeout=options.get("health_timeout", 2.0),
        backoff_initial=options.get("backoff_initial", 0.1),
        backoff_max=options.get("backoff_max", 5.0),
    )
