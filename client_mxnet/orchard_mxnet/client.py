"""The federated client: a thin adapter from Orchard's NumPyClient to MXNet Gluon.

Everything it does is ``set_parameters -> train/test -> get_parameters`` with
the same model, data and loops as the centralized baseline
(:mod:`orchard_mxnet.baseline`); the network, retries and partition assignment
live in :mod:`orchard.client.runtime`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from orchard.client.numpy_client import NumPyClient
from orchard.client.training import (
    DEFAULT_EVAL_BATCH_SIZE,
    ConfigError,
    EvalSplit,
    TrainConfig,
    eval_batch_size,
    eval_split,
    fit_seed,
)
from orchard.messages import Role
from orchard.typing import Config, Metrics, NDArrays
from orchard_mxnet.data import ClientData, DataError
from orchard_mxnet.models import build_model, get_parameters, set_parameters
from orchard_mxnet.train import test, train

__all__ = ["DEFAULT_EVAL_BATCH_SIZE", "MXNetClient"]

_log = logging.getLogger(__name__)


class MXNetClient(NumPyClient):
    """Trains and evaluates one Gluon model on one client's data.

    A trainer evaluates on the split the evaluate config names (default
    ``val``: its partition's held-out 10%; or ``test``: the whole official
    test set). An evaluator holds no training data and always evaluates on the
    whole test set.
    """

    def __init__(
        self,
        *,
        model_id: str,
        data: ClientData,
        ctx: Any,
        role: Role = Role.TRAINER,
        seed: int = 0,
    ) -> None:
        if data.model_id != model_id:
            raise DataError(f"data prepared for {data.model_id!r}, but the model is {model_id!r}")
        self.net = build_model(model_id, ctx=ctx, seed=seed)
        self.data = data
        self.ctx = ctx
        self.role = role
        self._fits = 0

    def get_parameters(self, config: Config) -> NDArrays:
        """The local model's tensors, float32 NumPy copies in spec order."""
        return get_parameters(self.net)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        """Train from the global ``parameters`` as the fit config says.

        Returns the new parameters, the number of training examples (FedAvg's
        weight) and ``train_loss``/``train_accuracy`` of the last epoch. With
        ``proximal_mu > 0`` the FedProx term pulls towards ``parameters``.
        """
        if self.role is Role.EVALUATOR:
            raise ConfigError("this client is an evaluator: it holds no training data to fit on")
        cfg = TrainConfig.from_config(config)
        set_parameters(self.net, parameters)
        seed = fit_seed(cfg.seed, self.data.partition_id, self._fits)
        self._fits += 1
        train_set = self.data.train
        _log.info("%s", cfg.describe(len(train_set)))
        result = train(
            self.net, train_set, config=dataclasses.replace(cfg, seed=seed), ctx=self.ctx
        )
        metrics: Metrics = {"train_loss": result.loss, "train_accuracy": result.accuracy}
        return get_parameters(self.net), result.num_examples, metrics

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        """Loss, number of examples and ``accuracy`` of ``parameters`` on a split.

        A trainer takes the config's ``split`` (``val`` by default, or
        ``test``); an evaluator always the whole test set.
        """
        batch_size = eval_batch_size(config)
        split: EvalSplit = "test" if self.role is Role.EVALUATOR else eval_split(config, "val")
        set_parameters(self.net, parameters)
        result = test(self.net, self.data.split(split), batch_size=batch_size, ctx=self.ctx)
        _log.info("%s", result.describe(split))
        return result.loss, result.num_examples, {"accuracy": result.accuracy}
