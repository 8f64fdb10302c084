"""The curated public API of orchard_server.strategy."""

from __future__ import annotations

from orchard_server import strategy

PUBLIC = {
    # selection
    "SelectionError",
    "SelectionPolicy",
    "UniformSampling",
    "sample_clients",
    "sample_size",
    "round_rng",
    # robust aggregation
    "Krum",
    "NormClipping",
    "krum",
    "KrumOptions",
    "KrumStrategyOptions",
    "MultiKrumOptions",
    # aggregate
    "AggregationError",
    "Aggregator",
    "CoordinateMedian",
    "TrimmedMean",
    "WeightedMean",
    "median",
    "trimmed_mean",
    "weighted_average_loss",
    "weighted_average_metrics",
    "weighted_mean",
    # optimizers
    "AdaptiveState",
    "OptimizerError",
    "ServerOptimizer",
    "SgdState",
    "State",
    "adagrad",
    "adam",
    "pseudo_gradient",
    "sgd",
    "state_from_arrays",
    "state_to_arrays",
    "yogi",
    # pieces
    "AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "AdagradOptions",
    "AdamOptions",
    "AggregatorOptions",
    "MeanOptions",
    "MedianOptions",
    "OptimizerOptions",
    "SgdOptions",
    "TrimmedMeanOptions",
    "YogiOptions",
    # strategies
    "NamedStrategyOptions",
    "compose_strategy",
    "STRATEGY_NAMES",
    "STRATEGY_OPTIONS",
    "FedAdagradOptions",
    "FedAdamOptions",
    "FedAvgMOptions",
    "FedAvgOptions",
    "FedMedianOptions",
    "FedProxOptions",
    "FedTrimmedAvgOptions",
    "FedYogiOptions",
    "Strategy",
    "StrategyError",
    "StrategyOptions",
    "make_strategy",
    "parse_options",
}


def test_all_lists_exactly_the_public_api() -> None:
    assert set(strategy.__all__) == PUBLIC
    assert len(strategy.__all__) == len(PUBLIC)
    for name in strategy.__all__:
        assert getattr(strategy, name) is not None


def test_errors_are_value_errors() -> None:
    for error in (
        strategy.SelectionError,
        strategy.AggregationError,
        strategy.OptimizerError,
        strategy.StrategyError,
    ):
        assert issubclass(error, ValueError)
