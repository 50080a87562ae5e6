"""The HTTP polling transport of the sources (httpx): one GET at a time, with backoff.

An ``http-poll`` source names a path on one of the backends' HTTP APIs (its ``endpoint``: the
account monitor, the strategy engine). :class:`HttpPollFeed` GETs it every ``interval_s``, never
two requests at once (the next starts after the previous ended), each bounded by ``timeout``.
A JSON response is handed to the :class:`~dashboard_server.ingest.router.SourceRouter`; one that
does not parse (or does not map) is counted and logged there, and changes nothing. A failed
request (refused, timed out, a status >= 400) marks the source ``down`` and waits
``interval_s * 2**failures`` (at most ``backoff_max``) before the next. Another transport can ask
for a poll now (:meth:`HttpPollFeed.poll_now`, registered as the source's bootstrap).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import httpx
import orjson

from dashboard_server.core.sources import Source
from dashboard_server.ingest.feed import ConnectedFeed, FeedState, describe_failure
from dashboard_server.ingest.router import Resyncs, SourceRouter

__all__ = ["MAX_RESPONSE_BYTES", "HttpPollFeed"]

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
"""A larger response is refused (and counted as malformed) instead of being decoded."""


class HttpPollFeed(ConnectedFeed):
    """Polls one ``http-poll`` source at ``base_url`` (see the module doc)."""

    def __init__(
        self,
        router: SourceRouter,
        source: Source,
        *,
        base_url: str,
        resyncs: Resyncs | None = None,
        timeout: float = 2.0,
        backoff_max: float = 30.0,
    ) -> None:
        super().__init__()
        self.name = f"http:{source.name}"
        self.router = router
        self.source = source
        self.url = base_url.rstrip("/") + source.pattern
        self.timeout = timeout
        self.backoff_max = backoff_max
        self.polls = 0
        """Requests that got a usable response."""
        self._wake = asyncio.Event()
        if resyncs is not None:
            resyncs.register(source.name, self.poll_now)

    def _report(self, state: FeedState, error: str | None) -> None:
        self.last_error = error
        self._set_state(state)

    async def poll_now(self) -> None:
        """Poll at once instead of at the next interval."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        failures = 0
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while not stop.is_set():
                self._wake.clear()  # before the poll: a request for one made during it stays
                ok = await self._poll(client)
                failures = 0 if ok else failures + 1
                wait = min(self.backoff_max, self.source.interval_s * 2**failures)
                stop_wait = asyncio.ensure_future(stop.wait())
                wake_wait = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    [stop_wait, wake_wait], timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                stop_wait.cancel()
                wake_wait.cancel()
        self._report(FeedState.STOPPED, None)

    async def _poll(self, client: httpx.AsyncClient) -> bool:
        label = self.router.label(self.source)
        try:
            body = await self._get(client)
        except httpx.HTTPError as exc:
            self._report(FeedState.DOWN, describe_failure(exc))
            return False
        if body is None:
            self.router.writer.received(label)
            self.router.writer.malformed(
                label, self.url, f"response larger than {MAX_RESPONSE_BYTES} bytes"
            )
            self._report(FeedState.DOWN, "response too large")
            return False
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.router.writer.received(label)
            self.router.writer.malformed(label, self.url, f"response is not JSON: {exc}")
            self._report(FeedState.DOWN, "response is not JSON")
            return False
        if not self.router.apply_value(self.source, self.url, value, where=self.url):
            self._report(FeedState.DOWN, "response does not fit the source's mapping")
            return False
        self.polls += 1
        self._report(FeedState.OK, None)
        return True

    async def _get(self, client: httpx.AsyncClient) -> bytes | None:
        """The body of one GET (``None``: larger than :data:`MAX_RESPONSE_BYTES`, not read on);
        :class:`httpx.HTTPError` for a failed request or a status >= 400."""
        async with client.stream("GET", self.url, headers={"Accept": "application/json"}) as r:
            r.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            async for chunk in r.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    return None
                chunks.append(chunk)
            return b"".join(chunks)
