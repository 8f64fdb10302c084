"""Task fan-out: results, drops with reasons, the deadline, and folding as results arrive."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from orchard.examples.logreg import logreg_spec
from orchard.messages import Result, Role, Task, TaskType
from orchard.typing import NDArrays
from orchard_server.admission import AdmissionPolicy
from orchard_server.fanout import fan_out, wait_for_clients
from orchard_server.partitions import PartitionRegistry
from orchard_server.pool import ClientDroppedError, ClientInfo, ClientPool
from orchard_server.strategy import AggregationError, WeightedMean


class Scripted(ClientPool):
    """Clients whose answers are scripted: a value to return, 'drop', or 'hang'."""

    def __init__(self, script: dict[str, float | str]) -> None:
        super().__init__(
            AdmissionPolicy(
                federation="scripted", spec=logreg_spec(), partitions=PartitionRegistry(len(script))
            )
        )
        self.script = script
        self.task_ids: list[str] = []

    def clients(self, role: Role = Role.TRAINER) -> list[ClientInfo]:
        return [
            ClientInfo(
                client_id=cid,
                display_name=f"name-{cid}",
                framework="test",
                role=Role.TRAINER,
                partition_id=i,
                instance_id=cid,
            )
            for i, cid in enumerate(self.script)
            if role is Role.TRAINER
        ]

    async def run_task(self, client_id: str, task: Task) -> Result:
        self.task_ids.append(task.task_id)
        action = self.script[client_id]
        if action == "drop":
            raise ClientDroppedError(client_id, "left the federation")
        if action == "hang":
            await asyncio.sleep(60)
        assert isinstance(action, float)
        return Result(
            client_id=client_id,
            task_id=task.task_id,
            num_examples=2,
            loss=action,
            parameters=[np.full(2, action, np.float32)],
        )


def task(timeout: float = 5.0) -> Task:
    return Task(
        task_id="", type=TaskType.FIT, round=3, config={}, timeout=timeout, names=(), parameters=[]
    )


def test_results_and_drops_are_named() -> None:
    pool = Scripted({"a": 1.0, "b": "drop", "c": 3.0})
    out = asyncio.run(fan_out(pool, task(), ["a", "b", "c"], task_prefix="fed-r3-fit"))
    assert sorted((i.display_name, r.loss) for i, r in out.results) == [
        ("name-a", 1.0),
        ("name-c", 3.0),
    ]
    assert out.dropped == {"name-b (b)": "left the federation"}
    assert all(t.startswith("fed-r3-fit-") for t in pool.task_ids)
    assert len(set(pool.task_ids)) == 3  # one task id per client


def test_the_deadline_drops_the_clients_still_working() -> None:
    pool = Scripted({"a": 1.0, "slow": "hang"})
    out = asyncio.run(fan_out(pool, task(timeout=0.2), ["a", "slow"], task_prefix="t"))
    assert [i.client_id for i, _ in out.results] == ["a"]
    assert out.dropped == {"name-slow (slow)": "missed the round deadline of 0.2 s"}
    assert 0.2 <= out.duration < 5


def test_fold_takes_each_update_and_a_refused_one_is_a_drop() -> None:
    pool = Scripted({"a": 1.0, "b": 3.0, "bad": 9.0})
    aggregator = WeightedMean()

    def fold(arrays: NDArrays, num_examples: int) -> None:
        if float(arrays[0][0]) == 9.0:
            raise AggregationError("too large")
        aggregator.add(arrays, num_examples)

    out = asyncio.run(fan_out(pool, task(), ["a", "b", "bad"], task_prefix="t", fold=fold))
    assert aggregator.result()[0].tolist() == [2.0, 2.0]
    assert out.dropped == {"name-bad (bad)": "update rejected by the aggregator: too large"}
    # Folded results keep their numbers but drop their arrays (memory O(model)).
    assert all(r.parameters == [] and r.num_examples == 2 for _, r in out.results)


def test_wait_for_clients_returns_at_once_or_gives_up_with_the_count() -> None:
    pool = Scripted({"a": 1.0, "b": 2.0})
    have = asyncio.run(wait_for_clients(pool, 2, timeout=5.0, why="test", name="fed"))
    assert have == 2
    began = time.monotonic()
    have = asyncio.run(wait_for_clients(pool, 3, timeout=0.2, why="test", name="fed"))
    assert have == 2
    assert time.monotonic() - began >= 0.2  # it waited the whole timeout


def test_wait_for_clients_ends_at_once_when_told_to_stop() -> None:
    pool = Scripted({"a": 1.0})

    async def scenario() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, stop.set)
        return await wait_for_clients(pool, 3, timeout=30.0, why="test", name="fed", stop=stop)

    began = time.monotonic()
    assert asyncio.run(scenario()) == 1
    assert time.monotonic() - began < 5  # not the 30 s timeout


def test_every_dropped_client_is_one_log_line_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = Scripted({"a": 1.0, "b": "drop", "slow": "hang"})
    with caplog.at_level(logging.WARNING, logger="orchard.server"):
        asyncio.run(fan_out(pool, task(timeout=0.3), ["a", "b", "slow"], task_prefix="t"))
    assert sorted(r.getMessage() for r in caplog.records) == [
        "federation 'scripted' round 3: name-b (b) dropped from fit: left the federation",
        "federation 'scripted' round 3: name-slow (slow) dropped from fit: "
        "missed the round deadline "
        "of 0.3 s",
    ]


@pytest.mark.parametrize("inline_bytes", [1 << 20, 0])
def test_small_updates_fold_on_the_event_loop_and_large_ones_in_a_thread(
    inline_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchard_server.fanout.INLINE_FOLD_BYTES", inline_bytes)
    pool = Scripted({"a": 1.0, "b": 3.0})
    aggregator = WeightedMean()
    threads: set[int] = set()

    def fold(arrays: NDArrays, num_examples: int) -> None:
        threads.add(threading.get_ident())
        aggregator.add(arrays, num_examples)

    asyncio.run(fan_out(pool, task(), ["a", "b"], task_prefix="t", fold=fold))
    assert aggregator.result()[0].tolist() == [2.0, 2.0]
    on_loop = threads == {threading.get_ident()}  # asyncio.run's loop runs in this thread
    assert on_loop is (inline_bytes > 0)
