"""A loopback HTTP server for the download tests, able to inject faults on demand.

``FaultServer`` listens on 127.0.0.1 on an ephemeral port, one thread per request (HTTP/1.0, so
every response closes its connection). Each path is a :class:`Route` with a body and validators
(ETag / Last-Modified, answered with 304 to matching conditional requests). A route can be given a
script of :class:`Reply` objects consumed one per request before the normal behaviour resumes:
any status and headers, a body cut short, a stall before the status line or in the middle of the
body. Every request is logged (method, path, headers). Stalls end when the server stops, so a test
never waits longer than its own client timeouts.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The real mirror (TI_MIRROR_DIR, as CI sets it; else ../shared/data next to the project)."""
    value = os.environ.get("TI_MIRROR_DIR", "").strip()
    return Path(value).expanduser().resolve() if value else (PROJECT_ROOT.parent / "shared" / "data")


def require_shared_data() -> Path:
    """:func:`shared_data_dir`, or skip the calling test module when it is missing."""
    import pytest

    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip(f"shared mirror not found at {data} (set TI_MIRROR_DIR)", allow_module_level=True)
    return data


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems): a mirror must hold
    its files, a symlink out of it is refused."""
    try:
        os.link(source, target)
    except OSError:
        import shutil

        shutil.copyfile(source, target)


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes | None = None              # None: the route's body (empty for non-200 statuses)
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None      # declared length; None: the real length of what is sent
    send_length: bool = True               # False: no Content-Length (close-delimited body)
    cut_after: int | None = None           # send only this many body bytes, then close
    stall_before: float = 0.0              # seconds of silence before the status line
    stall_after: int | None = None         # send this many body bytes, then go silent
    stall_for: float = 30.0                # how long a mid-body stall lasts (ends at server stop)
    drip: float | None = None              # seconds between single body bytes (a slow-drip body)
    repeat: int = 1                        # send the body this many times (a huge body from a small one)
    header_drip: float | None = None       # seconds between single bytes of the status line and headers


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    etag: str | None = None
    last_modified: str | None = None
    headers: dict[str, str] = field(default_factory=dict)   # extra headers on 200 answers
    send_length: bool = True
    head_status: int | None = None         # e.g. 405: HEAD refused
    script: deque = field(default_factory=deque)


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.log.append(Hit(self.command, path, dict(self.headers.items())))
            route = owner.routes.get(path)
            reply = route.script.popleft() if route is not None and route.script else None
        try:
            if route is None:
                self._send(Reply(status=404, body=b"not found\n"), None, head)
            elif reply is not None:
                self._send(reply, route, head)
            elif head and route.head_status:
                self._send(Reply(status=route.head_status, body=b""), route, head)
            elif self._not_modified(route):
                self._send(Reply(status=304, body=b""), route, head)
            else:
                self._send(Reply(send_length=route.send_length), route, head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _not_modified(self, route: Route) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            return route.etag is not None and inm == route.etag
        ims = self.headers.get("If-Modified-Since")
        return ims is not None and route.last_modified is not None and ims == route.last_modified

    def _send(self, reply: Reply, route: Route | None, head: bool) -> None:
        stop = self.server.owner.stopping
        if reply.stall_before and stop.wait(reply.stall_before):
            return
        body = reply.body
        if body is None:
            body = route.body if (route is not None and reply.status == 200) else b""
        if reply.header_drip is not None:   # headers that never end: one byte at a time, until server stop
            head_bytes = f"HTTP/1.0 {reply.status} OK\r\nContent-Type: text/plain\r\n".encode() + b"X-Slow: a" * 10**6
            for i in range(len(head_bytes)):
                self.wfile.write(head_bytes[i:i + 1])
                self.wfile.flush()
                if stop.wait(reply.header_drip):
                    return
            return
        self.send_response(reply.status)
        headers: dict[str, str] = {}
        if route is not None and reply.status in (200, 304):
            if route.etag:
                headers["ETag"] = route.etag
            if route.last_modified:
                headers["Last-Modified"] = route.last_modified
            if reply.status == 200:
                headers["Content-Type"] = route.content_type
                headers.update(route.headers)
        headers.update(reply.headers)
        if reply.send_length and reply.status != 304:
            headers["Content-Length"] = str(
                reply.content_length if reply.content_length is not None else len(body))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or reply.status == 304:
            return
        if reply.stall_after is not None:
            self.wfile.write(body[: reply.stall_after])
            self.wfile.flush()
            stop.wait(reply.stall_for)
            return
        if reply.drip is not None:
            for i in range(len(body)):   # ends at server stop
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                if stop.wait(reply.drip):
                    return
            return
        for _ in range(reply.repeat):
            if stop.is_set():
                return
            self.wfile.write(body if reply.cut_after is None else body[: reply.cut_after])
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultServer

    def handle_error(self, request, client_address) -> None:  # client hung up: expected here
        pass


class FaultServer:
    """``with FaultServer() as srv: srv.route("/a.csv", body); url = srv.url("/a.csv")``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Hit] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, body: bytes, **kwargs) -> Route:
        route = Route(body=body, **kwargs)
        with self.lock:
            self.routes[path] = route
        return route

    def script(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.routes[path].script.extend(replies)

    def hits(self, path: str, method: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.log if h.path == path and (method is None or h.method == method)]
