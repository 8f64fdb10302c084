"""Local training and evaluation with Gluon, including FedProx's proximal term.

One training loop serves the federated client and the centralized baseline, so
the two differ only in the data they are given. Batches come straight from
NumPy arrays (images already scaled to [0, 1]) in a seeded random order.

FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks",
MLSys) adds ``mu/2 * ||w - w_global||^2`` to every local minibatch loss, which
pulls each client's weights towards the round's global model and stabilises
training on heterogeneous (non-IID) partitions; ``mu = 0`` is plain FedAvg.

Only the Gluon side lives here (trainer, loops, proximal term); reading the
fit config, the epoch progress lines and the training errors are shared by
all clients in :mod:`orchard.client.training`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

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
from orchard_mxnet.data import ImageSet
from orchard_mxnet.models import SpecNet, parameter_map

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

_log = logging.getLogger(__name__)
_loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()


def proximal_term(params: Sequence[Any], global_params: Sequence[Any], mu: float) -> Any:
    """FedProx's ``mu/2 * sum_i ||w_i - w_global_i||^2`` as a differentiable NDArray.

    ``params`` are the live parameter NDArrays (inside ``autograd.record()``),
    ``global_params`` constant NDArrays of the round's global model; the
    gradient with respect to ``w_i`` is ``mu * (w_i - w_global_i)``.
    """
    if len(params) != len(global_params):
        raise ValueError(f"{len(params)} parameters but {len(global_params)} global parameters")
    total = mx.nd.zeros((1,), ctx=params[0].context)
    for w, w_global in zip(params, global_params, strict=True):
        total = total + mx.nd.sum(mx.nd.square(w - w_global))
    return (mu / 2.0) * total


def _progress_bar(total: int, description: str) -> tqdm[Any]:
    """A tqdm bar on an interactive terminal, a silent no-op otherwise (logs, CI)."""
    return tqdm(
        total=total, desc=description, unit="batch", leave=False, disable=not sys.stderr.isatty()
    )


def train(
    net: SpecNet,
    data: ImageSet,
    config: TrainConfig,
    *,
    device: Any,
    proximal_reference: Sequence[np.ndarray] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``net`` in place on ``data`` for ``config.epochs`` epochs.

    Batches of ``config.batch_size`` in an order drawn from ``config.seed``
    (a new permutation each epoch, the same run for the same seed). The
    minibatch loss is the mean softmax cross-entropy plus, when
    ``config.proximal_mu > 0``, FedProx's proximal term towards
    ``proximal_reference`` (spec order; default: the parameters ``net`` has
    on entry, i.e. the global model the round started from). Each epoch is logged
    as a progress line (``epoch 1/2: loss 0.412, accuracy 0.871, 5300
    examples/s``) and handed to ``on_epoch``; a tqdm bar shows only when
    stderr is a terminal.
    """
    n = len(data)
    if n == 0:
        raise TrainingError.empty()
    params = list(parameter_map(net).values())
    anchors: list[Any] = []
    if config.proximal_mu > 0:
        if proximal_reference is None:
            anchors = [p.data(device).copy() for p in params]
        else:
            get_model_spec(net.model_id).validate(proximal_reference)
            anchors = [mx.nd.array(a, ctx=device, dtype=np.float32) for a in proximal_reference]
    optimizer_params: dict[str, float] = {"learning_rate": config.learning_rate}
    if config.optimizer == "sgd":
        optimizer_params["momentum"] = config.momentum
    trainer = gluon.Trainer(net.collect_params(), config.optimizer, optimizer_params)
    # SeedSequence wants a non-negative seed; any integer the server sends works.
    rng = np.random.default_rng(config.seed % 2**64)
    history: list[EpochStats] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        total_loss = 0.0
        correct = 0.0
        total = data.num_batches(config.batch_size)
        with _progress_bar(total, f"epoch {epoch}/{config.epochs}") as bar:
            for x, y in data.batches(config.batch_size, rng.permutation(n)):
                inputs = mx.nd.array(x, ctx=device, dtype=np.float32)
                label = mx.nd.array(y, ctx=device, dtype=np.float32)
                with autograd.record():
                    output = net(inputs)
                    cross_entropy = _loss_fn(output, label)
                    loss = cross_entropy.mean()
                    if anchors:
                        weights = [p.data(device) for p in params]
                        loss = loss + proximal_term(weights, anchors, config.proximal_mu)
                loss.backward()
                # The loss is already a mean over the batch: no further rescaling.
                trainer.step(1)
                batch_loss = float(cross_entropy.sum().asscalar())
                total_loss += batch_loss
                correct += float((output.argmax(axis=1) == label).sum().asscalar())
                bar.update(1)
                bar.set_postfix(loss=f"{batch_loss / len(y):.4f}", refresh=False)
        elapsed = max(time.perf_counter() - started, 1e-9)
        if not math.isfinite(total_loss):
            raise TrainingError.diverged(epoch, config, total_loss)
        stats = EpochStats(
            epoch=epoch,
            epochs=config.epochs,
            loss=total_loss / n,
            accuracy=correct / n,
            examples_per_second=n / elapsed,
        )
        _log.info("%s", stats.describe())
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    last = history[-1]
    return TrainResult(
        loss=last.loss, accuracy=last.accuracy, num_examples=n, history=tuple(history)
    )


def evaluate(net: SpecNet, data: ImageSet, *, batch_size: int, device: Any) -> EvalResult:
    """Mean cross-entropy, accuracy and example count of ``net`` on ``data``.

    An empty set gives ``EvalResult(0.0, 0.0, 0)``: zero examples carry zero
    weight in the server's weighted average, so a client whose validation
    split happens to be empty does not fail the round.
    """
    if batch_size < 1:
        raise ConfigError(f"config 'batch_size' must be at least 1, got {batch_size}")
    n = len(data)
    if n == 0:
        return EvalResult(loss=0.0, accuracy=0.0, num_examples=0)
    total_loss = 0.0
    correct = 0.0
    for x, y in data.batches(batch_size):
        inputs = mx.nd.array(x, ctx=device, dtype=np.float32)
        label = mx.nd.array(y, ctx=device, dtype=np.float32)
        output = net(inputs)
        total_loss += float(_loss_fn(output, label).sum().asscalar())
        correct += float((output.argmax(axis=1) == label).sum().asscalar())
    return EvalResult(loss=total_loss / n, accuracy=correct / n, num_examples=n)
