"""Training and evaluation loops shared by the federated client and the baseline.

The same :func:`train` and :func:`evaluate` run the centralized baseline and every
federated round; federation adds exactly one thing, the FedProx proximal term
of Li et al. 2020, "Federated Optimization in Heterogeneous Networks"
(MLSys): with ``proximal_mu > 0`` each local step minimises

    loss(w) + mu/2 * ||w - w_global||^2

where ``w_global`` are the parameters the round started from. Its gradient
``mu * (w - w_global)`` pulls local models back towards the global one, which
bounds client drift on heterogeneous (non-IID) partitions. With ``mu = 0`` this
is plain FedAvg local training (McMahan et al. 2017).

The fit config (:class:`TrainConfig`), its errors and the epoch lines are the
framework-neutral ones of :mod:`orchard.client.training`, shared with every
other client; this module is PyTorch's half: the optimizer, the loops and the
proximal term.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional PyTorch alias
from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

from orchard.client.adapter import TrainResult
from orchard.client.training import (
    OPTIMIZERS,
    ConfigError,
    EpochStats,
    EvalResult,
    TrainConfig,
    TrainingError,
)
from orchard.models import get_model_spec
from orchard_pytorch.data import ImageSet
from orchard_pytorch.models import SpecNet

__all__ = [
    "OPTIMIZERS",
    "ConfigError",
    "EpochStats",
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "evaluate",
    "proximal_term",
    "train",
]

logger = logging.getLogger(__name__)


def proximal_term(
    parameters: Iterable[torch.Tensor], global_parameters: Sequence[torch.Tensor], mu: float
) -> torch.Tensor:
    """``mu/2 * sum_i ||w_i - w_global_i||^2`` (FedProx, Li et al. 2020, eq. 2).

    Differentiable in ``parameters``; ``global_parameters`` are constants.
    """
    params = list(parameters)
    if len(params) != len(global_parameters):
        raise ValueError(f"{len(params)} parameters but {len(global_parameters)} global parameters")
    total = torch.zeros((), device=params[0].device if params else None)
    for w, w_global in zip(params, global_parameters, strict=True):
        total = total + (w - w_global.detach()).pow(2).sum()
    return 0.5 * mu * total


def _make_optimizer(model: SpecNet, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)


def train(
    model: SpecNet,
    data: ImageSet,
    config: TrainConfig,
    *,
    device: torch.device,
    proximal_reference: Sequence[np.ndarray] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.epochs`` epochs over ``data``.

    Batches of ``config.batch_size`` in an order drawn from ``config.seed``
    (a new permutation each epoch, the same run for the same seed). With
    ``config.proximal_mu > 0`` the FedProx term is added to every step's
    loss; ``proximal_reference`` (spec order) defaults to the model's
    parameters at entry, i.e. the global model the round started from. Each
    epoch logs ``epoch 1/2: loss 1.234, accuracy 0.567, 1234 examples/s`` and
    goes to ``on_epoch``; a tqdm bar shows only when stderr is a terminal.
    """
    if len(data) == 0:
        raise TrainingError.empty()
    model.to(device)
    model.train()
    optimizer = _make_optimizer(model, config)
    mu = config.proximal_mu
    anchor: list[torch.Tensor] = []
    if mu > 0:
        if proximal_reference is None:
            anchor = [p.detach().to(device, copy=True) for p in model.parameters()]
        else:
            # The reference is in spec (state_dict) order; match it to parameters by name.
            get_model_spec(model.model_id).validate(proximal_reference)
            reference = dict(zip(model.state_dict(), proximal_reference, strict=True))
            anchor = [
                torch.from_numpy(np.array(reference[name], copy=True)).to(device)
                for name, _ in model.named_parameters()
            ]
    batches = data.batches(config.batch_size, shuffle=True, seed=config.seed)
    history: list[EpochStats] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss_sum_t = torch.zeros((), device=device)
        correct_t = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        iterator = tqdm(
            batches,
            total=len(batches),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            leave=False,
            disable=not sys.stderr.isatty(),
        )
        for batch_inputs, batch_labels in iterator:
            inputs = batch_inputs.to(device, non_blocking=True)
            labels = batch_labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            data_loss = F.cross_entropy(logits, labels)
            loss = data_loss
            if mu > 0:
                loss = loss + proximal_term(model.parameters(), anchor, mu)
            torch.autograd.backward(loss)
            optimizer.step()
            loss_sum_t += data_loss.detach() * labels.shape[0]
            correct_t += (logits.detach().argmax(dim=1) == labels).sum()
            seen += int(labels.shape[0])
        elapsed = time.perf_counter() - started
        loss_sum = float(loss_sum_t)
        if not math.isfinite(loss_sum):
            raise TrainingError.diverged(epoch, config, loss_sum)
        stats = EpochStats(
            epoch=epoch,
            epochs=config.epochs,
            loss=loss_sum / seen,
            accuracy=int(correct_t) / seen,
            examples_per_second=seen / elapsed if elapsed > 0 else float("inf"),
        )
        logger.info("%s", stats.describe())
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    last = history[-1]
    return TrainResult(
        num_examples=len(data), loss=last.loss, accuracy=last.accuracy, history=tuple(history)
    )


def evaluate(
    model: SpecNet, data: ImageSet, *, batch_size: int, device: torch.device
) -> EvalResult:
    """Mean cross-entropy, accuracy and example count of ``model`` on ``data``.

    An empty set gives ``EvalResult(0.0, 0.0, 0)``: zero examples carry zero
    weight in the server's weighted average, so a client whose validation
    split happens to be empty does not fail the round.
    """
    if batch_size < 1:
        raise ConfigError(f"config 'batch_size' must be at least 1, got {batch_size}")
    model.to(device)
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for batch_inputs, batch_labels in data.batches(batch_size):
            inputs = batch_inputs.to(device, non_blocking=True)
            labels = batch_labels.to(device, non_blocking=True)
            logits = model(inputs)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += int(labels.shape[0])
    if seen == 0:
        return EvalResult(loss=0.0, accuracy=0.0, num_examples=0)
    return EvalResult(loss=float(loss_sum) / seen, accuracy=int(correct) / seen, num_examples=seen)
