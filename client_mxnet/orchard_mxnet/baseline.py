"""The centralized baseline: the federation's model, data and loops on one machine.

It trains on the whole training set (less a seeded 10% validation split)
with exactly the code a federated MXNet client runs each round, so its
accuracy is the number a federation of MXNet clients is measured against.
Defaults (2 epochs, SGD, learning rate 0.1, batch 64) follow MXNet's
handwritten-digit tutorial; ``mnist-mlp`` reaches about 82% test accuracy on
Fashion-MNIST after one epoch with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchard_mxnet.data import ClientData, DataSettings
from orchard_mxnet.models import build_model
from orchard_mxnet.train import EpochStats, EvalResult, TrainConfig, test, train

__all__ = [
    "TUTORIAL_TRAINING",
    "BaselineConfig",
    "BaselineEpoch",
    "BaselineResult",
    "run_baseline",
]

_log = logging.getLogger(__name__)


#: MXNet's handwritten-digit tutorial: 2 epochs, SGD, learning rate 0.1, batch 64.
TUTORIAL_TRAINING = TrainConfig(epochs=2, batch_size=64, learning_rate=0.1)


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineConfig:
    """Model and hyperparameters of a centralized run.

    ``training`` is the same value a federated fit config turns into, so the
    baseline and the federation train with identical settings; its ``seed``
    also seeds the initial weights and the validation split.
    """

    model_id: str = "mnist-mlp"
    training: TrainConfig = TUTORIAL_TRAINING
    #: Batch size of evaluation passes (no gradients, so larger is faster).
    eval_batch_size: int = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineEpoch:
    """One epoch: what training saw and the validation result after it."""

    train: EpochStats
    val: EvalResult


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineResult:
    """Every epoch and the final evaluation on the official test set."""

    epochs: tuple[BaselineEpoch, ...]
    test: EvalResult


def run_baseline(
    data_settings: DataSettings,
    config: BaselineConfig,
    *,
    ctx: Any,
    report: Callable[[str], None] = print,
) -> BaselineResult:
    """Train ``config.model_id`` centrally and evaluate it; ``report`` gets each result line.

    Per epoch it reports training cross-entropy and accuracy and the
    validation ones; at the end the test-set evaluation.
    """
    train_config = config.training
    data = ClientData(data_settings, model_id=config.model_id, seed=train_config.seed)
    net = build_model(config.model_id, ctx=ctx, seed=train_config.seed)
    report(
        f"centralized baseline: {config.model_id} on {data_settings.dataset}, "
        f"{len(data.train)} training / {len(data.val)} validation examples, "
        f"{train_config.epochs} epoch(s), {train_config.optimizer} "
        f"lr {train_config.learning_rate:g}, batch {train_config.batch_size}"
    )
    epochs: list[BaselineEpoch] = []

    def after_epoch(stats: EpochStats) -> None:
        val = test(net, data.val, batch_size=config.eval_batch_size, ctx=ctx)
        epochs.append(BaselineEpoch(train=stats, val=val))
        line = (
            f"epoch {stats.epoch}/{stats.epochs}: train cross-entropy {stats.loss:.4f}, "
            f"accuracy {stats.accuracy:.4f}"
        )
        if val.num_examples:
            line += f"; validation cross-entropy {val.loss:.4f}, accuracy {val.accuracy:.4f}"
        report(line)

    train(net, data.train, config=train_config, ctx=ctx, on_epoch=after_epoch)
    result = test(net, data.test, batch_size=config.eval_batch_size, ctx=ctx)
    report(
        f"test evaluation on {result.num_examples} examples: "
        f"cross-entropy {result.loss:.4f}, accuracy {result.accuracy:.4f}"
    )
    return BaselineResult(epochs=tuple(epochs), test=result)
