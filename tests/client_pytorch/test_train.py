"""Training and evaluation loops, and the FedProx proximal term (Li et al. 2020)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from orchard.client import training
from orchard.data.client_data import DATASETS
from orchard_pytorch import train as loops
from orchard_pytorch.data import ImageSet
from orchard_pytorch.models import build_model
from orchard_pytorch.train import TrainConfig, TrainingError, proximal_term

CPU = torch.device("cpu")


def _learnable(n: int, seed: int) -> ImageSet:
    """uint8 images whose class brightens a class-specific pixel block."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = (rng.random((n, 1, 28, 28)) * 0.3 * 255).astype(np.uint8)
    for k in range(10):
        images[labels == k, 0, 2 * k : 2 * k + 3, :] += np.uint8(0.7 * 255)
    return ImageSet.from_numpy(images, labels, DATASETS["mnist"])


def _inputs(data: ImageSet) -> torch.Tensor:
    return data.images.float() / 255


def test_training_lowers_the_loss_on_learnable_data() -> None:
    data = _learnable(512, seed=0)
    model = build_model("mnist-mlp", seed=0)
    before = loops.evaluate(model, data, batch_size=32, device=CPU)
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=0.1, momentum=0.9)
    result = loops.train(model, data, config, device=CPU)
    after = loops.evaluate(model, data, batch_size=32, device=CPU)
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > 0.9
    # num_examples counts training examples, not batches and not epochs x examples.
    assert result.num_examples == 512
    assert [e.epoch for e in result.history] == [1, 2, 3]
    assert result.loss == result.history[-1].loss
    assert 0.0 <= result.accuracy <= 1.0


def test_adam_also_learns() -> None:
    data = _learnable(256, seed=1)
    model = build_model("mnist-mlp", seed=1)
    before = loops.evaluate(model, data, batch_size=32, device=CPU).loss
    config = TrainConfig(epochs=2, learning_rate=0.01, optimizer="adam")
    loops.train(model, data, config, device=CPU)
    assert loops.evaluate(model, data, batch_size=32, device=CPU).loss < 0.5 * before


def test_epoch_progress_lines_are_logged_and_handed_over(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[training.EpochStats] = []
    with caplog.at_level(logging.INFO, logger="orchard_pytorch.train"):
        loops.train(
            build_model("mnist-mlp"),
            _learnable(64, seed=2),
            TrainConfig(epochs=2, batch_size=16),
            device=CPU,
            on_epoch=seen.append,
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2: loss ")
    assert lines[1].startswith("epoch 2/2: loss ")
    assert ", accuracy " in lines[0]
    assert lines[0].endswith(" examples/s")
    assert [s.describe() for s in seen] == lines


def test_evaluate_matches_an_independent_computation() -> None:
    data = _learnable(100, seed=3)
    model = build_model("mnist-mlp", seed=3)
    result = loops.evaluate(model, data, batch_size=7, device=CPU)
    with torch.no_grad():
        logits = model(_inputs(data))
    assert result.num_examples == 100
    assert result.loss == pytest.approx(F.cross_entropy(logits, data.labels).item(), rel=1e-5)
    assert result.accuracy == pytest.approx((logits.argmax(1) == data.labels).float().mean().item())


def test_evaluate_on_an_empty_set_has_no_weight() -> None:
    empty = _learnable(0, seed=0)
    result = loops.evaluate(build_model("mnist-mlp"), empty, batch_size=8, device=CPU)
    assert result == (0.0, 0.0, 0)


def test_training_on_an_empty_set_is_an_error() -> None:
    with pytest.raises(TrainingError, match="training set is empty"):
        loops.train(build_model("mnist-mlp"), _learnable(0, seed=0), TrainConfig(), device=CPU)


def test_a_diverged_loss_is_an_error_naming_the_learning_rate() -> None:
    model = build_model("mnist-mlp")
    with torch.no_grad():
        model.state_dict()["fc1.weight"][0, 0] = float("inf")
    with pytest.raises(TrainingError, match=r"diverged in epoch 1/1.*learning rate \(now 0.01\)"):
        loops.train(model, _learnable(8, seed=4), TrainConfig(learning_rate=0.01), device=CPU)


# --- FedProx ----------------------------------------------------------------------


def test_proximal_gradient_equals_mu_times_the_difference() -> None:
    mu = 0.37
    model = build_model("cifar10-cnn", seed=5)
    global_params = [p.detach().clone() for p in build_model("cifar10-cnn", seed=6).parameters()]
    term = proximal_term(model.parameters(), global_params, mu)
    torch.autograd.backward(term)
    for p, g in zip(model.parameters(), global_params, strict=True):
        assert p.grad is not None
        expected = mu * (p.detach() - g)
        torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=1e-9)
    # The value itself: mu/2 * ||w - w_global||^2, summed in float64 independently.
    squared = sum(
        float(((p.detach().double() - g.double()) ** 2).sum())
        for p, g in zip(model.parameters(), global_params, strict=True)
    )
    assert term.item() == pytest.approx(0.5 * mu * squared, rel=1e-5)


def test_proximal_term_is_zero_at_the_global_model() -> None:
    model = build_model("mnist-mlp", seed=7)
    anchor = [p.detach().clone() for p in model.parameters()]
    assert proximal_term(model.parameters(), anchor, 1.0).item() == 0.0


def test_train_adds_the_proximal_gradient_to_each_step() -> None:
    """One plain SGD step with and without FedProx differ by -lr * mu * (w - w_global)."""
    lr, mu = 0.05, 0.8
    data = _learnable(16, seed=8)
    one_step = TrainConfig(learning_rate=lr, batch_size=16)
    reference = build_model("mnist-mlp", seed=9)
    global_arrays = [p.detach().numpy().copy() for p in reference.state_dict().values()]
    start = build_model("mnist-mlp", seed=10)
    plain = build_model("mnist-mlp", seed=10)
    prox = build_model("mnist-mlp", seed=10)
    loops.train(plain, data, one_step, device=CPU)
    loops.train(
        prox,
        data,
        TrainConfig(learning_rate=lr, batch_size=16, proximal_mu=mu),
        device=CPU,
        proximal_reference=global_arrays,
    )
    for w0, w_plain, w_prox, g in zip(
        start.parameters(),
        plain.parameters(),
        prox.parameters(),
        reference.parameters(),
        strict=True,
    ):
        expected = -lr * mu * (w0.detach() - g.detach())
        torch.testing.assert_close(w_prox.detach() - w_plain.detach(), expected, atol=1e-6, rtol=0)


def test_proximal_anchor_defaults_to_the_starting_weights() -> None:
    """Without a reference the anchor is the model at entry: the first step's
    proximal gradient is zero, so the first step equals plain SGD."""
    data = _learnable(16, seed=11)
    plain = build_model("mnist-mlp", seed=12)
    prox = build_model("mnist-mlp", seed=12)
    loops.train(plain, data, TrainConfig(batch_size=16), device=CPU)
    loops.train(prox, data, TrainConfig(batch_size=16, proximal_mu=5.0), device=CPU)
    for a, b in zip(plain.parameters(), prox.parameters(), strict=True):
        assert torch.equal(a, b)


# --- progress -----------------------------------------------------------------------


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    loops.train(build_model("mnist-mlp"), _learnable(32, seed=15), TrainConfig(), device=CPU)
    assert capsys.readouterr().err == ""


def test_the_fit_config_is_the_shared_one() -> None:
    """Every framework reads fit configs with one parser (tested in tests/core)."""
    assert TrainConfig is training.TrainConfig
    assert loops.ConfigError is training.ConfigError
    assert TrainingError is training.TrainingError
