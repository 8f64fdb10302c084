"""The centralized baseline: MXNet's handwritten-digit tutorial, on Orchard's code.

It trains on the whole training set (less a seeded 10% validation split)
with the very adapter a federated MXNet client runs each round
(:func:`orchard.client.baseline.run_baseline`, shared by every framework), so
its accuracy is the number a federation of MXNet clients is measured against.
Defaults (2 epochs, SGD, learning rate 0.1, batch 64) follow MXNet's
handwritten-digit tutorial; ``mnist-mlp`` reaches about 82% test accuracy on
Fashion-MNIST after one epoch with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from orchard.client.baseline import BaselineEpoch, BaselineResult, BaselineSettings
from orchard.client.baseline import run_baseline as run_shared_baseline
from orchard.client.training import TrainConfig
from orchard_mxnet.client import MXNetAdapter
from orchard_mxnet.models import SpecNet

__all__ = [
    "DEFAULT_MODEL",
    "TUTORIAL_TRAINING",
    "TUTORIAL_VAL_FRACTION",
    "BaselineResult",
    "BaselineSettings",
    "run_baseline",
]

#: The tutorial's model.
DEFAULT_MODEL: Final = "mnist-mlp"
#: MXNet's handwritten-digit tutorial: 2 epochs, SGD, learning rate 0.1, batch 64.
TUTORIAL_TRAINING: Final = TrainConfig(epochs=2, batch_size=64, learning_rate=0.1)
#: Share of the training set held out for per-epoch validation.
TUTORIAL_VAL_FRACTION: Final = 0.1


def run_baseline(
    settings: BaselineSettings,
    *,
    device: str = "auto",
    report: Callable[[str], None] = print,
    on_epoch: Callable[[BaselineEpoch], None] | None = None,
) -> BaselineResult[SpecNet]:
    """Train centrally on ``device``, then evaluate on the test set (see the shared baseline)."""
    return run_shared_baseline(MXNetAdapter(device), settings, report=report, on_epoch=on_epoch)
