"""Named federated strategies, each a composition of pieces.

A strategy (:class:`.Strategy`) is a client-selection policy, an aggregate and
a server optimizer, plus the extra config it sends to clients. The named
strategies are therefore a few lines each, built from the pieces of
:mod:`.pieces`:

============== ===================== ======================= ==========================
name           aggregate             server optimizer        paper
============== ===================== ======================= ==========================
fedavg         weighted mean         sgd(lr=1)               McMahan et al. 2017
fedavgm        weighted mean         sgd(lr, momentum)       Hsu et al. 2019
fedadam        weighted mean         adam                    Reddi et al. 2020
fedyogi        weighted mean         yogi                    Reddi et al. 2020
fedadagrad     weighted mean         adagrad                 Reddi et al. 2020
fedprox        weighted mean         sgd(lr=1)               Li et al. 2020
fedmedian      coordinate median     sgd(lr=1)               Yin et al. 2018
fedtrimmedavg  trimmed mean (beta)   sgd(lr=1)               Yin et al. 2018
krum           Krum (f, m=1)         sgd(lr=1)               Blanchard et al. 2017
multikrum      Multi-Krum (f, m)     sgd(lr=1)               Blanchard et al. 2017
============== ===================== ======================= ==========================

Every one of them also takes ``clip_norm`` (> 0: each client's update is
clipped to that L2 norm before aggregation, :class:`.NormClipping`).

FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith 2020, "Federated
Optimization in Heterogeneous Networks") changes nothing on the server: clients
add ``mu/2 * ||w - w_t||^2`` to their loss, and the server's only part is to
send ``proximal_mu`` in every fit config.

Hyperparameters are small frozen keyword-only dataclasses, one per strategy
(a subclass of the piece it tunes, where it tunes one); :func:`make_strategy`
builds a strategy from a name and a mapping of options (from a config file or
the command line) and names the valid choices when something is wrong. Each
class also names the aggregate and server-optimizer pieces it is made of, so
:func:`.compose_strategy` can swap one of them.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from orchard.typing import Config, Scalar
from orchard_server.strategy._checks import real
from orchard_server.strategy.aggregate import Aggregator, WeightedMean
from orchard_server.strategy.base import Strategy, StrategyError, split_clip_norm, with_clipping
from orchard_server.strategy.optimizers import ServerOptimizer, sgd
from orchard_server.strategy.pieces import (
    AdagradOptions,
    AdamOptions,
    KrumOptions,
    MedianOptions,
    SgdOptions,
    StrategyOptions,
    TrimmedMeanOptions,
    YogiOptions,
)


@dataclass(frozen=True, kw_only=True)
class NamedStrategyOptions(StrategyOptions):
    """Base of the named strategies' options: which pieces, and how to build them."""

    #: The aggregate piece (a key of :data:`.AGGREGATORS`) this strategy uses.
    aggregate_piece: ClassVar[str] = "mean"
    #: The server-optimizer piece (a key of :data:`.SERVER_OPTIMIZERS`) it uses.
    optimizer_piece: ClassVar[str] = "sgd"

    def _strategy(
        self,
        optimizer: ServerOptimizer,
        aggregate: Callable[[], Aggregator] = WeightedMean,
        fit_config: Config | None = None,
    ) -> Strategy:
        return Strategy(
            name=self.strategy,
            optimizer=optimizer,
            aggregate=aggregate,
            fit_config=dict(fit_config or {}),
            hyperparameters=dataclasses.asdict(self),
        )

    @abstractmethod
    def build(self) -> Strategy:
        """The strategy these options describe (with the default selection policy)."""


@dataclass(frozen=True, kw_only=True)
class FedAvgOptions(NamedStrategyOptions):
    """FedAvg (McMahan et al. 2017) has no server hyperparameters."""

    strategy: ClassVar[str] = "fedavg"

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0))


@dataclass(frozen=True, kw_only=True)
class FedAvgMOptions(SgdOptions, NamedStrategyOptions):
    """FedAvgM (Hsu et al. 2019): server SGD with momentum; 0.9 as in the paper's runs."""

    strategy: ClassVar[str] = "fedavgm"
    momentum: float = 0.9

    def build(self) -> Strategy:
        return self._strategy(self.optimizer())


@dataclass(frozen=True, kw_only=True)
class FedAdamOptions(AdamOptions, NamedStrategyOptions):
    """FedAdam (Reddi et al. 2020); defaults from the paper and Flower."""

    strategy: ClassVar[str] = "fedadam"
    optimizer_piece: ClassVar[str] = "adam"

    def build(self) -> Strategy:
        return self._strategy(self.optimizer())


@dataclass(frozen=True, kw_only=True)
class FedYogiOptions(YogiOptions, NamedStrategyOptions):
    """FedYogi (Reddi et al. 2020); defaults from the paper and Flower."""

    strategy: ClassVar[str] = "fedyogi"
    optimizer_piece: ClassVar[str] = "yogi"

    def build(self) -> Strategy:
        return self._strategy(self.optimizer())


@dataclass(frozen=True, kw_only=True)
class FedAdagradOptions(AdagradOptions, NamedStrategyOptions):
    """FedAdagrad (Reddi et al. 2020); ``beta1 = 0`` by default, see :func:`.adagrad`."""

    strategy: ClassVar[str] = "fedadagrad"
    optimizer_piece: ClassVar[str] = "adagrad"

    def build(self) -> Strategy:
        return self._strategy(self.optimizer())


@dataclass(frozen=True, kw_only=True)
class FedProxOptions(NamedStrategyOptions):
    """FedProx (Li et al. 2020): FedAvg on the server, ``proximal_mu`` sent to clients.

    The paper tunes mu over {0.001, 0.01, 0.1, 1}; 0.1 is a middle default.
    mu = 0 is refused because it is exactly FedAvg: asking for FedProx without
    a proximal term is more likely a mistake than a wish.
    """

    strategy: ClassVar[str] = "fedprox"
    proximal_mu: float = 0.1

    def __post_init__(self) -> None:
        self._check("proximal_mu", low=0.0, low_open=True)

    @property
    def fit_config(self) -> Config:
        """What every fit task carries for the clients' proximal term."""
        return {"proximal_mu": float(self.proximal_mu)}

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0), fit_config=self.fit_config)


@dataclass(frozen=True, kw_only=True)
class FedMedianOptions(MedianOptions, NamedStrategyOptions):
    """FedMedian (Yin et al. 2018) has no hyperparameters."""

    strategy: ClassVar[str] = "fedmedian"
    aggregate_piece: ClassVar[str] = "median"

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0), self.aggregator())


@dataclass(frozen=True, kw_only=True)
class FedTrimmedAvgOptions(TrimmedMeanOptions, NamedStrategyOptions):
    """FedTrimmedAvg (Yin et al. 2018): trim ``beta`` of each tail; 0.2 as in Flower."""

    strategy: ClassVar[str] = "fedtrimmedavg"
    aggregate_piece: ClassVar[str] = "trimmed_mean"

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0), self.aggregator())


@dataclass(frozen=True, kw_only=True)
class KrumStrategyOptions(KrumOptions, NamedStrategyOptions):
    """Krum (Blanchard et al. 2017): the one most central update; ``f = 1`` by default."""

    strategy: ClassVar[str] = "krum"
    aggregate_piece: ClassVar[str] = "krum"

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0), self.aggregator())


@dataclass(frozen=True, kw_only=True)
class MultiKrumOptions(KrumStrategyOptions):
    """Multi-Krum (Blanchard et al. 2017): the mean of the ``m`` most central updates.

    ``num_selected = 0`` (the default) means ``m = n - f``, as in the paper.
    """

    strategy: ClassVar[str] = "multikrum"
    num_selected: float = 0


#: Options class of each named strategy, in the order of the table above.
STRATEGY_OPTIONS: Mapping[str, type[NamedStrategyOptions]] = {
    cls.strategy: cls
    for cls in (
        FedAvgOptions,
        FedAvgMOptions,
        FedAdamOptions,
        FedYogiOptions,
        FedAdagradOptions,
        FedProxOptions,
        FedMedianOptions,
        FedTrimmedAvgOptions,
        KrumStrategyOptions,
        MultiKrumOptions,
    )
}

#: The names :func:`make_strategy` accepts.
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_OPTIONS)


def parse_options(name: str, options: Mapping[str, Scalar] | None = None) -> NamedStrategyOptions:
    """The options dataclass of strategy ``name``, with ``options`` applied over the defaults.

    Every option here is a real number; ints are accepted for it, bools and
    strings are not.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    cls = STRATEGY_OPTIONS.get(key) if isinstance(key, str) else None
    if cls is None:
        raise StrategyError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_NAMES)}"
        )
    valid = sorted(f.name for f in dataclasses.fields(cls))
    values: dict[str, float] = {}
    for option, value in (options or {}).items():
        if option not in valid:
            allowed = f"valid options: {', '.join(valid)}" if valid else "it takes no options"
            raise StrategyError(
                f"unknown option {option!r} for strategy {cls.strategy!r}; {allowed}"
            )
        values[option] = real(value, what=f"{cls.strategy} option {option!r}", error=StrategyError)
    return cls(**values)


def make_strategy(name: str, options: Mapping[str, Scalar] | None = None) -> Strategy:
    """Build the named strategy (case-insensitive) from options over its defaults.

    ``clip_norm`` is taken by every strategy (update-norm clipping).
    """
    rest, clip = split_clip_norm(options)
    return with_clipping(parse_options(name, rest).build(), clip)
