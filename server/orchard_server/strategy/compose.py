"""Strategies composed from pieces: a named strategy with one piece swapped or added.

A config names a strategy (``strategy = "fedavgm"``) and may set the pieces it
is made of: ``aggregator`` (``mean``, ``median``, ``trimmed_mean``, ``krum``) and
``server_optimizer`` (``sgd``, ``adam``, ``yogi``, ``adagrad``). The options
then are those of the pieces in effect, each routed to the piece that declares
it. The rules, so a composition never silently drops what was asked for:

* a named strategy that *defines* a piece (FedMedian its aggregate, FedAdam
  or FedAvgM its optimizer) keeps it: setting that piece to something else is
  an error naming both; restating it is fine;
* the other pieces are FedAvg's (weighted mean, ``sgd`` with lr 1 and no
  momentum) until replaced, so ``aggregator = "median"`` with
  ``strategy = "fedavgm"`` is FedMedian with server momentum 0.9, and so is
  ``aggregator = "median"``, ``server_optimizer = "sgd"`` with
  ``momentum = 0.9``;
* FedProx's ``proximal_mu`` goes with it into any composition;
* ``clip_norm`` (update-norm clipping) wraps whatever aggregate results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from orchard.typing import Config, Scalar
from orchard_server.strategy._checks import real
from orchard_server.strategy.base import Strategy, StrategyError, split_clip_norm, with_clipping
from orchard_server.strategy.pieces import (
    AGGREGATORS,
    SERVER_OPTIMIZERS,
    AggregatorOptions,
    OptimizerOptions,
    StrategyOptions,
)
from orchard_server.strategy.selection import SelectionPolicy
from orchard_server.strategy.strategies import (
    STRATEGY_OPTIONS,
    FedProxOptions,
    NamedStrategyOptions,
    make_strategy,
)


def _piece(value: str, table: Mapping[str, type[StrategyOptions]], what: str) -> str:
    key = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(key, str) or key not in table:
        raise StrategyError(f"unknown {what} {value!r}; valid {what}s: {', '.join(table)}")
    return key


def _chosen(
    preset: type[NamedStrategyOptions],
    requested: str,
    table: Mapping[str, type[StrategyOptions]],
    what: str,
    defining: type[StrategyOptions],
) -> tuple[str, type[StrategyOptions]]:
    """The piece in effect for one slot, and the options class that builds it."""
    own = preset.aggregate_piece if defining is AggregatorOptions else preset.optimizer_piece
    name = _piece(requested, table, what) if requested else own
    if name != own and issubclass(preset, defining):
        raise StrategyError(
            f"strategy {preset.strategy!r} is defined by its {what} {own!r}; {what} = "
            f'{name!r} contradicts it (set strategy = "fedavg" to compose freely)'
        )
    # A named strategy that tunes this piece builds it with its own defaults
    # (FedAvgM's momentum 0.9), so it is used instead of the bare piece.
    return name, preset if issubclass(preset, table[name]) else table[name]


def _composed(
    name: str, options: Mapping[str, Scalar], aggregator: str, server_optimizer: str
) -> Strategy:
    key = name.strip().lower() if isinstance(name, str) else name
    preset = STRATEGY_OPTIONS.get(key) if isinstance(key, str) else None
    if preset is None:
        raise StrategyError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_OPTIONS)}"
        )
    agg_name, agg_cls = _chosen(preset, aggregator, AGGREGATORS, "aggregator", AggregatorOptions)
    opt_name, opt_cls = _chosen(
        preset, server_optimizer, SERVER_OPTIMIZERS, "server_optimizer", OptimizerOptions
    )
    classes: list[type[StrategyOptions]] = [agg_cls, opt_cls]
    label = f"{agg_name}+{opt_name}"
    if preset is FedProxOptions:
        classes.append(FedProxOptions)
        label += "+proximal"
    owner = {f.name: cls for cls in classes for f in dataclasses.fields(cls)}
    values: dict[type[StrategyOptions], dict[str, float]] = {cls: {} for cls in classes}
    for option, value in options.items():
        cls = owner.get(option)
        if cls is None:
            valid = ", ".join(sorted(owner)) or "none"
            raise StrategyError(
                f"unknown option {option!r} for strategy {preset.strategy!r} with aggregator "
                f"{agg_name!r} and server_optimizer {opt_name!r}; valid options: {valid}"
            )
        values[cls][option] = real(
            value, what=f"{cls.strategy} option {option!r}", error=StrategyError
        )
    built = {cls: cls(**values[cls]) for cls in classes}
    agg, opt = built[agg_cls], built[opt_cls]
    assert isinstance(agg, AggregatorOptions) and isinstance(opt, OptimizerOptions)
    fit_config: Config = {}
    hyperparameters: dict[str, Scalar] = {}
    for piece in built.values():
        hyperparameters.update(dataclasses.asdict(piece))
        if isinstance(piece, FedProxOptions):
            fit_config.update(piece.fit_config)
    return Strategy(
        name=label,
        aggregate=agg.aggregator(),
        optimizer=opt.optimizer(),
        fit_config=fit_config,
        hyperparameters=hyperparameters,
    )


def compose_strategy(
    name: str = "fedavg",
    options: Mapping[str, Scalar] | None = None,
    *,
    aggregator: str = "",
    server_optimizer: str = "",
    select: SelectionPolicy | None = None,
) -> Strategy:
    """The strategy a config describes: a named one, optionally with pieces set.

    Without ``aggregator`` and ``server_optimizer`` this is exactly
    :func:`make_strategy` (same options, same errors). ``select`` replaces the
    default selection policy.
    """
    if aggregator or server_optimizer:
        rest, clip = split_clip_norm(options)
        strategy = with_clipping(_composed(name, rest, aggregator, server_optimizer), clip)
    else:
        strategy = make_strategy(name, options)
    return strategy if select is None else dataclasses.replace(strategy, select=select)
