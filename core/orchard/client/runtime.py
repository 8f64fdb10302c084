"""The framework-neutral client runtime: join, pull tasks, push results, repeat.

A framework adapter only implements :class:`~orchard.client.numpy_client.NumPyClient`;
this module does everything that has to do with the server and the network:

* connect and join with retries and exponential backoff (bounded by
  ``connect_timeout``), so clients may start before the server;
* heartbeats from a background thread, so a client busy training is known to
  be alive and a dead one is noticed by the server;
* long-polled tasks, streamed parameters in bounded chunks both ways;
* reconnect and re-join after a server restart, or whenever a heartbeat or a
  poll learns the server no longer knows the session (``NOT_FOUND``), with the
  same ``instance_id``, so the server hands back the same data partition;
* a clean exit when the federation ends or on SIGTERM/SIGINT (the current
  task is abandoned, the server is told, the process exits 0).
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from orchard import serde
from orchard.allocator import tune_allocator
from orchard.client.numpy_client import ClientContext, NumPyClient, execute_task
from orchard.client.progress import ProgressBoard
from orchard.messages import (
    API_VERSION,
    FederationState,
    Finished,
    Idle,
    JoinInfo,
    LeaveNotice,
    Result,
    Role,
    Session,
    Task,
    TaskPoll,
)
from orchard.spec import ModelSpec
from orchard.v1 import federation_service_pb2_grpc as pb_grpc

log = logging.getLogger("orchard.client")

#: gRPC codes after which trying again later can help (the server is starting,
#: restarting or briefly unreachable).
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


#: Longest :meth:`ClientRuntime.report_fatal` tries to reach the server, in seconds.
REPORT_TIMEOUT = 10.0


class ClientError(RuntimeError):
    """The client cannot go on; the message says why (and the exit code how bad)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Terminated(BaseException):
    """Raised from the signal handler to abandon the task in progress."""


class _SessionLostError(Exception):
    """The server no longer knows this session (it restarted or dropped it): join again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """How the channel is secured. ``insecure`` must be asked for explicitly."""

    ca_cert: Path | None = None
    insecure: bool = False
    server_name: str | None = None
    #: Mutual TLS: this client's certificate and key (PEM), both or neither.
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """Everything the runtime needs to know; built from CLI flags or env vars."""

    server: str = "localhost:8080"
    federation: str
    framework: str = "numpy"
    display_name: str = ""
    instance_id: str = ""
    role: Role = Role.TRAINER
    auth_token: str = ""
    tls: TlsSettings = TlsSettings(insecure=True)
    #: Explicit data partition; None means "use the server's assignment".
    partition_id: int | None = None
    num_partitions: int | None = None
    #: Give up when the server cannot be reached (or re-reached) for this long.
    connect_timeout: float = 300.0
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    #: Longest long-poll for a task; the server may answer sooner.
    poll_seconds: float = 30.0
    max_chunk_bytes: int = serde.DEFAULT_CHUNK_BYTES


#: A client channel's arguments (also the transport benchmark's, ``benchmarks.transport``).
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


def make_channel(settings: ClientSettings) -> grpc.Channel:
    """A channel to the server, TLS unless ``insecure`` was asked for."""
    options: list[tuple[str, Any]] = list(CHANNEL_OPTIONS)
    if settings.tls.insecure:
        log.warning("insecure channel to %s: traffic is NOT encrypted (asked for)", settings.server)
        return grpc.insecure_channel(settings.server, options=options)
    root = settings.tls.ca_cert.read_bytes() if settings.tls.ca_cert else None
    if settings.tls.server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls.server_name))
    tls = settings.tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    return grpc.secure_channel(settings.server, credentials, options=options)


class ClientRuntime:
    """Runs one NumPyClient against one federation until it ends."""

    def __init__(
        self,
        factory: Callable[[ClientContext], NumPyClient],
        settings: ClientSettings,
        *,
        model_spec: ModelSpec | None = None,
    ) -> None:
        if not settings.instance_id:
            settings = replace(settings, instance_id=uuid.uuid4().hex)
        if not settings.display_name:
            settings = replace(settings, display_name=socket.gethostname())
        self.settings = settings
        self.model_spec = model_spec
        self._factory = factory
        self._client: NumPyClient | None = None
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.FederationServiceStub | None = None
        self._session: Session | None = None
        self._stop = threading.Event()
        self._stop_reason = ""
        self._busy = False
        self._call: Any = None  # the long poll in flight, cancelled by stop()
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        #: Set by the heartbeat thread when the server answers NOT_FOUND.
        self._session_lost = threading.Event()
        #: The task's progress, sent with every heartbeat (the client posts to it).
        self.progress = ProgressBoard()

    # -- public ---------------------------------------------------------------

    def run(self) -> int:
        """Serve the federation; returns the process exit code."""
        previous = self._install_signal_handlers()
        try:
            return self._run()
        except ClientError as exc:
            log.error("%s", exc)
            return exc.exit_code
        except _Terminated:
            log.info("stopping on %s", self._stop_reason)
            self._leave(self._stop_reason)
            return 0
        finally:
            self._stop_heartbeat()
            if self._channel is not None:
                self._channel.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the runtime to leave and return (thread-safe)."""
        self._stop_reason = reason
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    # -- main loop ------------------------------------------------------------

    def _run(self) -> int:
        self._join_with_retries()
        while not self._stop.is_set():
            try:
                if self._session_lost.is_set():
                    raise _SessionLostError
                item = self._pull()
            except _SessionLostError:
                log.warning("the server no longer knows this session (restarted?): joining again")
                self._join_with_retries()
                continue
            if item is None:  # cancelled by stop()
                break
            if isinstance(item, Finished):
                log.info(
                    "federation %r ended (%s): %s",
                    self.settings.federation,
                    item.state.value,
                    item.reason,
                )
                self._leave("federation ended")
                return 0 if item.state is FederationState.FINISHED else 1
            if isinstance(item, Idle):
                continue
            self._serve(item)
        log.info("stopping on %s", self._stop_reason)
        self._leave(self._stop_reason or "stopped")
        return 0

    def _serve(self, task: Task) -> None:
        try:
            client = self._ensure_client()
        except Exception as exc:  # e.g. the data set cannot be loaded: tell the server, then quit
            session = self._require_session()
            message = f"client set-up failed: {type(exc).__name__}: {exc}"
            self._push(Result(client_id=session.client_id, task_id=task.task_id, error=message))
            self._leave(message, fatal=True)
            raise ClientError(message) from exc
        started = time.monotonic()
        kind = task.type.value
        log.info(
            "round %d: %s task %s received (%d tensors)",
            task.round,
            kind,
            task.task_id,
            len(task.parameters),
        )
        self._busy = True
        try:
            if self._stop.is_set():
                raise _Terminated
            result = execute_task(client, task, client_id=self._require_session().client_id)
        finally:
            self._busy = False
            self.progress.clear()
        elapsed = time.monotonic() - started
        if result.error:
            log.error(
                "round %d: %s failed after %.1f s: %s", task.round, kind, elapsed, result.error
            )
        else:
            log.info(
                "round %d: %s done in %.1f s on %d examples (loss %s%s)",
                task.round,
                kind,
                elapsed,
                result.num_examples,
                "not reported" if result.loss is None else f"{result.loss:.4f}",
                _format_metrics(result),
            )
        self._push(result)

    # -- calls ----------------------------------------------------------------

    def _connect(self) -> pb_grpc.FederationServiceStub:
        if self._channel is not None:
            self._channel.close()
        self._channel = make_channel(self.settings)
        self._stub = pb_grpc.FederationServiceStub(self._channel)
        return self._stub

    def _join_with_retries(self) -> None:
        """Join, retrying transient failures with exponential backoff and jitter."""
        self._stop_heartbeat()
        deadline = time.monotonic() + self.settings.connect_timeout
        delay = self.settings.backoff_initial
        attempt = 0
        info = JoinInfo(
            api_version=API_VERSION,
            federation=self.settings.federation,
            instance_id=self.settings.instance_id,
            display_name=self.settings.display_name,
            framework=self.settings.framework,
            capabilities=("fit", "evaluate", "fedprox"),
            role=self.settings.role,
            model_spec=self.model_spec,
            auth_token=self.settings.auth_token,
            partition_id=self.settings.partition_id,
            num_partitions=self.settings.num_partitions
            if self.settings.partition_id is not None
            else None,
        )
        request = serde.join_to_proto(info)
        while True:
            attempt += 1
            if self._stop.is_set():
                raise _Terminated
            stub = self._stub or self._connect()
            # A re-join proves it owns its instance with its current session's secret.
            owner = serde.session_metadata(self._session.secret if self._session else "")
            try:
                response = stub.Join(request, timeout=10.0, metadata=owner)
                break
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _TRANSIENT:
                    raise ClientError(
                        f"server {self.settings.server} refused to let us join federation "
                        f"{self.settings.federation!r}: {code.name}: {exc.details()}"
                    ) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError(
                        f"could not reach the server at {self.settings.server} for "
                        f"{self.settings.connect_timeout:.0f} s ({attempt} attempts, last error "
                        f"{code.name}: {exc.details()})",
                        exit_code=1,
                    ) from None
                sleep = min(delay, remaining) * random.uniform(0.8, 1.2)
                log.info(
                    "server %s not reachable yet (%s); attempt %d, retrying in %.1f s",
                    self.settings.server,
                    code.name,
                    attempt,
                    sleep,
                )
                if self._stop.wait(sleep):
                    raise _Terminated from None
                delay = min(delay * 2, self.settings.backoff_max)
                self._connect()
        session = serde.session_from_proto(response)
        previous, self._session = self._session, session
        self._session_lost.clear()
        if (
            self._client is not None
            and previous is not None
            and self.settings.partition_id is None
            and session.partition_id != previous.partition_id
        ):
            log.warning(
                "the server now assigns partition %d, but this client has loaded partition %d "
                "and keeps training on it",
                session.partition_id,
                previous.partition_id,
            )
        log.info(
            "joined federation %r as %s (partition %d of %d, state %s, API %s)",
            self.settings.federation,
            session.client_id,
            session.partition_id,
            session.num_partitions,
            session.state.value,
            session.api_version,
        )
        self._start_heartbeat(session)

    def _pull(self) -> Task | Idle | Finished | None:
        """One long poll. None when cancelled by stop()."""
        session = self._require_session()
        request = serde.poll_to_proto(
            TaskPoll(
                client_id=session.client_id,
                wait_seconds=self.settings.poll_seconds,
                max_chunk_bytes=self.settings.max_chunk_bytes,
            )
        )
        try:
            call = serde.pull_task_method(self._require_channel())(
                request,
                timeout=self.settings.poll_seconds + 30.0,
                metadata=serde.session_metadata(session.secret),
            )
            self._call = call
            # stop() (a signal handler) or the heartbeat may have looked for the
            # call before it was stored: they set their flag first, so check it.
            if self._stop.is_set() or self._session_lost.is_set():
                call.cancel()
            return serde.task_from_stream(iter(call))
        except grpc.RpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.CANCELLED and self._stop.is_set():
                return None
            if code is grpc.StatusCode.NOT_FOUND or (
                code is grpc.StatusCode.CANCELLED and self._session_lost.is_set()
            ):
                raise _SessionLostError from None
            if code in _TRANSIENT or code is grpc.StatusCode.CANCELLED:
                log.warning(
                    "lost the server while waiting for a task (%s: %s); reconnecting",
                    code.name,
                    exc.details(),
                )
                self._stub = None
                self._join_with_retries()
                return Idle(state=FederationState.RUNNING)
            raise ClientError(f"PullTask failed: {code.name}: {exc.details()}") from None
        finally:
            self._call = None

    def _push(self, result: Result) -> None:
        """Upload a result; a rejection is logged, not fatal."""
        stream = serde.result_to_wire(result, self.settings.max_chunk_bytes)
        proof = serde.session_metadata(self._require_session().secret)
        try:
            response = serde.push_result_method(self._require_channel())(
                stream, timeout=600.0, metadata=proof
            )
            log.debug("result %s accepted: %s", result.task_id, serde.push_ack_from_proto(response))
        except grpc.RpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                log.error(
                    "the server rejected our result for task %s: %s", result.task_id, exc.details()
                )
            elif code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                log.warning("result for task %s not taken: %s", result.task_id, exc.details())
            elif code in _TRANSIENT:
                log.warning(
                    "lost the server while pushing task %s (%s); its round will go on without us",
                    result.task_id,
                    code.name,
                )
            else:
                raise ClientError(f"PushResult failed: {code.name}: {exc.details()}") from None

    def report_fatal(self, reason: str) -> int:
        """Tell the server this client can never take part, and why; returns exit status 2.

        For a failure before the client could serve (its dataset cannot be
        loaded, say): it joins only to leave at once with ``fatal`` set, so
        the server fails the federation with ``reason`` instead of waiting
        ``wait_timeout`` for a client that is not coming. When the server
        cannot be reached either, the reason stays in this client's log only.
        """
        previous = self._install_signal_handlers()
        # Bounded: the server is usually up already (compose starts clients
        # once it is healthy), and a missing server must not hide the error.
        self.settings = replace(
            self.settings, connect_timeout=min(self.settings.connect_timeout, REPORT_TIMEOUT)
        )
        try:
            self._join_with_retries()
            self._leave(reason, fatal=True)
        except ClientError as exc:
            log.error("could not report this to the server: %s", exc)
        except _Terminated:
            log.info("stopping on %s", self._stop_reason)
        finally:
            self._stop_heartbeat()
            if self._channel is not None:
                self._channel.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 2

    def _leave(self, reason: str, *, fatal: bool = False) -> None:
        session, stub = self._session, self._stub
        self._stop_heartbeat()
        if session is None or stub is None:
            return
        try:
            stub.Leave(
                serde.leave_to_proto(
                    LeaveNotice(client_id=session.client_id, reason=reason, fatal=fatal)
                ),
                timeout=5.0,
                metadata=serde.session_metadata(session.secret),
            )
            if fatal:
                log.info(
                    "told federation %r that this client cannot take part", self.settings.federation
                )
            else:
                log.info("left federation %r (%s)", self.settings.federation, reason)
        except grpc.RpcError as exc:
            log.info("could not say goodbye to the server (%s); leaving anyway", exc.code().name)
        self._session = None

    # -- helpers --------------------------------------------------------------

    def _ensure_client(self) -> NumPyClient:
        if self._client is None:
            session = self._require_session()
            explicit = self.settings.partition_id is not None
            ctx = ClientContext(
                federation=self.settings.federation,
                client_id=session.client_id,
                partition_id=(self.settings.partition_id if explicit else session.partition_id)
                or 0,
                num_partitions=(self.settings.num_partitions or session.num_partitions)
                if explicit
                else session.num_partitions,
                model_spec=session.model_spec,
                progress=self.progress,
            )
            log.info(
                "loading data partition %d of %d (%s)",
                ctx.partition_id,
                ctx.num_partitions,
                "set by the user" if explicit else "assigned by server",
            )
            self._client = self._factory(ctx)
        return self._client

    def _require_channel(self) -> grpc.Channel:
        if self._channel is None:
            raise ClientError("not connected")
        return self._channel

    def _require_session(self) -> Session:
        if self._session is None:
            raise ClientError("not joined")
        return self._session

    def _start_heartbeat(self, session: Session) -> None:
        self._heartbeat_stop = threading.Event()
        stop = self._heartbeat_stop
        stub = self._stub
        assert stub is not None

        proof = serde.session_metadata(session.secret)

        def beat() -> None:
            interval = max(session.heartbeat_interval, 0.1)
            while not stop.wait(interval):
                request = serde.heartbeat_to_proto(session.client_id, self.progress.current())
                try:
                    stub.Heartbeat(request, timeout=max(interval, 5.0), metadata=proof)
                except grpc.RpcError as exc:
                    if exc.code() is grpc.StatusCode.NOT_FOUND:
                        # The server forgot the session: the main loop joins again
                        # (same instance_id) as soon as its long poll is cut short.
                        log.warning(
                            "heartbeat: the server no longer knows session %s; joining again",
                            session.client_id,
                        )
                        self._session_lost.set()
                        call = self._call
                        if call is not None:
                            call.cancel()
                        return
                    log.debug("heartbeat failed: %s", exc.code().name)

        self._heartbeat = threading.Thread(target=beat, name="orchard-heartbeat", daemon=True)
        self._heartbeat.start()

    def _stop_heartbeat(self) -> None:
        self._heartbeat_stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=5.0)
        self._heartbeat = None

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            self.stop(name)
            if self._busy:
                raise _Terminated

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _format_metrics(result: Result) -> str:
    parts = [f", {k} {v:.4f}" for k, v in result.metrics.items() if isinstance(v, float)]
    return "".join(parts)


def report_fatal(
    settings: ClientSettings, reason: str, *, model_spec: ModelSpec | None = None
) -> int:
    """Tell the federation this client cannot take part (see :meth:`ClientRuntime.report_fatal`)."""

    def no_client(ctx: ClientContext) -> NumPyClient:
        raise ClientError("this client only reports a failure")

    return ClientRuntime(no_client, settings, model_spec=model_spec).report_fatal(reason)


def run_client(
    factory: Callable[[ClientContext], NumPyClient],
    settings: ClientSettings,
    *,
    model_spec: ModelSpec | None = None,
) -> int:
    """Serve one federation with the client ``factory`` builds; returns an exit code."""
    tune_allocator()  # megabyte chunks without a page fault per byte (orchard.allocator)
    return ClientRuntime(factory, settings, model_spec=model_spec).run()
