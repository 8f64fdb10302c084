"""The centralized baseline, on generated files and on the real Fashion-MNIST."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mx = pytest.importorskip("mxnet")

from orchard_mxnet.baseline import BaselineSettings, run_baseline  # noqa: E402
from orchard_mxnet.data import DataSettings  # noqa: E402
from orchard_mxnet.train import ConfigError, TrainConfig  # noqa: E402
from tests.client_mxnet.conftest import GeneratedMnist  # noqa: E402

pytestmark = pytest.mark.mxnet

#: Debian's dataset-fashion-mnist package installs the four official IDX files here.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def test_baseline_reports_every_epoch_and_the_test_evaluation(
    generated_mnist: GeneratedMnist,
) -> None:
    lines: list[str] = []
    result = run_baseline(
        BaselineSettings(
            model_id="mnist-mlp",
            data=DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir),
            training=TrainConfig(epochs=2, batch_size=16, learning_rate=0.1),
        ),
        device="cpu",
        report=lines.append,
    )
    assert len(lines) == 4
    assert lines[0].startswith(
        "centralized baseline: mnist-mlp on mnist (mxnet, cpu), 270 training / 30 "
    )
    for epoch, (line, record) in enumerate(zip(lines[1:3], result.epochs, strict=True), 1):
        assert re.fullmatch(
            rf"epoch {epoch}/2: train cross-entropy \d+\.\d{{4}}, accuracy \d\.\d{{4}}; "
            r"validation cross-entropy \d+\.\d{4}, accuracy \d\.\d{4}",
            line,
        )
        assert f"validation cross-entropy {record.val.loss:.4f}" in line
        assert record.val.num_examples == 30
    assert lines[3] == (
        f"test evaluation on 100 examples: cross-entropy {result.test.loss:.4f}, "
        f"accuracy {result.test.accuracy:.4f}"
    )
    # Learnable data: the baseline learns it.
    assert result.epochs[1].train.loss < result.epochs[0].train.loss
    assert result.test.accuracy > 0.8


def test_the_cnn_baseline_runs_too(generated_mnist: GeneratedMnist) -> None:
    result = run_baseline(
        BaselineSettings(
            model_id="mnist-cnn",
            data=DataSettings(dataset="mnist", data_dir=generated_mnist.data_dir, val_fraction=0),
            training=TrainConfig(epochs=1, batch_size=32, learning_rate=0.05),
        ),
        device="cpu",
        report=lambda _: None,
    )
    assert result.epochs[0].val.num_examples == 0
    assert result.epochs[0].train.loss < 2.3  # below chance level, ln(10)
    assert result.test.num_examples == 100


def test_bad_hyperparameters_fail_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'learning_rate' must be > 0"):
        run_baseline(
            BaselineSettings(
                model_id="mnist-mlp",
                data=DataSettings(
                    dataset="mnist", data_dir=tmp_path / "nothing-here", download=False
                ),
                training=TrainConfig(learning_rate=-1.0),
            ),
            device="cpu",
        )


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"{FASHION_MNIST_DIR} is absent: install Debian's dataset-fashion-mnist package",
)
def test_one_epoch_on_the_real_fashion_mnist_reaches_75_percent() -> None:
    """mnist-mlp, SGD lr 0.1, batch 64, one epoch: about 82% measured here."""
    result = run_baseline(
        BaselineSettings(
            model_id="mnist-mlp",
            data=DataSettings(dataset="fashion-mnist", data_dir=FASHION_MNIST_DIR, download=False),
            training=TrainConfig(epochs=1, batch_size=64, learning_rate=0.1),
        ),
        device="cpu",
        report=lambda _: None,
    )
    assert result.test.num_examples == 10_000
    assert result.test.accuracy >= 0.75
