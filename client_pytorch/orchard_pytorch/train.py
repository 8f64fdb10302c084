"""Training and evaluation loops shared by the federated client and the baseline.

The same :func:`train` and :func:`test` run the centralized baseline and every
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
from collections.abc import Iterable, Sequence, Sized
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional PyTorch alias
from torch import nn
from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

from orchard.client.training import (
    OPTIMIZERS,
    ConfigError,
    EpochStats,
    EvalResult,
    TrainConfig,
    TrainingError,
)

__all__ = [
    "OPTIMIZERS",
    "Batches",
    "ConfigError",
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "proximal_term",
    "test",
    "train",
]

logger = logging.getLogger(__name__)

#: Batches of (inputs, integer labels); a ``torch.utils.data.DataLoader`` fits.
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class TrainResult(NamedTuple):
    """Outcome of local training.

    ``num_examples`` is the number of training examples (one epoch's worth,
    not batches and not epochs x examples): FedAvg weights each client's
    update by its data size. ``loss`` (cross-entropy, without the proximal
    term, so it compares with evaluation losses) and ``accuracy`` are the
    averages over the last epoch.
    """

    num_examples: int
    loss: float
    accuracy: float


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


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)


def _show_progress(progress: bool | None) -> bool:
    """A bar only for a person at a terminal; logs and containers get epoch lines."""
    return sys.stderr.isatty() if progress is None else progress


def train(
    model: nn.Module,
    batches: Batches,
    config: TrainConfig,
    *,
    device: torch.device,
    global_parameters: Sequence[torch.Tensor] | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.epochs`` epochs over ``batches``.

    With ``config.proximal_mu > 0`` the FedProx term is added to every step's
    loss; ``global_parameters`` default to a copy of the model's parameters
    at entry, i.e. the global model the round started from. ``batches`` is
    iterated once per epoch (shuffle it there). Each epoch logs
    ``epoch 1/2: loss 1.234, accuracy 0.567, 1234 examples/s``; ``progress``
    shows a tqdm bar (None: only when stderr is a terminal).
    """
    model.to(device)
    model.train()
    optimizer = _make_optimizer(model, config)
    mu = config.proximal_mu
    anchor: list[torch.Tensor] = []
    if mu > 0:
        source = global_parameters if global_parameters is not None else list(model.parameters())
        anchor = [p.detach().to(device, copy=True) for p in source]
    bar = _show_progress(progress)
    num_examples = 0
    loss_sum = 0.0
    correct = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss_sum_t = torch.zeros((), device=device)
        correct_t = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        total = len(batches) if isinstance(batches, Sized) else None
        iterator = tqdm(
            batches,
            total=total,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            leave=False,
            disable=not bar,
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
        if seen == 0:
            raise TrainingError.empty()
        elapsed = time.perf_counter() - started
        loss_sum = float(loss_sum_t)
        correct = int(correct_t)
        if not math.isfinite(loss_sum):
            raise TrainingError.diverged(epoch, config, loss_sum)
        num_examples = seen
        stats = EpochStats(
            epoch=epoch,
            epochs=config.epochs,
            loss=loss_sum / seen,
            accuracy=correct / seen,
            examples_per_second=seen / elapsed if elapsed > 0 else float("inf"),
        )
        logger.info("%s", stats.describe())
    return TrainResult(
        num_examples=num_examples, loss=loss_sum / num_examples, accuracy=correct / num_examples
    )


def test(model: nn.Module, batches: Batches, *, device: torch.device) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` over ``batches``.

    An empty set gives ``EvalResult(0.0, 0.0, 0)``: zero examples carry zero
    weight in the server's weighted average, so a client whose validation
    split happens to be empty does not fail the round.
    """
    model.to(device)
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for batch_inputs, batch_labels in batches:
            inputs = batch_inputs.to(device, non_blocking=True)
            labels = batch_labels.to(device, non_blocking=True)
            logits = model(inputs)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += int(labels.shape[0])
    if seen == 0:
        return EvalResult(loss=0.0, accuracy=0.0, num_examples=0)
    return EvalResult(loss=float(loss_sum) / seen, accuracy=int(correct) / seen, num_examples=seen)
