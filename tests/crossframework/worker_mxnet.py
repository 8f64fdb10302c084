"""MXNet side of the numerical-equivalence tests (runs in ``.venv-mxnet``).

``python -m tests.crossframework.worker_mxnet CASE.npz RESULT.npz``: the twin of
:mod:`tests.crossframework.worker_pytorch`, through the MXNet adapter's own
``build_model``/``set_parameters``, ``data.ImageSet`` preprocessing,
``train.evaluate``, ``train.train`` and ``train.proximal_term``.
"""

from __future__ import annotations

import sys

import mxnet as mx
import numpy as np
from mxnet import autograd

from orchard_mxnet.data import ImageSet
from orchard_mxnet.models import (
    build_model,
    get_parameters,
    model_spec_of,
    parameter_map,
    set_parameters,
)
from orchard_mxnet.train import TrainConfig, evaluate, proximal_term, train
from tests.helpers.crossframework import EquivalenceCase, EquivalenceResult, run_worker

CPU = mx.cpu()


def compute(case: EquivalenceCase) -> EquivalenceResult:
    """Everything the equivalence tests compare, computed with MXNet Gluon."""
    net = build_model(case.model_id, seed=0, device=CPU)
    data = ImageSet(case.images, case.labels, case.model_id)
    n = len(data)

    set_parameters(net, case.parameters)
    inputs, _ = data.batch(np.arange(n))
    logits = net(mx.nd.array(inputs, ctx=CPU, dtype=np.float32)).asnumpy()
    evaluation = evaluate(net, data, batch_size=n, device=CPU)

    step = TrainConfig(epochs=1, batch_size=n, learning_rate=case.learning_rate)
    set_parameters(net, case.parameters)
    train(net, data, step, device=CPU)
    sgd_step = get_parameters(net)

    set_parameters(net, case.parameters)
    params = list(parameter_map(net).values())
    anchors = [mx.nd.array(a, ctx=CPU, dtype=np.float32) for a in case.anchor]
    with autograd.record():
        term = proximal_term([p.data(CPU) for p in params], anchors, case.proximal_mu)
    term.backward()
    gradient = [p.grad(CPU).asnumpy().copy() for p in params]

    prox = TrainConfig(
        epochs=1, batch_size=n, learning_rate=case.learning_rate, proximal_mu=case.proximal_mu
    )
    set_parameters(net, case.parameters)
    train(net, data, prox, device=CPU, proximal_reference=case.anchor)
    fedprox_step = get_parameters(net)

    return EquivalenceResult(
        framework="mxnet",
        spec=model_spec_of(net),
        logits=logits,
        loss=evaluation.loss,
        accuracy=evaluation.accuracy,
        sgd_step=sgd_step,
        proximal_gradient=gradient,
        fedprox_step=fedprox_step,
    )


if __name__ == "__main__":
    sys.exit(run_worker(compute, sys.argv[1:]))
