"""Assembles the server: federations, their pools, the gRPC server, health checks.

All federations run side by side in one event loop; the process exits when
every federation has ended (0 if all finished, 1 if any failed) or on
SIGTERM/SIGINT (0, or 1 if a federation had failed by then). Checkpoints
are written after every round, so stopping at any moment loses at most the
round in progress.

Observability subscribes to each federation's events (:mod:`.events`): the
Prometheus metrics always, TensorBoard files when ``tensorboard_dir`` is set,
and the web view (with ``/metrics``) is served on ``web_port`` when it is
not 0 (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchard import serde
from orchard.messages import FederationState
from orchard_server.admission import AdmissionPolicy
from orchard_server.config import ServerConfig
from orchard_server.federation import Federation
from orchard_server.grpc_pool import GrpcClientPool
from orchard_server.metrics import ServerMetrics
from orchard_server.results import ResultPolicy
from orchard_server.servicer import FederationServicer, Hosted, add_to_server
from orchard_server.tensorboard import TensorBoardWriter
from orchard_server.web import WebView

log = logging.getLogger("orchard.server")

SERVICE_NAME = serde.SERVICE_NAME
#: Largest message the server reads: twice the largest chunk.
MAX_MESSAGE_BYTES = 2 * serde.MAX_CHUNK_BYTES


#: The gRPC server's channel arguments (also the transport benchmark's, ``benchmarks.transport``).
GRPC_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
    # Room above the largest chunk (serde.MAX_CHUNK_BYTES), so an
    # oversize chunk reaches serde and is refused with
    # INVALID_ARGUMENT naming it, not cut by the transport.
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # No flow-control windows grown by bandwidth probing: with them every
    # upload stream buffered megabytes in gRPC, about a model per client
    # (docs/performance.md); fixed windows keep memory flat in clients.
    ("grpc.http2.bdp_probe", 0),
)


class OrchardServer:
    """One server process hosting several federations."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.hosted: dict[str, Hosted] = {}
        self.metrics = ServerMetrics(lambda: {n: h.pool for n, h in self.hosted.items()})
        self._tensorboard: list[TensorBoardWriter] = []
        for fed_config in config.federations:
            if not fed_config.enabled:
                log.info("federation %r is switched off", fed_config.name)
                continue
            pool = GrpcClientPool(
                AdmissionPolicy.from_config(fed_config),
                heartbeat_timeout=config.heartbeat_timeout,
                results=ResultPolicy.from_config(fed_config),
            )
            federation = Federation(fed_config, pool, config.state_dir)
            federation.restore_or_init()
            federation.events.subscribe(self.metrics)
            if config.tensorboard_dir is not None:
                writer = TensorBoardWriter(config.tensorboard_dir, fed_config.name)
                federation.events.subscribe(writer)
                self._tensorboard.append(writer)
            self.hosted[fed_config.name] = Hosted(federation=federation, pool=pool)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.web: WebView | None = None
        self.web_port = 0

    async def _start_web(self) -> None:
        """Serve the web view and /metrics on ``web_port`` (TLS like the API unless insecure)."""
        context: ssl.SSLContext | None = None
        if not self.config.insecure:
            assert self.config.tls_cert is not None and self.config.tls_key is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self.web = WebView(
            {n: h.federation for n, h in self.hosted.items()},
            self.metrics,
            host=self.config.web_host,
            port=self.config.web_port,
            token=self.config.web_token,
            ssl_context=context,
        )
        self.web_port = await self.web.start()

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        server = grpc.aio.server(options=list(GRPC_SERVER_OPTIONS))
        add_to_server(
            FederationServicer(
                self.hosted,
                heartbeat_interval=self.config.heartbeat_interval,
                max_poll_seconds=self.config.max_poll_seconds,
                max_upload_bytes=self.config.max_upload_bytes,
                max_concurrent_uploads=self.config.max_concurrent_uploads,
                upload_buffer_bytes=self.config.upload_buffer_bytes,
                status_token=self.config.web_token,
                stream_idle_timeout=self.config.stream_idle_timeout,
            ),
            server,
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.config.insecure:
            log.warning(
                "serving WITHOUT TLS on %s (insecure = true): use only on trusted networks",
                self.config.address,
            )
            self.port = server.add_insecure_port(self.config.address)
        else:
            assert self.config.tls_cert is not None and self.config.tls_key is not None
            client_ca = self.config.tls_client_ca
            credentials = grpc.ssl_server_credentials(
                [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())],
                # Mutual TLS: only clients with a certificate this CA signed get in.
                root_certificates=client_ca.read_bytes() if client_ca else None,
                require_client_auth=client_ca is not None,
            )
            self.port = server.add_secure_port(self.config.address, credentials)
            log.info(
                "TLS is on: clients must verify certificate %s (key %s)",
                self.config.tls_cert,
                self.config.tls_key,
            )
        await server.start()
        if self.config.web_port:
            await self._start_web()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server = server
        log.info(
            "orchard server listening on %s (port %d), federations: %s",
            self.config.address,
            self.port,
            ", ".join(
                f"{n} ({h.federation.spec.model_id}, "
                f"{h.federation.rounds_completed}/"
                f"{h.federation.config.num_rounds} rounds done)"
                for n, h in self.hosted.items()
            ),
        )
        return self.port

    async def run(self, *, linger: float = 10.0) -> int:
        """Run every federation to its end; returns the process exit code."""
        if self.server is None:
            await self.start()
        reapers = [asyncio.create_task(h.pool.reap()) for h in self.hosted.values()]
        loops = [asyncio.create_task(self._run_one(h)) for h in self.hosted.values()]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        everything: asyncio.Future[Any] = asyncio.gather(*loops)
        done, _ = await asyncio.wait([stopper, everything], return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("stopping on signal; federations resume from their last checkpoint")
            for task in loops:
                task.cancel()
            # Each federation writes its last completed round before it returns.
            await asyncio.gather(*loops, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):
                await everything
        else:
            await self._linger(linger)
        stopper.cancel()
        for task in reapers:
            task.cancel()
        assert self.server is not None
        await self.server.stop(grace=2.0)
        if self.web is not None:
            await self.web.stop()
        for writer in self._tensorboard:  # stopped by a signal: no federation_ended came
            writer.close()
        states = [h.federation.state for h in self.hosted.values()]
        if FederationState.FAILED in states:
            return 1  # also when stopped: a failed federation must not read as success
        if stopper in done:
            return 0
        return 0 if all(s is FederationState.FINISHED for s in states) else 1

    async def _run_one(self, hosted: Hosted) -> None:
        try:
            await hosted.federation.run()
        finally:
            hosted.pool.close()

    async def _linger(self, seconds: float) -> None:
        """Keep answering briefly so connected clients learn the federation ended."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(h.pool.size for h in self.hosted.values()):
            await asyncio.sleep(0.2)
