"""The centralized baseline: PyTorch's CIFAR-10 tutorial, on Orchard's code.

It trains one model on the whole training set and reports the test loss and
accuracy with the very adapter the federated client uses
(:func:`orchard.client.baseline.run_baseline`, shared by every framework);
federating it (``python -m orchard_pytorch client``) changes who calls the
adapter, not what it does. Defaults follow the tutorial: 2 epochs, batch size
4, SGD with learning rate 0.001 and momentum 0.9, no validation share (about
55% test accuracy on CIFAR-10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from orchard.client.baseline import BaselineEpoch, BaselineResult, BaselineSettings
from orchard.client.baseline import run_baseline as run_shared_baseline
from orchard.client.training import TrainConfig
from orchard_pytorch.client import PyTorchAdapter
from orchard_pytorch.models import SpecNet

__all__ = [
    "DEFAULT_MODEL",
    "TUTORIAL_TRAINING",
    "TUTORIAL_VAL_FRACTION",
    "BaselineResult",
    "BaselineSettings",
    "run_baseline",
]

#: The tutorial's model.
DEFAULT_MODEL: Final = "cifar10-cnn"
#: The tutorial's hyperparameters.
TUTORIAL_TRAINING: Final = TrainConfig(epochs=2, batch_size=4, learning_rate=0.001, momentum=0.9)
#: The tutorial trains on the whole training set.
TUTORIAL_VAL_FRACTION: Final = 0.0


def run_baseline(
    settings: BaselineSettings,
    *,
    device: str = "auto",
    report: Callable[[str], None] = print,
    on_epoch: Callable[[BaselineEpoch], None] | None = None,
) -> BaselineResult[SpecNet]:
    """Train centrally on ``device``, then evaluate on the test set (see the shared baseline)."""
    return run_shared_baseline(PyTorchAdapter(device), settings, report=report, on_epoch=on_epoch)
