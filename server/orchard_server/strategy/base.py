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
The named strategies (:mod:`.strategies`) are such compositions. Any of them
may add update-norm clipping (``clip_norm``, :class:`.NormClipping`), applied
to each update before the aggregate sees it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from orchard.typing import Config, NDArrays, Scalar
from orchard_server.strategy._checks import real
from orchard_server.strategy.aggregate import Aggregator, WeightedMean
from orchard_server.strategy.optimizers import (
    OptimizerError,
    ServerOptimizer,
    State,
    pseudo_gradient,
    sgd,
)
from orchard_server.strategy.robust import NormClipping
from orchard_server.strategy.selection import SelectionPolicy, UniformSampling

#: The option that adds update-norm clipping to any strategy (0: none).
CLIP_NORM = "clip_norm"


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
    #: Clip each update ``x_i - x_t`` to this L2 norm before aggregating (0: no clipping).
    clip_norm: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.clip_norm, bool) or not (
            isinstance(self.clip_norm, int | float)
            and math.isfinite(self.clip_norm)
            and self.clip_norm >= 0
        ):
            raise StrategyError(
                f"option {CLIP_NORM!r} must be a finite number >= 0 (0: no clipping), "
                f"got {self.clip_norm!r}"
            )

    @property
    def incremental(self) -> bool:
        """True when updates can be folded in as they arrive (memory O(model)).

        False for order statistics (median, trimmed mean), which hold every
        update until the round ends.
        """
        return self.aggregate().incremental

    def new_aggregator(self, reference: NDArrays | None = None) -> Aggregator:
        """A fresh, empty aggregator for one round.

        ``reference`` is the round's global parameters; clipping
        (``clip_norm > 0``) measures each update against it and cannot run
        without it.
        """
        inner = self.aggregate()
        if self.clip_norm == 0:
            return inner
        if reference is None:
            raise StrategyError(
                f"{self.name}: clip_norm={self.clip_norm} needs the round's global parameters "
                "to measure updates against; pass them to new_aggregator()"
            )
        return NormClipping(inner, reference, self.clip_norm)

    def init(self, params: NDArrays) -> State:
        """The optimizer state for a model starting at ``params``."""
        return self.optimizer.init(params)

    def step(self, params: NDArrays, aggregate: NDArrays, state: State) -> tuple[NDArrays, State]:
        """One server step: ``pseudo_grad = params - aggregate``, then the optimizer
        (or the aggregate itself when the optimizer has ``advance``: plain FedAvg).

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
            if self.optimizer.advance is not None:
                return list(aggregate), self.optimizer.advance(state)
            return self.optimizer.update(pseudo_gradient(params, aggregate), state, params)
        except OptimizerError as error:
            raise StrategyError(f"{self.name}: {error}") from error


def split_clip_norm(options: Mapping[str, Scalar] | None) -> tuple[dict[str, Scalar], float]:
    """``options`` without ``clip_norm``, and its value (0 when absent).

    Clipping wraps whatever aggregate a strategy has, so it is an option of
    every strategy rather than of one piece; the builders take it out here
    before routing the rest to the pieces.
    """
    rest = dict(options or {})
    value = rest.pop(CLIP_NORM, 0.0)
    clip = real(value, what=f"option {CLIP_NORM!r}", error=StrategyError)
    if not (math.isfinite(clip) and clip >= 0):
        raise StrategyError(f"option {CLIP_NORM!r} must be a finite number >= 0, got {value!r}")
    return rest, clip


def with_clipping(strategy: Strategy, clip: float) -> Strategy:
    """``strategy`` with update-norm clipping at ``clip`` (unchanged for 0)."""
    if clip == 0:
        return strategy
    return dataclasses.replace(
        strategy,
        clip_norm=clip,
        hyperparameters={**strategy.hyperparameters, CLIP_NORM: clip},
    )
