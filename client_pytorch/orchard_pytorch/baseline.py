"""The centralized baseline: PyTorch's CIFAR-10 tutorial, on Orchard's code.

It trains one model on the whole training set and reports the test loss and
accuracy, with the very model, data and train/test functions the federated
client uses; federating it (``python -m orchard_pytorch client``) changes who
calls them, not what they do. Defaults follow the tutorial: 2 epochs, batch
size 4, SGD with learning rate 0.001 and momentum 0.9 (about 55% test
accuracy on CIFAR-10).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from torch import nn

from orchard_pytorch.data import DataBundle, DataSettings, check_compatible
from orchard_pytorch.device import resolve_device
from orchard_pytorch.models import build_model
from orchard_pytorch.train import EvalResult, TrainConfig, TrainResult, test, train

__all__ = ["TUTORIAL_TRAINING", "BaselineResult", "BaselineSettings", "run_baseline"]

logger = logging.getLogger(__name__)

#: The tutorial's hyperparameters.
TUTORIAL_TRAINING = TrainConfig(epochs=2, batch_size=4, learning_rate=0.001, momentum=0.9)


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineSettings:
    """One centralized run."""

    model_id: str = "cifar10-cnn"
    data: DataSettings
    training: TrainConfig = field(default_factory=lambda: TUTORIAL_TRAINING)
    device: str = "auto"
    eval_batch_size: int = 256
    #: tqdm bars: None shows them only when stderr is a terminal.
    progress: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineResult:
    """The trained model, the last epoch's training metrics and the test metrics."""

    model: nn.Module
    train: TrainResult
    test: EvalResult


def run_baseline(settings: BaselineSettings) -> BaselineResult:
    """Train on the whole training set, then evaluate on the test set."""
    check_compatible(settings.model_id, settings.data.dataset)
    device = resolve_device(settings.device)
    cfg = settings.training
    model = build_model(settings.model_id, seed=cfg.seed).to(device)
    # The whole training set, as in the tutorial: no validation split here.
    data = DataBundle(replace(settings.data, val_fraction=0.0), seed=cfg.seed)
    logger.info(
        "centralized baseline: %s on %s, %d epoch(s), batch %d, %s lr %g momentum %g",
        settings.model_id,
        settings.data.dataset,
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer,
        cfg.learning_rate,
        cfg.momentum,
    )
    batches = data.loader("train", cfg.batch_size, shuffle=True, seed=cfg.seed)
    trained = train(model, batches, cfg, device=device, progress=settings.progress)
    evaluated = test(model, data.loader("test", settings.eval_batch_size), device=device)
    return BaselineResult(model=model, train=trained, test=evaluated)
