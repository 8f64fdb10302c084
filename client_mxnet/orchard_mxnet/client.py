"""MXNet's half of the adapter contract (:class:`orchard.client.adapter.FrameworkAdapter`).

:class:`MXNetAdapter` binds this package's Gluon models, data and loops to one
context; :class:`orchard.client.adapter.AdapterClient` turns it into Orchard's
NumPy client (``set_parameters -> train/evaluate -> get_parameters``), the
same generic client every framework uses, and the network, retries and
partition assignment live in :mod:`orchard.client.runtime`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import numpy as np

from orchard.client.adapter import TrainResult
from orchard.client.training import EpochStats, EvalResult, TrainConfig
from orchard.data.client_data import DataSettings, OfficialSplit
from orchard.data.partition import PartitionSpec
from orchard.spec import ModelSpec
from orchard.typing import NDArrays
from orchard_mxnet import models
from orchard_mxnet import train as loops
from orchard_mxnet.data import DATASETS, ClientData, ImageSet
from orchard_mxnet.device import resolve_device

__all__ = ["MXNetAdapter"]


class MXNetAdapter:
    """The MXNet adapter on one context (``--device``: auto, cpu, cuda/gpu, cuda:N)."""

    framework: Final = "mxnet"
    model_ids: Final = models.MODEL_IDS
    datasets: Final = DATASETS

    def __init__(self, device: str = "auto") -> None:
        self.context = resolve_device(device)

    @property
    def device(self) -> str:
        """The context as the common device name: ``cpu`` or ``cuda:N``."""
        return "cpu" if self.context.device_type == "cpu" else f"cuda:{self.context.device_id}"

    def build_model(self, model_id: str, *, seed: int) -> models.SpecNet:
        """A fresh, seeded network on this adapter's context."""
        return models.build_model(model_id, seed=seed, device=self.context)

    def model_spec(self, model: models.SpecNet) -> ModelSpec:
        """The spec ``model`` actually has; see :func:`models.model_spec_of`."""
        return models.model_spec_of(model)

    def get_parameters(self, model: models.SpecNet) -> NDArrays:
        """Float32 NumPy copies in spec order."""
        return models.get_parameters(model)

    def set_parameters(self, model: models.SpecNet, arrays: Sequence[np.ndarray]) -> None:
        """Load ``arrays`` (spec order) bit-exactly; see :func:`models.set_parameters`."""
        models.set_parameters(model, arrays)

    def client_data(
        self,
        settings: DataSettings,
        *,
        model_id: str,
        partition: PartitionSpec | None = None,
        partition_id: int = 0,
        seed: int = 0,
        preloaded: Mapping[OfficialSplit, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> ClientData:
        """This client's :class:`~orchard_mxnet.data.ClientData`."""
        return ClientData(
            settings,
            model_id=model_id,
            partition=partition,
            partition_id=partition_id,
            seed=seed,
            preloaded=preloaded,
        )

    def train(
        self,
        model: models.SpecNet,
        data: ImageSet,
        config: TrainConfig,
        *,
        proximal_reference: Sequence[np.ndarray] | None = None,
        on_epoch: Callable[[EpochStats], None] | None = None,
    ) -> TrainResult:
        """:func:`orchard_mxnet.train.train` on this adapter's context."""
        return loops.train(
            model,
            data,
            config,
            device=self.context,
            proximal_reference=proximal_reference,
            on_epoch=on_epoch,
        )

    def evaluate(self, model: models.SpecNet, data: ImageSet, *, batch_size: int) -> EvalResult:
        """:func:`orchard_mxnet.train.evaluate` on this adapter's context."""
        return loops.evaluate(model, data, batch_size=batch_size, device=self.context)
