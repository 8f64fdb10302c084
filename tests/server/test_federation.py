"""The round loop, driven through the in-memory client pool."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.examples.logreg import LogRegClient, logreg_spec, make_blobs
from orchard.messages import API_VERSION, FederationState, JoinInfo, Role
from orchard.typing import Config, Metrics, NDArrays
from orchard_server.admission import AdmissionPolicy
from orchard_server.checkpoint import load_checkpoint
from orchard_server.config import FederationConfig
from orchard_server.federation import Federation, task_seed
from orchard_server.pool import InMemoryClientPool
from orchard_server.records import RoundRecord
from orchard_server.strategy import CoordinateMedian, Strategy, UniformSampling, aggregate, sgd
from tests.helpers.federations import logreg_config
from tests.helpers.histories import wait_for_rounds

SPEC = logreg_spec()


def logreg(ctx: ClientContext) -> NumPyClient:
    return LogRegClient.for_partition(ctx.partition_id)


class Exploding(NumPyClient):
    def get_parameters(self, config: Config) -> NDArrays:
        raise NotImplementedError

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        raise RuntimeError("GPU fell off the bus")

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        raise RuntimeError("GPU fell off the bus")


class NaNClient(LogRegClient):
    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        params, n, metrics = super().fit(parameters, config)
        params[1][0] = np.inf
        return params, n, metrics


def evaluate_loss(record: RoundRecord) -> float:
    assert record.evaluate is not None and record.evaluate.loss is not None, record
    return record.evaluate.loss


def run(federation: Federation) -> FederationState:
    return asyncio.run(federation.run())


def make(
    tmp_path: Path, n: int = 3, factory: Any = logreg, **overrides: Any
) -> tuple[Federation, InMemoryClientPool]:
    config = logreg_config(**overrides)
    pool = InMemoryClientPool(SPEC)
    for i in range(n):
        pool.add(factory, partition_id=i, num_partitions=n)
    return Federation(config, pool, tmp_path), pool


def test_fedavg_learns_and_writes_history_and_checkpoint(tmp_path: Path) -> None:
    x, y = make_blobs(500, seed=99)

    def central(rnd: int, params: NDArrays) -> tuple[float, Metrics]:
        client = LogRegClient.for_partition(0)
        client.data = type(client.data)(x_train=x, y_train=y, x_val=x, y_val=y)
        loss, _, metrics = client.evaluate(params, {})
        return loss, metrics

    federation, _ = make(tmp_path, num_rounds=4)
    federation.evaluate_fn = central
    assert run(federation) is FederationState.FINISHED
    history = json.loads((tmp_path / "blobs" / "history.json").read_text())
    rounds = history["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    fed_losses = [r["evaluate"]["loss"] for r in rounds]
    central_losses = [r["centralized"]["loss"] for r in rounds]
    assert fed_losses == sorted(fed_losses, reverse=True)
    assert central_losses == sorted(central_losses, reverse=True)
    assert rounds[-1]["centralized"]["metrics"]["accuracy"] > 0.8
    assert rounds[0]["fit"]["num_examples"] == 3 * 270
    # Each client's own train_loss reaches the history, as it does over gRPC.
    train_losses = [r["fit"]["metrics"]["train_loss"] for r in rounds]
    assert all(loss > 0 for loss in train_losses)
    assert train_losses[-1] < train_losses[0]
    assert (tmp_path / "blobs" / "history.png").exists()
    assert (tmp_path / "blobs" / "checkpoint.npz").exists()


def test_each_update_is_scanned_for_nan_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool checks every value where a result enters; the aggregator is told so.
    def second_scan(array: np.ndarray) -> bool:
        raise AssertionError("the aggregator scanned an update the pool had checked")

    monkeypatch.setattr(aggregate, "all_finite", second_scan)
    federation, _ = make(tmp_path, num_rounds=2, evaluate_every=0)
    assert run(federation) is FederationState.FINISHED, federation.reason
    assert len(federation.history.rounds) == 2


def test_fedavg_round_is_the_weighted_mean_of_client_updates(tmp_path: Path) -> None:
    federation, _pool = make(tmp_path, num_rounds=1, evaluate_every=0)
    federation.restore_or_init()
    start = [p.copy() for p in federation.parameters]
    config = {
        **federation.config.fit_config,
        "round": 1,
        "seed": task_seed(federation.config.seed, 1),
    }
    expected_parts = []
    for i in range(3):
        params, n, _ = LogRegClient.for_partition(i).fit([p.copy() for p in start], config)
        expected_parts.append((params, n))
    total = sum(n for _, n in expected_parts)
    expected = [
        sum(p[k].astype(np.float64) * n for p, n in expected_parts) / total for k in range(2)
    ]
    run(federation)
    for got, want in zip(federation.parameters, expected, strict=True):
        np.testing.assert_allclose(got, np.float32(want), rtol=1e-6, atol=1e-7)


def _checkpoint_round(federation: Federation) -> int | None:
    checkpoint = load_checkpoint(federation.checkpoint_path, SPEC)
    return None if checkpoint is None else checkpoint.round


def test_checkpoints_follow_checkpoint_interval_and_the_end_writes_the_last(
    tmp_path: Path,
) -> None:
    """The federation's ``checkpoint_interval`` reaches its writer: with an hour, the
    first round's checkpoint is written and the next ones wait, while every round's
    history is written; the end of the run writes the last round's."""
    seen: dict[int, tuple[int, int | None]] = {}
    federation, _ = make(tmp_path, num_rounds=4, checkpoint_interval=3600.0)

    def peek(rnd: int, params: NDArrays) -> tuple[float, Metrics]:
        if rnd > 1:  # round rnd - 1 has been handed to the writer: wait for its history
            done = wait_for_rounds(federation.directory, rnd - 1)
            deadline = time.monotonic() + 10
            while _checkpoint_round(federation) is None:  # round 1's, due at once
                assert time.monotonic() < deadline, "no checkpoint of round 1"
                time.sleep(0.01)
            time.sleep(0.2)  # room for a checkpoint that should not come
            seen[rnd] = (done, _checkpoint_round(federation))
        return 0.0, {}

    federation.evaluate_fn = peek
    assert run(federation) is FederationState.FINISHED
    assert seen == {2: (1, 1), 3: (2, 1), 4: (3, 1)}
    assert _checkpoint_round(federation) == 4


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path: Path) -> None:
    whole, _ = make(
        tmp_path / "whole", num_rounds=4, strategy="fedadam", strategy_options={"eta": 0.05}
    )
    run(whole)
    first, _ = make(
        tmp_path / "split", num_rounds=2, strategy="fedadam", strategy_options={"eta": 0.05}
    )
    run(first)
    second, _ = make(
        tmp_path / "split", num_rounds=4, strategy="fedadam", strategy_options={"eta": 0.05}
    )
    second.restore_or_init()
    assert second.rounds_completed == 2
    run(second)
    for a, b in zip(whole.parameters, second.parameters, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(second.history.rounds) == 4


def test_seeded_runs_with_a_fraction_sample_the_same_clients_whatever_the_join_order(
    tmp_path: Path,
) -> None:
    """Defect 5: session ids (here ``sim-N`` by join order) must not decide the draw.

    The same six partitions join in opposite orders, so every partition gets
    another session id; with ``fraction_fit = 0.5`` both runs must still pick
    the same partitions each round and end with the same model, bit for bit.
    """
    models, picked = [], []
    for name, order in (("forward", range(6)), ("backward", reversed(range(6)))):
        config = logreg_config(num_rounds=3, fraction_fit=0.5, fraction_evaluate=0.5)
        pool = InMemoryClientPool(SPEC)
        for i in order:
            pool.add(logreg, partition_id=i, num_partitions=6, name=f"p{i}")
        federation = Federation(config, pool, tmp_path / name)
        assert run(federation) is FederationState.FINISHED
        models.append(federation.parameters)
        picked.append(
            [sorted(o.partition for o in r.fit.participants) for r in federation.history.rounds]
        )
    assert picked[0] == picked[1]
    assert all(len(r) == 3 for r in picked[0])
    assert len({tuple(r) for r in picked[0]}) > 1  # each round draws anew
    for a, b in zip(*models, strict=True):
        assert a.tobytes() == b.tobytes()


def test_failing_and_nan_clients_are_dropped_and_the_round_goes_on(tmp_path: Path) -> None:
    config = logreg_config(
        num_rounds=2, min_available_clients=2, min_fit_clients=2, min_evaluate_clients=2
    )
    pool = InMemoryClientPool(SPEC)
    for i in range(2):
        pool.add(logreg, partition_id=i, num_partitions=4, name=f"good-{i}")
    pool.add(lambda ctx: Exploding(), partition_id=2, num_partitions=4, name="exploding")
    pool.add(lambda ctx: NaNClient.for_partition(3), partition_id=3, num_partitions=4, name="nan")
    federation = Federation(config, pool, tmp_path)
    assert run(federation) is FederationState.FINISHED
    dropped = federation.history.rounds[0].fit.dropped
    assert "GPU fell off the bus" in dropped["exploding (sim-2)"]
    assert "linear.bias" in dropped["nan (sim-3)"] and "NaN or infinite" in dropped["nan (sim-3)"]
    assert len(federation.history.rounds[0].fit.participants) == 2
    assert all(np.isfinite(p).all() for p in federation.parameters)


def test_too_few_clients_fails_after_the_bounded_wait(tmp_path: Path) -> None:
    federation, _ = make(tmp_path, n=1, wait_timeout=0.3)
    assert run(federation) is FederationState.FAILED
    assert "1 of 2 connected" in federation.reason
    assert "min_available_clients" in federation.reason


def test_too_few_results_retries_then_fails(tmp_path: Path) -> None:
    config = logreg_config(
        num_rounds=1, round_retries=1, min_fit_clients=2, min_available_clients=2
    )
    pool = InMemoryClientPool(SPEC)
    pool.add(logreg, partition_id=0, num_partitions=2)
    pool.add(lambda ctx: Exploding(), partition_id=1, num_partitions=2)
    federation = Federation(config, pool, tmp_path)
    assert run(federation) is FederationState.FAILED
    assert "round 1 got too few results 2 times" in federation.reason


@pytest.mark.parametrize(
    "strategy", ["fedmedian", "fedtrimmedavg", "fedavgm", "fedyogi", "fedadagrad", "fedprox"]
)
def test_every_strategy_runs_a_federation(tmp_path: Path, strategy: str) -> None:
    options = {
        "fedtrimmedavg": {"beta": 0.2},
        "fedyogi": {"eta": 0.05},
        "fedadagrad": {"eta": 0.05},
    }.get(strategy, {})
    federation, _ = make(tmp_path, n=5, num_rounds=2, strategy=strategy, strategy_options=options)
    assert run(federation) is FederationState.FINISHED
    losses = [evaluate_loss(r) for r in federation.history.rounds]
    assert losses[1] < losses[0], losses


def test_evaluator_role_does_centralized_evaluation(tmp_path: Path) -> None:
    federation, pool = make(tmp_path, n=2, num_rounds=1)
    pool.add(logreg, partition_id=9, num_partitions=10, role=Role.EVALUATOR, name="evaluator")
    assert run(federation) is FederationState.FINISHED
    record = federation.history.rounds[0]
    assert record.centralized is not None
    assert record.centralized.source == "evaluator"
    assert record.centralized.num_examples > 0
    assert len(record.fit.participants) == 2  # the evaluator never trains


class Stalling(LogRegClient):
    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        time.sleep(3.0)  # alive, but never answers in time
        return super().evaluate(parameters, config)


def test_a_stalled_evaluator_costs_its_own_deadline_not_the_round(tmp_path: Path) -> None:
    federation, pool = make(tmp_path, n=2, num_rounds=1, evaluator_timeout=0.3)
    pool.add(lambda ctx: Stalling.for_partition(0), role=Role.EVALUATOR, name="evaluator")
    started = time.monotonic()
    assert run(federation) is FederationState.FINISHED
    record = federation.history.rounds[0]
    assert record.centralized is not None
    assert "missed the round deadline of 0.3 s" in str(record.centralized.dropped), record
    assert record.duration_s < 2.5  # round_timeout is 30 s
    assert time.monotonic() - started < 10


def test_the_checkpoint_keeps_the_partitions_admission_handed_out(tmp_path: Path) -> None:
    config = logreg_config(num_rounds=1, num_partitions=3, evaluate_every=0)

    def policy_pool() -> InMemoryClientPool:
        return InMemoryClientPool(SPEC, "blobs", policy=AdmissionPolicy.from_config(config))

    pool = policy_pool()
    for name in ("x", "y"):
        pool.add(logreg, JoinInfo(api_version=API_VERSION, federation="blobs", instance_id=name))
    assert run(Federation(config, pool, tmp_path)) is FederationState.FINISHED
    # Resumed with rounds left (a finished run would be archived and start anew).
    config = dataclasses.replace(config, num_rounds=2)
    resumed = policy_pool()
    Federation(config, resumed, tmp_path).restore_or_init()
    assert resumed.partitions.to_json() == {"x": 0, "y": 1}
    # "y" re-joins after the restart and gets its partition back, not the least used one.
    again = resumed.add(
        logreg, JoinInfo(api_version=API_VERSION, federation="blobs", instance_id="y")
    )
    assert again.partition_id == 1


class NoLoss(LogRegClient):
    """A framework that reports no training loss."""

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        params, n, metrics = super().fit(parameters, config)
        return params, n, {k: v for k, v in metrics.items() if k != "train_loss"}


def test_a_missing_train_loss_is_left_out_of_the_average(tmp_path: Path) -> None:
    config = logreg_config(num_rounds=1, evaluate_every=0)
    pool = InMemoryClientPool(SPEC)
    pool.add(logreg, partition_id=0, num_partitions=2, name="reports")
    pool.add(lambda ctx: NoLoss.for_partition(1), partition_id=1, num_partitions=2, name="silent")
    federation = Federation(config, pool, tmp_path)
    assert run(federation) is FederationState.FINISHED
    fit = federation.history.rounds[0].fit
    losses = {p.client: p.loss for p in fit.participants}
    assert losses["silent"] is None
    assert losses["reports"] is not None and losses["reports"] > 0
    assert fit.metrics["train_loss"] == pytest.approx(losses["reports"])


class Slow(LogRegClient):
    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        import time

        time.sleep(2.0)
        return super().fit(parameters, config)


def test_a_client_missing_the_deadline_is_dropped(tmp_path: Path) -> None:
    config = logreg_config(num_rounds=1, min_fit_clients=2, round_timeout=0.5, evaluate_every=0)
    pool = InMemoryClientPool(SPEC)
    for i in range(2):
        pool.add(logreg, partition_id=i, num_partitions=3)
    pool.add(lambda ctx: Slow.for_partition(2), partition_id=2, num_partitions=3, name="slow")
    federation = Federation(config, pool, tmp_path)
    assert run(federation) is FederationState.FINISHED
    fit = federation.history.rounds[0].fit
    assert list(fit.dropped) == ["slow (sim-2)"]
    assert "missed the" in fit.dropped["slow (sim-2)"]
    assert "deadline of 0.5 s" in fit.dropped["slow (sim-2)"]
    assert len(fit.participants) == 2


class Recruiter(LogRegClient):
    """Adds another client to the pool while round 1 is running."""

    pool: InMemoryClientPool | None = None

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        if config["round"] == 1 and self.pool is not None:
            pool, self.pool = self.pool, None
            pool.add(logreg, partition_id=2, num_partitions=3, name="late")
        return super().fit(parameters, config)


def test_a_late_joiner_takes_part_from_the_next_round(tmp_path: Path) -> None:
    config = logreg_config(num_rounds=2, min_fit_clients=2, evaluate_every=0)
    pool = InMemoryClientPool(SPEC)
    recruiter = Recruiter(LogRegClient.for_partition(0).data)
    recruiter.pool = pool
    pool.add(lambda ctx: recruiter, partition_id=0, num_partitions=3)
    pool.add(logreg, partition_id=1, num_partitions=3)
    federation = Federation(config, pool, tmp_path)
    assert run(federation) is FederationState.FINISHED
    first, second = (r.fit.participants for r in federation.history.rounds)
    assert sorted(p.client for p in first) == ["sim-0", "sim-1"]
    assert sorted(p.client for p in second) == ["late", "sim-0", "sim-1"]


def test_a_finished_run_is_archived_and_the_next_start_trains_anew(tmp_path: Path) -> None:
    first, _ = make(tmp_path, num_rounds=2)
    assert run(first) is FederationState.FINISHED
    finished = json.loads((tmp_path / "blobs" / "history.json").read_text())
    again, _ = make(tmp_path, num_rounds=2)
    again.restore_or_init()
    assert again.rounds_completed == 0 and again.state is FederationState.WAITING
    archived = list((tmp_path / "blobs" / "runs").iterdir())
    assert len(archived) == 1
    assert {p.name for p in archived[0].iterdir()} == {
        "checkpoint.npz",
        "history.json",
        "history.png",
    }
    assert json.loads((archived[0] / "history.json").read_text()) == finished
    assert run(again) is FederationState.FINISHED
    assert [r.round for r in again.history.rounds] == [1, 2]
    # A third start archives the second run beside the first.
    third, _ = make(tmp_path, num_rounds=2)
    third.restore_or_init()
    assert len(list((tmp_path / "blobs" / "runs").iterdir())) == 2


def test_a_history_without_a_checkpoint_is_archived_not_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = make(tmp_path, num_rounds=2)
    assert run(first) is FederationState.FINISHED
    assert not (tmp_path / "blobs" / "runs").exists()  # nothing to archive on a first start
    # As if killed between a round's history (written first) and its checkpoint.
    (tmp_path / "blobs" / "checkpoint.npz").unlink()
    recorded = json.loads((tmp_path / "blobs" / "history.json").read_text())
    again, _ = make(tmp_path, num_rounds=2)
    with caplog.at_level(logging.WARNING, logger="orchard.server"):
        again.restore_or_init()
    assert again.rounds_completed == 0
    (archived,) = (tmp_path / "blobs" / "runs").iterdir()
    assert {p.name for p in archived.iterdir()} == {"history.json", "history.png"}
    assert json.loads((archived / "history.json").read_text()) == recorded
    assert "no checkpoint to resume from" in caplog.text
    assert str(archived) in caplog.text
    assert run(again) is FederationState.FINISHED
    assert [r.round for r in again.history.rounds] == [1, 2]
    assert json.loads((archived / "history.json").read_text()) == recorded  # still there


def test_fail_ends_a_waiting_federation_at_once_with_the_reason(tmp_path: Path) -> None:
    federation, _ = make(tmp_path, n=1, wait_timeout=60.0)

    async def scenario() -> FederationState:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, federation.fail, "client-x cannot take part: no data")
        return await asyncio.wait_for(federation.run(), timeout=10)

    assert asyncio.run(scenario()) is FederationState.FAILED
    assert federation.reason == "client-x cannot take part: no data"


def test_plot_title_names_the_model_and_the_dataset(tmp_path: Path) -> None:
    federation, _ = make(tmp_path, n=0)
    assert federation.title == "blobs: logreg"  # inline tensors: no dataset is known
    config = FederationConfig(name="fashion", model="mnist-mlp", dataset="fashion-mnist")
    fashion = Federation(config, InMemoryClientPool(config.model_spec()), tmp_path)
    assert fashion.title == "fashion: mnist-mlp on fashion-mnist"
    mnist = FederationConfig(name="digits", model="mnist-mlp")
    assert Federation(mnist, InMemoryClientPool(mnist.model_spec()), tmp_path).title == (
        "digits: mnist-mlp on mnist"
    )


class Shift(NumPyClient):
    """Returns the global parameters plus a fixed shift, trained on a fixed example count."""

    def __init__(self, shift: float, num_examples: int) -> None:
        self.shift, self.num_examples = shift, num_examples

    @classmethod
    def factory(cls, shift: float, num_examples: int) -> Callable[[ClientContext], NumPyClient]:
        return lambda ctx: cls(shift, num_examples)

    def get_parameters(self, config: Config) -> NDArrays:
        raise NotImplementedError

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        return [p + np.float32(self.shift) for p in parameters], self.num_examples, {}

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        return 0.0, self.num_examples, {}


MEDIAN_MOMENTUM = Strategy(
    select=UniformSampling(min_fit_clients=3, min_available_clients=3),
    aggregate=CoordinateMedian,
    optimizer=sgd(lr=1.0, momentum=0.9),
)


@pytest.mark.parametrize(
    ("overrides", "strategy"),
    [
        ({"strategy": "fedavgm", "aggregator": "median"}, None),
        (
            {
                "aggregator": "median",
                "server_optimizer": "sgd",
                "strategy_options": {"momentum": 0.9},
            },
            None,
        ),
        ({}, MEDIAN_MOMENTUM),
    ],
    ids=["fedavgm-with-median", "pieces-by-name", "strategy-object"],
)
def test_fedmedian_with_server_momentum_matches_the_hand_computation(
    tmp_path: Path, overrides: dict[str, Any], strategy: Strategy | None
) -> None:
    # Clients move every weight by +1, +2 and +10; the last one claims 100 times the
    # examples, which would drag a weighted mean to (1 + 2 + 1000) / 102 = 9.83 per round.
    # Median: +2 per round. Round 1: g1 = -2, v1 = -2, x1 = x0 + 2.
    # Round 2: g2 = -2, v2 = 0.9 * -2 - 2 = -3.8, x2 = x1 + 3.8 = x0 + 5.8.
    config = logreg_config(
        num_rounds=2, min_fit_clients=3, min_available_clients=3, evaluate_every=0, **overrides
    )
    pool = InMemoryClientPool(SPEC)
    for i, (shift, n) in enumerate([(1.0, 1), (2.0, 1), (10.0, 100)]):
        pool.add(Shift.factory(shift, n), partition_id=i, num_partitions=3)
    federation = Federation(config, pool, tmp_path, strategy=strategy)
    federation.restore_or_init()
    start = [p.astype(np.float64) for p in federation.parameters]
    assert run(federation) is FederationState.FINISHED
    assert not federation.strategy.incremental
    for got, x0 in zip(federation.parameters, start, strict=True):
        np.testing.assert_allclose(got, x0 + 5.8, rtol=0, atol=1e-5)
    # The optimizer state went through the checkpoint: a resumed third round keeps momentum.
    # Round 3: v3 = 0.9 * -3.8 - 2 = -5.42, x3 = x2 + 5.42 = x0 + 11.22.
    longer = dataclasses.replace(config, num_rounds=3)
    resumed = Federation(longer, pool, tmp_path, strategy=strategy)
    assert run(resumed) is FederationState.FINISHED
    for got, x0 in zip(resumed.parameters, start, strict=True):
        np.testing.assert_allclose(got, x0 + 11.22, rtol=0, atol=1e-5)
    assert [r.fit.num_examples for r in resumed.history.rounds] == [102, 102, 102]


def test_the_strategy_object_governs_selection(tmp_path: Path) -> None:
    # The config asks for all clients, the strategy's policy for 2 of 4 (and waits for 4).
    select = UniformSampling(fraction_fit=0.5, min_fit_clients=2, min_available_clients=4)
    federation, _ = make(tmp_path, n=4, num_rounds=2, evaluate_every=0)
    federation.strategy = Strategy(select=select)
    assert run(federation) is FederationState.FINISHED
    assert [len(r.fit.participants) for r in federation.history.rounds] == [2, 2]
