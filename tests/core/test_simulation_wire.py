"""The worker pipe protocol: jobs and results survive the trip bit for bit."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from orchard.messages import Result, Role, Task, TaskType
from orchard.simulation.job import Job, JobResult
from orchard.simulation.wire import (
    ProtocolError,
    decode_job,
    decode_result,
    job_frame,
    read_frame,
    result_frame,
    spec_from_json,
    spec_to_json,
)
from orchard.spec import ModelSpec, TensorSpec
from orchard.typing import NDArrays


def _bytes(parts: list[bytes | memoryview]) -> io.BytesIO:
    return io.BytesIO(b"".join(bytes(p) for p in parts))


def test_a_job_with_state_round_trips() -> None:
    params: NDArrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(2.5)]
    job = Job(
        client_id="virtual-3",
        partition_id=3,
        num_partitions=10,
        role=Role.EVALUATOR,
        task=Task(
            task_id="t1",
            type=TaskType.EVALUATE,
            round=4,
            config={"lr": 0.1, "name": "x", "flag": True, "blob": b"\x00\xff"},
            timeout=9.5,
            names=("w", "b"),
            parameters=params,
        ),
        state={"count": np.array(3, dtype=np.int64), "empty": np.zeros((0, 2))},
    )
    back = decode_job(read_frame(_bytes(job_frame(job))))
    assert back.task.config == job.task.config
    assert (back.client_id, back.partition_id, back.role) == ("virtual-3", 3, Role.EVALUATOR)
    for a, b in zip(back.task.parameters, params, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert back.state is not None and back.state["count"].shape == ()
    assert back.state["empty"].shape == (0, 2)


def test_a_result_round_trips_and_keeps_none_state_none() -> None:
    out = JobResult(
        result=Result(
            client_id="c",
            task_id="t",
            num_examples=5,
            loss=None,
            metrics={"acc": 0.5},
            names=("w",),
            parameters=[np.ones(3, dtype=np.float32)],
        ),
        seconds=1.25,
        checked=True,
    )
    back = decode_result(read_frame(_bytes(result_frame(out))))
    assert back.state is None and back.seconds == 1.25 and back.checked is True
    unchecked = dataclasses.replace(out, checked=False)
    assert decode_result(read_frame(_bytes(result_frame(unchecked)))).checked is False
    assert back.result.loss is None and back.result.metrics == {"acc": 0.5}
    assert np.array_equal(back.result.parameters[0], np.ones(3, dtype=np.float32))


def test_a_truncated_frame_is_a_protocol_error() -> None:
    job = Job(
        client_id="c",
        partition_id=0,
        num_partitions=1,
        role=Role.TRAINER,
        task=Task(
            task_id="t",
            type=TaskType.FIT,
            round=1,
            config={},
            timeout=1.0,
            names=("w",),
            parameters=[np.ones(100, dtype=np.float32)],
        ),
    )
    raw = b"".join(bytes(p) for p in job_frame(job))
    with pytest.raises(ProtocolError, match="closed"):
        read_frame(io.BytesIO(raw[:-10]))


def test_specs_round_trip() -> None:
    spec = ModelSpec("m", (TensorSpec("w", (2, 3)), TensorSpec("n", (), "int64")))
    assert spec_from_json(spec_to_json(spec)) == spec
