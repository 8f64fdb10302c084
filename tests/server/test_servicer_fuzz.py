"""The servicer under adversarial clients: hypothesis stateful testing over real gRPC.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` drives one real
``grpc.aio`` server (the :class:`ServerThread` of ``test_servicer``) through
the generated stubs, mixing well-formed clients with garbage: joins with
random fields, heartbeats and polls for sessions that never existed, results
whose headers lie about their tensors, chunks out of place, unknown task ids.
After every step the server must still answer its health check, no RPC may end
in ``UNKNOWN`` or ``INTERNAL`` (what grpc reports for an exception the servicer
did not handle), and the federation's model and its last checkpoint must be
bit-identical to what they were before the fuzzing began.

``ORCHARD_FUZZ_EXAMPLES`` raises the number of runs (``make fuzz``); the
test prints how many adversarial messages it sent.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from orchard import serde
from orchard.messages import API_VERSION, JoinInfo, Result, TaskPoll
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import tensor_pb2 as tpb
from tests.server.test_servicer import SPEC, ServerThread, open_task

EXAMPLES = int(os.environ.get("ORCHARD_FUZZ_EXAMPLES", "5"))
#: Status codes that mean the servicer raised something it did not handle.
CRASHES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)

text = st.text(max_size=40)
ids = st.one_of(text, st.sampled_from(["", "sim-0", "x" * 300, "\x00", "../../etc"]))
dtypes = st.integers(min_value=-3, max_value=20)
shapes = st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=4)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
small = st.integers(min_value=0, max_value=12)


def _no_crash(err: grpc.RpcError) -> None:
    """A refusal with any status but the two that mean an unhandled exception."""
    if err.code() in CRASHES:
        raise AssertionError(f"the servicer crashed: {err.code()}: {err.details()}")


def _digest(server: ServerThread) -> tuple[str, str]:
    federation = server.server.hosted["blobs"].federation
    params = hashlib.sha256(b"".join(p.tobytes() for p in federation.parameters)).hexdigest()
    checkpoint = hashlib.sha256(federation.checkpoint_path.read_bytes()).hexdigest()
    return params, checkpoint


class AdversarialClients(RuleBasedStateMachine):
    """Good and bad clients against one shared server (set as a class attribute)."""

    server: ServerThread
    baseline: tuple[str, str]
    sent = 0

    sessions = Bundle("sessions")

    def _call(self, fn: object, *args: object) -> object:
        type(self).sent += 1
        try:
            return fn(*args, timeout=10)  # type: ignore[operator]
        except grpc.RpcError as err:
            _no_crash(err)
            return None

    @initialize(target=sessions, n=st.integers(min_value=0, max_value=7))
    def join_one_good_client(self, n: int) -> str:
        info = JoinInfo(
            api_version=API_VERSION,
            federation="blobs",
            instance_id=f"good-{n}",
            model_spec=SPEC,
            auth_token="s3cret",
        )
        type(self).sent += 1
        answer = self.server.stub.Join(serde.join_to_proto(info), timeout=10)
        return serde.session_from_proto(answer).client_id

    @rule(
        version=st.one_of(st.just(API_VERSION), text),
        federation=st.one_of(st.just("blobs"), text),
        instance=ids,
        token=st.one_of(st.just("s3cret"), text),
        partition=st.one_of(small, u32),
        num_partitions=st.one_of(small, u32),
        role=st.integers(min_value=-1, max_value=5),
        tensors=st.lists(st.tuples(text, dtypes, shapes), max_size=3),
    )
    def join_with_random_fields(
        self,
        *,
        version: str,
        federation: str,
        instance: str,
        token: str,
        partition: int,
        num_partitions: int,
        role: int,
        tensors: list[tuple[str, int, list[int]]],
    ) -> None:
        request = serde.join_to_proto(
            JoinInfo(api_version=API_VERSION, federation="blobs", instance_id="x", model_spec=SPEC)
        )
        request.api_version, request.federation, request.instance_id = version, federation, instance
        request.auth_token = token
        request.partition_id, request.num_partitions = partition, num_partitions
        request.role = role  # type: ignore[assignment]
        if tensors:
            del request.model_spec.tensors[:]
            for name, dtype, shape in tensors:
                request.model_spec.tensors.add(name=name, dtype=dtype, shape=shape)
        self._call(self.server.stub.Join, request)

    @rule(client=st.one_of(sessions, ids))
    def heartbeat(self, client: str) -> None:
        self._call(self.server.stub.Heartbeat, serde.heartbeat_to_proto(client))

    @rule(
        client=st.one_of(sessions, ids),
        wait=st.floats(allow_nan=True, allow_infinity=True),
        chunk=st.one_of(small, u32),
    )
    def pull(self, client: str, wait: float, chunk: int) -> None:
        request = serde.poll_to_proto(
            TaskPoll(client_id=client, wait_seconds=0.0, max_chunk_bytes=0)
        )
        request.wait_seconds = wait if math.isnan(wait) else min(wait, 0.05)
        request.max_chunk_bytes = chunk
        type(self).sent += 1
        try:
            for _ in self.server.stub.PullTask(request, timeout=10):
                pass
        except grpc.RpcError as err:
            _no_crash(err)

    @rule(client=sessions)
    def open_a_task(self, client: str) -> None:
        # The round loop's part: a fit task waits for this session's result.
        if self.server.on_loop(lambda: self.server.pool.known(client)):
            open_task(self.server, client)

    @rule(
        client=st.one_of(sessions, ids),
        task=st.one_of(st.just("t-"), text),
        tensors=st.lists(st.tuples(text, dtypes, shapes), max_size=3),
        lie=st.integers(min_value=-3, max_value=3),
        chunks=st.lists(st.tuples(small, small, st.binary(max_size=64)), max_size=6),
        status=st.integers(min_value=-1, max_value=4),
        num_examples=st.one_of(small, st.integers(min_value=0, max_value=2**64 - 1)),
    )
    def push_a_lying_result(
        self,
        *,
        client: str,
        task: str,
        tensors: list[tuple[str, int, list[int]]],
        lie: int,
        chunks: list[tuple[int, int, bytes]],
        status: int,
        num_examples: int,
    ) -> None:
        header = serde.result_header_to_proto(
            Result(
                client_id=client, task_id=task + (client if task == "t-" else ""), num_examples=1
            )
        )
        header.status = status  # type: ignore[assignment]
        header.num_examples = num_examples
        announced = 0
        for name, dtype, shape in tensors:
            header.parameters.tensors.add(name=name, dtype=dtype, shape=shape)
            announced += int(np.prod(shape, dtype=object)) * 4
        header.parameters.total_bytes = min(max(announced + lie, 0), 2**64 - 1)
        messages = [pb.PushResultRequest(header=header)]
        messages += [
            pb.PushResultRequest(chunk=tpb.TensorChunk(tensor_index=i, offset=o, data=d))
            for i, o, d in chunks
        ]
        self._call(self.server.stub.PushResult, iter(messages))

    @rule(client=sessions)
    def push_a_valid_result(self, client: str) -> None:
        arrays = [np.full(t.shape, 0.5, np.float32) for t in SPEC.tensors]
        result = Result(
            client_id=client,
            task_id=f"t-{client}",
            num_examples=3,
            names=tuple(SPEC.names),
            parameters=arrays,
        )
        self._call(self.server.stub.PushResult, serde.result_to_stream(result))

    @rule(client=st.one_of(sessions, ids), reason=text)
    def leave(self, client: str, reason: str) -> None:
        self._call(self.server.stub.Leave, pb.LeaveRequest(client_id=client, reason=reason))

    @invariant()
    def server_is_healthy_and_the_model_untouched(self) -> None:
        health = health_pb2_grpc.HealthStub(self.server.channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert _digest(self.server) == self.baseline


@pytest.fixture
def fuzzed_server(tmp_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(
        tmp_path, max_upload_bytes=1 << 20, max_clients=100_000, min_available_clients=100_000
    )
    federation = server.server.hosted["blobs"].federation
    federation.restore_or_init()
    federation._save()  # a checkpoint to keep intact (the round loop is not started)
    yield server
    server.close()


def test_adversarial_clients_never_crash_the_servicer_nor_touch_the_model(
    fuzzed_server: ServerThread,
) -> None:
    AdversarialClients.server = fuzzed_server
    AdversarialClients.baseline = _digest(fuzzed_server)
    AdversarialClients.sent = 0
    run_state_machine_as_test(
        AdversarialClients,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert AdversarialClients.sent > EXAMPLES
    print(
        json.dumps(
            {
                "target": "servicer",
                "engine": "hypothesis-stateful",
                "inputs": AdversarialClients.sent,
            }
        )
    )
