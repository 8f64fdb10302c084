"""Serde round trips for every dtype and shape, and clear errors for bad bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orchard import serde
from orchard.messages import (
    FederationState,
    FederationStatus,
    Finished,
    Idle,
    JoinInfo,
    LeaveNotice,
    Result,
    ResultRef,
    Role,
    Session,
    Task,
    TaskPoll,
    TaskType,
)
from orchard.models import MNIST_MLP
from orchard.spec import SUPPORTED_DTYPES, ModelSpec, TensorSpec
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import tensor_pb2 as tpb

arrays = st.sampled_from(SUPPORTED_DTYPES).flatmap(
    lambda dt: hnp.arrays(
        dtype=np.dtype(dt),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)


@settings(max_examples=200, deadline=None)
@given(st.lists(arrays, min_size=0, max_size=5), st.integers(min_value=1, max_value=64))
def test_parameters_round_trip_bit_exact(values: list[np.ndarray], chunk: int) -> None:
    names = [f"t{i}" for i in range(len(values))]
    header = serde.parameters_header(names, values)
    chunks = list(serde.iter_chunks(values, chunk))
    assert all(len(c.data) <= chunk for c in chunks)
    out_names, out = serde.arrays_from_parts(header, chunks)
    assert list(out_names) == names
    for a, b in zip(values, out, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit-exact, NaN payloads included


def test_zero_d_empty_and_big_endian_tensors() -> None:
    values: list[np.ndarray] = [
        np.array(3.5, np.float64),
        np.zeros((0, 4), np.int16),
        np.arange(6, dtype=">i4").reshape(2, 3),
        np.array([True, False]),
    ]
    header = serde.parameters_header(["s", "e", "be", "b"], values)
    assert [tuple(t.shape) for t in header.tensors] == [(), (0, 4), (2, 3), (2,)]
    _, out = serde.arrays_from_parts(header, list(serde.iter_chunks(values, 5)))
    assert out[0].shape == () and out[0] == 3.5
    assert out[1].shape == (0, 4)
    np.testing.assert_array_equal(out[2], np.arange(6).reshape(2, 3))
    assert out[2].dtype == np.dtype("<i4")


def test_multi_chunk_tensor_is_chunked_in_order() -> None:
    big = np.arange(10_000, dtype=np.float32)
    chunks = list(serde.iter_chunks([big], 4096))
    assert len(chunks) == 10  # 40,000 bytes in 4 KiB chunks
    assert [c.offset for c in chunks] == list(range(0, 40_000, 4096))
    header = serde.parameters_header(["big"], [big])
    _, (out,) = serde.arrays_from_parts(header, chunks)
    np.testing.assert_array_equal(out, big)


def _parts(chunk: int = 8) -> tuple[tpb.ParametersHeader, list[tpb.TensorChunk]]:
    values = [np.arange(6, dtype=np.float32), np.ones(3, np.float32)]
    return serde.parameters_header(["w", "b"], values), list(serde.iter_chunks(values, chunk))


def test_truncated_tensor_is_refused_naming_it() -> None:
    header, chunks = _parts()
    chunks[-1].data = chunks[-1].data[:-1]
    with pytest.raises(serde.SerdeError, match="'b': only 11 of 12 bytes"):
        serde.arrays_from_parts(header, chunks)


def test_overlong_and_out_of_order_chunks_are_refused() -> None:
    header, chunks = _parts()
    chunks[0].data += b"xxxx"
    with pytest.raises(serde.SerdeError, match="chunk at byte 8, expected byte 12"):
        serde.arrays_from_parts(header, chunks)
    header, chunks = _parts()
    with pytest.raises(serde.SerdeError, match="'w' \\(#0\\) is incomplete"):
        serde.arrays_from_parts(header, [chunks[0], chunks[-1]])
    header, chunks = _parts(chunk=64)
    chunks[0].data += b"\0" * 4
    with pytest.raises(serde.SerdeError, match="'w': 28 bytes received"):
        serde.arrays_from_parts(header, chunks)


def _assemble_until_refused(
    arrays: list[np.ndarray], chunk: int
) -> tuple[int, int, serde.SerdeError | None]:
    """Feed ``arrays``' chunks to a checking assembler: (chunks, chunks placed, error)."""
    header = serde.parameters_header(("w", "b")[: len(arrays)], arrays)
    chunks = list(serde.iter_chunks(arrays, chunk))
    assembler = serde.ParametersAssembler(header, require_finite=True)
    for placed, c in enumerate(chunks):
        try:
            assembler.add(c)
        except serde.SerdeError as exc:
            return len(chunks), placed, exc
    assembler.finish()
    return len(chunks), len(chunks), None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_checking_assembler_refuses_a_non_finite_value_at_its_chunk(bad: float) -> None:
    w = np.arange(64, dtype=np.float32)
    w[37] = bad  # in bytes 148..151: the 10th chunk of 16 bytes
    total, placed, error = _assemble_until_refused([w, np.ones(3, np.float64)], 16)
    assert error is not None and placed == 9 < total  # refused there, the rest never read
    assert "'w': elements 36 to 39 hold 1 NaN or infinite value (refused" in str(error)


def test_a_value_split_across_chunks_is_checked_once_it_is_whole() -> None:
    b = np.array([1.0, np.nan, 3.0], np.float64)  # element 1: bytes 8..15
    w = np.zeros(2, np.float32)
    total, placed, error = _assemble_until_refused([w, b], 6)  # b's chunks: 0..5, 6..11, ...
    # Chunk #3 (b's bytes 6..11) ends inside the NaN, chunk #4 (12..17) completes it.
    assert (total, placed) == (6, 4), (total, placed)
    assert error is not None and "'b': elements 1 to 1 hold 1 NaN or infinite" in str(error)
    assert _assemble_until_refused([w, np.array([1.0, 2.0, 3.0])], 6)[2] is None


def test_values_are_checked_only_when_asked_and_only_in_float_tensors() -> None:
    w = np.array([np.nan, 1.0], np.float32)
    header = serde.parameters_header(("w",), [w])
    assembler = serde.ParametersAssembler(header)  # a client reading a task: not asked
    for c in serde.iter_chunks([w], 4):
        assembler.add(c)
    assert np.isnan(assembler.finish()[0][0])
    ints = [np.array([-1, 2**31 - 1], np.int32), np.array([True, False])]
    assert _assemble_until_refused(ints, 3)[2] is None


def test_header_total_must_match_its_tensors() -> None:
    header, chunks = _parts()
    header.total_bytes += 1
    with pytest.raises(serde.SerdeError, match="announces 37 bytes"):
        serde.arrays_from_parts(header, chunks)


def test_upload_limit_is_enforced_before_allocation() -> None:
    header, _ = _parts()
    with pytest.raises(serde.SerdeError, match="exceed the limit of 10"):
        serde.ParametersAssembler(header, max_bytes=10)


def test_unspecified_dtype_is_refused() -> None:
    header, chunks = _parts()
    header.tensors[0].dtype = tpb.DATA_TYPE_UNSPECIFIED
    with pytest.raises(serde.SerdeError, match=r"'w'.*unknown or unspecified data type"):
        serde.arrays_from_parts(header, chunks)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False),
            st.text(max_size=10),
            st.binary(max_size=10),
        ),
        max_size=6,
    )
)
def test_config_round_trip_keeps_types(config: dict) -> None:  # type: ignore[type-arg]
    out = serde.config_from_proto(serde.config_to_proto(config))
    assert out == config
    assert {k: type(v) for k, v in out.items()} == {k: type(v) for k, v in config.items()}


def test_config_refuses_unsupported_values() -> None:
    with pytest.raises(serde.SerdeError, match=r"config key 'x'.*list"):
        serde.config_to_proto({"x": [1, 2]})  # type: ignore[dict-item]


def test_model_spec_round_trip() -> None:
    assert serde.model_spec_from_proto(serde.model_spec_to_proto(MNIST_MLP)) == MNIST_MLP


def test_join_and_session_round_trip() -> None:
    spec = ModelSpec("m", (TensorSpec("w", (2, 3)),))
    info = JoinInfo(
        api_version="1.0",
        federation="f",
        instance_id="i",
        display_name="n",
        framework="numpy",
        capabilities=("fit",),
        role=Role.EVALUATOR,
        model_spec=spec,
        auth_token="t",
    )
    assert serde.join_from_proto(serde.join_to_proto(info)) == info
    session = Session(
        client_id="c",
        api_version="1.0",
        heartbeat_interval=2.0,
        model_spec=spec,
        partition_id=1,
        num_partitions=3,
        state=FederationState.RUNNING,
    )
    assert serde.session_from_proto(serde.session_to_proto(session)) == session


def test_join_decoding_leaves_the_decision_to_admission() -> None:
    # Missing fields decode; the server's admission refuses them (for every client kind).
    bare = serde.join_from_proto(pb.JoinRequest(api_version="2.0", role=pb.CLIENT_ROLE_TRAINER))
    assert (bare.federation, bare.instance_id, bare.role) == ("", "", Role.TRAINER)
    unknown_role = pb.JoinRequest(
        api_version="2.0", federation="f", role=pb.ClientRole.ValueType(7)
    )
    with pytest.raises(serde.SerdeError, match="unknown role 7"):
        serde.join_from_proto(unknown_role)
    assert serde.join_api_version(unknown_role) == "2.0"


def test_heartbeat_poll_and_leave_round_trip() -> None:
    assert serde.heartbeat_from_proto(serde.heartbeat_to_proto("c-1")) == "c-1"
    status = FederationStatus(state=FederationState.RUNNING, rounds_completed=3)
    assert serde.status_from_proto(serde.status_to_proto(status)) == status
    poll = TaskPoll(client_id="c-1", wait_seconds=2.5, max_chunk_bytes=1024)
    assert serde.poll_from_proto(serde.poll_to_proto(poll)) == poll
    notice = LeaveNotice(client_id="c-1", reason="SIGTERM")
    assert serde.leave_from_proto(serde.leave_to_proto(notice)) == notice
    fatal = LeaveNotice(client_id="c-1", reason="cannot load its mnist data", fatal=True)
    assert serde.leave_to_proto(fatal).fatal
    assert serde.leave_from_proto(serde.leave_to_proto(fatal)) == fatal
    assert serde.push_ack_from_proto(serde.push_ack_to_proto("ok")) == "ok"
    assert serde.SERVICE_NAME == "orchard.v1.FederationService"


def test_poll_defaults_and_limits() -> None:
    default = serde.poll_from_proto(pb.PullTaskRequest(client_id="c", wait_seconds=-1))
    assert (default.max_chunk_bytes, default.wait_seconds) == (serde.DEFAULT_CHUNK_BYTES, 0.0)
    with pytest.raises(serde.SerdeError, match="max_chunk_bytes"):
        serde.poll_from_proto(pb.PullTaskRequest(max_chunk_bytes=serde.MAX_CHUNK_BYTES + 1))


def test_task_stream_round_trip() -> None:
    params = [np.full((3, 4), 0.25, np.float32), np.arange(3, dtype=np.float32)]
    task = Task(
        task_id="t1",
        type=TaskType.FIT,
        round=2,
        config={"lr": 0.1, "epochs": 1},
        timeout=30.0,
        names=("w", "b"),
        parameters=params,
    )
    out = serde.task_from_stream(serde.task_to_stream(task, chunk_bytes=7))
    assert isinstance(out, Task)
    assert (out.task_id, out.type, out.round, out.config, out.names) == (
        "t1",
        TaskType.FIT,
        2,
        {"lr": 0.1, "epochs": 1},
        ("w", "b"),
    )
    for a, b in zip(params, out.parameters, strict=True):
        np.testing.assert_array_equal(a, b)


def test_idle_and_finished_streams() -> None:
    idle = serde.task_from_stream(iter([serde.idle_to_proto(Idle(state=FederationState.WAITING))]))
    assert idle == Idle(state=FederationState.WAITING)
    done = Finished(state=FederationState.FAILED, reason="too few clients")
    assert serde.task_from_stream(iter([serde.finished_to_proto(done)])) == done


def test_result_stream_round_trip_and_failure() -> None:
    result = Result(
        client_id="c",
        task_id="t",
        num_examples=5,
        loss=0.5,
        metrics={"accuracy": 0.9},
        names=("w",),
        parameters=[np.ones((2, 2), np.float32)],
    )
    out = serde.result_from_stream(serde.result_to_stream(result, 3))
    assert (out.client_id, out.task_id, out.num_examples, out.loss, out.metrics, out.names) == (
        "c",
        "t",
        5,
        0.5,
        {"accuracy": 0.9},
        ("w",),
    )
    np.testing.assert_array_equal(out.parameters[0], np.ones((2, 2)))
    failed = serde.result_from_stream(
        serde.result_to_stream(Result(client_id="c", task_id="t", error="CUDA out of memory"))
    )
    assert not failed.ok and failed.error == "CUDA out of memory"


def test_a_missing_loss_stays_missing_and_1_0_headers_still_read() -> None:
    no_loss = Result(client_id="c", task_id="t", num_examples=1)
    header = serde.result_header_to_proto(no_loss)
    assert not header.HasField("reported_loss") and header.loss == 0.0
    assert serde.result_from_stream(serde.result_to_stream(no_loss)).loss is None
    zero = serde.result_header_to_proto(Result(client_id="c", task_id="t", loss=0.0))
    assert zero.HasField("reported_loss") and zero.reported_loss == 0.0
    assert serde.result_from_header(zero, [], ()).loss == 0.0
    # A 1.0 client sets only the deprecated field, and 0 for "no loss".
    legacy = pb.ResultHeader(client_id="c", task_id="t", loss=0.25)
    assert serde.result_from_header(legacy, [], ()).loss == 0.25
    assert serde.result_from_header(pb.ResultHeader(loss=0.0), [], ()).loss is None


async def _aiter(messages: Iterable[pb.PushResultRequest]) -> AsyncIterator[pb.PushResultRequest]:
    for message in messages:
        yield message


def test_result_reader_reads_the_header_before_any_byte() -> None:
    result = Result(
        client_id="c",
        task_id="t",
        num_examples=5,
        loss=0.5,
        names=("w", "b"),
        parameters=[np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float64)],
    )
    touched: list[int] = []

    async def read() -> tuple[ResultRef, tuple[TensorSpec, ...], Result]:
        stream = _aiter(serde.result_to_stream(result, 5))
        reader = await serde.ResultReader.start(stream)
        specs = reader.announced(max_bytes=64)
        await reader.read_chunks(stream, lambda: touched.append(1))
        return reader.ref, specs, reader.finish()

    ref, specs, out = asyncio.run(read())
    assert ref == ResultRef(client_id="c", task_id="t")
    assert specs == (TensorSpec("w", (2, 3)), TensorSpec("b", (2,), "float64"))
    assert len(touched) == 5 + 4  # 24 and 16 bytes in chunks of at most 5
    assert (out.loss, out.names) == (0.5, ("w", "b"))
    np.testing.assert_array_equal(out.parameters[0], result.parameters[0])
    with pytest.raises(serde.SerdeError, match="exceed the limit of 39"):
        serde.ResultReader(next(serde.result_to_stream(result))).announced(max_bytes=39)
    with pytest.raises(serde.SerdeError, match="must start with a ResultHeader"):
        asyncio.run(serde.ResultReader.start(_aiter([])))
    chunks = list(serde.result_to_stream(result, 5))
    reader = serde.ResultReader(chunks[0])
    with pytest.raises(serde.SerdeError, match="only chunks may follow"):
        reader.add(chunks[0])


def test_join_with_a_fixed_partition() -> None:
    info = JoinInfo(
        api_version="1.0", federation="f", instance_id="i", partition_id=2, num_partitions=4
    )
    assert serde.join_from_proto(serde.join_to_proto(info)) == info
    unset = serde.join_from_proto(
        serde.join_to_proto(JoinInfo(api_version="1.0", federation="f", instance_id="i"))
    )
    assert unset.partition_id is None and unset.num_partitions is None
    half = serde.join_to_proto(info)
    half.ClearField("num_partitions")
    # Decoded as sent: admission refuses a half-fixed partition, for every client kind.
    assert serde.join_from_proto(half).num_partitions is None


# --- the wire fast path: chunks encoded once, read in place ---------------------------


@settings(max_examples=40, deadline=None)
@given(values=st.lists(arrays, min_size=1, max_size=3), chunk=st.integers(1, 64))
def test_encoded_chunks_are_what_protobuf_writes(values: list[np.ndarray], chunk: int) -> None:
    encoded = serde.encode_chunks(values, chunk)
    expected = [c for c in serde.iter_chunks(values, chunk)]
    assert list(encoded) == [pb.PullTaskResponse(chunk=c).SerializeToString() for c in expected]
    assert list(encoded) == [pb.PushResultRequest(chunk=c).SerializeToString() for c in expected]
    raw = [serde.deserialize_pull_response(m) for m in encoded]
    assert all(isinstance(r, serde.RawChunk) for r in raw)
    assert [(r.tensor_index, r.offset, bytes(r.data)) for r in raw] == [  # type: ignore[union-attr]
        (c.tensor_index, c.offset, c.data) for c in expected
    ]


def test_encoded_task_decodes_like_the_message_stream() -> None:
    task = Task(
        task_id="t",
        type=TaskType.FIT,
        round=2,
        config={"lr": 0.1},
        timeout=9.0,
        names=("w", "b"),
        parameters=[np.arange(300, dtype=np.float32).reshape(10, 30), np.ones(3, np.int64)],
    )
    out = serde.task_from_bytes(serde.encode_task(task, chunk_bytes=100))
    assert isinstance(out, Task)
    assert (out.task_id, out.round, out.config, out.names) == ("t", 2, {"lr": 0.1}, ("w", "b"))
    for got, want in zip(out.parameters, task.parameters, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


def test_messages_other_than_plain_chunks_go_through_protobuf() -> None:
    header = pb.PullTaskResponse(task=pb.TaskHeader(task_id="t")).SerializeToString()
    assert isinstance(serde.deserialize_pull_response(header), pb.PullTaskResponse)
    # A chunk with a field this version does not know is still a chunk, via protobuf.
    chunk = serde.encode_chunks([np.ones(2, np.float32)])[0]
    unknown = chunk + b"\x28\x01"  # field 5 (varint) of the outer message
    parsed = serde.deserialize_push_request(unknown)
    assert isinstance(parsed, pb.PushResultRequest)
    assert parsed.chunk.data == np.ones(2, np.float32).tobytes()
    # Truncated bytes are not read in place; protobuf refuses them.
    with pytest.raises(Exception, match=r"(?i)pars|decod|truncat"):
        serde.deserialize_pull_response(chunk[:-3])


def test_raw_chunks_fill_a_result_and_refuse_a_header_in_the_wrong_place() -> None:
    result = Result(
        client_id="c",
        task_id="t",
        num_examples=5,
        names=("w",),
        parameters=[np.arange(6, dtype=np.float32)],
    )
    wire = [serde.serialize_push_request(m) for m in serde.result_to_wire(result, chunk_bytes=7)]
    messages = [serde.deserialize_push_request(m) for m in wire]
    assert isinstance(messages[0], pb.PushResultRequest)
    assert all(isinstance(m, serde.RawChunk) for m in messages[1:])
    out = serde.result_from_stream(iter(messages))
    np.testing.assert_array_equal(out.parameters[0], result.parameters[0])
    with pytest.raises(serde.SerdeError, match="must start with a ResultHeader"):
        serde.ResultReader(messages[1])
    with pytest.raises(serde.SerdeError, match="starts with a chunk"):
        serde.task_from_stream(iter([m for m in messages if isinstance(m, serde.RawChunk)]))
