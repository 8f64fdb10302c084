"""Training and evaluation loops, and the FedProx proximal term (Li et al. 2020)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from mxnet import autograd  # noqa: E402

from orchard.client import training  # noqa: E402
from orchard.typing import NDArrays  # noqa: E402
from orchard_mxnet import train as loops  # noqa: E402
from orchard_mxnet.data import ImageSet  # noqa: E402
from orchard_mxnet.models import (  # noqa: E402
    build_model,
    get_parameters,
    parameter_map,
    set_parameters,
)
from orchard_mxnet.train import (  # noqa: E402
    EpochStats,
    TrainConfig,
    TrainingError,
    proximal_term,
)

pytestmark = pytest.mark.mxnet

CPU = mx.cpu()


def _learnable(n: int, seed: int, model_id: str = "mnist-mlp") -> ImageSet:
    """uint8 images whose class brightens a class-specific band of rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images = rng.integers(0, 70, size=(n, 28, 28)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 * k : 2 * k + 3, :] += 180
    return ImageSet(images, labels, model_id)


def _squared_distance(a: NDArrays, b: NDArrays) -> float:
    return sum(
        float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(
    ("model_id", "n", "epochs"), [("mnist-mlp", 600, 3), ("mnist-cnn", 200, 2)]
)
def test_training_lowers_the_loss_on_learnable_data(model_id: str, n: int, epochs: int) -> None:
    data = _learnable(n, seed=0, model_id=model_id)
    held_out = _learnable(200, seed=1, model_id=model_id)
    net = build_model(model_id, device=CPU, seed=0)
    before = loops.evaluate(net, held_out, batch_size=100, device=CPU)
    config = TrainConfig(epochs=epochs, batch_size=20, learning_rate=0.1)
    result = loops.train(net, data, config=config, device=CPU)
    after = loops.evaluate(net, held_out, batch_size=100, device=CPU)
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > 0.9
    assert result.num_examples == n  # training examples, not examples x epochs
    assert len(result.history) == epochs
    assert result.history[-1].loss < result.history[0].loss


def test_adam_and_momentum_train_too() -> None:
    data = _learnable(400, seed=2)
    for config in (
        TrainConfig(epochs=2, batch_size=20, learning_rate=0.001, optimizer="adam"),
        TrainConfig(epochs=2, batch_size=20, learning_rate=0.05, momentum=0.9),
    ):
        net = build_model("mnist-mlp", device=CPU, seed=0)
        result = loops.train(net, data, config=config, device=CPU)
        assert result.accuracy > 0.8, config


def test_each_epoch_logs_a_progress_line_and_reaches_the_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[EpochStats] = []
    net = build_model("mnist-mlp", device=CPU)
    config = TrainConfig(epochs=2, batch_size=50, learning_rate=0.1)
    with caplog.at_level(logging.INFO, logger="orchard_mxnet.train"):
        loops.train(net, _learnable(100, seed=3), config=config, device=CPU, on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2]
    lines = [r.getMessage() for r in caplog.records if r.name == "orchard_mxnet.train"]
    assert len(lines) == 2
    for line, stats in zip(lines, seen, strict=True):
        assert line.startswith(f"epoch {stats.epoch}/2: loss {stats.loss:.3f}, accuracy ")
        assert line.endswith(" examples/s")


def test_training_is_reproducible_for_a_seed() -> None:
    data = _learnable(200, seed=4)
    config = TrainConfig(epochs=1, batch_size=32, learning_rate=0.1, seed=9)
    results = []
    for _ in range(2):
        net = build_model("mnist-mlp", device=CPU, seed=1)
        loops.train(net, data, config=config, device=CPU)
        results.append(get_parameters(net))
    assert all(np.array_equal(a, b) for a, b in zip(*results, strict=True))


def test_an_empty_training_set_is_an_error() -> None:
    empty = ImageSet(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), "mnist-mlp")
    net = build_model("mnist-mlp", device=CPU)
    with pytest.raises(TrainingError, match="training set is empty"):
        loops.train(net, empty, config=TrainConfig(), device=CPU)


def test_a_diverging_run_is_stopped_with_advice() -> None:
    net = build_model("mnist-mlp", device=CPU)
    config = TrainConfig(epochs=1, batch_size=10, learning_rate=1e9)
    with pytest.raises(TrainingError, match=r"diverged in epoch 1/1.*lower the learning rate"):
        loops.train(net, _learnable(100, seed=5), config=config, device=CPU)


def test_evaluation_matches_a_hand_computed_cross_entropy() -> None:
    """A net that ignores its input and outputs fixed logits ``b``: every
    prediction is argmax(b) and the loss is -log softmax(b)[y]."""
    net = build_model("mnist-mlp", device=CPU)
    arrays = [np.zeros_like(a) for a in get_parameters(net)]
    logits = np.linspace(-1.0, 2.0, 10).astype(np.float32)
    logits[3] = 5.0
    arrays[5] = logits
    set_parameters(net, arrays)
    data = _learnable(250, seed=6)
    result = loops.evaluate(net, data, batch_size=64, device=CPU)
    log_softmax = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    assert result.num_examples == 250
    assert result.loss == pytest.approx(-log_softmax[data.labels].mean(), rel=1e-5)
    assert result.accuracy == pytest.approx(np.mean(data.labels == 3))


def test_evaluating_nothing_gives_zero_weight() -> None:
    empty = ImageSet(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), "mnist-mlp")
    net = build_model("mnist-mlp", device=CPU)
    assert loops.evaluate(net, empty, batch_size=8, device=CPU) == (0.0, 0.0, 0)


def test_proximal_term_gradient_is_mu_times_the_distance() -> None:
    """Autograd through the term equals the closed form mu * (w - w_global)."""
    mu = 0.37
    net = build_model("mnist-mlp", device=CPU, seed=0)
    params = list(parameter_map(net).values())
    rng = np.random.default_rng(7)
    global_arrays = [
        (p.data().asnumpy() + rng.normal(0, 0.1, p.shape)).astype(np.float32) for p in params
    ]
    anchors = [mx.nd.array(a) for a in global_arrays]
    for p in params:
        p.zero_grad()
    with autograd.record():
        term = proximal_term([p.data() for p in params], anchors, mu)
    term.backward()
    weights = [p.data().asnumpy().astype(np.float64) for p in params]
    expected_value = (
        mu
        / 2
        * sum(float(((w - g) ** 2).sum()) for w, g in zip(weights, global_arrays, strict=True))
    )
    assert float(term.asscalar()) == pytest.approx(expected_value, rel=1e-4)
    for p, w, g in zip(params, weights, global_arrays, strict=True):
        np.testing.assert_allclose(p.grad().asnumpy(), mu * (w - g), rtol=1e-5, atol=1e-7)


def test_training_steps_include_the_proximal_gradient() -> None:
    """One full-batch SGD step: w1 = w0 - lr * (grad CE(w0) + mu * (w0 - w_global))."""
    mu, lr = 0.5, 0.1
    data = _learnable(64, seed=8)
    net = build_model("mnist-mlp", device=CPU, seed=0)
    w0 = [np.asarray(w, dtype=np.float64) for w in get_parameters(net)]
    rng = np.random.default_rng(9)
    w_global = [(w + rng.normal(0, 0.05, w.shape)).astype(np.float32) for w in w0]
    # The data gradient at w0, computed separately.
    params = list(parameter_map(net).values())
    x, y = data.batch(np.arange(len(data)))
    with autograd.record():
        ce = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(mx.nd.array(x)), mx.nd.array(y)).mean()
    ce.backward()
    grad_ce = [p.grad().asnumpy().astype(np.float64) for p in params]
    config = TrainConfig(epochs=1, batch_size=len(data), learning_rate=lr, proximal_mu=mu)
    loops.train(net, data, config=config, device=CPU, proximal_reference=w_global)
    w1 = get_parameters(net)
    for before, after, g_ce, g in zip(w0, w1, grad_ce, w_global, strict=True):
        expected = before - lr * (g_ce + mu * (before - g))
        np.testing.assert_allclose(np.asarray(after, np.float64), expected, rtol=1e-4, atol=1e-6)


def test_fedprox_keeps_local_weights_nearer_the_global_model() -> None:
    data = _learnable(300, seed=10)
    distances = {}
    for mu in (0.0, 1.0):
        net = build_model("mnist-mlp", device=CPU, seed=0)
        start = get_parameters(net)
        config = TrainConfig(epochs=2, batch_size=20, learning_rate=0.1, proximal_mu=mu)
        loops.train(net, data, config=config, device=CPU)  # anchor: the weights at entry
        distances[mu] = _squared_distance(get_parameters(net), start)
    assert distances[1.0] < 0.7 * distances[0.0]


def test_the_fit_config_is_the_shared_one() -> None:
    """Every framework reads fit configs with one parser (tested in tests/core)."""
    assert TrainConfig is training.TrainConfig
    assert loops.ConfigError is training.ConfigError
    assert TrainingError is training.TrainingError
    assert EpochStats is training.EpochStats
