"""Helpers of the web tests and of ``make screenshot``: a real server process with the demo feed,
a static file server for the page, a recording protocol client, and headless Chromium.

Everything talks over real sockets on 127.0.0.1. Nothing here depends on pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("dashboard_server") is None:  # not installed: use the source tree
    sys.path.insert(0, str(ROOT / "python"))

from dashboard_server.client.connection import ClientState, Outcome, decode_message  # noqa: E402
from dashboard_server.server.web import static_response  # noqa: E402

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(0.02)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET (HTTP errors are returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as res:
            return res.status, res.headers.get("Content-Type", ""), res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


# --- the server --------------------------------------------------------------------------------


class ServerProcess:
    """``python -m dashboard_server serve`` with the demo feed, as a child process."""

    def __init__(self, port: int | None = None, *, symbols: int = 20, seed: int = 7,
                 rate: float = 50.0, extra: list[str] | None = None) -> None:  # fmt: skip
        self.port = port or free_port()
        self.args = [
            sys.executable, "-m", "dashboard_server", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--demo-symbols", str(symbols), "--demo-seed", str(seed),
            "--demo-rate", str(rate), "--log-level", "warning", *(extra or []),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        # stderr goes to a file, never to a pipe that could fill up and block the server
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as this object

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ)
        src = str(ROOT / "python")
        env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
        self._log.seek(0)
        self._log.truncate()
        self.proc = subprocess.Popen(
            self.args, env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            with contextlib.suppress(OSError):
                return http_get(self.http_url + "/health", 0.5)[0] == 200
            return False

        wait_until(up, timeout, f"the server on port {self.port}")

    def log(self) -> str:
        """The end of the server's stderr."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def health(self) -> dict[str, Any]:
        _, _, body = http_get(self.http_url + "/health")
        result: dict[str, Any] = orjson.loads(body)
        return result

    def kill(self) -> None:
        """SIGKILL: the connections drop without a closing handshake, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it takes too long."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def serves_dashboard(self) -> bool:
        """Whether the server itself answers ``/`` with the dashboard page."""
        with contextlib.suppress(OSError):
            status, ctype, body = http_get(self.http_url + "/")
            return status == 200 and ctype.startswith("text/html") and b"app.js" in body
        return False


# --- the page's own static server (when the server does not serve / yet, or for ?ws=) ----------


class StaticServer:
    """A threaded HTTP server answering with :func:`dashboard_server.server.web.static_response`.

    ``auth_token``: if set, ``GET /ws`` answers 401 with a JSON body unless ``token=`` matches
    (it imitates a server with token auth, for the page's refusal handling).
    """

    def __init__(self, auth_token: str | None = None) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path.startswith("/ws"):
                    ok = auth_token is not None and f"token={auth_token}" in self.path
                    status, body = (
                        (426, b'{"error":"upgrade_required"}')
                        if ok
                        else (401, b'{"error":"unauthorized","message":"missing or invalid token"}')
                    )
                    self._reply(status, "application/json", body)
                    return
                found = static_response(self.path)
                if found is None:
                    self._reply(404, "application/json", b'{"error":"not_found"}')
                else:
                    self._reply(*found)

            def _reply(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- a recording client in the page's group ----------------------------------------------------


class Recorder:
    """A protocol client in the same group as the page (same query), recording the state document
    after every group message, by seq: the server's document as the page must see it.

    Runs an asyncio loop in a thread. ``states`` keeps the newest ``keep`` seqs.
    """

    def __init__(self, ws_url: str, query: str = "type=web&format=json", keep: int = 2000) -> None:
        self.url = f"{ws_url}?{query}"
        self.keep = keep
        self.states: OrderedDict[int, bytes] = OrderedDict()
        self.removed: set[str] = set()
        self.epoch: str | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _run(self) -> None:
        from websockets.asyncio.client import connect

        state = ClientState()
        async with connect(self.url, max_size=None, compression=None) as ws:
            current = b""
            while not self._stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                msg = decode_message(frame)
                outcome = state.apply(msg)
                if outcome is Outcome.GAP:
                    raise AssertionError(f"recorder saw a gap: {state.last_problem}")
                if msg.get("type") not in ("snapshot", "update", "event"):
                    continue
                if outcome is Outcome.APPLIED:
                    current = orjson.dumps(state.data)
                    self.epoch = state.epoch
                    self.removed.update(msg.get("removed", ()))
                with self._lock:
                    self.states[msg["seq"]] = current
                    while len(self.states) > self.keep:
                        self.states.popitem(last=False)

    def state_at(self, seq: int, timeout: float = 5.0) -> dict[str, Any]:
        """The document after group message ``seq`` (waits for it to arrive)."""

        def have() -> bool:
            if self.error is not None:
                raise RuntimeError(f"recorder failed: {self.error!r}")
            with self._lock:
                return seq in self.states

        wait_until(have, timeout, f"the recorder to reach seq {seq}")
        with self._lock:
            data: dict[str, Any] = orjson.loads(self.states[seq])
        if not data:
            raise AssertionError(f"the recorder had no state at seq {seq}")
        return data

    def first_seq(self) -> int | None:
        """The oldest seq still recorded (``None`` before the first message)."""
        with self._lock:
            return next(iter(self.states), None)

    def latest(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            seq, raw = next(reversed(self.states.items()))
        return seq, orjson.loads(raw)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --- the browser ------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """The path of a Chromium executable (``$CHROMIUM`` first), or ``None``."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (make web-test-deps)"
    if find_chromium() is None:
        return "no chromium executable (apt-get install chromium, or set $CHROMIUM)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1600, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium (yields the ``Page``)."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    assert executable is not None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def page_url(server: ServerProcess, static: StaticServer | None, **params: str) -> str:
    """The dashboard URL: the server's own ``/`` when it serves it, else the static server with
    ``?ws=`` pointing at the real server."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    if static is None:
        return f"{server.http_url}/" + (f"?{query}" if query else "")
    return f"{static.url}?ws={server.ws_url}" + (f"&{query}" if query else "")
