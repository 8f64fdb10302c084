"""PyTorch side of the numerical-equivalence tests (runs in the main environment).

``python -m tests.crossframework.worker_pytorch CASE.npz RESULT.npz``: reads an
:class:`~tests.helpers.crossframework.EquivalenceCase`, pushes it through the
PyTorch adapter's own code -- ``build_model``/``set_parameters``, the data
module's normalisation, ``train.evaluate``, ``train.train`` and
``train.proximal_term`` -- and writes what came out. Using the adapter's
functions rather than re-implementing them here is the point: the test then
checks the code a client really runs.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from orchard.data.client_data import DATASETS
from orchard_pytorch.data import ImageSet
from orchard_pytorch.models import build_model, get_parameters, model_spec_of, set_parameters
from orchard_pytorch.train import TrainConfig, evaluate, proximal_term, train
from tests.helpers.crossframework import EquivalenceCase, EquivalenceResult, run_worker

CPU = torch.device("cpu")


def compute(case: EquivalenceCase) -> EquivalenceResult:
    """Everything the equivalence tests compare, computed with PyTorch."""
    torch.set_num_threads(1)
    model = build_model(case.model_id, seed=0)
    data = ImageSet.from_numpy(case.images[:, None, :, :], case.labels, DATASETS["mnist"])
    n = len(data)  # the whole case is one batch

    set_parameters(model, case.parameters)
    model.eval()
    with torch.no_grad():
        inputs, _ = next(iter(data.batches(n)))
        logits = model(inputs).numpy()
    evaluation = evaluate(model, data, batch_size=n, device=CPU)

    step = TrainConfig(epochs=1, batch_size=n, learning_rate=case.learning_rate)
    set_parameters(model, case.parameters)
    train(model, data, step, device=CPU)
    sgd_step = get_parameters(model)

    set_parameters(model, case.parameters)
    model.zero_grad(set_to_none=True)
    anchor = [torch.from_numpy(a.copy()) for a in case.anchor]
    torch.autograd.backward(proximal_term(model.parameters(), anchor, case.proximal_mu))
    gradient = [_grad(p) for p in model.parameters()]

    prox = TrainConfig(
        epochs=1, batch_size=n, learning_rate=case.learning_rate, proximal_mu=case.proximal_mu
    )
    set_parameters(model, case.parameters)
    train(model, data, prox, device=CPU, proximal_reference=case.anchor)
    fedprox_step = get_parameters(model)

    return EquivalenceResult(
        framework="pytorch",
        spec=model_spec_of(model),
        logits=logits,
        loss=evaluation.loss,
        accuracy=evaluation.accuracy,
        sgd_step=sgd_step,
        proximal_gradient=gradient,
        fedprox_step=fedprox_step,
    )


def _grad(parameter: torch.Tensor) -> np.ndarray:
    if parameter.grad is None:
        raise RuntimeError("the proximal term did not reach every parameter")
    return parameter.grad.detach().numpy().copy()


if __name__ == "__main__":
    sys.exit(run_worker(compute, sys.argv[1:]))
