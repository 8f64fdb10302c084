"""Named strategies: composition, defaults, one round end to end, option errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from orchard.typing import NDArrays
from orchard_server.strategy import (
    STRATEGY_NAMES,
    CoordinateMedian,
    FedAdamOptions,
    FedTrimmedAvgOptions,
    SgdState,
    Strategy,
    StrategyError,
    TrimmedMean,
    WeightedMean,
    make_strategy,
    parse_options,
    sgd,
)


def f64(value: float) -> NDArrays:
    return [np.array([value])]


def round_trip(
    strategy: Strategy, params: NDArrays, results: list[tuple[NDArrays, int]]
) -> NDArrays:
    """One round: fold the updates into a fresh aggregator, then the server step."""
    aggregator = strategy.new_aggregator()
    for arrays, num_examples in results:
        aggregator.add(arrays, num_examples)
    new, _ = strategy.step(params, aggregator.result(), strategy.init(params))
    return new


def test_the_named_strategies() -> None:
    assert STRATEGY_NAMES == (
        "fedavg",
        "fedavgm",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "fedprox",
        "fedmedian",
        "fedtrimmedavg",
        "krum",
        "multikrum",
    )
    for name in STRATEGY_NAMES:
        strategy = make_strategy(name, {})
        assert strategy.name == name
    assert make_strategy(" FedAdam ").name == "fedadam"


def test_incremental_only_for_mean_type_aggregates() -> None:
    incremental = {name: make_strategy(name).incremental for name in STRATEGY_NAMES}
    assert incremental == {
        "fedavg": True,
        "fedavgm": True,
        "fedadam": True,
        "fedyogi": True,
        "fedadagrad": True,
        "fedprox": True,
        "fedmedian": False,
        "fedtrimmedavg": False,
        "krum": False,
        "multikrum": False,
    }
    assert isinstance(make_strategy("fedmedian").new_aggregator(), CoordinateMedian)
    trimmed = make_strategy("fedtrimmedavg", {"beta": 0.3}).new_aggregator()
    assert isinstance(trimmed, TrimmedMean)
    assert trimmed.beta == 0.3


def test_defaults_and_fit_config() -> None:
    assert make_strategy("fedadam").hyperparameters == {
        "eta": 0.1,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-9,
    }
    assert make_strategy("fedyogi").hyperparameters == {
        "eta": 0.01,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
    }
    assert make_strategy("fedadagrad").hyperparameters == {"eta": 0.1, "beta1": 0.0, "tau": 1e-9}
    assert make_strategy("fedavgm").hyperparameters == {"server_lr": 1.0, "momentum": 0.9}
    assert make_strategy("fedtrimmedavg").hyperparameters == {"beta": 0.2}
    assert make_strategy("fedavg").hyperparameters == {}
    assert make_strategy("fedavg").fit_config == {}
    assert make_strategy("fedprox").fit_config == {"proximal_mu": 0.1}
    assert make_strategy("fedprox", {"proximal_mu": 1}).fit_config == {"proximal_mu": 1.0}


def test_fedavg_round_is_the_weighted_mean_exactly() -> None:
    # (1 * 2 + 3 * 4) / 4 = 3.5 and (1 * 0.25 + 3 * -0.75) / 4 = -0.5
    params: NDArrays = [np.array([1.0], np.float32), np.array([0.125], np.float32)]
    results: list[tuple[NDArrays, int]] = [
        ([np.array([2.0], np.float32), np.array([0.25], np.float32)], 1),
        ([np.array([4.0], np.float32), np.array([-0.75], np.float32)], 3),
    ]
    for name in ("fedavg", "fedprox"):
        new = round_trip(make_strategy(name), params, results)
        assert [a.tolist() for a in new] == [[3.5], [-0.5]]
        assert [a.dtype for a in new] == [np.float32, np.float32]


def test_fedavgm_two_rounds_by_hand() -> None:
    # momentum 0.9, lr 1. round 1: x0 = 1, mean (1 * 2 + 3 * 4) / 4 = 3.5, g1 = -2.5,
    # v1 = -2.5, x1 = 3.5. round 2: one client at 2.0, g2 = 1.5, v2 = -2.25 + 1.5 = -0.75,
    # x2 = 3.5 + 0.75 = 4.25
    strategy = make_strategy("fedavgm")
    params = f64(1.0)
    state = strategy.init(params)
    params, state = strategy.step(params, f64(3.5), state)
    assert params[0].tolist() == [3.5]
    params, state = strategy.step(params, f64(2.0), state)
    assert params[0].tolist() == [pytest.approx(4.25, rel=1e-15)]


def test_fedadam_round_by_hand() -> None:
    # eta 1, beta1 0.5, beta2 0.5, tau 1: x0 = 1, clients 0.5 (n=1) and 2.5 (n=3):
    # mean (0.5 + 7.5) / 4 = 2, d = 1, m = 0.5, v = 0.5 * 1 + 0.5 * 1 = 1,
    # x1 = 1 + 0.5 / (1 + 1) = 1.25
    strategy = make_strategy("fedadam", {"eta": 1, "beta1": 0.5, "beta2": 0.5, "tau": 1})
    new = round_trip(strategy, f64(1.0), [(f64(0.5), 1), (f64(2.5), 3)])
    assert new[0].tolist() == [1.25]


def test_fedmedian_and_fedtrimmedavg_resist_an_outlier() -> None:
    results = [(f64(v), 10) for v in (1.0, 2.0, 3.0, 4.0)] + [(f64(1e9), 1000)]
    # median of 1, 2, 3, 4, 1e9 is 3; trimming one per side (beta 0.2 of 5) keeps 2, 3, 4
    assert round_trip(make_strategy("fedmedian"), f64(0.0), results)[0].tolist() == [3.0]
    assert round_trip(make_strategy("fedtrimmedavg"), f64(0.0), results)[0].tolist() == [3.0]
    # while FedAvg follows the heavy outlier: (100 + 1e12) / 1040
    fedavg = round_trip(make_strategy("fedavg"), f64(0.0), results)[0]
    assert fedavg.tolist() == [pytest.approx((10.0 * 10 + 1e9 * 1000) / 1040)]


def test_step_refuses_an_aggregate_for_another_model() -> None:
    strategy = make_strategy("fedavg")
    params: NDArrays = [np.zeros(2, np.float32)]
    state = strategy.init(params)
    with pytest.raises(StrategyError, match="fedavg: the aggregate has 2 tensors, the model 1"):
        strategy.step(params, [np.zeros(2, np.float32)] * 2, state)
    with pytest.raises(StrategyError, match=r"aggregate tensor 0 is float64\[2\]"):
        strategy.step(params, [np.zeros(2)], state)
    with pytest.raises(StrategyError, match="fedavg: sgd was given a AdaptiveState"):
        strategy.step(params, params, make_strategy("fedadam").init(params))


def test_a_strategy_can_be_composed_by_hand() -> None:
    strategy = Strategy(
        name="trimmed-momentum",
        optimizer=sgd(lr=1.0, momentum=0.5),
        aggregate=lambda: TrimmedMean(0.25),
    )
    assert not strategy.incremental
    assert strategy.fit_config == {}
    results = [(f64(v), 1) for v in (0.0, 1.0, 2.0, 100.0)]
    # int(0.25 * 4) = 1 per side: mean(1, 2) = 1.5 ; x0 = 0 -> g = -1.5 -> x1 = 1.5
    assert round_trip(strategy, f64(0.0), results)[0].tolist() == [1.5]


def test_strategies_and_options_are_frozen_and_keyword_only() -> None:
    strategy = make_strategy("fedavg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        FedAdamOptions(0.1)  # type: ignore[call-arg]
    options = FedAdamOptions(eta=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.eta = 1.0  # type: ignore[misc]
    assert parse_options("fedadam", {"eta": 0.5}) == options
    assert isinstance(WeightedMean(), WeightedMean)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("fedsgd", {}, "unknown strategy 'fedsgd'; valid strategies: fedavg, fedavgm, fedadam"),
        (
            "fedadam",
            {"lr": 0.1},
            "unknown option 'lr' for strategy 'fedadam'; valid options: beta1, beta2, eta, tau",
        ),
        ("fedavg", {"eta": 0.1}, "unknown option 'eta' for strategy 'fedavg'; it takes no options"),
        ("fedadam", {"eta": "0.1"}, "fedadam option 'eta' must be a real number, got '0.1'"),
        ("fedavgm", {"momentum": True}, "fedavgm option 'momentum' must be a real number"),
        ("fedadam", {"eta": math.nan}, "fedadam option 'eta' must be finite"),
        ("fedadam", {"beta2": 1.0}, r"fedadam option 'beta2' must be in \[0, 1\)"),
        ("fedyogi", {"tau": 0}, r"fedyogi option 'tau' must be in \(0, inf\)"),
        ("fedadagrad", {"beta1": -0.1}, "fedadagrad option 'beta1'"),
        ("fedavgm", {"server_lr": 0.0}, "fedavgm option 'server_lr'"),
        ("fedavgm", {"momentum": 1.0}, "fedavgm option 'momentum'"),
        ("fedprox", {"proximal_mu": 0.0}, r"fedprox option 'proximal_mu' must be in \(0, inf\)"),
        ("fedtrimmedavg", {"beta": 0.5}, r"fedtrimmedavg option 'beta' must be in \[0, 0.5\)"),
    ],
)
def test_bad_names_and_options_are_refused(
    name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(StrategyError, match=message):
        make_strategy(name, options)  # type: ignore[arg-type]


def test_strategy_error_is_a_value_error() -> None:
    assert issubclass(StrategyError, ValueError)
    with pytest.raises(StrategyError):
        FedTrimmedAvgOptions(beta=-1.0)


def test_plain_fedavg_takes_the_aggregate_itself() -> None:
    # x - (x - a) in float64 loses a when a is tiny beside x; FedAvg's step
    # must not: it lands on the aggregate bit for bit, and counts the step.
    strategy = make_strategy("fedavg")
    params: NDArrays = [np.array([1e8, -3.0], np.float32), np.array([7, 9], np.int64)]
    aggregate: NDArrays = [np.array([1e-30, 2.5], np.float32), np.array([8, -1], np.int64)]
    state = strategy.init(params)
    new, new_state = strategy.step(params, aggregate, state)
    assert [a.tobytes() for a in new] == [a.tobytes() for a in aggregate]
    assert [a.dtype for a in new] == [np.float32, np.int64]
    assert new_state == SgdState(step=1, velocity=())
    # Any other SGD still steps through the pseudo-gradient.
    assert sgd(lr=1.0).advance is not None
    assert sgd(lr=0.5).advance is None and sgd(lr=1.0, momentum=0.9).advance is None
    halving = dataclasses.replace(strategy, optimizer=sgd(lr=0.5))
    halfway, _ = halving.step(params, aggregate, state)
    assert halfway[0].tolist() == [np.float32(5e7), np.float32(-0.25)]
