"""PyTorch's half of the adapter contract (:class:`orchard.client.adapter.FrameworkAdapter`).

:class:`PyTorchAdapter` binds this package's models, data and loops to one
device; :class:`orchard.client.adapter.AdapterClient` turns it into Orchard's
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
from orchard_pytorch import models
from orchard_pytorch import train as loops
from orchard_pytorch.data import DATASETS, ClientData, ImageSet
from orchard_pytorch.device import resolve_device

__all__ = ["PyTorchAdapter"]


class PyTorchAdapter:
    """The PyTorch adapter on one device (``--device``: auto, cpu, cuda, cuda:N)."""

    framework: Final = "pytorch"
    model_ids: Final = models.MODEL_IDS
    datasets: Final = DATASETS

    def __init__(self, device: str = "auto") -> None:
        self.torch_device = resolve_device(device)

    @property
    def device(self) -> str:
        """The torch device, e.g. ``cpu`` or ``cuda:0``."""
        return str(self.torch_device)

    def build_model(self, model_id: str, *, seed: int) -> models.SpecNet:
        """A fresh, seeded module on this adapter's device."""
        return models.build_model(model_id, seed=seed, device=self.torch_device)

    def model_spec(self, model: models.SpecNet) -> ModelSpec:
        """The spec ``model`` actually has; see :func:`models.model_spec_of`."""
        return models.model_spec_of(model)

    def get_parameters(self, model: models.SpecNet) -> NDArrays:
        """CPU copies of the ``state_dict`` in spec order."""
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
        """This client's :class:`~orchard_pytorch.data.ClientData`."""
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
        """:func:`orchard_pytorch.train.train` on this adapter's device."""
        return loops.train(
            model,
            data,
            config,
            device=self.torch_device,
            proximal_reference=proximal_reference,
            on_epoch=on_epoch,
        )

    def evaluate(self, model: models.SpecNet, data: ImageSet, *, batch_size: int) -> EvalResult:
        """:func:`orchard_pytorch.train.evaluate` on this adapter's device."""
        return loops.evaluate(model, data, batch_size=batch_size, device=self.torch_device)
