"""Strategies composed from pieces by name, as a config does; errors name the combination."""

from __future__ import annotations

import numpy as np
import pytest

from orchard.typing import NDArrays
from orchard_server.strategy import (
    CoordinateMedian,
    Strategy,
    StrategyError,
    TrimmedMean,
    UniformSampling,
    WeightedMean,
    compose_strategy,
    make_strategy,
)


def f64(value: float) -> NDArrays:
    return [np.array([value])]


def two_rounds(strategy: Strategy, updates: list[float]) -> float:
    """Two rounds from x0 = 0 where every client lands on x + update (one example each)."""
    params, state = f64(0.0), strategy.init(f64(0.0))
    for _ in range(2):
        aggregator = strategy.new_aggregator()
        for u in updates:
            aggregator.add([params[0] + u], 1)
        params, state = strategy.step(params, aggregator.result(), state)
    return float(params[0][0])


def test_without_pieces_it_is_the_named_strategy() -> None:
    for name, options in [("fedavg", {}), ("fedadam", {"eta": 0.5}), ("fedprox", {})]:
        composed, named = compose_strategy(name, options), make_strategy(name, options)
        assert (composed.name, composed.hyperparameters) == (named.name, named.hyperparameters)
        assert composed.fit_config == named.fit_config


@pytest.mark.parametrize(
    ("name", "options", "aggregator", "server_optimizer"),
    [
        ("fedavgm", {}, "median", ""),
        ("fedmedian", {"momentum": 0.9}, "", "sgd"),
        ("fedavg", {"momentum": 0.9}, "median", "sgd"),
        ("fedmedian", {"momentum": 0.9}, " Median ", "SGD"),
    ],
)
def test_fedmedian_with_momentum_three_ways(
    name: str, options: dict[str, float], aggregator: str, server_optimizer: str
) -> None:
    strategy = compose_strategy(
        name, options, aggregator=aggregator, server_optimizer=server_optimizer
    )
    assert strategy.name == "median+sgd"
    assert strategy.new_aggregator().__class__ is CoordinateMedian
    assert strategy.hyperparameters == {"server_lr": 1.0, "momentum": 0.9}
    # median of (+1, +2, +100) is +2 per round; momentum 0.9: 2, then 2 + 3.8 = 5.8
    assert two_rounds(strategy, [1.0, 2.0, 100.0]) == pytest.approx(5.8)


def test_pieces_added_to_named_strategies() -> None:
    trimmed_adam = compose_strategy("fedadam", {"beta": 0.25}, aggregator="trimmed_mean")
    assert trimmed_adam.name == "trimmed_mean+adam"
    aggregator = trimmed_adam.new_aggregator()
    assert isinstance(aggregator, TrimmedMean) and aggregator.beta == 0.25
    assert trimmed_adam.hyperparameters["eta"] == 0.1  # FedAdam's defaults kept
    prox = compose_strategy("fedprox", {"proximal_mu": 0.5}, aggregator="median")
    assert (prox.name, prox.fit_config) == ("median+sgd+proximal", {"proximal_mu": 0.5})
    restated = compose_strategy("fedyogi", aggregator="mean", server_optimizer="yogi")
    assert restated.new_aggregator().__class__ is WeightedMean
    assert restated.hyperparameters["eta"] == 0.01


def test_a_selection_policy_is_part_of_the_strategy() -> None:
    select = UniformSampling(fraction_fit=0.5, min_fit_clients=1, min_available_clients=1)
    assert compose_strategy("fedavg", select=select).select == select
    assert compose_strategy("fedavg", aggregator="median", select=select).select == select
    ids = [f"c{i}" for i in range(4)]
    assert len(select.select_fit(ids, np.random.default_rng(0))) == 2


@pytest.mark.parametrize(
    ("name", "options", "aggregator", "server_optimizer", "message"),
    [
        (
            "fedavg",
            {},
            "bulyan",
            "",
            "unknown aggregator 'bulyan'; valid aggregators: mean, median",
        ),
        (
            "fedavg",
            {},
            "",
            "rmsprop",
            "unknown server_optimizer 'rmsprop'; valid server_optimizers",
        ),
        ("fedsgd", {}, "median", "", "unknown strategy 'fedsgd'; valid strategies: fedavg"),
        (
            "fedadam",
            {},
            "",
            "sgd",
            "strategy 'fedadam' is defined by its server_optimizer 'adam'; server_optimizer = "
            "'sgd' contradicts it",
        ),
        (
            "fedmedian",
            {},
            "trimmed_mean",
            "",
            "strategy 'fedmedian' is defined by its aggregator 'median'; aggregator = "
            "'trimmed_mean' contradicts it",
        ),
        (
            "fedavg",
            {"eta": 0.1},
            "median",
            "sgd",
            "unknown option 'eta' for strategy 'fedavg' with aggregator 'median' and "
            "server_optimizer 'sgd'; valid options: momentum, server_lr",
        ),
        ("fedavg", {"momentum": 1.0}, "median", "", r"sgd option 'momentum' must be in \[0, 1\)"),
        ("fedavg", {"beta": 0.6}, "trimmed_mean", "", "trimmed_mean option 'beta' must be in"),
        ("fedavg", {"momentum": "high"}, "median", "", "sgd option 'momentum' must be a real"),
    ],
)
def test_bad_compositions_are_named(
    name: str, options: dict[str, object], aggregator: str, server_optimizer: str, message: str
) -> None:
    with pytest.raises(StrategyError, match=message):
        compose_strategy(
            name,
            options,  # type: ignore[arg-type]
            aggregator=aggregator,
            server_optimizer=server_optimizer,
        )
