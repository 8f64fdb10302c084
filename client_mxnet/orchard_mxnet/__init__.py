"""Orchard's Apache MXNet client: MNIST models with Gluon, federated over ``orchard.v1``.

The public API: the Gluon models mapped onto Orchard's model specs, the data
pipeline, the training loops (with FedProx), the federated client and the
centralized baseline. Run it with ``python -m orchard_mxnet client ...`` or
``python -m orchard_mxnet baseline ...``.

The loops themselves are ``orchard_mxnet.train.train`` and
``orchard_mxnet.train.test``; they are not re-exported here, where their names
would shadow the ``train`` module.
"""

from __future__ import annotations

from orchard_mxnet.baseline import BaselineConfig, BaselineResult, run_baseline
from orchard_mxnet.client import MXNetClient
from orchard_mxnet.data import ClientData, DataError, DataSettings, ImageSet, preprocess
from orchard_mxnet.device import DeviceError, resolve_context
from orchard_mxnet.models import (
    MODEL_IDS,
    build_model,
    get_parameters,
    parameter_map,
    set_parameters,
)
from orchard_mxnet.train import (
    ConfigError,
    EvalResult,
    TrainConfig,
    TrainingError,
    TrainResult,
    proximal_term,
)

__all__ = [
    "MODEL_IDS",
    "BaselineConfig",
    "BaselineResult",
    "ClientData",
    "ConfigError",
    "DataError",
    "DataSettings",
    "DeviceError",
    "EvalResult",
    "ImageSet",
    "MXNetClient",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "build_model",
    "get_parameters",
    "parameter_map",
    "preprocess",
    "proximal_term",
    "resolve_context",
    "run_baseline",
    "set_parameters",
]
