"""Python client for dashboard-server: the I/O-free :class:`ClientState` and the async
:class:`DashboardClient`.

:class:`ClientState` applies decoded server messages (``snapshot``, ``update`` in both diff forms,
``event``) to a reconstructed copy of the state document and checks the group sequence number:
the first group message on a connection and every snapshot set ``seq``; every later group message
must carry ``seq == previous + 1``, otherwise a gap is reported and updates are ignored until the
next snapshot.

:class:`DashboardClient` connects over WebSocket (``websockets`` asyncio client), feeds a
:class:`ClientState`, asks for a ``refresh`` on a gap, answers ``ping`` round trips, and reconnects
with exponential backoff and jitter, resuming with ``since=<version>&epoch=<epoch>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jsonpatch
import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from dashboard_server.core.pointer import parse_pointer as pointer_tokens

__all__ = [
    "ClientClosed",
    "ClientState",
    "DashboardClient",
    "Outcome",
    "PatchError",
    "apply_json_patch",
    "decode_message",
    "parse_pointer",
]

GROUP_TYPES: Final = frozenset({"snapshot", "update", "event"})
"""Message types that carry the group ``seq``; ``pong`` and ``error`` do not."""

FATAL_HTTP_STATUSES: Final = frozenset({400, 401, 403, 404})
"""Handshake refusals that reconnecting cannot fix: the client stops instead of retrying."""


class PatchError(ValueError):
    """A JSON Patch operation or JSON Pointer cannot be applied to the document."""


class Outcome(enum.Enum):
    """What :meth:`ClientState.apply` did with one message."""

    APPLIED = "applied"
    """A snapshot or update was applied; the state is current."""
    EVENT = "event"
    """An event was recorded."""
    GAP = "gap"
    """A sequence gap (or an update that does not fit the state): ask for a refresh."""
    IGNORED = "ignored"
    """An update was dropped while waiting for a snapshot after a gap."""
    CONTROL = "control"
    """A message without seq (``pong``, ``error``, unknown types): the state is untouched."""


# ---------------------------------------------------------------------------------------------
# Decoding and JSON Pointer / JSON Patch helpers


def decode_message(frame: bytes | str) -> dict[str, Any]:
    """Decode one WebSocket frame: binary frames are MessagePack, text frames are JSON."""
    msg = msgpack.unpackb(frame, raw=False) if isinstance(frame, bytes) else orjson.loads(frame)
    if not isinstance(msg, dict):
        raise ValueError(f"server message is not an object: {type(msg).__name__}")
    return msg


def parse_pointer(pointer: str) -> list[str]:
    """Split an RFC 6901 JSON Pointer into unescaped tokens (``""`` is the root: no tokens);
    a malformed one raises :class:`PatchError` (the client then asks for a snapshot)."""
    try:
        return pointer_tokens(pointer)
    except ValueError as exc:
        raise PatchError(str(exc)) from None


def _describe(op: object) -> str:
    if isinstance(op, dict):
        return f"{op.get('op')!r} at {op.get('path')!r}"
    return f"{type(op).__name__} (not an operation object)"


def apply_json_patch(doc: Any, patch: Sequence[dict[str, Any]]) -> Any:
    """Apply an RFC 6902 patch to ``doc`` with the ``jsonpatch`` library, strictly.

    ``doc`` is modified in place and the operations' values are inserted by reference (not
    copied); the (possibly new) root is returned, since an operation at ``""`` replaces the whole
    document. A failing operation raises :class:`PatchError` naming it (its index, ``op`` and
    ``path``) and leaves the operations before it applied (callers that need atomicity work on a
    copy).
    """
    if not isinstance(patch, list | tuple):
        raise PatchError(f"a patch is a list of operations, not a {type(patch).__name__}")
    for index, op in enumerate(patch):
        # One operation at a time, so that the error names the one that failed.
        try:
            doc = jsonpatch.apply_patch(doc, (op,), in_place=True)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            problem = str(exc)
            if len(problem) > 200:  # pointer errors quote the container they searched
                problem = problem[:200] + "..."
            raise PatchError(f"operation {index} ({_describe(op)}): {problem}") from None
    return doc


def _set_at(doc: dict[str, Any], tokens: list[str], value: Any, pointer: str) -> None:
    """Set the subtree at ``tokens`` to ``value``, creating missing parent objects."""
    node = doc
    for token in tokens[:-1]:
        child = node.get(token)
        if not isinstance(child, dict):
            if child is not None or token in node:
                raise PatchError(f"{pointer}: {token!r} is not an object")
            child = node[token] = {}
        node = child
    node[tokens[-1]] = value


def _remove_at(doc: dict[str, Any], tokens: list[str]) -> None:
    """Delete the member at ``tokens`` if it is there."""
    node: Any = doc
    for token in tokens[:-1]:
        node = node.get(token) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(tokens[-1], None)


# ---------------------------------------------------------------------------------------------
# ClientState


class ClientState:
    """The reconstructed state document of one client, fed with decoded server messages.

    I/O-free: the async client, the tests and the load generator drive it the same way. Call
    :meth:`connection_reset` whenever a new connection starts (the first group message on a
    connection sets ``seq`` instead of being checked against it).
    """

    def __init__(self, *, max_events: int = 1000) -> None:
        self.data: dict[str, Any] = {}
        """The document as the server sent it (subscribed sections only)."""
        self.seq: int | None = None
        self.version: int | None = None
        self.epoch: str | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        """The newest event messages, oldest first."""
        self.recent_events: list[dict[str, Any]] = []
        """The recent events sent after the last snapshot (``events`` message), oldest first."""
        self.status: dict[str, Any] | None = None
        """The server's last ``status`` message: its feed (``demo``, ``redis``, ...), overall
        ``state`` (``ok``, ``degraded``, ``down``), ``sources`` and ``stale`` sections."""
        self.awaiting_snapshot = True
        """True until a snapshot arrives, and again after a gap: updates are ignored meanwhile."""
        self.gaps = 0
        self.snapshots = 0
        self.updates = 0
        self.events_received = 0
        self.ignored = 0
        self.last_problem: str | None = None
        """Why the last gap was reported."""
        self._fresh = True

    @property
    def synced(self) -> bool:
        """A snapshot has been applied and no gap happened since."""
        return not self.awaiting_snapshot

    def connection_reset(self) -> None:
        """A new connection starts: its first group message sets ``seq``."""
        self._fresh = True

    def apply(self, msg: dict[str, Any]) -> Outcome:
        """Apply one decoded server message and say what happened."""
        kind = msg.get("type")
        if kind not in GROUP_TYPES:
            if kind == "events" and isinstance(msg.get("events"), list):
                self.recent_events = msg["events"]
            elif kind == "status":
                self.status = msg
            return Outcome.CONTROL
        seq = msg.get("seq")
        if not isinstance(seq, int):
            return self._gap(f"{kind} without an integer seq")
        if kind == "snapshot":
            return self._snapshot(msg, seq)
        expected = None if self._fresh or self.seq is None else self.seq + 1
        self._fresh = False
        if kind == "event":
            self.events.append(msg)
            self.events_received += 1
            if expected is not None and seq != expected and not self.awaiting_snapshot:
                self.seq = seq
                return self._gap(f"event seq {seq}, expected {expected}")
            self.seq = seq
            return Outcome.EVENT
        if self.awaiting_snapshot:
            self.ignored += 1
            self.seq = seq
            return Outcome.IGNORED
        if expected is not None and seq != expected:
            self.seq = seq
            return self._gap(f"update seq {seq}, expected {expected}")
        self.seq = seq
        try:
            self._apply_update(msg)
        except (PatchError, TypeError, AttributeError) as exc:
            return self._gap(f"update seq {seq} does not apply: {exc}")
        version = msg.get("version")
        if isinstance(version, int):
            self.version = version
        self.updates += 1
        return Outcome.APPLIED

    def _snapshot(self, msg: dict[str, Any], seq: int) -> Outcome:
        data = msg.get("data")
        if not isinstance(data, dict):
            return self._gap("snapshot without a data object")
        self.data = data
        self.seq = seq
        version = msg.get("version")
        self.version = version if isinstance(version, int) else None
        epoch = msg.get("epoch")
        self.epoch = epoch if isinstance(epoch, str) else None
        self.awaiting_snapshot = False
        self._fresh = False
        self.snapshots += 1
        return Outcome.APPLIED

    def _apply_update(self, msg: dict[str, Any]) -> None:
        if "patch" in msg:
            root = apply_json_patch(self.data, msg["patch"])
            if not isinstance(root, dict):
                raise PatchError("the patch made the document root a non-object")
            self.data = root
            return
        for pointer in msg.get("removed", ()):
            tokens = parse_pointer(pointer)
            if tokens:
                _remove_at(self.data, tokens)
        for pointer, value in msg.get("changes", {}).items():
            tokens = parse_pointer(pointer)
            if not tokens:
                if not isinstance(value, dict):
                    raise PatchError("a change at the root must be an object")
                self.data = value
            else:
                _set_at(self.data, tokens, value, pointer)

    def _gap(self, problem: str) -> Outcome:
        self.gaps += 1
        self.last_problem = problem
        self.awaiting_snapshot = True
        return Outcome.GAP


# ---------------------------------------------------------------------------------------------
# DashboardClient


class ClientClosed(ConnectionError):
    """The client is closed (or stopped for good) while something waited on it."""


def _build_url(base: str, params: dict[str, str]) -> str:
    """``base`` with ``params`` merged into its query string (``params`` win)."""
    parts = urlsplit(base)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


class DashboardClient:
    """An async WebSocket client that keeps a reconstructed copy of the server's state.

    Use as ``async with DashboardClient(url, ...) as client:``. ``url`` is the WebSocket endpoint
    (e.g. ``ws://127.0.0.1:8080/ws``); the options become its query parameters. The first
    connection must succeed (its error is raised by :meth:`connect`); after that, a lost
    connection is re-established with exponential backoff and full jitter, resuming from the last
    version when the client has a state.
    """

    def __init__(
        self,
        url: str,
        *,
        type: Literal["tui", "web"] = "web",
        format: Literal["msgpack", "json"] = "msgpack",
        channels: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        diff: Literal["changes", "json-patch"] = "changes",
        interval_ms: int | None = None,
        token: str | None = None,
        reconnect: bool = True,
        resume: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        open_timeout: float = 10.0,
        max_size: int | None = 64 * 1024 * 1024,
        max_events: int = 1000,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.type = type
        self.format = format
        self.channels: list[str] | None = list(channels) if channels is not None else None
        self.symbols: list[str] | None = list(symbols) if symbols is not None else None
        """The symbol filter (``None``: every symbol); reconnections keep the current one."""
        self._resubscribing = False
        """A subscription change is waiting for its snapshot: the state is of the old
        subscription, so a reconnection must not resume from it."""
        self.diff = diff
        self.interval_ms = interval_ms
        self.token = token
        self.reconnect = reconnect
        self.resume = resume
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.state = ClientState(max_events=max_events)
        """The reconstructed state (``state.data``) and its seq / version / epoch / gaps."""
        self.messages = 0
        """Frames received, over all connections."""
        self.bytes_received = 0
        """Payload bytes of those frames."""
        self.reconnects = 0
        """Successful reconnections after the first connection."""
        self.refreshes_sent = 0
        self.last_error: dict[str, Any] | None = None
        """The newest ``error`` message from the server."""
        self.failure: BaseException | None = None
        """Why the client stopped for good (a refused handshake, ...), if it did."""
        self._rng = rng or random.Random()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._changed = asyncio.Event()
        self._message_waiters: list[asyncio.Future[dict[str, Any]]] = []
        self._pings: dict[int, tuple[float, asyncio.Future[float]]] = {}
        self._ping_counter = 0
        self._background: set[asyncio.Task[None]] = set()

    # -- properties ------------------------------------------------------------------------

    @property
    def data(self) -> dict[str, Any]:
        """The reconstructed document."""
        return self.state.data

    @property
    def seq(self) -> int | None:
        """The group sequence number of the last message applied."""
        return self.state.seq

    @property
    def version(self) -> int | None:
        """The server state version the reconstructed document is at."""
        return self.state.version

    @property
    def epoch(self) -> str | None:
        """The server's version space, from the last snapshot."""
        return self.state.epoch

    @property
    def gaps(self) -> int:
        """How many sequence gaps (each answered with a refresh) were detected."""
        return self.state.gaps

    @property
    def status(self) -> dict[str, Any] | None:
        """The server's last ``status`` message (``None`` before the first): ``feed``,
        ``state`` (``ok``, ``degraded``, ``down``), ``sources`` (each ``name``, ``state``,
        ``error``, ``since``) and ``stale`` (sections without a recent update). It is the
        last one received: after a disconnection it says how things were then."""
        return self.state.status

    @property
    def connected(self) -> bool:
        """A WebSocket connection is open right now."""
        return self._ws is not None

    def connect_url(self) -> str:
        """The URL of the next connection attempt, with resume parameters when possible."""
        params: dict[str, str] = {"type": self.type, "format": self.format, "diff": self.diff}
        if self.channels is not None:
            params["channels"] = ",".join(self.channels)
        if self.symbols is not None:
            params["symbols"] = ",".join(self.symbols)
        if self.interval_ms is not None:
            params["interval_ms"] = str(self.interval_ms)
        st = self.state
        if (
            self.resume
            and not self._resubscribing
            and st.synced
            and st.version is not None
            and st.epoch is not None
        ):
            params["since"] = str(st.version)
            params["epoch"] = st.epoch
        return _build_url(self.url, params)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> DashboardClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the first connection (raising its error) and start receiving in the background."""
        if self._task is not None:
            raise RuntimeError("DashboardClient.connect() called twice")
        ws = await self._open()
        self._task = asyncio.get_running_loop().create_task(self._run(ws))

    async def close(self) -> None:
        """Close the connection cleanly (code 1000) and stop reconnecting."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            if self._ws is None:
                self._task.cancel()  # waiting to reconnect: stop now, not after the backoff
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_waiters(ClientClosed("client closed"))

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        ws = await connect(
            self.connect_url(),
            additional_headers=headers,
            open_timeout=self.open_timeout,
            max_size=self.max_size,
            compression=None,
        )
        self.state.connection_reset()
        self._ws = ws
        return ws

    async def _run(self, ws: ClientConnection) -> None:
        """Receive until closed; reconnect with backoff while allowed."""
        try:
            while True:
                await self._receive(ws)
                self._ws = None
                self._notify()
                if self._closing or not self.reconnect:
                    return
                reopened = await self._reconnect()
                if reopened is None:
                    return
                ws = reopened
        finally:
            self._ws = None
            self._fail_waiters(ClientClosed(f"client stopped: {self.failure or 'closed'}"))

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self._on_frame(frame)

    async def _reconnect(self) -> ClientConnection | None:
        """Reconnect with exponential backoff and full jitter; ``None`` when giving up."""
        delay = self.backoff_initial
        while not self._closing:
            await asyncio.sleep(self._rng.uniform(0.0, delay))
            if self._closing:
                return None
            try:
                ws = await self._open()
            except InvalidStatus as exc:
                if exc.response.status_code in FATAL_HTTP_STATUSES:
                    self.failure = exc
                    return None
            except InvalidURI as exc:
                self.failure = exc
                return None
            except (OSError, TimeoutError, InvalidHandshake):
                pass  # the server is down or restarting: try again later
            else:
                if self._closing:
                    await ws.close()
                    return None
                self.reconnects += 1
                return ws
            delay = min(self.backoff_max, delay * 2)
        return None

    def _on_frame(self, frame: bytes | str) -> None:
        self.messages += 1
        self.bytes_received += len(frame)
        try:
            msg = decode_message(frame)
        except ValueError as exc:
            self.state.last_problem = f"undecodable message: {exc}"
            return
        kind = msg.get("type")
        outcome = self.state.apply(msg)
        if outcome is Outcome.GAP:
            self._send_nowait({"type": "refresh"})
            self.refreshes_sent += 1
        elif kind == "pong":
            self._on_pong(msg)
        elif kind == "error":
            self.last_error = msg
        elif kind == "snapshot":
            self._resubscribing = False
        for fut in self._message_waiters:
            if not fut.done():
                fut.set_result(msg)
        self._message_waiters.clear()
        self._notify()

    def _notify(self) -> None:
        """Wake every :meth:`wait_for` so it re-checks its predicate."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_pong(self, msg: dict[str, Any]) -> None:
        payload = msg.get("payload")
        if isinstance(payload, int) and payload in self._pings:
            sent_at, fut = self._pings.pop(payload)
            if not fut.done():
                fut.set_result(asyncio.get_running_loop().time() - sent_at)

    def _fail_waiters(self, exc: BaseException) -> None:
        for fut in self._message_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._message_waiters.clear()
        for _, ping in self._pings.values():
            if not ping.done():
                ping.set_exception(exc)
        self._pings.clear()
        self._notify()

    # -- sending ---------------------------------------------------------------------------

    def _encode(self, msg: dict[str, Any]) -> bytes | str:
        if self.format == "msgpack":
            packed: bytes = msgpack.packb(msg)
            return packed
        return orjson.dumps(msg).decode()

    def _send_nowait(self, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None:
            task = asyncio.get_running_loop().create_task(self._send_quietly(ws, msg))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_quietly(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._encode(msg))

    async def send(self, msg: dict[str, Any]) -> None:
        """Send one client message (in the connection's format); raises if not connected."""
        ws = self._ws
        if ws is None:
            raise ClientClosed("not connected")
        await ws.send(self._encode(msg))

    async def subscribe(
        self, channels: Sequence[str] = (), *, symbols: Sequence[str] | None = None
    ) -> None:
        """Add ``channels`` and/or ``symbols``; the server answers with a snapshot of the new
        subscription. Without a filter yet, ``symbols`` narrows "every symbol" to these."""
        msg: dict[str, Any] = {"type": "subscribe"}
        if channels:
            if self.channels is not None:
                self.channels += [c for c in channels if c not in self.channels]
            msg["channels"] = list(channels)
        if symbols is not None:
            current = self.symbols or []
            self.symbols = current + [s for s in symbols if s not in current]
            msg["symbols"] = list(symbols)
        self._resubscribing = True
        await self.send(msg)

    async def unsubscribe(
        self, channels: Sequence[str] = (), *, symbols: Sequence[str] | None = None
    ) -> None:
        """Drop ``channels`` and/or ``symbols``; the server answers with a snapshot of the
        remaining subscription.

        When subscribed to everything (``channels=None``), the remaining channels are the
        sections of the current state plus ``events``. Symbols can only be dropped from a
        filter (the server answers ``bad_symbols`` otherwise).
        """
        msg: dict[str, Any] = {"type": "unsubscribe"}
        if channels:
            current = self.channels if self.channels is not None else [*self.data, "events"]
            self.channels = [c for c in current if c not in channels]
            msg["channels"] = list(channels)
        if symbols is not None:
            if self.symbols is not None:
                remaining = [s for s in self.symbols if s not in symbols]
                if not remaining:
                    raise ValueError("unsubscribe: a filter cannot be emptied (symbols=None: all)")
                self.symbols = remaining
            msg["symbols"] = list(symbols)
        self._resubscribing = True
        await self.send(msg)

    async def refresh(self) -> None:
        """Ask for a fresh snapshot."""
        await self.send({"type": "refresh"})
        self.refreshes_sent += 1

    async def ping(self, timeout: float | None = 5.0) -> float:
        """Send an application ``ping`` and return the round-trip time in seconds."""
        loop = asyncio.get_running_loop()
        self._ping_counter += 1
        token = self._ping_counter
        fut: asyncio.Future[float] = loop.create_future()
        self._pings[token] = (loop.time(), fut)
        try:
            await self.send({"type": "ping", "payload": token})
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pings.pop(token, None)

    # -- waiting ---------------------------------------------------------------------------

    async def next_message(self, timeout: float | None = None) -> dict[str, Any]:
        """The next decoded message received (of any type)."""
        if self._task is None or self._task.done():
            raise ClientClosed("client is not running")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._message_waiters.append(fut)
        async with asyncio.timeout(timeout):
            return await fut

    async def wait_for(
        self, predicate: Callable[[DashboardClient], bool], timeout: float | None = None
    ) -> None:
        """Wait until ``predicate(self)`` holds, checked after every message and state change."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                if self._task is None or self._task.done():
                    raise ClientClosed(f"client stopped: {self.failure or 'closed'}")
                await self._changed.wait()

    async def wait_version(self, version: int, timeout: float | None = None) -> None:
        """Wait until the state is synced and has reached ``version`` (or a newer one)."""
        await self.wait_for(
            lambda c: c.state.synced and (c.version or 0) >= version, timeout=timeout
        )

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until a snapshot has been applied and no gap is pending."""
        await self.wait_for(lambda c: c.state.synced, timeout=timeout)
