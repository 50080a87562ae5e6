"""Redis client helpers shared by everything that talks to Redis (the feed, history, publish-demo).

One way to connect (no hidden retries, every socket operation timed out), one way to close
(bounded, quiet), one way to escape a glob pattern.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["close_quietly", "connect_redis", "glob_escape"]


def glob_escape(text: str) -> str:
    """``text`` escaped for a Redis glob pattern (PSUBSCRIBE, SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def connect_redis(url: str, timeout: float) -> Redis:
    """A client for ``url`` that never retries on its own and times out every socket operation.

    redis-py's own retries would hide a lost connection (and re-subscribe silently, losing the
    messages published meanwhile); the ingest supervises the connection itself instead.
    """
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return client


async def close_quietly(*closables: Redis | PubSub, timeout: float = 1.0) -> None:
    """Close Redis clients / pub/sub objects, giving up after ``timeout`` (a stopped peer)."""
    for closable in closables:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closable.aclose(), timeout)
