"""The read-only web view and the Prometheus endpoint, an aiohttp app on the server's event loop.

Pages (static HTML and script from this package; Chart.js is vendored in
``static/``, so nothing is fetched from a CDN):

* ``/``: every federation (model, strategy, round k of n, state, clients by
  framework and role);
* ``/federations/NAME``: the round timeline (phases and durations), dropped
  and rejected clients with reasons, per-client progress, and loss and
  accuracy charts that poll ``/api/federations/NAME`` and gain a point per round;
* ``/api/federations`` and ``/api/federations/NAME``: the same data as JSON;
* ``/metrics``: Prometheus' text format (:mod:`orchard_server.metrics`).

Nothing here changes a federation. When ``token`` is set, every request needs
it, as ``Authorization: Bearer TOKEN`` (Prometheus' ``authorization``
setting) or as ``?token=TOKEN`` (a browser; the pages pass it on to their API
calls). TLS is the caller's ``ssl.SSLContext`` (the server's cert and key).
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from orchard_server.federation import Federation
from orchard_server.metrics import CONTENT_TYPE, ServerMetrics

__all__ = ["WebView", "build_app"]

log = logging.getLogger("orchard.server")

STATIC = Path(__file__).parent / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _jsonable(value: Any) -> Any:
    """Domain dataclasses and enums as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def federation_json(federation: Federation, *, detail: bool) -> dict[str, Any]:
    """What the pages show of one federation (``detail``: timeline, curves, progress).

    Clients appear without their session ids (a session id authenticates its
    calls); a client's progress is merged into its entry here.
    """
    summary = federation.summary()
    data: dict[str, Any] = _jsonable(summary)
    by_kind: dict[str, int] = {}
    for client in summary.clients:
        key = f"{client.framework or 'unknown'} {client.role.value}"
        by_kind[key] = by_kind.get(key, 0) + 1
    data["clients_by_kind"] = dict(sorted(by_kind.items()))
    if detail:
        data.update(federation.view.snapshot())
        progress = federation.view.progress_of
        for entry, member in zip(data["clients"], federation.pool.members(), strict=True):
            mine = progress.get(member.client_id)
            entry["progress"] = _jsonable(mine) if mine is not None else None
    return data


def build_app(
    federations: Mapping[str, Federation], metrics: ServerMetrics, *, token: str = ""
) -> web.Application:
    """The aiohttp application of the web view (not started)."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token:
            given = request.query.get("token", "")
            header = request.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                given = header.removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPUnauthorized(
                    text="this view needs the server's web token "
                    "(Authorization: Bearer TOKEN, or ?token=TOKEN)"
                )
        return await handler(request)

    def find(request: web.Request) -> Federation:
        name = request.match_info["name"]
        federation = federations.get(name)
        if federation is None:
            raise web.HTTPNotFound(
                text=f"no federation {name!r}; known: {', '.join(sorted(federations))}"
            )
        return federation

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def federation_page(request: web.Request) -> web.StreamResponse:
        find(request)
        return web.FileResponse(STATIC / "federation.html")

    async def api_list(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"federations": [federation_json(f, detail=False) for f in federations.values()]}
        )

    async def api_one(request: web.Request) -> web.StreamResponse:
        return web.json_response(federation_json(find(request), detail=True))

    async def prometheus(request: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[require_token])
    app.add_routes(
        [
            web.get("/", index),
            web.get("/federations/{name}", federation_page),
            web.get("/api/federations", api_list),
            web.get("/api/federations/{name}", api_one),
            web.get("/metrics", prometheus),
            web.static("/static", STATIC),
        ]
    )
    return app


class WebView:
    """The web app served on its own port; :meth:`start` binds, :meth:`stop` closes."""

    def __init__(
        self,
        federations: Mapping[str, Federation],
        metrics: ServerMetrics,
        *,
        host: str,
        port: int,
        token: str = "",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._app = build_app(federations, metrics, token=token)
        self._host, self._port, self._ssl = host, port, ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Serve; returns the bound port (port 0 here binds any free one, for tests)."""
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, self._host, self._port, ssl_context=self._ssl, reuse_address=True
        )
        await site.start()
        self._runner = runner
        server = site._server  # aiohttp exposes the bound sockets only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        scheme = "https" if self._ssl else "http"
        log.info("web view on %s://%s:%d/ (metrics at /metrics)", scheme, self._host, self.port)
        return self.port

    async def stop(self) -> None:
        """Close the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
