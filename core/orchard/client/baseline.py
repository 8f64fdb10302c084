"""The centralized baseline: a federation's model, data and training code on one machine.

It trains on the whole training set (less an optional seeded validation
share) with exactly the adapter methods a federated client runs each round,
so its accuracy is the number a federation of the same model is measured
against; federating it changes who calls the adapter, not what it does. Each
framework's ``baseline`` module supplies its tutorial hyperparameters; this
module is the one loop for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchard.client.adapter import FrameworkAdapter, TrainResult
from orchard.client.training import DEFAULT_EVAL_BATCH_SIZE, EpochStats, EvalResult, TrainConfig
from orchard.data.client_data import DataSettings, check_compatible

__all__ = ["BaselineEpoch", "BaselineResult", "BaselineSettings", "run_baseline"]

ModelT = TypeVar("ModelT")
SplitT = TypeVar("SplitT", bound=Sized)


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineSettings:
    """One centralized run.

    ``training`` is the same value a federated fit config turns into, so the
    baseline and a federation train with identical settings; its ``seed``
    also seeds the initial weights and the validation split.
    ``data.val_fraction`` is the share held out for per-epoch validation
    (0: train on everything, as PyTorch's tutorial does).
    """

    model_id: str
    data: DataSettings
    training: TrainConfig
    #: Batch size of evaluation passes (no gradients, so larger is faster).
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineEpoch:
    """One epoch: what training saw and the validation result after it."""

    train: EpochStats
    val: EvalResult


@dataclass(frozen=True, kw_only=True)
class BaselineResult(Generic[ModelT]):
    """The trained model, every epoch, the training result and the test evaluation."""

    model: ModelT
    epochs: tuple[BaselineEpoch, ...]
    train: TrainResult
    test: EvalResult


def run_baseline(
    adapter: FrameworkAdapter[ModelT, SplitT],
    settings: BaselineSettings,
    *,
    report: Callable[[str], None] = print,
    on_epoch: Callable[[BaselineEpoch], None] | None = None,
) -> BaselineResult[ModelT]:
    """Train ``settings.model_id`` centrally, then evaluate on the official test set.

    ``report`` gets one line before training, one per epoch (training
    cross-entropy and accuracy, and the validation ones when there is a
    validation share) and one with the test evaluation. ``on_epoch`` gets
    each epoch as it ends (after its validation), e.g. for a benchmark that
    reads the training loop's examples per second while training goes on.
    """
    check_compatible(settings.model_id, settings.data.dataset)  # before any download
    cfg = settings.training
    data = adapter.client_data(settings.data, model_id=settings.model_id, seed=cfg.seed)
    model = adapter.build_model(settings.model_id, seed=cfg.seed)
    report(
        f"centralized baseline: {settings.model_id} on {settings.data.dataset} "
        f"({adapter.framework}, {adapter.device}), {len(data.train)} training / "
        f"{len(data.val)} validation examples, {cfg.epochs} epoch(s), {cfg.optimizer} "
        f"lr {cfg.learning_rate:g} momentum {cfg.momentum:g}, batch {cfg.batch_size}"
    )
    epochs: list[BaselineEpoch] = []

    def after_epoch(stats: EpochStats) -> None:
        val = adapter.evaluate(model, data.val, batch_size=settings.eval_batch_size)
        epochs.append(BaselineEpoch(train=stats, val=val))
        line = (
            f"epoch {stats.epoch}/{stats.epochs}: train cross-entropy {stats.loss:.4f}, "
            f"accuracy {stats.accuracy:.4f}"
        )
        if val.num_examples:
            line += f"; validation cross-entropy {val.loss:.4f}, accuracy {val.accuracy:.4f}"
        report(line)
        if on_epoch is not None:
            on_epoch(epochs[-1])

    trained = adapter.train(model, data.train, cfg, on_epoch=after_epoch)
    tested = adapter.evaluate(model, data.test, batch_size=settings.eval_batch_size)
    report(
        f"test evaluation on {tested.num_examples} examples: "
        f"cross-entropy {tested.loss:.4f}, accuracy {tested.accuracy:.4f}"
    )
    return BaselineResult(model=model, epochs=tuple(epochs), train=trained, test=tested)
