"""Krum / Multi-Krum and update-norm clipping: the rules, their options and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from orchard.typing import Config
from orchard_server.strategy import (
    AggregationError,
    CoordinateMedian,
    Krum,
    NormClipping,
    StrategyError,
    WeightedMean,
    compose_strategy,
    krum,
    make_strategy,
)


def honest(i: int) -> list[np.ndarray]:
    rng = np.random.default_rng(i)
    return [np.float32(1.0) + rng.normal(0, 0.01, (3, 2)).astype(np.float32), np.zeros(2, "f4")]


def test_krum_picks_an_honest_update_and_ignores_a_far_outlier() -> None:
    updates = [(honest(i), 10) for i in range(4)]
    updates.append(([np.full((3, 2), 100.0, "f4"), np.full(2, -50.0, "f4")], 10_000))
    result = krum(updates, num_malicious=1)
    assert any(
        all(np.array_equal(r, u) for r, u in zip(result, up, strict=True)) for up, _ in updates[:4]
    )


def test_krum_scores_are_the_sums_of_squared_distances_to_the_nearest_others() -> None:
    # 1-D points 0, 1, 2, 10 with f = 0: each scored over its n - f - 2 = 2 nearest.
    agg = Krum(num_malicious=0)
    for x in (0.0, 1.0, 2.0, 10.0):
        agg.add([np.array([x])], 1)
    assert agg.scores() == pytest.approx([1 + 4, 1 + 1, 1 + 4, 64 + 81])
    assert agg.selected() == [1]


def test_multikrum_averages_the_m_most_central_updates() -> None:
    agg = Krum(num_malicious=1, num_selected=0)  # m = n - f = 4
    for x in (0.0, 1.0, 2.0, 3.0, 100.0):
        agg.add([np.array([x])], 1)
    assert sorted(agg.selected()) == [0, 1, 2, 3]
    np.testing.assert_allclose(agg.result()[0], [1.5])
    two = Krum(num_malicious=1, num_selected=2)
    for x in (0.0, 1.0, 2.0, 3.0, 100.0):
        two.add([np.array([x])], 1)
    assert len(two.selected()) == 2 and 4 not in two.selected()


def test_krum_with_few_updates_still_answers_and_keeps_dtypes() -> None:
    agg = Krum(num_malicious=2)
    agg.add([np.array([1, 2], dtype=np.int64)], 1)
    assert agg.result()[0].dtype == np.int64
    agg.add([np.array([3, 4], dtype=np.int64)], 1)
    assert agg.result()[0].tolist() in ([1, 2], [3, 4])
    assert not agg.incremental


def test_krum_refuses_bad_options_and_bad_updates() -> None:
    with pytest.raises(AggregationError, match="num_malicious"):
        Krum(num_malicious=-1)
    with pytest.raises(AggregationError, match="before any update"):
        Krum().result()
    agg = Krum()
    agg.add([np.zeros(2)], 1)
    with pytest.raises(AggregationError, match="NaN"):
        agg.add([np.array([np.nan, 0.0])], 1)
    assert agg.count == 1


def test_clipping_bounds_each_update_norm_around_the_reference() -> None:
    reference = [np.zeros((2, 2), "f4"), np.zeros(2, "f4")]
    clipped = NormClipping(WeightedMean(), reference, max_norm=1.0)
    big = [np.full((2, 2), 30.0, "f4"), np.full(2, 40.0, "f4")]  # norm sqrt(4*900 + 2*1600)
    clipped.add(big, 5)
    out = clipped.result()
    norm = np.sqrt(sum(float((o.astype(np.float64) ** 2).sum()) for o in out))
    assert norm == pytest.approx(1.0, rel=1e-6)
    assert clipped.clipped == 1 and clipped.incremental
    # A small update passes unchanged; the direction of a clipped one is kept.
    small = NormClipping(WeightedMean(), reference, max_norm=1.0)
    tiny = [np.full((2, 2), 0.1, "f4"), np.zeros(2, "f4")]
    small.add(tiny, 1)
    np.testing.assert_array_equal(small.result()[0], tiny[0])
    assert small.clipped == 0
    ratio = out[0][0, 0] / out[1][0]
    assert ratio == pytest.approx(30 / 40, rel=1e-5)


def test_clipping_leaves_refusals_to_the_inner_aggregator() -> None:
    clipped = NormClipping(CoordinateMedian(), [np.zeros(2)], max_norm=1.0)
    with pytest.raises(AggregationError, match="NaN"):
        clipped.add([np.array([np.inf, 0.0])], 1)
    clipped.add([np.array([5.0, 0.0])], 1)
    with pytest.raises(AggregationError, match="shape"):
        clipped.add([np.zeros(3)], 1)
    np.testing.assert_allclose(clipped.result()[0], [1.0, 0.0])
    with pytest.raises(AggregationError, match="clip_norm"):
        NormClipping(WeightedMean(), [np.zeros(2)], max_norm=0.0)


def test_clipping_passes_assume_finite_to_the_inner_aggregator() -> None:
    clipped = NormClipping(WeightedMean(), [np.zeros(2)], max_norm=1.0)
    # Unclipped (the norm is not finite): the inner aggregator does not scan either.
    clipped.add([np.array([np.inf, 0.0])], 1, assume_finite=True)
    clipped.add([np.array([5.0, 0.0])], 1, assume_finite=True)  # clipped
    assert clipped.count == 2 and clipped.clipped == 1
    with pytest.raises(AggregationError, match="NaN"):
        clipped.add([np.array([np.inf, 0.0])], 1)


def test_named_and_composed_strategies_take_krum_and_clip_norm() -> None:
    assert make_strategy("krum").hyperparameters == {"num_malicious": 1, "num_selected": 1}
    multi = make_strategy("multikrum", {"num_malicious": 2})
    assert multi.hyperparameters == {"num_malicious": 2.0, "num_selected": 0}
    assert not multi.incremental
    clipped = make_strategy("fedavg", {"clip_norm": 2.5})
    assert clipped.clip_norm == 2.5 and clipped.hyperparameters == {"clip_norm": 2.5}
    assert isinstance(clipped.new_aggregator([np.zeros(1)]), NormClipping)
    with pytest.raises(StrategyError, match="global parameters"):
        clipped.new_aggregator()
    composed = compose_strategy(
        "fedavgm", {"num_malicious": 1, "clip_norm": 1.0}, aggregator="krum"
    )
    assert composed.clip_norm == 1.0 and not composed.incremental
    with pytest.raises(StrategyError, match="whole number"):
        make_strategy("krum", {"num_malicious": 1.5})
    with pytest.raises(StrategyError, match="clip_norm"):
        make_strategy("fedavg", {"clip_norm": -1})
    with pytest.raises(StrategyError, match="clip_norm"):
        make_strategy("fedmedian", {"clip_norm": "big"})


# --- poisoning: 1 of 5 clients attacks ------------------------------------------------

NOISE = 2.5  # blobs made hard enough that accuracy is informative (clean run ~0.84)
ROUNDS = 5
#: The robust strategies must end within this many accuracy points of their clean run.
MARGIN = 0.05
ROBUST: dict[str, dict[str, float]] = {
    "fedmedian": {},
    "fedtrimmedavg": {"beta": 0.2},
    "krum": {"num_malicious": 1},
    "multikrum": {"num_malicious": 1},
    "fedavg+clip": {"clip_norm": 0.5},
}
#: The attacker sends ``x_t + factor * (x_i - x_t)``: its honest update, sign-flipped
#: and boosted (as a model-replacement attacker would), or scaled up.
ATTACKS = {"sign_flip": -10.0, "scaled": 100.0}


def _noisy_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from orchard.examples.logreg import make_blobs

    x, y = make_blobs(n, seed=seed)
    noise = np.random.default_rng(seed + 10_000).normal(0.0, NOISE, x.shape)
    return (x + noise).astype(np.float32), y


def _federate(strategy_name: str, options: dict[str, float], attack: float | None) -> float:
    """Rounds of the strategy's own aggregate and step (as the round loop runs them);
    the test-set accuracy of the final model."""
    from orchard.examples.logreg import LogRegClient, LogRegData, logreg_spec
    from orchard_server.federation import task_seed

    clients = []
    for i in range(5):
        x, y = _noisy_blobs(300, seed=i + 1)
        clients.append(
            LogRegClient(LogRegData(x_train=x[:270], y_train=y[:270], x_val=x[270:], y_val=y[270:]))
        )
    name = strategy_name.split("+", maxsplit=1)[0]
    strategy = make_strategy(name, options)
    params = [np.zeros(t.shape, np.float32) for t in logreg_spec().tensors]
    state = strategy.init(params)
    for rnd in range(1, ROUNDS + 1):
        config: Config = {
            "epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "seed": task_seed(1, rnd),
        }
        aggregator = strategy.new_aggregator(params)
        for i, client in enumerate(clients):
            update, n, _ = client.fit([p.copy() for p in params], config)
            if attack is not None and i == 4:
                update = [
                    (p0 + attack * (p.astype(np.float64) - p0)).astype(np.float32)
                    for p, p0 in zip(update, params, strict=True)
                ]
            aggregator.add(update, n)
        params, state = strategy.step(params, aggregator.result(), state)
    x_test, y_test = _noisy_blobs(2000, seed=4242)
    probe = clients[0]
    probe.data = LogRegData(x_train=x_test, y_train=y_test, x_val=x_test, y_val=y_test)
    accuracy = probe.evaluate(params, {})[2]["accuracy"]
    assert isinstance(accuracy, float)
    return accuracy


def test_one_poisoned_client_of_five_breaks_fedavg_but_not_the_robust_strategies() -> None:
    """Seeded and bit-reproducible, so the figures are exact (docs/robustness.md quotes them)."""
    clean = {name: _federate(name, options, None) for name, options in ROBUST.items()}
    fedavg_clean = _federate("fedavg", {}, None)
    assert fedavg_clean > 0.8
    figures: dict[str, dict[str, float]] = {}
    for attack, factor in ATTACKS.items():
        fedavg = _federate("fedavg", {}, factor)
        figures[attack] = {"fedavg": fedavg}
        for name, options in ROBUST.items():
            accuracy = _federate(name, options, factor)
            figures[attack][name] = accuracy
            assert accuracy >= clean[name] - MARGIN, (attack, name, accuracy, clean[name])
            assert accuracy > fedavg, (attack, name)
    print({"clean": {"fedavg": fedavg_clean, **clean}, **figures})
    # Sign-flipped and boosted, one client in five drags FedAvg to chance level (0.25).
    assert figures["sign_flip"]["fedavg"] < 0.3
    # Scaled up, the update keeps its direction: FedAvg still loses accuracy.
    assert figures["scaled"]["fedavg"] < fedavg_clean - 0.03
