"""Federated and centralized evaluation: who evaluates, and the records they give."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.examples.logreg import LogRegClient, logreg_spec
from orchard.messages import Role, Task, TaskType
from orchard.typing import Config, Metrics, NDArrays
from orchard_server.evaluation import Send, centralized_evaluation, federated_evaluation
from orchard_server.fanout import Fanout, fan_out
from orchard_server.initial import seeded_parameters
from orchard_server.pool import InMemoryClientPool
from orchard_server.records import EvaluateRecord
from orchard_server.strategy import UniformSampling

SPEC = logreg_spec()
PARAMS = seeded_parameters(SPEC, 0)


def logreg(ctx: ClientContext) -> NumPyClient:
    return LogRegClient.for_partition(ctx.partition_id)


def pool_of(trainers: int, *, evaluator: bool = False) -> InMemoryClientPool:
    pool = InMemoryClientPool(SPEC)
    for i in range(trainers):
        pool.add(logreg, partition_id=i, num_partitions=4)
    if evaluator:
        pool.add(logreg, partition_id=3, num_partitions=4, role=Role.EVALUATOR, name="judge")
    return pool


def sender(pool: InMemoryClientPool, configs: list[Config]) -> Send:
    async def send(kind: TaskType, ids: Sequence[str], config: Config) -> Fanout:
        configs.append(config)
        task = Task(
            task_id="",
            type=kind,
            round=1,
            config=config,
            timeout=10.0,
            names=tuple(SPEC.names),
            parameters=PARAMS,
        )
        return await fan_out(pool, task, ids, task_prefix="t")

    return send


def evaluate_federated(
    pool: InMemoryClientPool,
    select: UniformSampling,
    configs: list[Config],
    config: Config | None = None,
) -> EvaluateRecord | None:
    """Round 1's federated evaluation of ``pool``; each task's config goes to ``configs``."""
    return asyncio.run(
        federated_evaluation(
            1,
            pool=pool,
            select=select,
            rng=np.random.default_rng(0),
            config=config or {},
            send=sender(pool, configs),
            label="1/1",
        )
    )


def test_federated_evaluation_weights_the_clients() -> None:
    pool, configs = pool_of(3), list[Config]()
    record = evaluate_federated(
        pool,
        UniformSampling(min_evaluate_clients=3, min_available_clients=3),
        configs,
        {"batch_size": 8},
    )
    assert record is not None and len(record.participants) == 3
    total = sum(p.num_examples for p in record.participants)
    assert record.num_examples == total
    expected = sum(p.loss * p.num_examples for p in record.participants if p.loss) / total
    assert record.loss is not None and abs(record.loss - expected) < 1e-12
    assert configs == [{"batch_size": 8, "round": 1}]


def test_federated_evaluation_is_skipped_with_too_few_clients() -> None:
    record = evaluate_federated(pool_of(2), UniformSampling(min_evaluate_clients=3), [])
    assert record is None


def test_federated_evaluation_switched_off_sends_nothing_and_warns_of_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configs = list[Config]()
    record = evaluate_federated(
        pool_of(3), UniformSampling(fraction_evaluate=0.0, min_evaluate_clients=1), configs
    )
    assert record is None and configs == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_centralized_evaluation_in_process_or_on_the_evaluator() -> None:
    def evaluate_fn(rnd: int, params: NDArrays) -> tuple[float, Metrics]:
        assert rnd == 2 and params is PARAMS
        return 0.5, {"accuracy": 0.9}

    pool, configs = pool_of(1, evaluator=True), list[Config]()
    send, config = sender(pool, configs), Config(batch_size=4)
    server = asyncio.run(
        centralized_evaluation(
            2, PARAMS, evaluate_fn=evaluate_fn, pool=pool, config=config, send=send, label="2/2"
        )
    )
    assert server is not None
    assert (server.source, server.loss, server.metrics) == ("server", 0.5, {"accuracy": 0.9})
    assert configs == []  # no client was asked
    judged = asyncio.run(
        centralized_evaluation(
            2, PARAMS, evaluate_fn=None, pool=pool, config=config, send=send, label="2/2"
        )
    )
    assert judged is not None and judged.source == "judge" and judged.num_examples > 0
    assert configs == [{"batch_size": 4, "round": 2, "centralized": True, "split": "test"}]
    none = asyncio.run(
        centralized_evaluation(
            2, PARAMS, evaluate_fn=None, pool=pool_of(1), config={}, send=sender(pool, []), label=""
        )
    )
    assert none is None
