"""Shared memory between a simulation driver and its workers: layouts, lifecycles, errors.

These run in one process (a worker may open its own process's descriptors
through /proc/<pid>/fd); the local backend's tests run real worker processes.
They also run in the MXNet environment (NumPy 1.23).
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

from orchard.simulation import shm
from orchard.simulation.job import JobResult
from orchard.typing import NDArrays
from tests.helpers.memfd import open_segments

pytestmark = pytest.mark.skipif(bool(shm.available()), reason=shm.available() or "")


def _model() -> NDArrays:
    return [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(2.5, dtype=np.float64),
        np.zeros((0, 2), dtype=np.float32),
        np.arange(5, dtype=np.int64),
    ]


@pytest.fixture
def worker() -> Any:
    made = shm.probe()
    assert made is not None
    segment, ref = made
    segments = shm.WorkerSegments(ref)
    try:
        yield segments
    finally:
        segments.close()
        segment.close()


def test_arrays_are_packed_at_aligned_offsets_and_the_layout_round_trips() -> None:
    placements, size = shm.plan(_model())
    assert [p.offset % shm.ALIGN for p in placements] == [0, 0, 0, 0]
    assert size == shm.capacity([(a.shape, a.dtype.str) for a in _model()])
    back = shm.layout_from_json(shm.layout_to_json(placements), size, "test")
    assert back == placements


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ([["<f4", [100], 0]], "lies beyond the segment's 64 bytes"),
        ([["<f4", [2], 3]], "not a non-negative multiple of 64"),
        ([["<f4", [2]]], r"array #0 is not \[dtype, shape, offset\]"),
        ([["|O", [1], 0]], "object dtype"),
        ({"a": 1}, "not a list"),
    ],
)
def test_a_wrong_layout_is_refused_naming_the_problem(layout: Any, message: str) -> None:
    with pytest.raises(shm.SegmentError, match=message):
        shm.layout_from_json(layout, 64, "segment x")


def test_a_round_is_broadcast_once_and_each_job_gets_private_writable_arrays(
    worker: shm.WorkerSegments,
) -> None:
    broadcast = shm.Broadcast()
    params = _model()
    key, ref = broadcast.acquire(params)
    key2, ref2 = broadcast.acquire(params)
    assert key == key2 and ref == ref2 and broadcast.segments == 1
    first = worker.params(ref)
    for got, want in zip(first, params, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
    first[0][0, 0] = 99.0  # a client may train in place...
    second = worker.params(ref)
    assert second[0][0, 0] == 0.0  # ...without touching the segment or the next client
    broadcast.release(key)
    broadcast.release(key2)
    broadcast.close()


def test_an_old_parameter_set_stays_while_a_job_uses_it_then_goes() -> None:
    broadcast = shm.Broadcast(keep=1)
    old = _model()
    key_old, _ = broadcast.acquire(old)
    key_new, _ = broadcast.acquire(_model())  # the next round, while a job of the last runs
    assert broadcast.segments == 2
    broadcast.release(key_old)
    assert broadcast.segments == 1
    broadcast.release(key_new)
    broadcast.close()
    assert broadcast.segments == 0
    gc.collect()
    assert open_segments() == set()


def test_a_result_comes_back_as_views_and_its_segment_is_reused_once_released(
    worker: shm.WorkerSegments,
) -> None:
    freed: list[int] = []
    slots = shm.ResultSlots(limit=1, on_free=lambda: freed.append(1))
    size = shm.plan(_model())[1]
    slot = slots.take(size)
    assert slot is not None
    layout = worker.write_result(slot.ref(), _model())
    assert layout is not None
    views = slots.lease(slot, shm.layout_from_json(layout, slot.size, "result"))
    for got, want in zip(views, _model(), strict=True):
        assert np.array_equal(got, want) and got.dtype == want.dtype
    assert slots.exhausted and slots.take(size) is None  # the server holds the only one
    del views, got
    gc.collect()
    assert freed == [1]
    assert slots.take(size) is slot  # the same segment, already mapped on both sides
    slots.give_back(slot)
    slots.close()
    assert slots.segments == 0


def test_a_result_larger_than_its_segment_goes_through_the_pipe(
    worker: shm.WorkerSegments,
) -> None:
    slot = shm.Segment(64, "result")
    try:
        assert worker.write_result(slot.ref(), [np.zeros(100, dtype=np.float32)]) is None
    finally:
        slot.close()


def test_segments_leased_when_the_worker_stops_close_when_released(
    worker: shm.WorkerSegments,
) -> None:
    slots = shm.ResultSlots(limit=2)
    slot = slots.take(64)
    assert slot is not None
    layout = worker.write_result(slot.ref(), [np.ones(4, dtype=np.float32)])
    assert layout is not None
    views = slots.lease(slot, shm.layout_from_json(layout, slot.size, "result"))
    worker_segments_open = worker.open_segments
    slots.close()  # the worker is gone; the server still folds its last result
    assert slots.segments == 1 and float(views[0].sum()) == 4.0
    del views
    gc.collect()
    assert slots.segments == 0
    assert worker_segments_open == 1


def test_a_descriptor_that_names_another_file_is_refused(worker: shm.WorkerSegments) -> None:
    segment = shm.Segment(64, "params")
    try:
        wrong = {**segment.ref(), "name": "orchard-sim-0-params-0", "layout": []}
        with pytest.raises(shm.SegmentError, match="not the segment orchard-sim-0-params-0"):
            worker.params(wrong)
        closed = {**segment.ref(), "fd": 10**6, "layout": []}
        with pytest.raises(shm.SegmentError, match="cannot open the driver's segment"):
            worker.params(closed)
    finally:
        segment.close()


def test_a_worker_that_cannot_open_the_probe_says_why() -> None:
    made = shm.probe()
    assert made is not None
    segment, ref = made
    segment.close()  # its descriptor number is gone, or names another file by now
    with pytest.raises(shm.SegmentError, match=r"cannot open|not the segment"):
        shm.WorkerSegments(ref)


def test_a_job_with_a_bad_layout_fails_alone_with_a_clear_error(
    worker: shm.WorkerSegments,
) -> None:

    from orchard.simulation.worker import _answer

    segment = shm.Segment(64, "params")
    header = {
        "op": "job",
        "client_id": "virtual-1",
        "task": {"task_id": "t1"},
        "params_shm": {**segment.ref(), "layout": [["<f4", [1000], 0]]},
    }
    try:
        out: JobResult = _answer(None, worker, (header, []))  # type: ignore[arg-type]
    finally:
        segment.close()
    assert out.result.client_id == "virtual-1" and out.result.task_id == "t1"
    assert "cannot read the job's parameters" in (out.result.error or "")
    assert "lies beyond the segment's 64 bytes" in (out.result.error or "")


def test_nothing_stays_open_once_everything_is_closed(worker: shm.WorkerSegments) -> None:
    before = open_segments()
    broadcast = shm.Broadcast()
    key, ref = broadcast.acquire(_model())
    params = worker.params(ref)
    slots = shm.ResultSlots()
    slot = slots.take(4096)
    assert slot is not None
    assert worker.write_result(slot.ref(), params) is not None
    slots.give_back(slot)
    assert len(open_segments() - before) == 2  # params and result, open on both sides
    broadcast.release(key)
    broadcast.close()
    slots.close()
    worker.close()
    del params
    gc.collect()
    assert open_segments() - before == set()
