"""``python -m orchard_pytorch``: options, environment variables, and one-line errors."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orchard_pytorch.cli import build_parser, main
from tests.helpers.client_data import GeneratedCifar


def test_client_options_come_from_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORCHARD_FEDERATION", "mnist-demo")
    monkeypatch.setenv("ORCHARD_SERVER", "server:9000")
    monkeypatch.setenv("ORCHARD_MODEL", "mnist-mlp")
    monkeypatch.setenv("ORCHARD_DATASET", "fashion-mnist")
    monkeypatch.setenv("ORCHARD_DEVICE", "cpu")
    monkeypatch.setenv("ORCHARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ORCHARD_DATASET_MIRROR", "http://mirror.example/data")
    monkeypatch.setenv("ORCHARD_NO_VERIFY", "1")
    args = build_parser().parse_args(["client"])
    assert args.federation == "mnist-demo"
    assert args.server == "server:9000"
    assert args.model == "mnist-mlp"
    assert args.dataset == "fashion-mnist"
    assert args.device == "cpu"
    assert args.data_dir == tmp_path
    assert args.dataset_mirror == "http://mirror.example/data"
    assert args.no_verify is True
    assert args.no_download is False


def test_flags_override_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_MODEL", "mnist-mlp")
    monkeypatch.setenv("ORCHARD_DEVICE", "cuda")
    args = build_parser().parse_args(["baseline", "--model", "mnist-cnn", "--device", "cpu"])
    assert (args.model, args.device) == ("mnist-cnn", "cpu")


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL", "DEVICE", "DATASET", "EPOCHS", "BATCH_SIZE"):
        monkeypatch.delenv(f"ORCHARD_{name}", raising=False)
    args = build_parser().parse_args(["baseline"])
    assert (args.model, args.device, args.dataset) == ("cifar10-cnn", "auto", None)
    assert (args.epochs, args.batch_size) == (2, 4)


def test_a_bad_environment_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_EPOCHS", "two")
    with pytest.raises(SystemExit, match="ORCHARD_EPOCHS='two' is not an integer"):
        build_parser()


def test_client_needs_a_federation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHARD_FEDERATION", raising=False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["client"])


def test_cuda_without_cuda_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.ERROR):
        code = main(["baseline", "--device", "cuda", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "--device cuda (ORCHARD_DEVICE) asks for a GPU" in caplog.text
    assert "Traceback" not in caplog.text


def test_incompatible_dataset_is_one_clear_line(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.ERROR):
        code = main(["baseline", "--dataset", "mnist", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "model 'cifar10-cnn' takes 3x32x32 images" in caplog.text


def test_missing_data_without_download_is_one_clear_line(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.ERROR):
        code = main(["baseline", "--device", "cpu", "--no-download", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "CIFAR-10 not found" in caplog.text


def test_baseline_command_prints_test_metrics(
    cifar: GeneratedCifar, cifar_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The generated tarball cannot match the official checksum: --no-verify uses it as is.
    code = main(
        [
            "baseline",
            "--data-dir",
            str(cifar_data_dir),
            "--no-verify",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--batch-size",
            "20",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("centralized baseline: cifar10-cnn on cifar10 (pytorch, cpu), 100 ")
    assert out[1].startswith("epoch 1/1: train cross-entropy ")
    assert out[2].startswith("test evaluation on 20 examples: cross-entropy ")


def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchard_pytorch", "baseline", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--device" in done.stdout
    assert "ORCHARD_DEVICE" in done.stdout


def test_client_checks_its_data_before_joining(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # No server listens on port 9: the client must fail on the data first.
    with caplog.at_level(logging.INFO):
        code = main(
            [
                "client",
                "--server",
                "127.0.0.1:9",
                "--federation",
                "demo",
                "--insecure",
                "--device",
                "cpu",
                "--no-download",
                "--data-dir",
                str(tmp_path),
                "--connect-timeout",
                "1",
            ]
        )
    assert code == 2
    assert "CIFAR-10 not found" in caplog.text
    assert "joined" not in caplog.text
