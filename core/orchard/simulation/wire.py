"""The pipe protocol between a simulation driver and its local worker processes.

A frame is a 4-byte little-endian length, a JSON header of that length, then
the raw bytes of the arrays the header lists (``dtype``, ``shape``): model
parameters cross the pipe as NumPy buffers, never as pickled lists of Python
floats, and nothing is unpickled (a worker may run another interpreter with
another NumPy). Frames:

* ``init`` (driver -> worker): ``client_fn`` reference, federation, model spec,
  node config and, when the driver offers shared memory, a probe segment
  (``shm``); answered by ``error`` or by ``ready``, whose ``shm`` is empty if
  the worker can use shared memory and otherwise says why not;
* ``job`` (driver -> worker): one :class:`~orchard.simulation.job.Job`, its
  task's parameters then its state's arrays; answered by ``result``;
* ``settle`` (driver -> worker): the end of a fan-out whose results the
  worker folds itself (below); answered by ``settled``.

A fit job may ask the worker to keep its result and fold it into the
worker's partial sums (``fold``: the fan-out and the partial-sums segment,
:mod:`orchard.simulation.partial`). A result the worker found sound is then
answered ``held``, without its parameters, and the driver's decision on it
(fold with a factor, or drop) comes with the next frame it sends that worker
(``settle``, in a job frame or a ``settle`` frame).

With shared memory (:mod:`orchard.simulation.shm`, agreed in ``init``), model
arrays leave the pipe: a job's header names the segment holding its task's
parameters (``params_shm``: segment and layout) and the segment its result
may go to (``result_shm``); a result's header then says where its parameters
lie (``result_layout``) and only state arrays follow it on the pipe.

Both sides use the same encoders; the driver reads with asyncio, the worker
with blocking file objects.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np

from orchard.messages import Result, Role, Task, TaskType
from orchard.simulation.job import Job, JobResult
from orchard.spec import ModelSpec, TensorSpec
from orchard.typing import Config, NDArray, NDArrays, Scalar

__all__ = [
    "Frame",
    "ProtocolError",
    "decode_job",
    "decode_result",
    "encode",
    "job_frame",
    "read_frame",
    "result_frame",
    "spec_from_json",
    "spec_to_json",
]

_LENGTH = struct.Struct("<I")


class ProtocolError(RuntimeError):
    """A frame is malformed or the other side went away."""


#: A decoded frame: its header and its arrays.
Frame = tuple[dict[str, Any], NDArrays]


def _scalar_to_json(value: Scalar) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    return value


def _scalar_from_json(value: Any) -> Scalar:
    if isinstance(value, dict):
        return base64.b64decode(value["$bytes"])
    if not isinstance(value, bool | int | float | str):
        raise ProtocolError(f"config value {value!r} is not a scalar")
    return value


def config_to_json(config: Mapping[str, Scalar]) -> dict[str, Any]:
    """A config (or metrics) map as JSON values; bytes are base64-tagged."""
    return {k: _scalar_to_json(v) for k, v in config.items()}


def config_from_json(data: Mapping[str, Any]) -> Config:
    """Inverse of :func:`config_to_json`."""
    return {k: _scalar_from_json(v) for k, v in data.items()}


def spec_to_json(spec: ModelSpec) -> dict[str, Any]:
    """A model spec as JSON."""
    return {
        "model_id": spec.model_id,
        "tensors": [[t.name, list(t.shape), t.dtype] for t in spec.tensors],
    }


def spec_from_json(data: Mapping[str, Any]) -> ModelSpec:
    """Inverse of :func:`spec_to_json`."""
    return ModelSpec(
        data["model_id"],
        tuple(TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in data["tensors"]),
    )


def encode(header: Mapping[str, Any], arrays: Sequence[NDArray] = ()) -> list[bytes | memoryview]:
    """The buffers of one frame (written in order; arrays are not copied)."""
    flat = [np.asarray(a, order="C") for a in arrays]  # (ascontiguousarray makes 0-d 1-d)
    body = dict(header)
    body["arrays"] = [[a.dtype.str, list(a.shape)] for a in flat]
    raw = json.dumps(body, separators=(",", ":")).encode()
    parts: list[bytes | memoryview] = [_LENGTH.pack(len(raw)), raw]
    parts.extend(a.reshape(-1).view(np.uint8).data for a in flat if a.size)
    return parts


def _array_sizes(header: Mapping[str, Any]) -> list[tuple[np.dtype[Any], tuple[int, ...], int]]:
    out = []
    for dtype_str, shape in header.get("arrays", []):
        dtype = np.dtype(dtype_str)
        shape_t = tuple(int(s) for s in shape)
        out.append((dtype, shape_t, int(np.prod(shape_t, dtype=np.int64)) * dtype.itemsize))
    return out


def header_length(prefix: bytes) -> int:
    """The JSON header's length from a frame's first 4 bytes."""
    (length,) = _LENGTH.unpack(prefix)
    return int(length)


def parse_header(
    raw: bytes,
) -> tuple[dict[str, Any], list[tuple[np.dtype[Any], tuple[int, ...], int]]]:
    """The header and the (dtype, shape, nbytes) of each array that follows."""
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"malformed frame header: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    return header, _array_sizes(header)


def to_array(buffer: bytes | bytearray, dtype: np.dtype[Any], shape: tuple[int, ...]) -> NDArray:
    """An array over ``buffer`` (writable when the buffer is a bytearray)."""
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _read_exactly(stream: BinaryIO, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise ProtocolError("the other side closed the pipe")
        got += k
    return buf


def read_frame(stream: BinaryIO) -> Frame:
    """Read one frame, blocking (the worker side)."""
    length = header_length(bytes(_read_exactly(stream, _LENGTH.size)))
    header, sizes = parse_header(bytes(_read_exactly(stream, length)))
    arrays = [to_array(_read_exactly(stream, n), d, s) for d, s, n in sizes]
    return header, arrays


def job_frame(
    job: Job,
    *,
    params_shm: Mapping[str, Any] | None = None,
    result_shm: Mapping[str, Any] | None = None,
    fold: Mapping[str, Any] | None = None,
    settle: Mapping[str, Any] | None = None,
) -> list[bytes | memoryview]:
    """The frame of a job: header, then parameters (unless in ``params_shm``), then state arrays.

    ``params_shm`` is the reference of a segment holding the task's parameters
    (:meth:`~orchard.simulation.shm.Broadcast.acquire`), ``result_shm`` that
    of a segment for the result (:meth:`~orchard.simulation.shm.Segment.ref`).
    ``fold`` asks the worker to hold the result for its partial sums;
    ``settle`` is the decision on the result it holds from its last job.
    """
    task = job.task
    state_keys = None if job.state is None else list(job.state)
    header = {
        "op": "job",
        "client_id": job.client_id,
        "partition_id": job.partition_id,
        "num_partitions": job.num_partitions,
        "role": job.role.value,
        "task": {
            "task_id": task.task_id,
            "type": task.type.value,
            "round": task.round,
            "config": config_to_json(task.config),
            "timeout": task.timeout,
            "names": list(task.names),
        },
        "params": len(task.parameters),
        "state_keys": state_keys,
    }
    if params_shm is not None:
        header["params_shm"] = dict(params_shm)
    if result_shm is not None:
        header["result_shm"] = dict(result_shm)
    if fold is not None:
        header["fold"] = dict(fold)
    if settle is not None:
        header["settle"] = dict(settle)
    state = [] if job.state is None else list(job.state.values())
    inline = [] if params_shm is not None else list(task.parameters)
    return encode(header, [*inline, *state])


def _with_shared(arrays: NDArrays, parameters: NDArrays | None, n: int, what: str) -> NDArrays:
    """A frame's arrays with its ``n`` parameters first, when those came in shared memory."""
    if parameters is None:
        return arrays
    if len(parameters) != n:
        raise ProtocolError(
            f"the {what} has {n} parameter arrays, shared memory held {len(parameters)}"
        )
    return [*parameters, *arrays]


def decode_job(frame: Frame, parameters: NDArrays | None = None) -> Job:
    """Inverse of :func:`job_frame`; ``parameters``: the task's, when in shared memory."""
    header, arrays = frame
    t = header["task"]
    n = int(header["params"])
    arrays = _with_shared(arrays, parameters, n, "job")
    keys = header.get("state_keys")
    return Job(
        client_id=header["client_id"],
        partition_id=int(header["partition_id"]),
        num_partitions=int(header["num_partitions"]),
        role=Role(header["role"]),
        task=Task(
            task_id=t["task_id"],
            type=TaskType(t["type"]),
            round=int(t["round"]),
            config=config_from_json(t["config"]),
            timeout=float(t["timeout"]),
            names=tuple(t["names"]),
            parameters=arrays[:n],
        ),
        state=None if keys is None else dict(zip(keys, arrays[n:], strict=True)),
    )


def result_frame(
    out: JobResult, result_layout: list[Any] | None = None
) -> list[bytes | memoryview]:
    """The frame of a job's result; with ``result_layout`` its parameters are in shared memory."""
    r = out.result
    header = {
        "op": "result",
        "result": {
            "client_id": r.client_id,
            "task_id": r.task_id,
            "num_examples": r.num_examples,
            "loss": r.loss,
            "metrics": config_to_json(r.metrics),
            "names": list(r.names),
            "error": r.error,
        },
        "params": len(r.parameters),
        "state_keys": None if out.state is None else list(out.state),
        "seconds": out.seconds,
        "checked": out.checked,
        "held": out.held,
    }
    if result_layout is not None:
        header["result_layout"] = result_layout
    state = [] if out.state is None else list(out.state.values())
    inline = [] if result_layout is not None else list(r.parameters)
    return encode(header, [*inline, *state])


def decode_result(frame: Frame, parameters: NDArrays | None = None) -> JobResult:
    """Inverse of :func:`result_frame`; ``parameters`` when they came in shared memory."""
    header, arrays = frame
    if header.get("op") != "result":
        raise ProtocolError(f"expected a result frame, got {header.get('op')!r}")
    r = header["result"]
    n = int(header["params"])
    arrays = _with_shared(arrays, parameters, n, "result")
    keys = header.get("state_keys")
    return JobResult(
        result=Result(
            client_id=r["client_id"],
            task_id=r["task_id"],
            num_examples=int(r["num_examples"]),
            loss=None if r["loss"] is None else float(r["loss"]),
            metrics=config_from_json(r["metrics"]),
            names=tuple(r["names"]),
            parameters=arrays[:n],
            error=r["error"],
        ),
        state=None if keys is None else dict(zip(keys, arrays[n:], strict=True)),
        seconds=float(header.get("seconds", 0.0)),
        checked=header.get("checked") is True,
        held=header.get("held") is True,
    )
