"""Orchard's PyTorch client: CIFAR-10 and MNIST models, federated or centralized.

An implementation of the adapter contract (:mod:`orchard.client.adapter`):
``python -m orchard_pytorch client`` joins a federation and ``python -m
orchard_pytorch baseline`` trains centrally with the same model, data and
training code. The training loops are :func:`orchard_pytorch.train.train` and
:func:`orchard_pytorch.train.evaluate` (not re-exported here, so that the
names keep meaning their module).
"""

from orchard.client.adapter import AdapterClient, DeviceError, TrainResult
from orchard.client.training import EvalResult, TrainConfig
from orchard_pytorch.baseline import BaselineSettings, run_baseline
from orchard_pytorch.client import PyTorchAdapter
from orchard_pytorch.data import ClientData, DataSettings
from orchard_pytorch.device import resolve_device
from orchard_pytorch.models import MODEL_IDS, build_model, get_parameters, set_parameters

__all__ = [
    "MODEL_IDS",
    "AdapterClient",
    "BaselineSettings",
    "ClientData",
    "DataSettings",
    "DeviceError",
    "EvalResult",
    "PyTorchAdapter",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "get_parameters",
    "resolve_device",
    "run_baseline",
    "set_parameters",
]
