"""A throwaway HTTP server on loopback, for testing downloads without the internet.

``serve_directory`` serves a directory with the standard library's file
handler, so it behaves like a plain static mirror: files are served with a
Content-Length, and a missing file is an honest 404.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["serve_directory"]


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_log: list[str] | None = None


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files silently and records each requested path on its server."""

    def do_GET(self) -> None:
        server = self.server
        if isinstance(server, _RecordingServer) and server.request_log is not None:
            server.request_log.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean; the request log is the record."""


@contextmanager
def serve_directory(path: Path | str, *, request_log: list[str] | None = None) -> Iterator[str]:
    """Serve ``path`` on ``127.0.0.1`` at a free port; yield the base URL (no trailing slash).

    Every GET's path is appended to ``request_log`` when given, so a test can
    assert that a cached download did not reach the server. Files absent from
    ``path`` answer 404, which is how tests simulate a broken mirror.
    """
    handler = functools.partial(_QuietHandler, directory=str(path))
    server = _RecordingServer(("127.0.0.1", 0), handler)
    server.request_log = request_log
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="serve_directory",
        daemon=True,
    )
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
