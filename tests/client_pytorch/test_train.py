"""Training and evaluation loops, and the FedProx proximal term (Li et al. 2020)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from orchard.client import training
from orchard_pytorch import train as loops
from orchard_pytorch.models import build_model
from orchard_pytorch.train import TrainConfig, TrainingError, proximal_term

CPU = torch.device("cpu")


def _learnable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class shifts the mean of a class-specific pixel block."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.rand((n, 1, 28, 28), generator=g) * 0.3
    for k in range(10):
        rows = labels == k
        images[rows, 0, 2 * k : 2 * k + 3, :] += 0.7
    return images, labels


def _batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (images[i : i + batch_size], labels[i : i + batch_size])
        for i in range(0, len(labels), batch_size)
    ]


def test_training_lowers_the_loss_on_learnable_data() -> None:
    images, labels = _learnable(512, seed=0)
    batches = _batches(images, labels, 32)
    model = build_model("mnist-mlp", seed=0)
    before = loops.test(model, batches, device=CPU)
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=0.1, momentum=0.9)
    result = loops.train(model, batches, config, device=CPU, progress=False)
    after = loops.test(model, batches, device=CPU)
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > 0.9
    # num_examples counts training examples, not batches and not epochs x examples.
    assert result.num_examples == 512
    assert 0.0 <= result.accuracy <= 1.0


def test_adam_also_learns() -> None:
    images, labels = _learnable(256, seed=1)
    batches = _batches(images, labels, 32)
    model = build_model("mnist-mlp", seed=1)
    before = loops.test(model, batches, device=CPU).loss
    loops.train(
        model,
        batches,
        TrainConfig(epochs=2, learning_rate=0.01, optimizer="adam"),
        device=CPU,
        progress=False,
    )
    assert loops.test(model, batches, device=CPU).loss < 0.5 * before


def test_epoch_progress_lines_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    images, labels = _learnable(64, seed=2)
    with caplog.at_level(logging.INFO, logger="orchard_pytorch.train"):
        loops.train(
            build_model("mnist-mlp"),
            _batches(images, labels, 16),
            TrainConfig(epochs=2),
            device=CPU,
            progress=False,
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2: loss ")
    assert lines[1].startswith("epoch 2/2: loss ")
    assert ", accuracy " in lines[0]
    assert lines[0].endswith(" examples/s")


def test_test_matches_an_independent_computation() -> None:
    images, labels = _learnable(100, seed=3)
    model = build_model("mnist-mlp", seed=3)
    result = loops.test(model, _batches(images, labels, 7), device=CPU)
    with torch.no_grad():
        logits = model(images)
    assert result.num_examples == 100
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result.accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_test_on_an_empty_set_has_no_weight() -> None:
    result = loops.test(build_model("mnist-mlp"), [], device=CPU)
    assert result == (0.0, 0.0, 0)


def test_training_on_an_empty_set_is_an_error() -> None:
    with pytest.raises(TrainingError, match="training set is empty"):
        loops.train(build_model("mnist-mlp"), [], TrainConfig(), device=CPU, progress=False)


def test_a_diverged_loss_is_an_error_naming_the_learning_rate() -> None:
    images, labels = _learnable(8, seed=4)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"diverged in epoch 1/1.*learning rate \(now 0.01\)"):
        loops.train(
            build_model("mnist-mlp"),
            [(images, labels)],
            TrainConfig(learning_rate=0.01),
            device=CPU,
            progress=False,
        )


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
    images, labels = _learnable(16, seed=8)
    batch = [(images, labels)]
    global_params = [p.detach().clone() for p in build_model("mnist-mlp", seed=9).parameters()]
    start = build_model("mnist-mlp", seed=10)
    plain = build_model("mnist-mlp", seed=10)
    prox = build_model("mnist-mlp", seed=10)
    loops.train(plain, batch, TrainConfig(learning_rate=lr), device=CPU, progress=False)
    loops.train(
        prox,
        batch,
        TrainConfig(learning_rate=lr, proximal_mu=mu),
        device=CPU,
        global_parameters=global_params,
        progress=False,
    )
    for w0, w_plain, w_prox, g in zip(
        start.parameters(), plain.parameters(), prox.parameters(), global_params, strict=True
    ):
        expected = -lr * mu * (w0.detach() - g)
        torch.testing.assert_close(w_prox.detach() - w_plain.detach(), expected, atol=1e-6, rtol=0)


def test_proximal_anchor_defaults_to_the_starting_weights() -> None:
    """Without explicit global parameters the anchor is the model at entry: the
    first step's proximal gradient is zero, so the first step equals plain SGD."""
    images, labels = _learnable(16, seed=11)
    plain = build_model("mnist-mlp", seed=12)
    prox = build_model("mnist-mlp", seed=12)
    loops.train(plain, [(images, labels)], TrainConfig(), device=CPU, progress=False)
    loops.train(prox, [(images, labels)], TrainConfig(proximal_mu=5.0), device=CPU, progress=False)
    for a, b in zip(plain.parameters(), prox.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fedprox_keeps_local_weights_closer_to_the_global_model() -> None:
    images, labels = _learnable(128, seed=13)
    batches = _batches(images, labels, 16)

    def distance(mu: float) -> float:
        model: nn.Module = build_model("mnist-mlp", seed=14)
        anchor = [p.detach().clone() for p in model.parameters()]
        config = TrainConfig(epochs=2, learning_rate=0.1, proximal_mu=mu)
        loops.train(model, batches, config, device=CPU, progress=False)
        return sum(
            float(((p.detach() - a) ** 2).sum())
            for p, a in zip(model.parameters(), anchor, strict=True)
        )

    assert distance(1.0) < 0.8 * distance(0.0)


# --- progress -----------------------------------------------------------------------


def test_progress_bar_goes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = _learnable(32, seed=15)
    batches = _batches(images, labels, 8)
    loops.train(build_model("mnist-mlp"), batches, TrainConfig(), device=CPU, progress=False)
    assert capsys.readouterr().err == ""
    loops.train(build_model("mnist-mlp"), batches, TrainConfig(), device=CPU, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err
    assert "/4 [" in err  # tqdm's batch counter, sized from len(batches)


def test_the_fit_config_is_the_shared_one() -> None:
    """Every framework reads fit configs with one parser (tested in tests/core)."""
    assert TrainConfig is training.TrainConfig
    assert loops.ConfigError is training.ConfigError
    assert TrainingError is training.TrainingError
