"""What a result may hold: every client value checked where it enters."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchard.client.numpy_client import NumPyClient
from orchard.examples.logreg import LogRegClient, logreg_spec
from orchard.messages import FederationState, Result, Role, Task, TaskType
from orchard.spec import SpecError
from orchard.typing import Config, Metrics, NDArrays
from orchard_server.config import ConfigError, FederationConfig
from orchard_server.federation import Federation
from orchard_server.pool import InMemoryClientPool
from orchard_server.results import InvalidResultError, ResultPolicy
from tests.helpers.federations import logreg_config

SPEC = logreg_spec()


def task(kind: TaskType = TaskType.FIT) -> Task:
    return Task(
        task_id="t",
        type=kind,
        round=1,
        config={},
        timeout=5.0,
        names=tuple(SPEC.names),
        parameters=[np.zeros(t.shape, np.float32) for t in SPEC.tensors],
    )


def result(**overrides: Any) -> Result:
    base: dict[str, Any] = {
        "client_id": "c",
        "task_id": "t",
        "num_examples": 10,
        "loss": 0.5,
        "metrics": {"accuracy": 0.9},
        "names": tuple(SPEC.names),
        "parameters": [np.zeros(t.shape, np.float32) for t in SPEC.tensors],
    }
    base.update(overrides)
    return Result(**base)


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "bytes metric": ({"metrics": {"blob": b"\x00"}}, "metric 'blob' is bytes"),
    "nan metric": ({"metrics": {"acc": math.nan}}, "metric 'acc' must be finite"),
    "inf metric": ({"metrics": {"acc": math.inf}}, "must be finite"),
    "huge int metric": ({"metrics": {"n": 2**64 - 1}}, "beyond +-2^53"),
    "long string metric": ({"metrics": {"s": "x" * 5000}}, "at most 1024"),
    "too many metrics": ({"metrics": {f"m{i}": 1 for i in range(65)}}, "65 metrics"),
    "empty metric name": ({"metrics": {"": 1}}, "metric name"),
    "nan loss": ({"loss": math.nan}, "loss must be a finite number"),
    "inf loss": ({"loss": -math.inf}, "loss must be a finite number"),
    "no examples": ({"num_examples": 0}, "num_examples must be >= 1"),
    "10^15 examples": ({"num_examples": 10**15}, "max_examples_per_client"),
    "uint64 max (a C client's -1)": ({"num_examples": 2**64 - 1}, "max_examples_per_client"),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("kind", [TaskType.FIT, TaskType.EVALUATE])
def test_a_bad_value_is_refused_naming_it(case: str, kind: TaskType) -> None:
    overrides, needle = REFUSED[case]
    if kind is TaskType.EVALUATE:
        overrides = {**overrides, "names": (), "parameters": []}
        if case == "no examples":
            pytest.skip("an evaluation may report 0 examples")
    with pytest.raises(InvalidResultError, match=None) as refused:
        ResultPolicy().check(SPEC, task(kind), result(**overrides))
    assert needle in str(refused.value)


def test_good_results_pass_and_parameters_are_checked_against_the_spec() -> None:
    policy = ResultPolicy()
    policy.check(SPEC, task(), result(metrics={"a": 1, "b": True, "c": "x", "d": 0.5}))
    policy.check(SPEC, task(TaskType.EVALUATE), result(names=(), parameters=[], num_examples=0))
    policy.check(SPEC, task(), result(loss=None))
    with pytest.raises(SpecError):
        policy.check(SPEC, task(), result(parameters=[np.zeros((1,), np.float32)]))
    # A failed task carries no values to check.
    policy.check(SPEC, task(), result(error="oom", num_examples=10**15))


def test_values_checked_by_a_simulation_worker_are_not_scanned_again() -> None:
    policy = ResultPolicy()
    poisoned = [np.full(t.shape, np.nan, np.float32) for t in SPEC.tensors]
    with pytest.raises(SpecError, match="NaN or infinite"):
        policy.check(SPEC, task(), result(parameters=poisoned))
    policy.check(SPEC, task(), result(parameters=poisoned), values_checked=True)
    # The layout and every other value are still checked.
    with pytest.raises(SpecError, match="expected shape"):
        policy.check(
            SPEC, task(), result(parameters=[np.zeros(1, np.float32)] * 2), values_checked=True
        )
    with pytest.raises(InvalidResultError, match="loss must be a finite number"):
        policy.check(SPEC, task(), result(loss=math.nan), values_checked=True)


def test_weighting_policies() -> None:
    examples = ResultPolicy(max_examples_per_client=100)
    capped = ResultPolicy(max_examples_per_client=100, example_weighting="capped")
    uniform = ResultPolicy(max_examples_per_client=100, example_weighting="uniform")
    assert [examples.weight(50), capped.weight(50), uniform.weight(50)] == [50, 50, 1]
    assert [capped.weight(10**15), uniform.weight(10**15)] == [100, 1]
    # Only "examples" refuses a count above the cap: the others neutralise it.
    with pytest.raises(InvalidResultError):
        examples.check(SPEC, task(), result(num_examples=101))
    capped.check(SPEC, task(), result(num_examples=10**15))
    uniform.check(SPEC, task(), result(num_examples=10**15))
    with pytest.raises(ValueError, match="example_weighting"):
        ResultPolicy(example_weighting="loudest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_examples_per_client"):
        ResultPolicy(max_examples_per_client=0)


def test_the_config_carries_the_policy() -> None:
    base: dict[str, Any] = {"name": "f", "model": "logreg", "tensors": SPEC.tensors}
    config = FederationConfig(**base, max_examples_per_client=7, example_weighting="capped")
    assert ResultPolicy.from_config(config) == ResultPolicy(
        max_examples_per_client=7, example_weighting="capped"
    )
    with pytest.raises(ConfigError, match="example_weighting"):
        FederationConfig(**base, example_weighting="most")


# --- a federation with liars: they are dropped, it finishes, history is strict JSON ---


class Liar(LogRegClient):
    """Trains honestly but reports what ``lie`` says."""

    lie: dict[str, Any]

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        params, n, metrics = super().fit(parameters, config)
        params = [p + np.float32(5.0) for p in params]  # a large, visible update
        return params, self.lie.get("num_examples", n), {**metrics, **self.lie.get("metrics", {})}

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        loss, n, metrics = super().evaluate(parameters, config)
        return (
            self.lie.get("loss", loss),
            self.lie.get("num_examples", n),
            {**metrics, **self.lie.get("metrics", {})},
        )


def liar(lie: dict[str, Any], partition: int) -> NumPyClient:
    client = Liar.for_partition(partition)
    assert isinstance(client, Liar)
    client.lie = lie
    return client


LIES: dict[str, dict[str, Any]] = {
    "10^15 examples": {"num_examples": 10**15},
    "uint64 max examples": {"num_examples": 2**64 - 1},
    "bytes metric": {"metrics": {"blob": b"\x00\x01"}},
    "nan metric": {"metrics": {"accuracy": math.nan}},
    "infinite loss": {"loss": math.inf, "metrics": {"train_loss": math.inf}},
}


@pytest.mark.parametrize("case", list(LIES))
def test_no_single_liar_moves_the_model_or_fails_the_federation(tmp_path: Path, case: str) -> None:
    config = logreg_config(num_rounds=2)
    pool = InMemoryClientPool(SPEC)
    for i in range(2):
        pool.add(
            lambda ctx: LogRegClient.for_partition(ctx.partition_id),
            partition_id=i,
            num_partitions=3,
            name=f"honest-{i}",
        )
    pool.add(lambda ctx: liar(LIES[case], 2), partition_id=2, num_partitions=3, name="liar")
    pool.add(lambda ctx: liar(LIES[case], 0), role=Role.EVALUATOR, name="evaluator")
    federation = Federation(config, pool, tmp_path)
    assert asyncio.run(federation.run()) is FederationState.FINISHED, federation.reason
    # Strict JSON: no NaN, no Infinity, no bytes.
    text = (tmp_path / "blobs" / "history.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"history holds {c}"))
    assert (tmp_path / "blobs" / "checkpoint.npz").exists()
    for record in federation.history.rounds:
        evaluate = record.evaluate
        assert evaluate is not None and record.centralized is not None
        names = {p.client for p in record.fit.participants}
        # Refused at entry: the liar's update never reached the average.
        assert names == {"honest-0", "honest-1"}
        assert "liar (sim-2)" in record.fit.dropped
        assert record.centralized.dropped, record.centralized
        assert evaluate.loss is not None and evaluate.loss < 10
        assert all(np.isfinite(p).all() and np.abs(p).max() < 4 for p in federation.parameters)


def test_uniform_weighting_bounds_a_liar_without_refusing_it(tmp_path: Path) -> None:
    config = logreg_config(
        num_rounds=1, evaluate_every=0, max_examples_per_client=1000, example_weighting="uniform"
    )
    pool = InMemoryClientPool(SPEC, results=ResultPolicy.from_config(config))
    for i in range(2):
        pool.add(
            lambda ctx: LogRegClient.for_partition(ctx.partition_id),
            partition_id=i,
            num_partitions=3,
        )
    pool.add(lambda ctx: liar({"num_examples": 10**15}, 2), partition_id=2, num_partitions=3)
    federation = Federation(config, pool, tmp_path)
    assert asyncio.run(federation.run()) is FederationState.FINISHED
    assert len(federation.history.rounds[0].fit.participants) == 3
    # Three equal weights: the liar's +5 moves the mean by about 5/3, not 5.
    bias = federation.parameters[1]
    assert 1.0 < float(np.mean(bias)) < 2.5
