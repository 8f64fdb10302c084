"""PyTorch and MXNet compute the same numbers from the same parameters and batch.

Each framework runs in its own process and environment
(``tests/crossframework/worker_*.py``); they exchange ``.npz`` files. From the
same spec-ordered parameters and the same 32 raw images, for both MNIST model
ids:

* both adapters' models have exactly the registered spec;
* logits agree within 1e-4 (max abs diff), with each other and with a float64
  NumPy reference written from the spec's layout conventions;
* the mean cross-entropy agrees within 1e-5 relative;
* one step of each adapter's real training loop (SGD, no momentum) gives
  parameters within 1e-5 (max abs diff);
* the FedProx term has the same gradient, ``mu * (w - w_global)``, in both,
  and one FedProx training step agrees within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchard.models import get_model_spec
from tests.helpers.crossframework import (
    EquivalenceCase,
    EquivalenceResult,
    make_case,
    reference_cross_entropy,
    reference_logits,
    run_workers,
)
from tests.helpers.datasets import write_mnist_files

pytestmark = pytest.mark.slow

MODEL_IDS = ("mnist-mlp", "mnist-cnn")
BATCH = 32
LOGITS_ATOL = 1e-4
LOSS_RTOL = 1e-5
PARAMS_ATOL = 1e-5


class Outcome:
    """One model id's case and both frameworks' results."""

    def __init__(self, case: EquivalenceCase, results: dict[str, EquivalenceResult]) -> None:
        self.case = case
        self.pytorch = results["pytorch"]
        self.mxnet = results["mxnet"]


@pytest.fixture(scope="module", params=MODEL_IDS)
def outcome(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mxnet_interpreter: Path,
) -> Outcome:
    model_id: str = request.param
    workdir = tmp_path_factory.mktemp(f"equivalence-{model_id}")
    data = write_mnist_files(workdir / "mnist", BATCH, 1, seed=7)
    case = make_case(model_id, data.train_images, data.train_labels, seed=11)
    return Outcome(case, run_workers(workdir, case, mxnet=mxnet_interpreter))


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b, strict=True))


def test_both_adapters_have_exactly_the_registered_spec(outcome: Outcome) -> None:
    expected = get_model_spec(outcome.case.model_id)
    for result in (outcome.pytorch, outcome.mxnet):
        assert expected.first_difference(result.spec) is None, result.framework
        assert result.spec == expected, result.framework
        for tensors in (result.sgd_step, result.proximal_gradient, result.fedprox_step):
            expected.validate(tensors)


def test_logits_agree_with_each_other_and_with_the_spec_reference(outcome: Outcome) -> None:
    case = outcome.case
    reference = reference_logits(case.model_id, case.parameters, case.images)
    assert outcome.pytorch.logits.shape == outcome.mxnet.logits.shape == (BATCH, 10)
    assert np.abs(outcome.pytorch.logits - outcome.mxnet.logits).max() <= LOGITS_ATOL
    assert np.abs(outcome.pytorch.logits - reference).max() <= LOGITS_ATOL
    assert np.abs(outcome.mxnet.logits - reference).max() <= LOGITS_ATOL


def test_a_layout_slip_would_be_caught(outcome: Outcome) -> None:
    """The tolerance is tight enough to see a wrong flatten or transposed weights."""
    case = outcome.case
    if case.model_id == "mnist-cnn":
        wrong = reference_logits(case.model_id, case.parameters, case.images, flatten="hwc")
    else:
        # A (28, 28) image flattened column-major instead of row-major.
        transposed = np.ascontiguousarray(case.images.transpose(0, 2, 1))
        wrong = reference_logits(case.model_id, case.parameters, transposed)
    for result in (outcome.pytorch, outcome.mxnet):
        assert np.abs(result.logits - wrong).max() > 100 * LOGITS_ATOL, result.framework


def test_mean_loss_and_accuracy_agree(outcome: Outcome) -> None:
    case = outcome.case
    reference = reference_cross_entropy(
        reference_logits(case.model_id, case.parameters, case.images), case.labels
    )
    for result in (outcome.pytorch, outcome.mxnet):
        assert result.loss == pytest.approx(reference, rel=LOSS_RTOL), result.framework
    assert outcome.mxnet.loss == pytest.approx(outcome.pytorch.loss, rel=LOSS_RTOL)
    assert outcome.mxnet.accuracy == outcome.pytorch.accuracy


def test_one_sgd_step_gives_the_same_parameters(outcome: Outcome) -> None:
    moved = max_abs_diff(outcome.pytorch.sgd_step, outcome.case.parameters)
    # The step is large enough that a wrong gradient could not hide in the tolerance.
    assert moved > 100 * PARAMS_ATOL
    assert max_abs_diff(outcome.pytorch.sgd_step, outcome.mxnet.sgd_step) <= PARAMS_ATOL


def test_the_fedprox_term_has_the_same_gradient(outcome: Outcome) -> None:
    case = outcome.case
    expected = [
        case.proximal_mu * (w.astype(np.float64) - g)
        for w, g in zip(case.parameters, case.anchor, strict=True)
    ]
    assert max_abs_diff(outcome.pytorch.proximal_gradient, expected) <= 1e-7
    assert max_abs_diff(outcome.mxnet.proximal_gradient, expected) <= 1e-7
    assert max_abs_diff(outcome.pytorch.proximal_gradient, outcome.mxnet.proximal_gradient) <= 1e-7


def test_one_fedprox_step_gives_the_same_parameters(outcome: Outcome) -> None:
    pytorch, mxnet = outcome.pytorch, outcome.mxnet
    # The proximal pull (lr * mu * |w - w_global|, about 5e-4) is visible ...
    assert max_abs_diff(pytorch.fedprox_step, pytorch.sgd_step) > 10 * PARAMS_ATOL
    # ... and is exactly the SGD step plus lr * mu * (w - w_global) in both frameworks.
    case = outcome.case
    pull = [
        case.learning_rate * case.proximal_mu * (w.astype(np.float64) - g)
        for w, g in zip(case.parameters, case.anchor, strict=True)
    ]
    for result in (pytorch, mxnet):
        predicted = [s - p for s, p in zip(result.sgd_step, pull, strict=True)]
        assert max_abs_diff(result.fedprox_step, predicted) <= PARAMS_ATOL, result.framework
    assert max_abs_diff(pytorch.fedprox_step, mxnet.fedprox_step) <= PARAMS_ATOL
