"""The gRPC servicer in this process: every status code the proto promises, raised.

A real ``grpc.aio`` server runs on loopback in a background thread with its
own event loop; the tests call it through the generated stub, as any client
would. The federation's round loop is not started: tests put tasks into a
session themselves (``GrpcClientPool.run_task``), so each call's answer is
exact. Each RPC's error comment in ``protos/orchard/v1/federation_service.proto``
maps to a test below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from orchard import serde
from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.client.runtime import ClientRuntime, ClientSettings
from orchard.examples.logreg import LogRegClient, logreg_spec
from orchard.messages import (
    API_VERSION,
    FederationState,
    JoinInfo,
    LeaveNotice,
    Result,
    Role,
    Session,
    Task,
    TaskPoll,
    TaskType,
)
from orchard.spec import ModelSpec, TensorSpec
from orchard.typing import NDArrays
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import federation_service_pb2_grpc as pb_grpc
from orchard.v1 import tensor_pb2 as tpb
from orchard_server.admission import AdmissionError, AdmissionPolicy
from orchard_server.app import OrchardServer
from orchard_server.config import FederationConfig, ServerConfig
from orchard_server.grpc_pool import GrpcClientPool
from orchard_server.pool import InMemoryClientPool
from orchard_server.servicer import REFUSAL_STATUS

SPEC = logreg_spec()
T = TypeVar("T")


def federation_config(**overrides: Any) -> FederationConfig:
    base: dict[str, Any] = {
        "name": "blobs",
        "model": "logreg",
        "tensors": SPEC.tensors,
        "num_rounds": 1,
        "min_fit_clients": 1,
        "min_evaluate_clients": 1,
        "min_available_clients": 1,
        "num_partitions": 3,
        "auth_token": "s3cret",
        "max_clients": 2,
    }
    base.update(overrides)
    return FederationConfig(**base)


class ServerThread:
    """An OrchardServer serving on loopback from a background event loop."""

    def __init__(
        self,
        tmp: Path,
        *,
        heartbeat_interval: float = 30.0,
        max_poll_seconds: float = 0.3,
        max_upload_bytes: int = 8 << 30,
        stream_idle_timeout: float = 60.0,
        **federation: Any,
    ) -> None:
        self.config = ServerConfig(
            address="127.0.0.1:0",
            state_dir=tmp / "state",
            insecure=True,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_interval * 2,
            max_poll_seconds=max_poll_seconds,
            max_upload_bytes=max_upload_bytes,
            stream_idle_timeout=stream_idle_timeout,
            federations=(federation_config(**federation),),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = OrchardServer(self.config)
        self.port = self.call(self.server.start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        #: A stub that proves nothing: calls carry only what the test gives them.
        self.raw = pb_grpc.FederationServiceStub(self.channel)
        #: A well-behaved client's stub: each call carries its session's secret.
        self.proofs = Proofs()
        self.stub = pb_grpc.FederationServiceStub(grpc.intercept_channel(self.channel, self.proofs))

    @property
    def pool(self) -> GrpcClientPool:
        return self.server.hosted["blobs"].pool

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for its value."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coro`` on the server's loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the server's loop (pools are not thread-safe)."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.on_loop(predicate):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()
        assert self.server.server is not None
        self.call(self.server.server.stop(grace=0))
        self.call(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


Metadata = tuple[tuple[str, str | bytes], ...]


class Proofs(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
):
    """Remembers the secret of every session joined through it and sends it with
    each later call of that session (and with a re-join of its instance), as the
    client runtime does."""

    def __init__(self) -> None:
        self.by_client: dict[str, str] = {}
        self.by_instance: dict[str, str] = {}

    def _details(self, details: Any, secret: str) -> Any:
        if details.metadata is not None or not secret:
            return details
        return _CallDetails(
            details.method,
            details.timeout,
            serde.session_metadata(secret),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if isinstance(request, pb.JoinRequest):
            secret = self.by_instance.get(request.instance_id, "")
            outcome = continuation(self._details(details, secret), request)
            if outcome.exception() is None:
                response = outcome.result()
                self.by_client[response.client_id] = response.session_secret
                self.by_instance[request.instance_id] = response.session_secret
            return outcome
        secret = self.by_client.get(request.client_id, "")
        return continuation(self._details(details, secret), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(
            self._details(details, self.by_client.get(request.client_id, "")), request
        )

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        first = next(requests)
        secret = self.by_client.get(first.header.client_id, "")
        return continuation(self._details(details, secret), itertools.chain([first], requests))


@dataclasses.dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


async def _cancel_the_rest() -> None:
    """Cancel what still runs on the loop (long polls, open tasks) before it closes."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(tmp_path)
    yield server
    server.close()


def join_info(**overrides: Any) -> JoinInfo:
    base: dict[str, Any] = {
        "api_version": API_VERSION,
        "federation": "blobs",
        "instance_id": "inst-a",
        "display_name": "a",
        "model_spec": SPEC,
        "auth_token": "s3cret",
    }
    base.update(overrides)
    return JoinInfo(**base)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def open_task(
    served: ServerThread, client_id: str, parameters: NDArrays | None = None
) -> tuple[Task, Future[Result]]:
    """Hand a fit task to a session, as the round loop would; returns it and its result.

    A fan-out gives every task the same ``parameters`` list (zeros by default).
    """
    task = Task(
        task_id=f"t-{client_id}",
        type=TaskType.FIT,
        round=1,
        config={},
        timeout=30.0,
        names=tuple(SPEC.names),
        parameters=[np.zeros(t.shape, np.float32) for t in SPEC.tensors]
        if parameters is None
        else parameters,
    )
    return task, served.submit(served.pool.run_task(client_id, task))


def pull(served: ServerThread, client_id: str, **poll: Any) -> object:
    request = serde.poll_to_proto(
        TaskPoll(client_id=client_id, wait_seconds=poll.get("wait", 5.0), max_chunk_bytes=0)
    )
    if "max_chunk_bytes" in poll:
        request.max_chunk_bytes = poll["max_chunk_bytes"]
    return serde.task_from_stream(iter(served.stub.PullTask(request, timeout=10)))


# --- Join: one admission for gRPC and in-process clients -------------------------

WRONG_SPEC = ModelSpec(SPEC.model_id, (SPEC.tensors[0], TensorSpec("linear.bias", (4,))))

REFUSED = {
    "version": (join_info(api_version="2.0"), grpc.StatusCode.FAILED_PRECONDITION, "2.0"),
    "no version": (join_info(api_version=""), grpc.StatusCode.INVALID_ARGUMENT, "(none)"),
    "malformed version": (
        join_info(api_version="1.0.7"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MAJOR",
    ),
    "old version": (join_info(api_version="1.1"), grpc.StatusCode.FAILED_PRECONDITION, "too old"),
    # blobs needs a token, so a stranger is not told its name.
    "federation": (join_info(federation="nope"), grpc.StatusCode.NOT_FOUND, "federations on"),
    "no token": (join_info(auth_token=""), grpc.StatusCode.UNAUTHENTICATED, "auth token"),
    "wrong token": (join_info(auth_token="guess"), grpc.StatusCode.UNAUTHENTICATED, "token"),
    "spec": (join_info(model_spec=WRONG_SPEC), grpc.StatusCode.FAILED_PRECONDITION, "linear.bias"),
    "partition": (
        join_info(partition_id=3, num_partitions=3),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outside 0..2",
    ),
    "instance": (join_info(instance_id=""), grpc.StatusCode.INVALID_ARGUMENT, "instance_id"),
    "full": (join_info(instance_id="inst-third"), grpc.StatusCode.RESOURCE_EXHAUSTED, "full"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_join_is_refused_identically_over_grpc_and_in_process(
    served: ServerThread, case: str
) -> None:
    info, code, needle = REFUSED[case]
    in_process = InMemoryClientPool(
        SPEC, "blobs", policy=AdmissionPolicy.from_config(federation_config())
    )
    for n in range(2):  # fill the federation (max_clients=2) on both paths
        first = join_info(instance_id=f"inst-{n}")
        served.stub.Join(serde.join_to_proto(first), timeout=10)
        in_process.add(lambda ctx: LogRegClient.for_partition(ctx.partition_id), first)

    err = rpc_error(lambda: served.stub.Join(serde.join_to_proto(info), timeout=10))
    with pytest.raises(AdmissionError) as refused:
        in_process.add(lambda ctx: LogRegClient.for_partition(0), info)

    assert err.code() is code
    assert REFUSAL_STATUS[refused.value.kind] is code
    assert err.details() == refused.value.message
    assert needle in refused.value.message
    assert len(served.on_loop(served.pool.members)) == len(in_process.members()) == 2


def test_a_connected_instance_joining_again_takes_no_room(served: ServerThread) -> None:
    for n in range(2):
        served.stub.Join(serde.join_to_proto(join_info(instance_id=f"inst-{n}")), timeout=10)
    again = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info(instance_id="inst-1")), timeout=10)
    )
    assert again.partition_id == 1
    assert len(served.on_loop(served.pool.members)) == 2


def test_every_call_after_join_needs_the_session_secret(
    served: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    session = serde.session_from_proto(response)
    cid, secret = session.client_id, session.secret
    assert len(secret) >= 43 and secret not in cid  # 256 random bits, not the public id
    wrong = ((serde.SESSION_SECRET_METADATA, "guess"),)
    calls: dict[str, Callable[[Metadata], object]] = {
        "heartbeat": lambda md: served.raw.Heartbeat(
            serde.heartbeat_to_proto(cid), timeout=10, metadata=md
        ),
        "pull": lambda md: list(
            served.raw.PullTask(
                serde.poll_to_proto(TaskPoll(client_id=cid, wait_seconds=0, max_chunk_bytes=0)),
                timeout=10,
                metadata=md,
            )
        ),
        "push": lambda md: served.raw.PushResult(
            serde.result_to_stream(Result(client_id=cid, task_id="t", num_examples=1)),
            timeout=10,
            metadata=md,
        ),
        "leave": lambda md: served.raw.Leave(
            serde.leave_to_proto(LeaveNotice(client_id=cid)), timeout=10, metadata=md
        ),
    }
    for name, call in calls.items():
        for metadata in ((), wrong):
            err = rpc_error(lambda: call(metadata))  # noqa: B023
            assert err.code() is grpc.StatusCode.UNAUTHENTICATED, (name, metadata)
            assert "session secret" in str(err.details())
    # Nobody evicted the client: its session is intact and answers its owner.
    assert [m.client_id for m in served.on_loop(served.pool.members)] == [cid]
    served.raw.Heartbeat(
        serde.heartbeat_to_proto(cid), timeout=10, metadata=serde.session_metadata(secret)
    )
    # A join reusing the instance_id without the secret is refused; the client stays.
    for metadata in ((), wrong):
        err = rpc_error(
            lambda: served.raw.Join(
                serde.join_to_proto(join_info()),
                timeout=10,
                metadata=metadata,  # noqa: B023
            )
        )
        assert err.code() is grpc.StatusCode.ALREADY_EXISTS
        assert "only a join carrying that session's secret" in str(err.details())
    assert [m.client_id for m in served.on_loop(served.pool.members)] == [cid]
    # The owner re-joins (a reconnecting client) and takes over its instance.
    again = serde.session_from_proto(
        served.raw.Join(
            serde.join_to_proto(join_info()), timeout=10, metadata=serde.session_metadata(secret)
        )
    )
    assert again.client_id != cid and again.secret != secret
    assert [m.client_id for m in served.on_loop(served.pool.members)] == [again.client_id]
    # The secret is never logged.
    assert secret not in caplog.text and again.secret not in caplog.text


def test_join_answers_session_partition_and_spec(served: ServerThread) -> None:
    first = serde.session_from_proto(served.stub.Join(serde.join_to_proto(join_info()), timeout=10))
    assert (first.partition_id, first.num_partitions, first.api_version) == (0, 3, API_VERSION)
    assert first.model_spec == SPEC and first.state is FederationState.WAITING
    fixed = serde.session_from_proto(
        served.stub.Join(
            serde.join_to_proto(join_info(instance_id="inst-b", partition_id=4, num_partitions=5)),
            timeout=10,
        )
    )
    assert (fixed.partition_id, fixed.num_partitions) == (4, 5)
    assert served.server.hosted["blobs"].pool.partitions.to_json() == {"inst-a": 0, "inst-b": 4}


def test_an_undecodable_join_of_another_major_version_is_told_its_version(
    served: ServerThread,
) -> None:
    request = serde.join_to_proto(join_info(api_version="2.0"))
    request.role = pb.ClientRole.ValueType(7)  # a role v1 does not know
    err = rpc_error(lambda: served.stub.Join(request, timeout=10))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "'2.0' is not supported" in str(err.details())
    request.api_version = API_VERSION
    err = rpc_error(lambda: served.stub.Join(request, timeout=10))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown role 7" in str(err.details())


# --- Heartbeat, PullTask, Leave ---------------------------------------------------


def test_heartbeat_reports_state_and_unknown_sessions_get_not_found(served: ServerThread) -> None:
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    status = serde.status_from_proto(
        served.stub.Heartbeat(serde.heartbeat_to_proto(session.client_id), timeout=10)
    )
    assert (status.state, status.rounds_completed) == (FederationState.WAITING, 0)
    err = rpc_error(lambda: served.stub.Heartbeat(serde.heartbeat_to_proto("c-gone"), timeout=10))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "join again" in str(err.details())


def test_pull_task_codes(served: ServerThread) -> None:
    err = rpc_error(lambda: pull(served, "c-gone"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    err = rpc_error(
        lambda: pull(served, session.client_id, max_chunk_bytes=serde.MAX_CHUNK_BYTES + 1)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "max_chunk_bytes" in str(err.details())
    task, _ = open_task(served, session.client_id)
    got = pull(served, session.client_id)
    assert isinstance(got, Task) and got.task_id == task.task_id


def _two_open_tasks(served: ServerThread) -> tuple[list[Session], list[Task]]:
    """Two sessions with a fit task each, both carrying the same parameter list."""
    sessions = [
        serde.session_from_proto(
            served.stub.Join(serde.join_to_proto(join_info(instance_id=i)), timeout=10)
        )
        for i in ("inst-a", "inst-b")
    ]
    parameters = [np.zeros(t.shape, np.float32) for t in SPEC.tensors]
    tasks = [open_task(served, s.client_id, parameters)[0] for s in sessions]
    return sessions, tasks


@pytest.mark.parametrize("large", [True, False])
def test_the_shared_chunks_are_freed_once_every_open_task_is_sent(
    served: ServerThread, monkeypatch: pytest.MonkeyPatch, large: bool
) -> None:
    # A large model's encoded chunks must not live on while its updates arrive:
    # once both clients have their task in full, the pool lets the bytes go,
    # and hands the freed pages back to the kernel (once) if the model is large.
    if large:
        monkeypatch.setattr("orchard_server.grpc_pool.RELEASE_AFTER_BYTES", 0)
    released = threading.Event()
    calls: list[str] = []

    def release() -> bool:
        calls.append(threading.current_thread().name)
        released.set()
        return True

    monkeypatch.setattr("orchard_server.grpc_pool.release_free_memory", release)
    sessions, _ = _two_open_tasks(served)
    pool = served.pool
    pull(served, sessions[0].client_id)
    cached = served.on_loop(lambda: pool._encoded)
    assert cached is not None  # kept: the second client has not had its task yet
    assert all(c is not None for c in cached.chunks), "its stream needs every chunk"
    assert not calls
    pull(served, sessions[1].client_id)
    assert served.on_loop(lambda: pool._encoded) is None
    assert all(c is None for c in cached.chunks) and not cached.progress
    if not large:  # a small model's pages stay for the next round's encoding
        served.on_loop(lambda: None)  # anything scheduled on the loop has run
        assert not released.wait(0.5) and not calls
        return
    assert released.wait(10)
    assert len(calls) == 1 and calls[0] != served.thread.name, "in a thread, off the loop"


def test_each_chunk_is_dropped_once_every_stream_that_needs_it_wrote_it(
    served: ServerThread,
) -> None:
    _, (first, second) = _two_open_tasks(served)
    pool = served.pool
    chunk = 16  # bytes: several chunks per tensor
    encoded = served.call(pool.start_sending(first, chunk))
    count = len(encoded.chunks)
    assert count >= 4
    for sent in range(1, count + 1):  # the second task's stream has not started: all kept
        served.on_loop(lambda sent=sent: pool.chunk_sent(encoded, first.task_id, sent))  # type: ignore[misc]
    assert all(c is not None for c in encoded.chunks)
    assert served.call(pool.start_sending(second, chunk)) is encoded, "shared, encoded once"
    for sent in (1, 2):
        served.on_loop(lambda sent=sent: pool.chunk_sent(encoded, second.task_id, sent))  # type: ignore[misc]
    assert encoded.released == 2 and encoded.chunks[:2] == [None, None]
    assert all(c is not None for c in encoded.chunks[2:]), "the second stream needs the rest"
    # A task opened now needs every chunk: it gets an encoding of its own.
    late = dataclasses.replace(first, task_id="t-late")
    fresh = served.call(pool.start_sending(late, chunk))
    assert fresh is not encoded and all(c is not None for c in fresh.chunks)
    assert fresh.chunks[2:] == encoded.chunks[2:], "the same bytes"
    served.on_loop(lambda: pool.stop_sending(fresh, late.task_id))
    served.on_loop(lambda: pool.stop_sending(encoded, first.task_id))
    assert encoded.released == 2, "the second stream still has chunks to write"
    served.on_loop(lambda: pool.stop_sending(encoded, second.task_id))
    # No stream left, but the second task was never sent in full: it still waits for all.
    assert encoded.released == 2


def test_leave_ends_the_session_and_an_unknown_one_gets_not_found(served: ServerThread) -> None:
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    served.stub.Leave(serde.leave_to_proto(LeaveNotice(client_id=session.client_id)), timeout=10)
    assert served.on_loop(served.pool.members) == []
    err = rpc_error(
        lambda: served.stub.Leave(
            serde.leave_to_proto(LeaveNotice(client_id=session.client_id)), timeout=10
        )
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND


def test_a_fatal_leave_fails_the_federation_with_the_clients_reason(served: ServerThread) -> None:
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    notice = LeaveNotice(client_id=session.client_id, reason="no data", fatal=True)
    served.stub.Leave(serde.leave_to_proto(notice), timeout=10)
    federation = served.server.hosted["blobs"].federation
    assert served.on_loop(served.pool.members) == []
    assert federation.state is FederationState.FAILED
    assert federation.reason == "a cannot take part: no data"


# --- PushResult -------------------------------------------------------------------


def _push(served: ServerThread, result: Result) -> str:
    response = served.stub.PushResult(serde.result_to_stream(result), timeout=10)
    return serde.push_ack_from_proto(response)


def _result(task: Task, client_id: str, **overrides: Any) -> Result:
    base: dict[str, Any] = {
        "client_id": client_id,
        "task_id": task.task_id,
        "num_examples": 10,
        "names": task.names,
        "parameters": [p + 1 for p in task.parameters],
    }
    base.update(overrides)
    return Result(**base)


def _pulled_task(served: ServerThread) -> tuple[str, Task, Future[Result]]:
    """A joined client's session id, a fit task opened for it and pulled (as a client
    does before it pushes), and the future of that task's result."""
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    task, delivered = open_task(served, session.client_id)
    pull(served, session.client_id)
    return session.client_id, task, delivered


def test_push_result_accepts_a_result_without_a_loss(served: ServerThread) -> None:
    cid, task, delivered = _pulled_task(served)
    assert "accepted" in _push(served, _result(task, cid))
    result = delivered.result(timeout=10)
    assert result.loss is None
    np.testing.assert_array_equal(result.parameters[1], np.ones(3, np.float32))


def test_push_result_codes(served: ServerThread) -> None:
    session = serde.session_from_proto(
        served.stub.Join(serde.join_to_proto(join_info()), timeout=10)
    )
    cid = session.client_id
    task, delivered = open_task(served, cid)
    pull(served, cid)
    # NOT_FOUND: unknown session, unknown task.
    err = rpc_error(lambda: _push(served, _result(task, "c-gone")))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "join again" in str(err.details())
    err = rpc_error(lambda: _push(served, _result(task, cid, task_id="t-never")))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "t-never" in str(err.details())
    # INVALID_ARGUMENT: a stream without its header.
    chunks = serde.result_to_stream(_result(task, cid))
    next(chunks)
    err = rpc_error(lambda: served.stub.PushResult(chunks, timeout=10))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "ResultHeader" in str(err.details())
    # INVALID_ARGUMENT: NaN values; the task closes without this result.
    nan = [p.copy() for p in task.parameters]
    nan[0][0, 0] = np.nan
    err = rpc_error(lambda: _push(served, _result(task, cid, parameters=nan)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "linear.weight" in str(err.details()) and "NaN" in str(err.details())
    with pytest.raises(Exception, match="update rejected"):
        delivered.result(timeout=10)
    # FAILED_PRECONDITION: the task is closed now.
    err = rpc_error(lambda: _push(served, _result(task, cid)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and "is closed" in str(err.details())
    # INVALID_ARGUMENT: announced tensors differ from the spec (checked before the bytes).
    task2, _ = open_task(served, cid)
    pull(served, cid)
    bad = _result(task2, cid, names=("linear.weight", "other"))
    err = rpc_error(lambda: _push(served, bad))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "other" in str(err.details())


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"metrics": {"blob": b"\x00"}}, "metric 'blob' is bytes"),
        ({"loss": float("nan")}, "loss must be a finite number"),
        ({"num_examples": 2**64 - 1}, "max_examples_per_client"),
    ],
)
def test_a_bad_value_in_a_result_is_invalid_argument(
    served: ServerThread, bad: dict[str, Any], needle: str
) -> None:
    cid, task, delivered = _pulled_task(served)
    err = rpc_error(lambda: _push(served, _result(task, cid, **bad)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and needle in str(err.details())
    with pytest.raises(Exception, match="update rejected"):
        delivered.result(timeout=10)


def test_an_oversize_chunk_is_invalid_argument_not_cut_by_the_transport(
    served: ServerThread,
) -> None:
    cid, task, _ = _pulled_task(served)
    header = serde.result_header_to_proto(_result(task, cid))
    # 4.5 MiB: above gRPC's default 4 MiB message limit and the largest chunk.
    chunk = pb.PushResultRequest(chunk=tpb.TensorChunk(data=b"\0" * (9 << 19)))
    err = rpc_error(
        lambda: served.stub.PushResult(
            iter([pb.PushResultRequest(header=header), chunk]), timeout=10
        )
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()


def test_a_non_finite_upload_is_refused_at_its_chunk_before_the_rest_is_read(
    served: ServerThread,
) -> None:
    cid, task, delivered = _pulled_task(served)
    nan = [p.copy() for p in task.parameters]
    nan[0].reshape(-1)[1] = np.inf  # in the first chunk of 8 bytes
    messages = list(serde.result_to_stream(_result(task, cid, parameters=nan), 8))
    rest = threading.Event()
    sent_rest: list[bool] = []

    def then_waits() -> Iterator[pb.PushResultRequest]:
        yield from messages[:2]  # the header and the chunk with the infinity
        rest.wait(30)  # the rest comes only when the test lets it (or after 30 s)
        sent_rest.append(True)
        yield from messages[2:]

    try:
        err = rpc_error(lambda: served.stub.PushResult(then_waits(), timeout=60))
        assert not sent_rest  # answered while the client still held the rest back
    finally:
        rest.set()
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'linear.weight': elements 0 to 1 hold 1 NaN or infinite value" in str(err.details())
    with pytest.raises(Exception, match="update rejected"):
        delivered.result(timeout=10)


def test_a_stalled_upload_is_cut_off(tmp_path: Path) -> None:
    served = ServerThread(tmp_path, stream_idle_timeout=0.5)
    try:
        cid, task, delivered = _pulled_task(served)
        messages = list(serde.result_to_stream(_result(task, cid)))

        def stalling() -> Iterator[pb.PushResultRequest]:
            yield messages[0]
            time.sleep(5)  # the client hangs after its header
            yield from messages[1:]

        started = time.monotonic()
        err = rpc_error(lambda: served.stub.PushResult(stalling(), timeout=10))
        assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "upload stalled" in str(err.details())
        assert time.monotonic() - started < 4
        with pytest.raises(Exception, match="upload stalled"):
            delivered.result(timeout=10)
    finally:
        served.close()


def test_a_stalled_download_is_cut_off_and_its_task_failed(tmp_path: Path) -> None:
    big = (TensorSpec("w", (16 << 20,)),)  # 64 MiB: far above any flow-control window
    served = ServerThread(tmp_path, stream_idle_timeout=0.5, model="big", tensors=big)
    try:
        session = serde.session_from_proto(
            served.stub.Join(serde.join_to_proto(join_info(model_spec=None)), timeout=10)
        )
        task = Task(
            task_id="t-big",
            type=TaskType.FIT,
            round=1,
            config={},
            timeout=60.0,
            names=("w",),
            parameters=[np.zeros(16 << 20, np.float32)],
        )
        delivered = served.submit(served.pool.run_task(session.client_id, task))
        request = serde.poll_to_proto(
            TaskPoll(client_id=session.client_id, wait_seconds=5.0, max_chunk_bytes=0)
        )
        call = served.stub.PullTask(request, timeout=30)
        next(call)  # the header; then the client stops reading
        with pytest.raises(Exception, match="download stalled"):
            delivered.result(timeout=10)  # the round learns at once, not at its deadline
        err = rpc_error(lambda: list(call))
        assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "download stalled" in str(err.details())
    finally:
        served.close()


def test_a_result_above_the_upload_limit_is_refused_before_its_bytes(tmp_path: Path) -> None:
    served = ServerThread(tmp_path, max_upload_bytes=8)
    try:
        cid, task, _ = _pulled_task(served)
        err = rpc_error(lambda: _push(served, _result(task, cid)))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "exceed the limit of 8" in str(err.details())
    finally:
        served.close()


# --- the client runtime joins again when the server forgets its session ----------


def _logreg(ctx: ClientContext) -> NumPyClient:
    return LogRegClient.for_partition(ctx.partition_id)


@pytest.mark.parametrize("noticed_by", ["heartbeat", "poll"])
def test_the_runtime_joins_again_after_not_found_and_keeps_its_partition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, noticed_by: str
) -> None:
    # The heartbeat notices within 0.2 s while the long poll waits 5 s; with
    # 30 s heartbeats, the next poll (every 0.3 s) notices.
    heartbeat, poll = (0.2, 5.0) if noticed_by == "heartbeat" else (30.0, 0.3)
    served = ServerThread(
        tmp_path, heartbeat_interval=heartbeat, max_poll_seconds=poll, max_clients=5
    )
    caplog.set_level(logging.INFO, logger="orchard.client")
    settings = ClientSettings(
        server=f"127.0.0.1:{served.port}",
        federation="blobs",
        instance_id="keeper",
        auth_token="s3cret",
        poll_seconds=5.0,
        connect_timeout=20.0,
    )
    runtime = ClientRuntime(_logreg, settings, model_spec=SPEC)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runtime.run()), daemon=True)
    thread.start()
    try:

        def keeper() -> list[Any]:
            return [m for m in served.pool.members() if m.instance_id == "keeper"]

        served.wait_for(lambda: bool(keeper()), "the first join")
        (first,) = served.on_loop(keeper)
        assert first.partition_id == 0
        # Another client fixes partition 0; a fresh assignment would now be 1.
        served.stub.Join(
            serde.join_to_proto(join_info(instance_id="other", partition_id=0, num_partitions=3)),
            timeout=10,
        )
        served.on_loop(lambda: served.pool.drop(first.client_id, "forgotten by the test"))
        served.wait_for(
            lambda: any(m.client_id != first.client_id for m in keeper()), "the second join"
        )
        (second,) = served.on_loop(keeper)
        assert second.partition_id == first.partition_id == 0
        assert second.display_name == first.display_name
    finally:
        runtime.stop("test over")
        thread.join(timeout=20)
        served.close()
    assert codes == [0]
    text = caplog.text
    if noticed_by == "heartbeat":
        assert f"heartbeat: the server no longer knows session {first.client_id}" in text
    else:
        assert "heartbeat: the server no longer knows" not in text
    assert "the server no longer knows this session (restarted?): joining again" in text
    assert text.count("joined federation 'blobs'") == 2


def test_a_stop_while_the_long_poll_starts_leaves_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM that lands after the PullTask call is made, before the runtime has
    stored it to cancel, must not leave the client in a 30 s long poll (the
    launcher SIGKILLs after 10 s, and the client never says goodbye)."""
    served = ServerThread(tmp_path, max_poll_seconds=30.0, min_available_clients=2)
    caplog.set_level(logging.INFO, logger="orchard.client")
    settings = ClientSettings(
        server=f"127.0.0.1:{served.port}",
        federation="blobs",
        auth_token="s3cret",
        poll_seconds=30.0,
        connect_timeout=20.0,
    )
    runtime = ClientRuntime(_logreg, settings, model_spec=SPEC)
    real = serde.pull_task_method

    def stopped_in_between(channel: grpc.Channel) -> Callable[..., Any]:
        method = real(channel)

        def start(*args: Any, **kwargs: Any) -> Any:
            call = method(*args, **kwargs)
            runtime.stop("SIGTERM")  # as the signal handler does, in the same thread
            return call

        return start

    monkeypatch.setattr(serde, "pull_task_method", stopped_in_between)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runtime.run()), daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        thread.join(timeout=10)
        assert not thread.is_alive(), "still in the long poll after 10 s"
    finally:
        runtime.stop("test over")
        thread.join(timeout=40)
        served.close()
    assert codes == [0]
    assert time.monotonic() - started < 10
    assert "left federation 'blobs' (SIGTERM)" in caplog.text


def test_an_in_process_client_fixes_its_partition_or_is_assigned_one() -> None:
    policy = AdmissionPolicy.from_config(federation_config(max_clients=5))
    pool = InMemoryClientPool(SPEC, "blobs", policy=policy)
    seen: list[ClientContext] = []

    def factory(ctx: ClientContext) -> NumPyClient:
        seen.append(ctx)
        return _logreg(ctx)

    pool.add(factory, join_info(instance_id="x"))
    pool.add(factory, join_info(instance_id="y", partition_id=7, num_partitions=8))
    pool.add(factory, join_info(instance_id="z", role=Role.EVALUATOR))
    assert [(c.partition_id, c.num_partitions) for c in seen] == [(0, 3), (7, 8), (0, 3)]
    assert policy.partitions.to_json() == {"x": 0, "y": 7}
    assert [c.role for c in pool.members()] == [Role.TRAINER, Role.TRAINER, Role.EVALUATOR]
    assert dataclasses.replace(seen[0], client_id="") == ClientContext(
        federation="blobs", client_id="", partition_id=0, num_partitions=3, model_spec=SPEC
    )
