"""Orchard's Apache MXNet client: MNIST models with Gluon, federated or centralized.

An implementation of the adapter contract (:mod:`orchard.client.adapter`):
``python -m orchard_mxnet client`` joins a federation and ``python -m
orchard_mxnet baseline`` trains centrally with the same model, data and
training code. The training loops are :func:`orchard_mxnet.train.train` and
:func:`orchard_mxnet.train.evaluate` (not re-exported here, so that the
names keep meaning their module).
"""

from orchard.client.adapter import AdapterClient, DeviceError, TrainResult
from orchard.client.training import EvalResult, TrainConfig
from orchard_mxnet.baseline import BaselineSettings, run_baseline
from orchard_mxnet.client import MXNetAdapter
from orchard_mxnet.data import ClientData, DataSettings
from orchard_mxnet.device import resolve_device
from orchard_mxnet.models import MODEL_IDS, build_model, get_parameters, set_parameters

__all__ = [
    "MODEL_IDS",
    "AdapterClient",
    "BaselineSettings",
    "ClientData",
    "DataSettings",
    "DeviceError",
    "EvalResult",
    "MXNetAdapter",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "get_parameters",
    "resolve_device",
    "run_baseline",
    "set_parameters",
]
