"""The NATS connection read in batches (ingest/nats_subscriber.py) against a real nats-server,
with both engines' ``NatsScanner``: raw subscriptions conflated per subject and the others in
order, headers skipped, an oversized payload skipped with the stream going on, the PING round
trip, the server's own PINGs answered, user/password and token authorization (and a clear error
when refused), a connection the server closes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats_helpers import NatsProcess, nats_server_binary
from server_helpers import run, wait_until

from dashboard_server.core.engine import Engine
from dashboard_server.ingest.nats_subscriber import NatsClosed, NatsSubscriber
from dashboard_server.ingest.scanned import Batch


class Collected:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)

    def latest(self, sid: bytes) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for b in self.batches:
            out.update(b.conflated.get(sid, {}))
        return out

    def count(self, sid: bytes) -> int:
        return sum(b.counts.get(sid, 0) for b in self.batches)

    def ordered(self) -> list[tuple[bytes, bytes, bytes]]:
        return [m for b in self.batches for m in b.ordered]


def start_nats(tmp_path: Path, *args: str) -> NatsProcess:
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (make system-deps)")
    proc = NatsProcess(binary, tmp_path / "nats", args=list(args))
    proc.start()
    return proc


@pytest.mark.parametrize("threaded", [True, False], ids=["reader-thread", "event-loop"])
def test_raw_subjects_conflate_the_others_keep_their_order(
    nats_proc: NatsProcess, engine: Engine, threaded: bool
) -> None:
    async def scenario() -> None:
        got = Collected()
        sub = await NatsSubscriber.connect(
            nats_proc.url,
            got,
            [b"1"],
            timeout=2.0,
            max_payload=1000,
            scanner=engine.NatsScanner,
            threaded=threaded,
        )
        assert (sub.reader_thread is not None) == threaded
        assert sub.info is not None and "server_id" in sub.info
        sub.subscribe("md.>", 1)
        sub.subscribe("ev.>", 2)
        await asyncio.wait_for(sub.ping(), 2.0)
        pub = await nats.connect(nats_proc.url)
        for i in range(300):
            await pub.publish(f"md.S{i % 3}", b'{"i":%d}' % i)
            await pub.publish("ev.x", str(i).encode())
        await pub.publish("ev.h", b"with-headers", headers={"X-Test": "1"})
        await pub.publish("md.big", b"x" * 5000)
        await pub.publish("md.S0", b"last")
        await pub.flush()
        await wait_until(lambda: sub.messages == 603)
        sub.flush()
        assert got.latest(b"1") == {
            b"md.S0": b"last",
            b"md.S1": b'{"i":298}',
            b"md.S2": b'{"i":299}',
        }
        assert got.count(b"1") == 301
        ordered = got.ordered()
        assert [int(m[2]) for m in ordered[:300]] == list(range(300))
        assert ordered[300] == (b"2", b"ev.h", b"with-headers")
        assert [m for b in got.batches for m in b.oversized] == [(b"1", b"md.big", 5000)]
        rtt = await asyncio.wait_for(sub.ping(), 2.0)
        assert 0 <= rtt < 2.0
        await pub.close()
        nats_proc.kill()  # the server goes away: the connection says so
        with pytest.raises(NatsClosed):
            await asyncio.wait_for(sub.wait_closed(), 5.0)
        assert sub.closed

    run(scenario())


def test_the_servers_pings_are_answered(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text('ping_interval: "100ms"\nping_max: 2\n')
    proc = start_nats(tmp_path, "-c", str(config))

    async def scenario() -> None:
        sub = await NatsSubscriber.connect(proc.url, Collected(), [], timeout=2.0)
        sub.subscribe("x", 1)
        await asyncio.sleep(1.5)  # 15 server PINGs: unanswered, two would close us
        assert not sub.closed
        await asyncio.wait_for(sub.ping(), 2.0)
        sub.close()

    try:
        run(scenario())
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("args", "good", "bad"),
    [
        (["--user", "desk", "--pass", "s3cret"], "desk:s3cret@", "desk:nope@"),
        (["--auth", "t0ken"], "t0ken@", "wrong@"),
    ],
)
def test_authorization_from_the_url(tmp_path: Path, args: list[str], good: str, bad: str) -> None:
    proc = start_nats(tmp_path, *args)

    async def scenario() -> None:
        url = f"nats://{good}127.0.0.1:{proc.port}"
        sub = await NatsSubscriber.connect(url, Collected(), [], timeout=2.0)
        sub.close()
        refused = f"nats://{bad}127.0.0.1:{proc.port}"
        with pytest.raises(NatsClosed, match=r"(?i)authorization violation"):
            await NatsSubscriber.connect(refused, Collected(), [], timeout=2.0)

    try:
        run(scenario())
    finally:
        proc.stop()


def test_a_bad_url_is_refused_clearly() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="expected nats:// or tls://"):
            await NatsSubscriber.connect("http://127.0.0.1:1", Collected(), [], timeout=1.0)

    run(scenario())
