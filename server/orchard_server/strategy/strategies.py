"""Named federated strategies, each composed from an aggregate and a server optimizer.

A strategy is three small pieces (DESIGN.md, "Strategies as small composable
pieces"): a client-selection policy (:mod:`.selection`, shared by all), an
aggregate function (:mod:`.aggregate`) and a server optimizer
(:mod:`.optimizers`), plus the extra config it sends to clients. The named
strategies are therefore a few lines each:

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
============== ===================== ======================= ==========================

FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith 2020, "Federated
Optimization in Heterogeneous Networks") changes nothing on the server: clients
add ``mu/2 * ||w - w_t||^2`` to their loss, and the server's only part is to
send ``proximal_mu`` in every fit config.

Hyperparameters are small frozen keyword-only dataclasses, one per strategy;
:func:`make_strategy` builds a strategy from a name and a mapping of options
(from a config file or the command line) and names the valid choices when
something is wrong.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from orchard.typing import Config, NDArrays, Scalar
from orchard_server.strategy._checks import real, real_in
from orchard_server.strategy.aggregate import (
    Aggregator,
    CoordinateMedian,
    TrimmedMean,
    WeightedMean,
)
from orchard_server.strategy.optimizers import (
    OptimizerError,
    ServerOptimizer,
    State,
    adagrad,
    adam,
    pseudo_gradient,
    sgd,
    yogi,
)


class StrategyError(ValueError):
    """An unknown strategy or option, a bad option value, or a mismatched aggregate."""


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Aggregate + server optimizer + the config clients get; stateless itself.

    The optimizer state is an explicit value passed in and out of :meth:`step`,
    so the round loop owns it and checkpoints save it. ``fit_config`` is sent
    to every client on every fit and must be treated as read-only.
    """

    name: str
    optimizer: ServerOptimizer
    aggregator_factory: Callable[[], Aggregator]
    fit_config: Config = field(default_factory=dict)
    #: The resolved hyperparameters (defaults included), for logs and histories.
    hyperparameters: Mapping[str, Scalar] = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        """True when updates can be folded in as they arrive (memory O(model)).

        False for order statistics (median, trimmed mean), which hold every
        update until the round ends.
        """
        return self.aggregator_factory().incremental

    def new_aggregator(self) -> Aggregator:
        """A fresh, empty aggregator for one round."""
        return self.aggregator_factory()

    def init(self, params: NDArrays) -> State:
        """The optimizer state for a model starting at ``params``."""
        return self.optimizer.init(params)

    def step(self, params: NDArrays, aggregate: NDArrays, state: State) -> tuple[NDArrays, State]:
        """One server step: ``pseudo_grad = params - aggregate``, then the optimizer.

        Returns the new global parameters (each tensor in its own dtype) and the
        new optimizer state; ``params`` and ``state`` are left untouched.
        """
        if len(aggregate) != len(params):
            raise StrategyError(
                f"{self.name}: the aggregate has {len(aggregate)} tensors, the model {len(params)}"
            )
        for i, (p, a) in enumerate(zip(params, aggregate, strict=True)):
            if a.shape != p.shape or a.dtype != p.dtype:
                raise StrategyError(
                    f"{self.name}: aggregate tensor {i} is {a.dtype}{list(a.shape)}, the model's "
                    f"is {p.dtype}{list(p.shape)}"
                )
        try:
            return self.optimizer.update(pseudo_gradient(params, aggregate), state, params)
        except OptimizerError as error:
            raise StrategyError(f"{self.name}: {error}") from error


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, kw_only=True)
class StrategyOptions(ABC):
    """Base of the per-strategy hyperparameter dataclasses."""

    strategy: ClassVar[str]

    def _check(
        self, option: str, *, low: float, high: float = math.inf, low_open: bool = False
    ) -> None:
        """Range-check one option, naming the strategy and the option in the error."""
        real_in(
            getattr(self, option),
            what=f"{self.strategy} option {option!r}",
            error=StrategyError,
            low=low,
            high=high,
            low_open=low_open,
        )

    def _strategy(
        self,
        optimizer: ServerOptimizer,
        aggregator_factory: Callable[[], Aggregator] = WeightedMean,
        fit_config: Config | None = None,
    ) -> Strategy:
        return Strategy(
            name=self.strategy,
            optimizer=optimizer,
            aggregator_factory=aggregator_factory,
            fit_config=dict(fit_config or {}),
            hyperparameters=dataclasses.asdict(self),
        )

    @abstractmethod
    def build(self) -> Strategy:
        """The strategy these options describe."""


@dataclass(frozen=True, kw_only=True)
class FedAvgOptions(StrategyOptions):
    """FedAvg (McMahan et al. 2017) has no server hyperparameters."""

    strategy: ClassVar[str] = "fedavg"

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0))


@dataclass(frozen=True, kw_only=True)
class FedAvgMOptions(StrategyOptions):
    """FedAvgM (Hsu et al. 2019): server SGD with momentum; 0.9 as in the paper's runs."""

    strategy: ClassVar[str] = "fedavgm"
    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        self._check("server_lr", low=0.0, low_open=True)
        self._check("momentum", low=0.0, high=1.0)

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=self.server_lr, momentum=self.momentum))


@dataclass(frozen=True, kw_only=True)
class _AdaptiveOptions(StrategyOptions):
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
    """FedAdam and FedYogi: a first moment and a second moment decayed by ``beta2``.

    They differ only in the second-moment rule (the optimizer) and defaults.
    """

    beta2: float

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("beta2", low=0.0, high=1.0)

    def build(self) -> Strategy:
        rule = adam if self.strategy == "fedadam" else yogi
        return self._strategy(rule(eta=self.eta, beta1=self.beta1, beta2=self.beta2, tau=self.tau))


@dataclass(frozen=True, kw_only=True)
class FedAdamOptions(_TwoMomentOptions):
    """FedAdam (Reddi et al. 2020); defaults from the paper and Flower."""

    strategy: ClassVar[str] = "fedadam"
    eta: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-9


@dataclass(frozen=True, kw_only=True)
class FedYogiOptions(_TwoMomentOptions):
    """FedYogi (Reddi et al. 2020); defaults from the paper and Flower."""

    strategy: ClassVar[str] = "fedyogi"
    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


@dataclass(frozen=True, kw_only=True)
class FedAdagradOptions(_AdaptiveOptions):
    """FedAdagrad (Reddi et al. 2020); ``beta1 = 0`` by default, see :func:`.adagrad`."""

    strategy: ClassVar[str] = "fedadagrad"
    eta: float = 1e-1
    beta1: float = 0.0
    tau: float = 1e-9

    def build(self) -> Strategy:
        return self._strategy(adagrad(eta=self.eta, beta1=self.beta1, tau=self.tau))


@dataclass(frozen=True, kw_only=True)
class FedProxOptions(StrategyOptions):
    """FedProx (Li et al. 2020): FedAvg on the server, ``proximal_mu`` sent to clients.

    The paper tunes mu over {0.001, 0.01, 0.1, 1}; 0.1 is a middle default.
    mu = 0 is refused because it is exactly FedAvg: asking for FedProx without
    a proximal term is more likely a mistake than a wish.
    """

    strategy: ClassVar[str] = "fedprox"
    proximal_mu: float = 0.1

    def __post_init__(self) -> None:
        self._check("proximal_mu", low=0.0, low_open=True)

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0), fit_config={"proximal_mu": float(self.proximal_mu)})


@dataclass(frozen=True, kw_only=True)
class FedMedianOptions(StrategyOptions):
    """FedMedian (Yin et al. 2018) has no hyperparameters."""

    strategy: ClassVar[str] = "fedmedian"

    def build(self) -> Strategy:
        return self._strategy(sgd(lr=1.0), aggregator_factory=CoordinateMedian)


@dataclass(frozen=True, kw_only=True)
class FedTrimmedAvgOptions(StrategyOptions):
    """FedTrimmedAvg (Yin et al. 2018): trim ``beta`` of each tail; 0.2 as in Flower."""

    strategy: ClassVar[str] = "fedtrimmedavg"
    beta: float = 0.2

    def __post_init__(self) -> None:
        self._check("beta", low=0.0, high=0.5)

    def build(self) -> Strategy:
        return self._strategy(
            sgd(lr=1.0), aggregator_factory=functools.partial(TrimmedMean, self.beta)
        )


#: Options class of each named strategy, in the order of the table above.
STRATEGY_OPTIONS: Mapping[str, type[StrategyOptions]] = {
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
    )
}

#: The names :func:`make_strategy` accepts.
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_OPTIONS)


def parse_options(name: str, options: Mapping[str, Scalar] | None = None) -> StrategyOptions:
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
    """Build the named strategy (case-insensitive) from options over its defaults."""
    return parse_options(name, options).build()
