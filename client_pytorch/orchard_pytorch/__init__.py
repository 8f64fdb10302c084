"""Orchard's PyTorch client: CIFAR-10 and MNIST models, federated or centralized.

The public API is the few names below; ``python -m orchard_pytorch client``
joins a federation and ``python -m orchard_pytorch baseline`` trains centrally
with the same model, data and training code. The training loops are
:func:`orchard_pytorch.train.train` and :func:`orchard_pytorch.train.test`
(not re-exported here, so that the names keep meaning their module).
"""

from orchard_pytorch.baseline import BaselineSettings, run_baseline
from orchard_pytorch.client import TorchClient
from orchard_pytorch.data import DataBundle, DataSettings
from orchard_pytorch.device import resolve_device
from orchard_pytorch.models import build_model, get_parameters, set_parameters
from orchard_pytorch.train import EvalResult, TrainConfig, TrainResult

__all__ = [
    "BaselineSettings",
    "DataBundle",
    "DataSettings",
    "EvalResult",
    "TorchClient",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "get_parameters",
    "resolve_device",
    "run_baseline",
    "set_parameters",
]
