"""Conversion between Orchard's domain values and ``orchard.v1`` messages.

This is the only module that touches the generated ``*_pb2`` classes (as in
Flower's ``serde.py``): every other module works with :mod:`orchard.messages`,
:mod:`orchard.spec` and NumPy arrays. Tensors travel as name + dtype + shape in
a header and their raw little-endian bytes in bounded chunks, so a model's size
is limited by memory and not by gRPC's per-message limit; the receiving side
writes chunks straight into preallocated arrays (:class:`ParametersAssembler`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from orchard.messages import (
    ClientSummary,
    FederationState,
    FederationStatus,
    FederationSummary,
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
    TaskProgress,
    TaskType,
)
from orchard.spec import ModelSpec, SpecError, TensorSpec, all_finite
from orchard.typing import Config, NDArrays, Scalar
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import tensor_pb2 as tpb

#: Full name of the gRPC service, for health checks and reflection.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["FederationService"].full_name

#: Default chunk size: 1 MiB keeps each message far below gRPC's 4 MiB limit.
DEFAULT_CHUNK_BYTES = 1 << 20
#: Largest chunk anyone may send or ask for.
MAX_CHUNK_BYTES = (4 << 20) - (64 << 10)
#: The gRPC metadata entry that carries a session's secret on every call
#: after Join (and on a Join that takes over a connected instance).
SESSION_SECRET_METADATA = "orchard-session-secret"


class SerdeError(ValueError):
    """A message is malformed: the text names the field or tensor at fault."""


# --- dtypes and specs -------------------------------------------------------------

_DTYPE_TO_PROTO: dict[str, int] = {
    "float16": tpb.DATA_TYPE_FLOAT16,
    "float32": tpb.DATA_TYPE_FLOAT32,
    "float64": tpb.DATA_TYPE_FLOAT64,
    "int8": tpb.DATA_TYPE_INT8,
    "int16": tpb.DATA_TYPE_INT16,
    "int32": tpb.DATA_TYPE_INT32,
    "int64": tpb.DATA_TYPE_INT64,
    "uint8": tpb.DATA_TYPE_UINT8,
    "uint16": tpb.DATA_TYPE_UINT16,
    "uint32": tpb.DATA_TYPE_UINT32,
    "uint64": tpb.DATA_TYPE_UINT64,
    "bool": tpb.DATA_TYPE_BOOL,
}
_DTYPE_FROM_PROTO: dict[int, str] = {v: k for k, v in _DTYPE_TO_PROTO.items()}


def dtype_to_proto(dtype: str) -> tpb.DataType.ValueType:
    """NumPy dtype name -> wire enum."""
    try:
        return tpb.DataType.ValueType(_DTYPE_TO_PROTO[dtype])
    except KeyError:
        raise SerdeError(f"dtype {dtype!r} cannot be sent") from None


def dtype_from_proto(value: int) -> str:
    """Wire enum -> NumPy dtype name."""
    try:
        return _DTYPE_FROM_PROTO[value]
    except KeyError:
        raise SerdeError(f"unknown or unspecified data type {value}") from None


def tensor_spec_to_proto(spec: TensorSpec) -> tpb.TensorSpec:
    """Domain tensor spec -> message."""
    return tpb.TensorSpec(name=spec.name, dtype=dtype_to_proto(spec.dtype), shape=spec.shape)


def tensor_spec_from_proto(msg: tpb.TensorSpec) -> TensorSpec:
    """Message -> domain tensor spec."""
    try:
        return TensorSpec(
            name=msg.name, shape=tuple(int(d) for d in msg.shape), dtype=dtype_from_proto(msg.dtype)
        )
    except (SpecError, SerdeError) as exc:
        raise SerdeError(f"tensor {msg.name!r}: {exc}") from None


def model_spec_to_proto(spec: ModelSpec) -> tpb.ModelSpec:
    """Domain model spec -> message."""
    return tpb.ModelSpec(
        model_id=spec.model_id, tensors=[tensor_spec_to_proto(t) for t in spec.tensors]
    )


def model_spec_from_proto(msg: tpb.ModelSpec) -> ModelSpec:
    """Message -> domain model spec."""
    try:
        return ModelSpec(msg.model_id, tuple(tensor_spec_from_proto(t) for t in msg.tensors))
    except SpecError as exc:
        raise SerdeError(str(exc)) from None


# --- scalars and config maps ------------------------------------------------------


def scalar_to_proto(value: Scalar) -> tpb.Scalar:
    """Python scalar -> message. bool is checked before int (bool is an int)."""
    if isinstance(value, bool | np.bool_):
        return tpb.Scalar(bool_value=bool(value))
    if isinstance(value, int | np.integer):
        return tpb.Scalar(int_value=int(value))
    if isinstance(value, float | np.floating):
        return tpb.Scalar(float_value=float(value))
    if isinstance(value, str):
        return tpb.Scalar(string_value=value)
    if isinstance(value, bytes):
        return tpb.Scalar(bytes_value=value)
    raise SerdeError(f"cannot send a value of type {type(value).__name__} as a scalar")


def scalar_from_proto(msg: tpb.Scalar) -> Scalar:
    """Message -> Python scalar."""
    kind = msg.WhichOneof("value")
    if kind is None:
        raise SerdeError("scalar has no value set")
    value: Scalar = getattr(msg, kind)
    return value


def config_to_proto(config: Mapping[str, Scalar]) -> dict[str, tpb.Scalar]:
    """Config or metrics dict -> map of messages."""
    out: dict[str, tpb.Scalar] = {}
    for key, value in config.items():
        try:
            out[key] = scalar_to_proto(value)
        except SerdeError as exc:
            raise SerdeError(f"config key {key!r}: {exc}") from None
    return out


def config_from_proto(msg: Mapping[str, tpb.Scalar]) -> Config:
    """Map of messages -> config or metrics dict."""
    out: Config = {}
    for key, value in msg.items():
        try:
            out[key] = scalar_from_proto(value)
        except SerdeError as exc:
            raise SerdeError(f"config key {key!r}: {exc}") from None
    return out


# --- parameters: header + chunks --------------------------------------------------


def _little_endian(array: np.ndarray) -> np.ndarray:
    """A C-contiguous little-endian view or copy of ``array``."""
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return np.ascontiguousarray(array, dtype=dtype)


def parameters_header(names: Sequence[str], arrays: NDArrays) -> tpb.ParametersHeader:
    """The header announcing ``arrays`` under ``names``."""
    if len(names) != len(arrays):
        raise SerdeError(f"{len(names)} tensor names for {len(arrays)} arrays")
    specs = [TensorSpec.of(n, np.asarray(a)) for n, a in zip(names, arrays, strict=True)]
    return tpb.ParametersHeader(
        tensors=[tensor_spec_to_proto(s) for s in specs],
        total_bytes=sum(s.nbytes for s in specs),
    )


def iter_chunks(
    arrays: NDArrays, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[tpb.TensorChunk]:
    """The raw bytes of ``arrays`` as chunks of at most ``chunk_bytes``.

    Arrays are converted one at a time, so at most one extra copy of a single
    tensor exists while sending (none for little-endian contiguous arrays).
    """
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise SerdeError(f"chunk size {chunk_bytes} outside 1..{MAX_CHUNK_BYTES}")
    for index, array in enumerate(arrays):
        raw = _little_endian(np.asarray(array)).reshape(-1).view(np.uint8)
        for offset in range(0, raw.size, chunk_bytes):
            yield tpb.TensorChunk(
                tensor_index=index, offset=offset, data=raw[offset : offset + chunk_bytes].tobytes()
            )


def _allocate(spec: TensorSpec) -> np.ndarray:
    """An empty little-endian array for ``spec``; a shape NumPy cannot hold is a SerdeError.

    A tensor with a zero dimension has no bytes, but NumPy still refuses
    shapes whose other dimensions multiply past its index range (found by
    fuzzing: a header announcing 0 bytes for such a shape passed every count).
    """
    try:
        return np.empty(spec.shape, dtype=np.dtype(spec.dtype).newbyteorder("<"))
    except (ValueError, MemoryError) as exc:
        raise SerdeError(
            f"tensor {spec.name!r}: shape {list(spec.shape)} cannot be allocated ({exc})"
        ) from None


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Wire tag of ``chunk`` (field 2, length-delimited) in both PullTaskResponse and
#: PushResultRequest, and of TensorChunk's fields 1 (varint), 2 (varint), 3 (bytes).
_CHUNK_TAG, _INDEX_TAG, _OFFSET_TAG, _DATA_TAG = b"\x12", b"\x08", b"\x10", b"\x1a"


def _frame_chunk(index: int, offset: int, data: memoryview) -> bytes:
    """A serialized ``{chunk: TensorChunk}`` message around ``data``, with one copy.

    Byte for byte what protobuf's ``SerializeToString`` writes for the same
    message (fields in number order, zero values left out; tested), but
    without copying ``data`` into a message first and again out of it.
    """
    inner = b""
    if index:
        inner += _INDEX_TAG + _varint(index)
    if offset:
        inner += _OFFSET_TAG + _varint(offset)
    inner += _DATA_TAG + _varint(len(data))
    prefix = _CHUNK_TAG + _varint(len(inner) + len(data)) + inner
    return b"".join((prefix, data))


def iter_encoded_chunks(
    arrays: NDArrays, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """The chunks of ``arrays`` as serialized stream messages, one at a time.

    Each is valid as a serialized ``PullTaskResponse`` and ``PushResultRequest``
    alike (both carry the chunk as field 2). Each byte is copied once, straight
    from the arrays into the message; no protobuf object is built.
    """
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise SerdeError(f"chunk size {chunk_bytes} outside 1..{MAX_CHUNK_BYTES}")
    for index, array in enumerate(arrays):
        raw = memoryview(_little_endian(np.asarray(array)).reshape(-1).view(np.uint8).data)
        for offset in range(0, len(raw), chunk_bytes):
            yield _frame_chunk(index, offset, raw[offset : offset + chunk_bytes])


def encode_chunks(arrays: NDArrays, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[bytes, ...]:
    """Every chunk of ``arrays``, encoded once (:func:`iter_encoded_chunks`).

    A server encodes a round's global model once and sends the same bytes to
    every client (:func:`serialize_pull_response` passes them through).
    """
    return tuple(iter_encoded_chunks(arrays, chunk_bytes))


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A chunk read straight from its serialized message: ``data`` views the message's bytes.

    :func:`deserialize_pull_response` and :func:`deserialize_push_request` make
    these, so a chunk's bytes are copied once (into the receiver's array)
    instead of three times (into a message, out of it, into the array).
    """

    tensor_index: int
    offset: int
    data: memoryview


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varint at ``pos`` and the position after it; IndexError or ValueError if malformed."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _parse_chunk(buf: bytes) -> RawChunk | None:
    """The chunk of a serialized ``{chunk: TensorChunk}`` message, or None when the
    message is anything else (then protobuf parses it, and judges it)."""
    try:
        if not buf or buf[0] != _CHUNK_TAG[0]:
            return None
        length, pos = _read_varint(buf, 1)
        if pos + length != len(buf):  # more fields than the chunk: let protobuf decide
            return None
        index = offset = 0
        start = end = pos
        while pos < len(buf):
            key, pos = _read_varint(buf, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _read_varint(buf, pos)
                if field == 1:
                    index = value & 0xFFFFFFFF
                elif field == 2:
                    offset = value
            elif wire == 2:
                size, pos = _read_varint(buf, pos)
                if field == 3:
                    start, end = pos, pos + size
                pos += size
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
            if (field in (1, 2) and wire != 0) or (field == 3 and wire != 2):
                return None
        if pos != len(buf):
            return None
        return RawChunk(index, offset, memoryview(buf)[start:end])
    except (IndexError, ValueError):
        return None


def deserialize_pull_response(data: bytes) -> pb.PullTaskResponse | RawChunk:
    """gRPC's deserializer for PullTask: chunks as :class:`RawChunk`, the rest as messages."""
    return _parse_chunk(data) or pb.PullTaskResponse.FromString(data)


def deserialize_push_request(data: bytes) -> pb.PushResultRequest | RawChunk:
    """gRPC's deserializer for PushResult: chunks as :class:`RawChunk`, the rest as messages."""
    return _parse_chunk(data) or pb.PushResultRequest.FromString(data)


def serialize_pull_response(message: pb.PullTaskResponse | bytes) -> bytes:
    """gRPC's serializer for PullTask: messages are serialized, pre-encoded bytes pass."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


def serialize_push_request(message: pb.PushResultRequest | bytes) -> bytes:
    """gRPC's serializer for PushResult: messages are serialized, pre-encoded bytes pass."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()


class ParametersAssembler:
    """Rebuilds arrays from a header and its chunks, checking every byte's place.

    Memory is the size of the announced tensors, allocated once; chunks are
    copied into place and dropped. Any gap, overlap, overrun or missing byte is
    a :class:`SerdeError` naming the tensor.

    With ``require_finite`` (the server reading an update), the values of
    floating-point tensors are checked as each chunk lands, while its bytes are
    still in the CPU's cache: a NaN or an infinity refuses the update at the
    chunk that brings it, before the rest of a large model is read, and the
    server need not scan the whole update again afterwards (that pass read
    every byte from memory once more: 4% of the server's samples in a py-spy
    profile of rounds of 32 MNIST CNN clients, docs/performance.md item 19).
    """

    def __init__(
        self,
        header: tpb.ParametersHeader,
        *,
        max_bytes: int | None = None,
        require_finite: bool = False,
    ) -> None:
        self.specs = tuple(tensor_spec_from_proto(t) for t in header.tensors)
        expected = sum(s.nbytes for s in self.specs)
        if header.total_bytes != expected:
            raise SerdeError(
                f"parameters header announces {header.total_bytes} bytes, "
                f"but its tensors need {expected}"
            )
        if max_bytes is not None and expected > max_bytes:
            raise SerdeError(f"parameters of {expected} bytes exceed the limit of {max_bytes}")
        self._arrays = [_allocate(s) for s in self.specs]
        # Flat byte views of the arrays: chunks are written through them in place.
        self._views = [a.reshape(-1).view(np.uint8) for a in self._arrays]
        self._index = 0
        self._filled = 0
        self._require_finite = require_finite
        #: Elements of the current tensor whose values are checked.
        self._checked = 0

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names from the header, in order."""
        return tuple(s.name for s in self.specs)

    def _skip_empty(self) -> None:
        while self._index < len(self.specs) and self._filled == self.specs[self._index].nbytes:
            self._index += 1
            self._filled = 0
            self._checked = 0

    def add(self, chunk: tpb.TensorChunk | RawChunk) -> None:
        """Place one chunk; chunks must come in tensor order and offset order."""
        self._skip_empty()
        if self._index >= len(self.specs):
            raise SerdeError(
                f"chunk for tensor #{chunk.tensor_index} after all {len(self.specs)} tensors "
                "were complete"
            )
        spec = self.specs[self._index]
        if chunk.tensor_index != self._index:
            raise SerdeError(
                f"tensor {spec.name!r} (#{self._index}) is incomplete "
                f"({self._filled} of {spec.nbytes} bytes) but a chunk for tensor "
                f"#{chunk.tensor_index} arrived"
            )
        if chunk.offset != self._filled:
            raise SerdeError(
                f"tensor {spec.name!r}: chunk at byte {chunk.offset}, expected byte {self._filled}"
            )
        end = self._filled + len(chunk.data)
        if end > spec.nbytes:
            raise SerdeError(
                f"tensor {spec.name!r}: {end} bytes received, but {spec.describe()} "
                f"has only {spec.nbytes}"
            )
        if not chunk.data:
            raise SerdeError(f"tensor {spec.name!r}: empty chunk")
        if len(chunk.data) > MAX_CHUNK_BYTES:
            raise SerdeError(
                f"tensor {spec.name!r}: a chunk of {len(chunk.data)} bytes, above the "
                f"largest chunk of {MAX_CHUNK_BYTES}"
            )
        self._views[self._index][self._filled : end] = np.frombuffer(chunk.data, dtype=np.uint8)
        self._filled = end
        if self._require_finite:
            self._check_values(spec)

    def _check_values(self, spec: TensorSpec) -> None:
        """Refuse NaN and infinite values among the current tensor's elements received
        whole since the last check (a chunk may end inside an element)."""
        array = self._arrays[self._index]
        if array.dtype.kind not in "fc":
            return
        whole = self._filled // array.dtype.itemsize
        values = array.reshape(-1)[self._checked : whole]
        if not all_finite(values):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise SerdeError(
                f"tensor {spec.name!r}: elements {self._checked} to {whole - 1} hold {bad} "
                f"NaN or infinite value{'' if bad == 1 else 's'} (refused at the chunk that "
                "brought them)"
            )
        self._checked = whole

    def finish(self) -> NDArrays:
        """The completed arrays (native byte order); raises if any byte is missing."""
        self._skip_empty()
        if self._index < len(self.specs):
            spec = self.specs[self._index]
            raise SerdeError(
                f"tensor {spec.name!r}: only {self._filled} of {spec.nbytes} bytes received"
            )
        return [a.astype(a.dtype.newbyteorder("="), copy=False) for a in self._arrays]


def arrays_from_parts(
    header: tpb.ParametersHeader, chunks: Sequence[tpb.TensorChunk]
) -> tuple[tuple[str, ...], NDArrays]:
    """Names and arrays from a header and all its chunks (for tests and tools)."""
    assembler = ParametersAssembler(header)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.names, assembler.finish()


# --- enums ------------------------------------------------------------------------

_STATE_TO_PROTO = {
    FederationState.WAITING: pb.FEDERATION_STATE_WAITING,
    FederationState.RUNNING: pb.FEDERATION_STATE_RUNNING,
    FederationState.FINISHED: pb.FEDERATION_STATE_FINISHED,
    FederationState.FAILED: pb.FEDERATION_STATE_FAILED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
_TASK_TO_PROTO = {TaskType.FIT: pb.TASK_TYPE_FIT, TaskType.EVALUATE: pb.TASK_TYPE_EVALUATE}
_TASK_FROM_PROTO = {v: k for k, v in _TASK_TO_PROTO.items()}
_ROLE_TO_PROTO = {Role.TRAINER: pb.CLIENT_ROLE_TRAINER, Role.EVALUATOR: pb.CLIENT_ROLE_EVALUATOR}
_ROLE_FROM_PROTO = {v: k for k, v in _ROLE_TO_PROTO.items()}


def state_to_proto(state: FederationState) -> pb.FederationState.ValueType:
    """Domain federation state -> wire enum."""
    return _STATE_TO_PROTO[state]


def state_from_proto(value: int) -> FederationState:
    """Wire enum -> domain federation state."""
    try:
        return _STATE_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise SerdeError(f"unknown federation state {value}") from None


# --- join -------------------------------------------------------------------------


def join_to_proto(info: JoinInfo) -> pb.JoinRequest:
    """Domain join info -> JoinRequest."""
    return pb.JoinRequest(
        api_version=info.api_version,
        federation=info.federation,
        instance_id=info.instance_id,
        display_name=info.display_name,
        framework=info.framework,
        capabilities=list(info.capabilities),
        role=_ROLE_TO_PROTO[info.role],
        model_spec=model_spec_to_proto(info.model_spec) if info.model_spec else None,
        auth_token=info.auth_token,
        partition_id=info.partition_id,
        num_partitions=info.num_partitions,
    )


def join_from_proto(msg: pb.JoinRequest) -> JoinInfo:
    """JoinRequest -> domain join info.

    Only decoding happens here: whether the join is acceptable (version,
    required fields, partitions, federation, token, spec) is the server's
    admission's decision, made the same way for in-process clients.
    """
    role = (
        Role.TRAINER if msg.role == pb.CLIENT_ROLE_UNSPECIFIED else _ROLE_FROM_PROTO.get(msg.role)
    )
    if role is None:
        raise SerdeError(f"JoinRequest.role: unknown role {msg.role}")
    spec = model_spec_from_proto(msg.model_spec) if msg.HasField("model_spec") else None
    return JoinInfo(
        api_version=msg.api_version,
        federation=msg.federation,
        instance_id=msg.instance_id,
        display_name=msg.display_name,
        framework=msg.framework,
        capabilities=tuple(msg.capabilities),
        role=role,
        model_spec=spec,
        auth_token=msg.auth_token,
        partition_id=msg.partition_id if msg.HasField("partition_id") else None,
        num_partitions=msg.num_partitions if msg.HasField("num_partitions") else None,
    )


def join_api_version(msg: pb.JoinRequest) -> str:
    """The API version a JoinRequest states, even when the rest cannot be decoded.

    A client of another major version may send fields this version cannot
    read; the server answers its version first, which is the real problem.
    """
    return msg.api_version


def session_to_proto(session: Session) -> pb.JoinResponse:
    """Domain session -> JoinResponse."""
    return pb.JoinResponse(
        client_id=session.client_id,
        api_version=session.api_version,
        heartbeat_interval_seconds=session.heartbeat_interval,
        model_spec=model_spec_to_proto(session.model_spec),
        partition_id=session.partition_id,
        num_partitions=session.num_partitions,
        state=state_to_proto(session.state),
        session_secret=session.secret,
    )


def session_from_proto(msg: pb.JoinResponse) -> Session:
    """JoinResponse -> domain session."""
    return Session(
        client_id=msg.client_id,
        api_version=msg.api_version,
        heartbeat_interval=msg.heartbeat_interval_seconds,
        model_spec=model_spec_from_proto(msg.model_spec),
        partition_id=msg.partition_id,
        num_partitions=msg.num_partitions,
        state=state_from_proto(msg.state),
        secret=msg.session_secret,
    )


def session_metadata(secret: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that proves a session (empty without a secret)."""
    return ((SESSION_SECRET_METADATA, secret),) if secret else ()


def session_secret_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The session secret a call carries, or "" when it carries none."""
    for key, value in metadata or ():
        if key == SESSION_SECRET_METADATA:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return ""


# --- heartbeat, poll, leave --------------------------------------------------------


def heartbeat_to_proto(client_id: str, progress: TaskProgress | None = None) -> pb.HeartbeatRequest:
    """A session's heartbeat, with the progress of its current task when it runs one."""
    msg = pb.HeartbeatRequest(client_id=client_id)
    if progress is not None:
        msg.progress.CopyFrom(
            pb.TaskProgress(
                fraction=progress.fraction,
                epoch=progress.epoch,
                examples_per_second=progress.examples_per_second,
            )
        )
    return msg


def heartbeat_from_proto(msg: pb.HeartbeatRequest) -> str:
    """HeartbeatRequest -> the session id it keeps alive."""
    return msg.client_id


def status_to_proto(status: FederationStatus) -> pb.HeartbeatResponse:
    """Domain federation status -> HeartbeatResponse."""
    return pb.HeartbeatResponse(
        state=state_to_proto(status.state), rounds_completed=status.rounds_completed
    )


def status_from_proto(msg: pb.HeartbeatResponse) -> FederationStatus:
    """HeartbeatResponse -> domain federation status."""
    return FederationStatus(
        state=state_from_proto(msg.state), rounds_completed=msg.rounds_completed
    )


def poll_to_proto(poll: TaskPoll) -> pb.PullTaskRequest:
    """Domain task poll -> PullTaskRequest."""
    return pb.PullTaskRequest(
        client_id=poll.client_id,
        wait_seconds=poll.wait_seconds,
        max_chunk_bytes=poll.max_chunk_bytes,
    )


def poll_from_proto(msg: pb.PullTaskRequest) -> TaskPoll:
    """PullTaskRequest -> domain task poll; a chunk size of 0 means the default."""
    chunk = msg.max_chunk_bytes or DEFAULT_CHUNK_BYTES
    if not 0 < chunk <= MAX_CHUNK_BYTES:
        raise SerdeError(f"max_chunk_bytes {chunk} outside 1..{MAX_CHUNK_BYTES}")
    return TaskPoll(
        client_id=msg.client_id,
        wait_seconds=max(msg.wait_seconds, 0.0),
        max_chunk_bytes=chunk,
    )


def leave_to_proto(notice: LeaveNotice) -> pb.LeaveRequest:
    """Domain leave notice -> LeaveRequest."""
    return pb.LeaveRequest(client_id=notice.client_id, reason=notice.reason, fatal=notice.fatal)


def leave_from_proto(msg: pb.LeaveRequest) -> LeaveNotice:
    """LeaveRequest -> domain leave notice."""
    return LeaveNotice(client_id=msg.client_id, reason=msg.reason, fatal=msg.fatal)


def leave_response() -> pb.LeaveResponse:
    """The (empty) answer to a Leave."""
    return pb.LeaveResponse()


# --- tasks ------------------------------------------------------------------------


def task_header_to_proto(task: Task) -> pb.PullTaskResponse:
    """The first message of a task's PullTask stream (its chunks follow)."""
    return pb.PullTaskResponse(
        task=pb.TaskHeader(
            task_id=task.task_id,
            type=_TASK_TO_PROTO[task.type],
            round=task.round,
            config=config_to_proto(task.config),
            timeout_seconds=task.timeout,
            parameters=parameters_header(task.names, task.parameters),
        )
    )


def task_to_stream(
    task: Task, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pb.PullTaskResponse]:
    """A task as a PullTask stream of messages: header, then chunks (tools and tests;
    the server sends the header and chunks from :func:`encode_chunks` instead)."""
    yield task_header_to_proto(task)
    for chunk in iter_chunks(task.parameters, chunk_bytes):
        yield pb.PullTaskResponse(chunk=chunk)


def encode_task(task: Task, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[bytes]:
    """A whole task stream as serialized messages, as the server sends it."""
    header = task_header_to_proto(task).SerializeToString()
    return [header, *iter_encoded_chunks(task.parameters, chunk_bytes)]


def task_from_bytes(messages: Iterable[bytes]) -> Task | Idle | Finished:
    """Parse serialized PullTask messages (:func:`encode_task`) into a task, as a client does."""
    return task_from_stream(deserialize_pull_response(m) for m in messages)


def idle_to_proto(idle: Idle) -> pb.PullTaskResponse:
    """Domain idle -> the single message of an idle stream."""
    return pb.PullTaskResponse(idle=pb.Idle(state=state_to_proto(idle.state)))


def finished_to_proto(finished: Finished) -> pb.PullTaskResponse:
    """Domain finished -> the single message of a finished stream."""
    return pb.PullTaskResponse(
        finished=pb.Finished(state=state_to_proto(finished.state), reason=finished.reason)
    )


def task_from_stream(
    stream: Iterator[pb.PullTaskResponse | RawChunk],
) -> Task | Idle | Finished:
    """Read one PullTask stream into a task, an idle or a finished value."""
    first = next(stream, None)
    if first is None:
        raise SerdeError("PullTask stream ended without a message")
    if isinstance(first, RawChunk):
        raise SerdeError("PullTask stream starts with a chunk, expected a task header")
    kind = first.WhichOneof("item")
    if kind == "idle":
        return Idle(state=state_from_proto(first.idle.state))
    if kind == "finished":
        return Finished(state=state_from_proto(first.finished.state), reason=first.finished.reason)
    if kind != "task":
        raise SerdeError(f"PullTask stream starts with {kind!r}, expected a task header")
    header = first.task
    if header.type not in _TASK_FROM_PROTO:
        raise SerdeError(f"task {header.task_id!r}: unknown task type {header.type}")
    assembler = ParametersAssembler(header.parameters)
    for msg in stream:
        if isinstance(msg, RawChunk):
            assembler.add(msg)
            continue
        if msg.WhichOneof("item") != "chunk":
            raise SerdeError(
                f"task {header.task_id!r}: expected chunks, got {msg.WhichOneof('item')!r}"
            )
        assembler.add(msg.chunk)
    return Task(
        task_id=header.task_id,
        type=_TASK_FROM_PROTO[header.type],
        round=header.round,
        config=config_from_proto(header.config),
        timeout=header.timeout_seconds,
        names=assembler.names,
        parameters=assembler.finish(),
    )


# --- results ----------------------------------------------------------------------


def result_to_stream(
    result: Result, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pb.PushResultRequest]:
    """A result as a PushResult stream of messages: header, then chunks (tools and tests)."""
    yield pb.PushResultRequest(header=result_header_to_proto(result))
    for chunk in iter_chunks(result.parameters, chunk_bytes):
        yield pb.PushResultRequest(chunk=chunk)


def result_to_wire(
    result: Result, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pb.PushResultRequest | bytes]:
    """A result as the client runtime sends it: the header message, then chunks
    encoded lazily with one copy each (send with :func:`serialize_push_request`)."""
    yield pb.PushResultRequest(header=result_header_to_proto(result))
    yield from iter_encoded_chunks(result.parameters, chunk_bytes)


def result_header_to_proto(result: Result) -> pb.ResultHeader:
    """The header of a result (its parameters are announced, not included).

    ``reported_loss`` is set only when there is a loss; the deprecated
    ``loss`` field carries the same number (0 when absent) for 1.0 servers.
    """
    header = pb.ResultHeader(
        client_id=result.client_id,
        task_id=result.task_id,
        status=pb.RESULT_STATUS_FAILED if result.error else pb.RESULT_STATUS_OK,
        error_message=result.error,
        num_examples=result.num_examples,
        loss=0.0 if result.loss is None else result.loss,
        metrics=config_to_proto(result.metrics),
        parameters=parameters_header(result.names, result.parameters),
    )
    if result.loss is not None:
        header.reported_loss = result.loss
    return header


def _loss_from_header(header: pb.ResultHeader) -> float | None:
    """``reported_loss`` when set; else the 1.0 field, whose 0 meant "no loss"."""
    if header.HasField("reported_loss"):
        return header.reported_loss
    return header.loss or None


def result_from_header(header: pb.ResultHeader, arrays: NDArrays, names: tuple[str, ...]) -> Result:
    """A result from its header and the arrays rebuilt from its chunks."""
    failed = header.status == pb.RESULT_STATUS_FAILED
    return Result(
        client_id=header.client_id,
        task_id=header.task_id,
        num_examples=header.num_examples,
        loss=_loss_from_header(header),
        metrics=config_from_proto(header.metrics),
        names=names,
        parameters=arrays,
        error=(header.error_message or "client reported a failure") if failed else "",
    )


class ResultReader:
    """Reads one PushResult stream in steps, so a server can check before it reads.

    :meth:`start` takes the first message (it must be the header) and says
    which session and task the result answers; :meth:`announced` allocates
    the announced tensors (refusing more than ``max_bytes``) and returns their
    specs, so they can be compared with the model spec before any byte is
    read; :meth:`add` places each chunk; :meth:`finish` returns the
    :class:`~orchard.messages.Result`. Every malformed step is a
    :class:`SerdeError` naming the tensor.
    """

    def __init__(self, first: pb.PushResultRequest | RawChunk | None) -> None:
        if first is None or isinstance(first, RawChunk) or first.WhichOneof("item") != "header":
            raise SerdeError("PushResult must start with a ResultHeader")
        self._header = first.header
        self._assembler: ParametersAssembler | None = None
        self.ref = ResultRef(client_id=first.header.client_id, task_id=first.header.task_id)

    @classmethod
    async def start(cls, stream: AsyncIterator[pb.PushResultRequest | RawChunk]) -> ResultReader:
        """A reader over ``stream`` whose header has been read."""
        return cls(await anext(aiter(stream), None))

    def announced(
        self, *, max_bytes: int | None = None, require_finite: bool = False
    ) -> tuple[TensorSpec, ...]:
        """Allocate the announced tensors and return their specs.

        ``require_finite``: refuse NaN and infinite values chunk by chunk
        (:class:`ParametersAssembler`).
        """
        self._assembler = ParametersAssembler(
            self._header.parameters, max_bytes=max_bytes, require_finite=require_finite
        )
        return self._assembler.specs

    def add(self, message: pb.PushResultRequest | RawChunk) -> None:
        """Place the chunk ``message`` carries."""
        if self._assembler is None:
            self.announced()
        assert self._assembler is not None
        if isinstance(message, RawChunk):
            self._assembler.add(message)
            return
        if message.WhichOneof("item") != "chunk":
            raise SerdeError("only chunks may follow the result header")
        self._assembler.add(message.chunk)

    async def read_chunks(
        self,
        stream: AsyncIterator[pb.PushResultRequest | RawChunk],
        on_chunk: Callable[[], object],
    ) -> None:
        """Place every remaining chunk of ``stream``, calling ``on_chunk`` after each."""
        async for message in stream:
            self.add(message)
            on_chunk()

    def finish(self) -> Result:
        """The result; raises if any announced byte is missing."""
        if self._assembler is None:
            self.announced()
        assert self._assembler is not None
        arrays = self._assembler.finish()
        return result_from_header(self._header, arrays, self._assembler.names)


def result_from_stream(stream: Iterator[pb.PushResultRequest | RawChunk]) -> Result:
    """Read a whole PushResult stream synchronously (tools and tests; the server awaits)."""
    reader = ResultReader(next(stream, None))
    for message in stream:
        reader.add(message)
    return reader.finish()


def push_result_method(
    channel: grpc.Channel,
) -> grpc.StreamUnaryMultiCallable[pb.PushResultRequest | bytes, pb.PushResultResponse]:
    """PushResult on ``channel``, taking :func:`result_to_wire`'s pre-encoded chunks.

    The generated stub would serialize every request message; this callable
    lets the chunk bytes through as they are.
    """
    return channel.stream_unary(
        f"/{SERVICE_NAME}/PushResult",
        request_serializer=serialize_push_request,
        response_deserializer=pb.PushResultResponse.FromString,
    )


def pull_task_method(
    channel: grpc.Channel,
) -> grpc.UnaryStreamMultiCallable[pb.PullTaskRequest, pb.PullTaskResponse | RawChunk]:
    """PullTask on ``channel``, reading chunks in place (:func:`deserialize_pull_response`)."""
    return channel.unary_stream(
        f"/{SERVICE_NAME}/PullTask",
        request_serializer=pb.PullTaskRequest.SerializeToString,
        response_deserializer=deserialize_pull_response,
    )


def push_ack_to_proto(message: str) -> pb.PushResultResponse:
    """The server's acknowledgement of a result."""
    return pb.PushResultResponse(message=message)


def push_ack_from_proto(msg: pb.PushResultResponse) -> str:
    """PushResultResponse -> its acknowledgement text."""
    return msg.message


# --- status (orchard-server status) and task progress -------------------------------


def heartbeat_progress_from_proto(msg: pb.HeartbeatRequest) -> TaskProgress | None:
    """The task progress a heartbeat reports, or None (no task, or an older client)."""
    if not msg.HasField("progress"):
        return None
    p = msg.progress
    return TaskProgress(
        fraction=min(max(p.fraction, 0.0), 1.0),
        epoch=p.epoch,
        examples_per_second=max(p.examples_per_second, 0.0),
    )


def status_request_to_proto(token: str = "") -> pb.GetStatusRequest:
    """A status request, with the server's web token when it has one."""
    return pb.GetStatusRequest(token=token)


def status_request_from_proto(msg: pb.GetStatusRequest) -> str:
    """GetStatusRequest -> the token it carries."""
    return msg.token


def federation_summaries_to_proto(
    summaries: Sequence[FederationSummary],
) -> pb.GetStatusResponse:
    """Domain federation summaries -> GetStatusResponse."""
    return pb.GetStatusResponse(
        federations=[
            pb.FederationStatusSummary(
                name=f.name,
                model_id=f.model_id,
                strategy=f.strategy,
                state=state_to_proto(f.state),
                reason=f.reason,
                rounds_completed=f.rounds_completed,
                num_rounds=f.num_rounds,
                round=f.round,
                phase=f.phase,
                clients=[
                    pb.ClientStatusSummary(
                        display_name=c.display_name,
                        framework=c.framework,
                        role=_ROLE_TO_PROTO[c.role],
                        partition_id=max(c.partition_id, 0),
                    )
                    for c in f.clients
                ],
            )
            for f in summaries
        ]
    )


def federation_summaries_from_proto(msg: pb.GetStatusResponse) -> list[FederationSummary]:
    """GetStatusResponse -> domain federation summaries."""
    return [
        FederationSummary(
            name=f.name,
            model_id=f.model_id,
            strategy=f.strategy,
            state=state_from_proto(f.state),
            reason=f.reason,
            rounds_completed=f.rounds_completed,
            num_rounds=f.num_rounds,
            round=f.round,
            phase=f.phase,
            clients=tuple(
                ClientSummary(
                    display_name=c.display_name,
                    framework=c.framework,
                    role=_ROLE_FROM_PROTO.get(c.role, Role.TRAINER),
                    partition_id=c.partition_id,
                )
                for c in f.clients
            ),
        )
        for f in msg.federations
    ]
