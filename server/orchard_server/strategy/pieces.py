"""The pieces a strategy is built from, each with its hyperparameters.

Every piece is a small frozen keyword-only dataclass holding its
hyperparameters (checked on construction, errors naming the piece and the
option) and building the thing it describes:

================  ======================  ============================================
piece             options                 builds
================  ======================  ============================================
``mean``          none                    :class:`.WeightedMean` (McMahan et al. 2017)
``median``        none                    :class:`.CoordinateMedian` (Yin et al. 2018)
``trimmed_mean``  beta                    :class:`.TrimmedMean` (Yin et al. 2018)
``krum``          num_malicious,          :class:`.Krum` (Blanchard et al. 2017)
                  num_selected
``sgd``           server_lr, momentum     :func:`.sgd` (Hsu et al. 2019 with momentum)
``adam``          eta, beta1, beta2, tau  :func:`.adam` (Reddi et al. 2020)
``yogi``          eta, beta1, beta2, tau  :func:`.yogi` (Reddi et al. 2020)
``adagrad``       eta, beta1, tau         :func:`.adagrad` (Reddi et al. 2020)
================  ======================  ============================================

The named strategies (:mod:`.strategies`) subclass the piece they tune, if any, so
FedAdam's options *are* Adam's and FedAvgM's are SGD's with momentum 0.9.
Every strategy also takes ``clip_norm`` (update-norm clipping, :class:`.NormClipping`),
which wraps whichever aggregate is in effect.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from orchard_server.strategy._checks import real_in
from orchard_server.strategy.aggregate import (
    Aggregator,
    CoordinateMedian,
    TrimmedMean,
    WeightedMean,
)
from orchard_server.strategy.base import StrategyError
from orchard_server.strategy.optimizers import ServerOptimizer, adagrad, adam, sgd, yogi
from orchard_server.strategy.robust import Krum


@dataclass(frozen=True, kw_only=True)
class StrategyOptions(ABC):
    """Base of the hyperparameter dataclasses of pieces and named strategies."""

    #: The name errors report the options under: a strategy's or a piece's.
    strategy: ClassVar[str]

    def _check(
        self, option: str, *, low: float, high: float = math.inf, low_open: bool = False
    ) -> None:
        """Range-check one option, naming the strategy or piece and the option in the error."""
        real_in(
            getattr(self, option),
            what=f"{self.strategy} option {option!r}",
            error=StrategyError,
            low=low,
            high=high,
            low_open=low_open,
        )


# --------------------------------------------------------------------------- aggregates


@dataclass(frozen=True, kw_only=True)
class AggregatorOptions(StrategyOptions):
    """A piece that makes a round's aggregator."""

    @abstractmethod
    def aggregator(self) -> Callable[[], Aggregator]:
        """A factory of empty aggregators (one per round)."""


@dataclass(frozen=True, kw_only=True)
class MeanOptions(AggregatorOptions):
    """The weighted mean (FedAvg's aggregate) has no hyperparameters."""

    strategy: ClassVar[str] = "mean"

    def aggregator(self) -> Callable[[], Aggregator]:
        return WeightedMean


@dataclass(frozen=True, kw_only=True)
class MedianOptions(AggregatorOptions):
    """The coordinate-wise median has no hyperparameters."""

    strategy: ClassVar[str] = "median"

    def aggregator(self) -> Callable[[], Aggregator]:
        return CoordinateMedian


@dataclass(frozen=True, kw_only=True)
class TrimmedMeanOptions(AggregatorOptions):
    """The coordinate-wise trimmed mean: ``beta`` of each tail dropped; 0.2 as in Flower."""

    strategy: ClassVar[str] = "trimmed_mean"
    beta: float = 0.2

    def __post_init__(self) -> None:
        self._check("beta", low=0.0, high=0.5)

    def aggregator(self) -> Callable[[], Aggregator]:
        return functools.partial(TrimmedMean, self.beta)


@dataclass(frozen=True, kw_only=True)
class KrumOptions(AggregatorOptions):
    """Krum / Multi-Krum (Blanchard et al. 2017): ``f`` tolerated, ``m`` updates averaged.

    ``num_malicious`` is ``f``; ``num_selected`` is ``m``: 1 is Krum, 0 means
    ``n - f`` (Multi-Krum as in the paper). Whole numbers only.
    """

    strategy: ClassVar[str] = "krum"
    num_malicious: float = 1
    num_selected: float = 1

    def __post_init__(self) -> None:
        for option in ("num_malicious", "num_selected"):
            self._check(option, low=0.0)
            if not float(getattr(self, option)).is_integer():
                raise StrategyError(
                    f"{self.strategy} option {option!r} must be a whole number, "
                    f"got {getattr(self, option)!r}"
                )

    def aggregator(self) -> Callable[[], Aggregator]:
        return functools.partial(Krum, int(self.num_malicious), int(self.num_selected))


# --------------------------------------------------------------------------- optimizers


@dataclass(frozen=True, kw_only=True)
class OptimizerOptions(StrategyOptions):
    """A piece that makes the server optimizer."""

    @abstractmethod
    def optimizer(self) -> ServerOptimizer:
        """The server optimizer these hyperparameters describe."""


@dataclass(frozen=True, kw_only=True)
class SgdOptions(OptimizerOptions):
    """Server SGD; ``server_lr = 1`` without momentum lands on the aggregate (FedAvg)."""

    strategy: ClassVar[str] = "sgd"
    server_lr: float = 1.0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        self._check("server_lr", low=0.0, low_open=True)
        self._check("momentum", low=0.0, high=1.0)

    def optimizer(self) -> ServerOptimizer:
        return sgd(lr=self.server_lr, momentum=self.momentum)


@dataclass(frozen=True, kw_only=True)
class _AdaptiveOptions(OptimizerOptions):
    """Shared checks of the Reddi et al. 2020 optimizers' hyperparameters."""

    eta: float
    beta1: float
    tau: float

    def __post_init__(self) -> None:
        self._check("eta", low=0.0, low_open=True)
        self._check("beta1", low=0.0, high=1.0)
        self._check("tau", low=0.0, low_open=True)


@dataclass(frozen=True, kw_only=True)
class _TwoMomentOptions(_AdaptiveOptions):
    """Adam and Yogi: a first moment and a second moment decayed by ``beta2``."""

    beta2: float

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("beta2", low=0.0, high=1.0)


@dataclass(frozen=True, kw_only=True)
class AdamOptions(_TwoMomentOptions):
    """Server Adam; defaults from Reddi et al. 2020 and Flower's FedAdam."""

    strategy: ClassVar[str] = "adam"
    eta: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-9

    def optimizer(self) -> ServerOptimizer:
        return adam(eta=self.eta, beta1=self.beta1, beta2=self.beta2, tau=self.tau)


@dataclass(frozen=True, kw_only=True)
class YogiOptions(_TwoMomentOptions):
    """Server Yogi; defaults from Reddi et al. 2020 and Flower's FedYogi."""

    strategy: ClassVar[str] = "yogi"
    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def optimizer(self) -> ServerOptimizer:
        return yogi(eta=self.eta, beta1=self.beta1, beta2=self.beta2, tau=self.tau)


@dataclass(frozen=True, kw_only=True)
class AdagradOptions(_AdaptiveOptions):
    """Server Adagrad; ``beta1 = 0`` by default, see :func:`.adagrad`."""

    strategy: ClassVar[str] = "adagrad"
    eta: float = 1e-1
    beta1: float = 0.0
    tau: float = 1e-9

    def optimizer(self) -> ServerOptimizer:
        return adagrad(eta=self.eta, beta1=self.beta1, tau=self.tau)


#: Aggregate pieces by the name a config's ``aggregator`` key uses.
AGGREGATORS: Mapping[str, type[AggregatorOptions]] = {
    cls.strategy: cls for cls in (MeanOptions, MedianOptions, TrimmedMeanOptions, KrumOptions)
}

#: Server-optimizer pieces by the name a config's ``server_optimizer`` key uses.
SERVER_OPTIMIZERS: Mapping[str, type[OptimizerOptions]] = {
    cls.strategy: cls for cls in (SgdOptions, AdamOptions, YogiOptions, AdagradOptions)
}
