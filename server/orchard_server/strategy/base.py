"""The strategy object: selection policy + aggregate + server optimizer.

A strategy is three small pieces (DESIGN.md, "Strategies as small composable
pieces"), each replaceable on its own:

* ``select`` (:mod:`.selection`): which clients a round waits for, trains and
  evaluates;
* ``aggregate`` (:mod:`.aggregate`): a factory of the per-round aggregator that
  folds the clients' updates into one set of parameters;
* ``optimizer`` (:mod:`.optimizers`): the server step applied to the
  pseudo-gradient ``x_t - aggregate`` (Reddi et al. 2020).

So FedMedian with server momentum is simply
``Strategy(aggregate=CoordinateMedian, optimizer=sgd(lr=1.0, momentum=0.9))``.
The named strategies (:mod:`.strategies`) are such compositions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from orchard.typing import Config, NDArrays, Scalar
from orchard_server.strategy.aggregate import Aggregator, WeightedMean
from orchard_server.strategy.optimizers import (
    OptimizerError,
    ServerOptimizer,
    State,
    pseudo_gradient,
    sgd,
)
from orchard_server.strategy.selection import SelectionPolicy, UniformSampling


class StrategyError(ValueError):
    """An unknown strategy or option, a bad option value, or a mismatched aggregate."""


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Selection + aggregate + server optimizer + the config clients get; stateless itself.

    The optimizer state is an explicit value passed in and out of :meth:`step`,
    so the round loop owns it and checkpoints save it. ``fit_config`` is sent
    to every client on every fit and must be treated as read-only. The
    defaults are FedAvg's pieces with Flower's sampling defaults.
    """

    name: str = "custom"
    select: SelectionPolicy = field(default_factory=UniformSampling)
    #: Makes the empty aggregator of one round (a class such as ``WeightedMean``).
    aggregate: Callable[[], Aggregator] = WeightedMean
    optimizer: ServerOptimizer = field(default_factory=sgd)
    fit_config: Config = field(default_factory=dict)
    #: The resolved hyperparameters (defaults included), for logs and histories.
    hyperparameters: Mapping[str, Scalar] = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        """True when updates can be folded in as they arrive (memory O(model)).

        False for order statistics (median, trimmed mean), which hold every
        update until the round ends.
        """
        return self.aggregate().incremental

    def new_aggregator(self) -> Aggregator:
        """A fresh, empty aggregator for one round."""
        return self.aggregate()

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
