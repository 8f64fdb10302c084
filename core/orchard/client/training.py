"""The framework-neutral half of local training: configs, seeds, progress lines, errors.

Every framework adapter reads the server's fit and evaluate configs, seeds its
shuffling, reports epochs and fails on bad input the same way; only building
the optimizer and running the batches through a network are its own. Keeping
these pieces here means a PyTorch and an MXNet client given the same config
train with the same hyperparameters, refuse the same mistakes with the same
messages, and log the same lines.

FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks",
MLSys) enters only as one fit-config field, ``proximal_mu``: each adapter adds
``mu/2 * ||w - w_global||^2`` to its local loss; ``mu = 0`` is plain FedAvg
(McMahan et al. 2017).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, TypeVar

import numpy as np

from orchard.typing import Scalar

__all__ = [
    "DEFAULT_EVAL_BATCH_SIZE",
    "EVAL_SPLITS",
    "OPTIMIZERS",
    "ConfigError",
    "EpochStats",
    "EvalResult",
    "EvalSplit",
    "OptimizerName",
    "TrainConfig",
    "TrainingError",
    "eval_batch_size",
    "eval_split",
    "fit_seed",
]

OptimizerName = Literal["sgd", "adam"]
#: Optimizers a fit config may name.
OPTIMIZERS: Final[tuple[OptimizerName, ...]] = ("sgd", "adam")

EvalSplit = Literal["val", "test"]
#: Splits an evaluate config may name: the partition's held-out share or the test set.
EVAL_SPLITS: Final[tuple[EvalSplit, ...]] = ("val", "test")

ChoiceT = TypeVar("ChoiceT", bound=str)

#: Evaluation batch size when the evaluate config has none (no gradients: larger is faster).
DEFAULT_EVAL_BATCH_SIZE: Final = 256


class ConfigError(ValueError):
    """A fit or evaluate config value has the wrong type or range; names the key."""


class TrainingError(ValueError):
    """Training cannot go on (no data, or the loss diverged); says where and why."""

    @classmethod
    def empty(cls) -> TrainingError:
        """There is not a single training example."""
        return cls("the training set is empty: there is nothing to train on")

    @classmethod
    def diverged(cls, epoch: int, config: TrainConfig, loss: float) -> TrainingError:
        """The summed loss of ``epoch`` is not finite; the fix is usually a lower rate."""
        return cls(
            f"training diverged in epoch {epoch}/{config.epochs}: the loss is {loss}; "
            f"lower the learning rate (now {config.learning_rate})"
        )


def _int(config: Mapping[str, Scalar], key: str, default: int, *, minimum: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config {key!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"config {key!r} must be at least {minimum}, got {value}")
    return value


def _float(config: Mapping[str, Scalar], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"config {key!r} must be finite, got {value!r}")
    return float(value)


def _choice(
    config: Mapping[str, Scalar],
    key: str,
    default: ChoiceT,
    choices: tuple[ChoiceT, ...],
    *,
    expected: str,
) -> ChoiceT:
    """The config's ``key``, one of ``choices`` (typed as the literal it matched)."""
    value = config.get(key, default)
    for name in choices:
        if isinstance(value, str) and value == name:
            return name
    raise ConfigError(f"config {key!r} must be {expected}, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """Local training hyperparameters: the fields of the server's fit config.

    ``batch_size`` and ``seed`` are used by whoever builds the batches; the
    others by the adapter's training loop.
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    optimizer: OptimizerName = "sgd"
    #: SGD momentum (Adam ignores it).
    momentum: float = 0.0
    #: FedProx's mu; 0 disables the proximal term.
    proximal_mu: float = 0.0
    #: Seeds the order of examples.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"config 'epochs' must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"config 'batch_size' must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"config 'learning_rate' must be > 0, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"config 'optimizer' must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"config 'momentum' must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.proximal_mu) and self.proximal_mu >= 0):
            raise ConfigError(f"config 'proximal_mu' must be >= 0, got {self.proximal_mu}")

    @classmethod
    def from_config(cls, config: Mapping[str, Scalar]) -> TrainConfig:
        """Read the server's fit config; missing keys take the defaults above."""
        defaults = cls()
        return cls(
            epochs=_int(config, "epochs", defaults.epochs, minimum=1),
            batch_size=_int(config, "batch_size", defaults.batch_size, minimum=1),
            learning_rate=_float(config, "learning_rate", defaults.learning_rate),
            optimizer=_choice(
                config,
                "optimizer",
                defaults.optimizer,
                OPTIMIZERS,
                expected=f"one of {', '.join(OPTIMIZERS)}",
            ),
            momentum=_float(config, "momentum", defaults.momentum),
            proximal_mu=_float(config, "proximal_mu", defaults.proximal_mu),
            seed=_int(config, "seed", defaults.seed, minimum=-(2**63)),
        )

    def describe(self, num_examples: int) -> str:
        """The line a client logs before training, e.g.
        ``training 2 epoch(s) on 540 examples (batch 16, sgd lr 0.1, FedProx mu 0.01)``."""
        prox = f", FedProx mu {self.proximal_mu:g}" if self.proximal_mu > 0 else ""
        return (
            f"training {self.epochs} epoch(s) on {num_examples} examples "
            f"(batch {self.batch_size}, {self.optimizer} lr {self.learning_rate:g}{prox})"
        )


def fit_seed(seed: int, partition_id: int) -> int:
    """The shuffling seed of one local fit, in ``[0, 2**63)``.

    Derived from the fit task's ``seed`` (which the server derives from the
    federation seed and the round) and the client's partition, and from
    nothing in the process: a fit redone after a server restart, or by a
    restarted client, shuffles exactly as the first try did, so a resumed
    federation ends bit-identical to an uninterrupted one. Clients of different
    partitions do not shuffle in lockstep. Any integer seed works (the fit
    config allows negative ones).
    """
    state = np.random.SeedSequence([seed % 2**63, partition_id]).generate_state(1, dtype=np.uint64)
    return int(state[0]) % 2**63


@dataclass(frozen=True, kw_only=True, slots=True)
class EpochStats:
    """What one epoch achieved on the training data it saw."""

    epoch: int
    epochs: int
    #: Mean cross-entropy over the epoch's examples (without the proximal term).
    loss: float
    accuracy: float
    examples_per_second: float

    def describe(self) -> str:
        """The progress line, e.g. ``epoch 1/2: loss 0.412, accuracy 0.871, 5300 examples/s``."""
        return (
            f"epoch {self.epoch}/{self.epochs}: loss {self.loss:.3f}, "
            f"accuracy {self.accuracy:.3f}, {self.examples_per_second:.0f} examples/s"
        )


class EvalResult(NamedTuple):
    """Mean cross-entropy loss, accuracy and number of examples evaluated."""

    loss: float
    accuracy: float
    num_examples: int

    def describe(self, split: str) -> str:
        """The line a client logs after evaluating, e.g.
        ``evaluated on 100 test examples: loss 0.4121, accuracy 0.8700``."""
        return (
            f"evaluated on {self.num_examples} {split} examples: "
            f"loss {self.loss:.4f}, accuracy {self.accuracy:.4f}"
        )


def eval_batch_size(config: Mapping[str, Scalar]) -> int:
    """The evaluate config's ``batch_size`` (default :data:`DEFAULT_EVAL_BATCH_SIZE`)."""
    value = config.get("batch_size", DEFAULT_EVAL_BATCH_SIZE)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config 'batch_size' must be a positive integer, got {value!r}")
    return value


def eval_split(config: Mapping[str, Scalar], default: EvalSplit) -> EvalSplit:
    """The evaluate config's ``split``: ``val`` (the partition's held-out share) or ``test``."""
    return _choice(config, "split", default, EVAL_SPLITS, expected="'val' or 'test'")
