"""Workers fold their own clients' updates: the same model, and nothing lost unseen.

The driver decides on every result a worker keeps (:class:`FoldLog`), reads
each worker's partial sums back at the fan-out's end, even from a worker that
died (:class:`WorkerFolds`), and the round adds them (``SimulationPool``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from orchard.messages import FederationState
from orchard.simulation import shm
from orchard.simulation.job import JobResult
from orchard.simulation.partial import PartialSums
from orchard_server.simulation import run_simulation
from orchard_server.simulation.folds import FoldLog, FoldRequest, WorkerFolds, _read_back
from orchard_server.simulation.pool import SimulationPool
from orchard_server.strategy.aggregate import WeightedMean
from tests.server.simulation.conftest import PROBE, small_federation
from tests.server.simulation.test_local_transport import (
    MXNET_PYTHON,
    _backend,
    _expected,
    _job,
    _params,
)

needs_shm = pytest.mark.skipif(bool(shm.available()), reason=shm.available() or "")


def test_decisions_keep_plain_sums_until_another_weight_comes() -> None:
    log = FoldLog(sink=1)
    for task, weight in [("a", 5), ("b", 5), ("c", 9), ("d", None), ("e", 2)]:
        log.decide(task, weight)
        assert log.take_pending() == (
            {"task_id": task, "drop": True}
            if weight is None
            else {
                "task_id": task,
                "factor": 1.0 if task in "ab" else float(weight),
                "scale_first": 5.0 if task == "c" else None,
            }
        )
    assert log.sent == [("a", 5), ("b", 5), ("c", 9), ("e", 2)]
    assert log.shared == 5 and log.weighted_from == 2
    log.decide("f", 3)
    log.drop_pending_unless(collected={"a"})
    assert log.take_pending() == {"task_id": "f", "drop": True}


SHAPES = [(3, 2), (2,)]


def _folded(*, folds: int, busy: bool = False) -> tuple[shm.Segment, FoldLog]:
    """A worker's segment after ``folds`` of the three updates its log says it was sent."""
    segment = WorkerFolds(SHAPES).new_segment()
    log = FoldLog(sink=4)
    partial = PartialSums(segment.map, SHAPES)
    for i, task in enumerate(["t1", "t2", "t3"]):
        log.decide(task, 2)
        log.take_pending()
        if i < folds:
            partial.fold(4, [np.full(s, i + 1.0, np.float32) for s in SHAPES], 1.0, None)
    if busy:
        np.frombuffer(segment.map, dtype="<u8")[2] = 1
    return segment, log


def test_a_dead_workers_partial_keeps_what_it_folded_and_names_the_rest() -> None:
    segment, log = _folded(folds=2)
    partial, lost = _read_back(segment, SHAPES, log, {"t1", "t2", "t3"}, "pid 9, exit code -9")
    assert partial is not None and partial.tasks == [("t1", 2), ("t2", 2)]
    assert partial.shared_weight == 2 and partial.total == 4
    np.testing.assert_array_equal(partial.sums[1], [3.0, 3.0])  # 1 + 2
    assert lost == {"t3": "its worker (pid 9, exit code -9) ended before folding it"}


def test_a_partial_caught_mid_fold_or_holding_an_update_never_taken_is_lost_whole() -> None:
    segment, log = _folded(folds=2, busy=True)
    partial, lost = _read_back(segment, SHAPES, log, {"t1", "t2", "t3"}, "pid 9, exit code -9")
    assert partial is None and set(lost) == {"t1", "t2", "t3"}
    assert "left its partial sums unfinished" in lost["t1"] and "'busy': True" in lost["t1"]
    segment, log = _folded(folds=3)
    partial, lost = _read_back(segment, SHAPES, log, {"t1", "t3"}, "settled")
    assert partial is None and set(lost) == {"t1", "t2", "t3"}
    assert "hold 1 update(s) the round never took" in lost["t3"]


@needs_shm
@pytest.mark.parametrize("python", ["", "mxnet"])
def test_a_worker_stopped_at_a_deadline_keeps_the_updates_it_folded_before(python: str) -> None:
    if python == "mxnet":
        if not MXNET_PYTHON.is_file():
            pytest.skip("no .venv-mxnet in this checkout")
        python = str(MXNET_PYTHON)  # NumPy 1.23 folds on the worker's side
    params = _params()

    async def scenario() -> tuple[Any, dict[str, str]]:
        backend = _backend(python=python, node_config={"partition_3": "sleep"})
        await backend.start()
        try:
            folds = backend.open_folds()
            assert folds is not None
            decide = FoldRequest(folds, lambda out: 10 + int(out.result.client_id[-1]))
            for partition in (0, 1, 2):
                out: JobResult = await backend.run(0, _job(partition, params), decide)
                assert out.held and out.result.parameters == []
            with pytest.raises(TimeoutError):  # the round's deadline: the worker is stopped
                await asyncio.wait_for(backend.run(0, _job(3, params), decide), 2.0)
            partials, lost = await folds.close({"t0", "t1", "t2"})
            (partial,) = partials
            assert partial.tasks == [("t0", 10), ("t1", 11), ("t2", 12)]
            assert partial.shared_weight is None  # weighted sums: the weights differ
            return [s.copy() for s in partial.sums], lost
        finally:
            await backend.close()

    sums, lost = asyncio.run(scenario())
    assert lost == {}
    for i, got in enumerate(sums):
        want = sum(
            w * _expected(params, p)[i].astype(np.float64) for p, w in [(0, 10), (1, 11), (2, 12)]
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _run(monkeypatch: pytest.MonkeyPatch, *, workers_fold: bool, **fed: Any) -> Any:
    calls = {"add": 0, "add_sums": 0}
    add, add_sums = WeightedMean.add, WeightedMean.add_sums

    def counted_add(self: WeightedMean, *args: Any, **kwargs: Any) -> None:
        calls["add"] += 1
        add(self, *args, **kwargs)

    def counted_add_sums(self: WeightedMean, *args: Any, **kwargs: Any) -> None:
        calls["add_sums"] += 1
        add_sums(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(WeightedMean, "add", counted_add)
        patch.setattr(WeightedMean, "add_sums", counted_add_sums)
        if not workers_fold:
            patch.setattr(SimulationPool, "fold_into", lambda self, aggregator: None)
        result = run_simulation(PROBE, 6, small_federation(**fed), workers=2)
    assert result.state is FederationState.FINISHED, result.reason
    return result, calls


@needs_shm
def test_the_workers_folds_give_the_servers_model_with_refusals_and_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Example counts 10 to 15 (weighted sums); above 13 a result is refused.
    settings = {"min_fit_clients": 4, "min_available_clients": 6, "max_examples_per_client": 13}
    folded, calls = _run(monkeypatch, workers_fold=True, **settings)
    reference, reference_calls = _run(monkeypatch, workers_fold=False, **settings)
    assert calls["add"] == 0 and 2 <= calls["add_sums"] <= 2 * 2  # two workers, two rounds
    assert reference_calls == {"add": 2 * 4, "add_sums": 0}
    for a, b in zip(folded.parameters, reference.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for record in folded.history.rounds:
        assert len(record.fit.participants) == 4
        assert sorted(record.fit.dropped) == ["virtual-4 (virtual-4)", "virtual-5 (virtual-5)"]
        assert all(
            "num_examples 1" in why and "max_examples_per_client (13)" in why
            for why in record.fit.dropped.values()
        )
