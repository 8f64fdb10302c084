"""The federated client: a thin adapter from Orchard's NumPyClient to PyTorch.

Everything it does is ``set_parameters -> train/test -> get_parameters`` with
the same model, data and loops as the centralized baseline
(:mod:`orchard_pytorch.baseline`); the network, retries and partition
assignment live in :mod:`orchard.client.runtime`.
"""

from __future__ import annotations

import logging

import torch

from orchard.client.numpy_client import NumPyClient
from orchard.client.training import (
    EVAL_SPLITS,
    EvalSplit,
    TrainConfig,
    eval_batch_size,
    eval_split,
    fit_seed,
)
from orchard.models import get_model_spec
from orchard.typing import Config, Metrics, NDArrays
from orchard_pytorch.data import DataBundle, DataError
from orchard_pytorch.models import build_model, get_parameters, set_parameters
from orchard_pytorch.train import test, train

__all__ = ["TorchClient"]

logger = logging.getLogger(__name__)


class TorchClient(NumPyClient):
    """Trains and evaluates one PyTorch model on one client's data.

    ``eval_split`` is the split evaluated when the evaluate config does not
    name one: ``val`` (this partition's held-out 10%) for trainers, ``test``
    (the whole official test set) for evaluator clients.
    """

    def __init__(
        self,
        *,
        model_id: str,
        data: DataBundle,
        device: torch.device,
        eval_split: EvalSplit = "val",
        seed: int = 0,
        progress: bool | None = None,
    ) -> None:
        if eval_split not in EVAL_SPLITS:
            raise DataError(f"eval_split must be 'val' or 'test', got {eval_split!r}")
        self.spec = get_model_spec(model_id)
        self.model = build_model(model_id, seed=seed).to(device)
        self.data = data
        self.device = device
        self.eval_split = eval_split
        self.seed = seed
        self.progress = progress
        self._fits = 0

    def get_parameters(self, config: Config) -> NDArrays:
        """The local model's tensors, float32 CPU copies in spec order."""
        return get_parameters(self.model)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        """Train from the global ``parameters`` as the fit config says.

        Returns the new parameters, the number of training examples (FedAvg's
        weight) and ``train_loss``/``train_accuracy`` of the last epoch.
        """
        cfg = TrainConfig.from_config(config)
        set_parameters(self.model, parameters, self.spec)
        seed = fit_seed(cfg.seed, self.data.partition_id, self._fits)
        self._fits += 1
        torch.manual_seed(seed)
        batches = self.data.loader("train", cfg.batch_size, shuffle=True, seed=seed)
        logger.info("%s", cfg.describe(len(batches.data)))
        result = train(self.model, batches, cfg, device=self.device, progress=self.progress)
        metrics: Metrics = {"train_loss": result.loss, "train_accuracy": result.accuracy}
        return get_parameters(self.model), result.num_examples, metrics

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        """Loss, number of examples and ``accuracy`` of ``parameters`` on a split.

        The config's ``split`` (``val`` or ``test``) overrides the default.
        """
        batch_size = eval_batch_size(config)
        split = eval_split(config, self.eval_split)
        set_parameters(self.model, parameters, self.spec)
        result = test(self.model, self.data.loader(split, batch_size), device=self.device)
        logger.info("%s", result.describe(split))
        return result.loss, result.num_examples, {"accuracy": result.accuracy}
