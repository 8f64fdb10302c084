"""Options every framework client shares: environment defaults, dataset, baseline, partition."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchard.client.adapter import DeviceError
from orchard.client.cli import (
    add_baseline_arguments,
    add_client_arguments,
    add_client_commands,
    add_dataset_arguments,
    data_settings_from_args,
    partition_from_args,
    run_command,
)
from orchard.client.training import ConfigError, TrainConfig
from orchard.data.client_data import DataError, DataSettings
from orchard.data.errors import DatasetError
from orchard.data.partition import PartitionSpec
from orchard.env import env_flag, env_float, env_int
from orchard.spec import SpecError

MODELS = ["cifar10-cnn", "mnist-cnn", "mnist-mlp"]
DATASETS = ["cifar10", "fashion-mnist", "mnist"]


@pytest.fixture(autouse=True)
def _no_orchard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORCHARD_"):
            monkeypatch.delenv(name)


def _parser(*, default_dataset: str | None = None) -> argparse.ArgumentParser:
    """A client command as a framework composes it: shared options plus its --device."""
    parser = argparse.ArgumentParser(prog="client")
    add_client_arguments(parser)
    group = add_dataset_arguments(
        parser,
        models=MODELS,
        default_model="cifar10-cnn",
        datasets=DATASETS,
        default_dataset=default_dataset,
    )
    group.add_argument("--device", default="cpu")
    return parser


def _baseline_parser(defaults: TrainConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baseline")
    add_dataset_arguments(parser, models=MODELS, default_model="mnist-mlp", datasets=DATASETS)
    add_baseline_arguments(parser, defaults)
    return parser


# --- environment variables ---------------------------------------------------------------


def test_environment_numbers_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_int("EPOCHS") is None
    assert env_int("EPOCHS", 3) == 3
    assert env_float("MOMENTUM", 0.5) == 0.5
    assert env_flag("INSECURE") is False
    monkeypatch.setenv("ORCHARD_EPOCHS", "7")
    monkeypatch.setenv("ORCHARD_MOMENTUM", "0.25")
    assert (env_int("EPOCHS"), env_int("EPOCHS", 3), env_float("MOMENTUM", 0.5)) == (7, 7, 0.25)
    monkeypatch.setenv("ORCHARD_EPOCHS", "")
    assert env_int("EPOCHS", 3) == 3  # empty means unset: compose files often write KEY=
    for value, expected in [("1", True), ("TRUE", True), ("yes", True), ("On", True)]:
        monkeypatch.setenv("ORCHARD_INSECURE", value)
        assert env_flag("INSECURE") is expected
    for value in ("0", "false", "", "2"):
        monkeypatch.setenv("ORCHARD_INSECURE", value)
        assert env_flag("INSECURE") is False


def test_a_bad_environment_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_SEED", "one")
    with pytest.raises(SystemExit, match="ORCHARD_SEED='one' is not an integer"):
        env_int("SEED", 0)
    monkeypatch.setenv("ORCHARD_LEARNING_RATE", "fast")
    with pytest.raises(SystemExit, match="ORCHARD_LEARNING_RATE='fast' is not a number"):
        env_float("LEARNING_RATE", 0.1)


# --- model and dataset -------------------------------------------------------------------


def test_dataset_option_defaults() -> None:
    args = _parser().parse_args(["--federation", "f"])
    assert (args.model, args.dataset, args.device) == ("cifar10-cnn", None, "cpu")
    assert (args.dataset_mirror, args.no_verify, args.no_download) == (None, False, False)
    fixed = _parser(default_dataset="mnist").parse_args(
        ["--federation", "f", "--model", "mnist-cnn"]
    )
    assert (fixed.model, fixed.dataset) == ("mnist-cnn", "mnist")


def test_dataset_options_come_from_the_environment_and_flags_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "MODEL": "mnist-mlp",
        "DATASET": "fashion-mnist",
        "DATASET_MIRROR": "http://mirror.example/data",
        "NO_VERIFY": "1",
        "NO_DOWNLOAD": "yes",
    }.items():
        monkeypatch.setenv(f"ORCHARD_{name}", value)
    args = _parser(default_dataset="mnist").parse_args(["--federation", "f"])
    assert (args.model, args.dataset) == ("mnist-mlp", "fashion-mnist")
    assert args.dataset_mirror == "http://mirror.example/data"
    assert (args.no_verify, args.no_download) == (True, True)
    args = _parser().parse_args(["--federation", "f", "--model", "mnist-cnn", "--dataset", "mnist"])
    assert (args.model, args.dataset) == ("mnist-cnn", "mnist")


def test_models_and_datasets_outside_the_clients_choices_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_dataset_arguments(
        parser, models=["mnist-mlp"], default_model="mnist-mlp", datasets=["mnist"]
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "cifar10-cnn"])
    assert "invalid choice: 'cifar10-cnn'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "cifar10"])
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err


def test_the_help_names_each_models_own_dataset(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside "mnist-mlp"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cifar10 for cifar10-cnn, mnist for mnist-cnn, mnist for mnist-mlp" in help_text
    assert "ORCHARD_NO_VERIFY" in help_text


def test_data_settings_take_the_models_own_dataset(tmp_path: Path) -> None:
    args = _parser().parse_args(["--federation", "f", "--data-dir", str(tmp_path)])
    settings = data_settings_from_args(args, DataSettings)
    assert settings == DataSettings(dataset="cifar10", data_dir=tmp_path)
    args = _parser().parse_args(
        [
            "--federation",
            "f",
            "--model",
            "mnist-mlp",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path),
            "--dataset-mirror",
            "http://mirror.example",
            "--no-verify",
            "--no-download",
        ]
    )
    assert data_settings_from_args(args, DataSettings) == DataSettings(
        dataset="fashion-mnist",
        data_dir=tmp_path,
        download=False,
        mirror="http://mirror.example",
        verify=False,
    )


def test_data_settings_refuse_a_dataset_the_model_cannot_read(tmp_path: Path) -> None:
    args = _parser().parse_args(["--federation", "f", "--dataset", "mnist"])
    with pytest.raises(DataError, match=r"model 'cifar10-cnn' takes 3x32x32 images"):
        data_settings_from_args(args, DataSettings)


@dataclass(frozen=True, kw_only=True, slots=True)
class _NarrowSettings(DataSettings):
    """A framework's narrower settings type, as the MXNet client has."""


def test_data_settings_are_of_the_type_asked_for(tmp_path: Path) -> None:
    args = _parser().parse_args(["--federation", "f", "--model", "mnist-mlp"])
    settings = data_settings_from_args(args, _NarrowSettings)
    assert type(settings) is _NarrowSettings
    assert settings.dataset == "mnist"


# --- baseline options --------------------------------------------------------------------


def test_baseline_options_default_to_the_given_hyperparameters(tmp_path: Path) -> None:
    tutorial = TrainConfig(epochs=2, batch_size=4, learning_rate=0.001, momentum=0.9, seed=3)
    args = _baseline_parser(tutorial).parse_args([])
    assert (args.epochs, args.batch_size, args.learning_rate) == (2, 4, 0.001)
    assert (args.optimizer, args.momentum, args.seed) == ("sgd", 0.9, 3)
    assert (args.data_dir, args.log_level) == (Path("data"), "INFO")
    args = _baseline_parser(tutorial).parse_args(
        ["--lr", "0.5", "--optimizer", "adam", "--data-dir", str(tmp_path)]
    )
    assert (args.learning_rate, args.optimizer, args.data_dir) == (0.5, "adam", tmp_path)


def test_baseline_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "EPOCHS": "5",
        "BATCH_SIZE": "64",
        "LEARNING_RATE": "0.02",
        "MOMENTUM": "0.5",
        "OPTIMIZER": "adam",
        "SEED": "11",
        "LOG_LEVEL": "DEBUG",
    }.items():
        monkeypatch.setenv(f"ORCHARD_{name}", value)
    args = _baseline_parser(TrainConfig()).parse_args([])
    assert (args.epochs, args.batch_size, args.learning_rate) == (5, 64, 0.02)
    assert (args.momentum, args.optimizer, args.seed, args.log_level) == (0.5, "adam", 11, "DEBUG")
    monkeypatch.setenv("ORCHARD_BATCH_SIZE", "big")
    with pytest.raises(SystemExit, match="ORCHARD_BATCH_SIZE='big' is not an integer"):
        _baseline_parser(TrainConfig())


# --- the partition -----------------------------------------------------------------------


def test_the_partition_uses_the_users_scheme_and_seed_over_the_given_count() -> None:
    args = _parser().parse_args(["--federation", "f", "--seed", "4"])
    # The Dirichlet alpha (default 0.5) belongs to the Dirichlet scheme only.
    assert partition_from_args(args, 3) == PartitionSpec(scheme="iid", num_partitions=3, seed=4)
    args = _parser().parse_args(
        ["--federation", "f", "--partition-scheme", "dirichlet", "--dirichlet-alpha", "0.3"]
    )
    assert partition_from_args(args, 2) == PartitionSpec(
        scheme="dirichlet", num_partitions=2, seed=0, alpha=0.3
    )
    args = _parser().parse_args(["--federation", "f", "--partition-scheme", "shards"])
    assert partition_from_args(args, 5) == PartitionSpec(scheme="shards", num_partitions=5)


# --- the two commands -----------------------------------------------------------------------


def test_client_and_baseline_commands_share_the_frameworks_options(tmp_path: Path) -> None:
    def framework_arguments(parser: argparse.ArgumentParser) -> None:
        add_dataset_arguments(parser, models=MODELS, default_model="mnist-mlp", datasets=DATASETS)
        parser.add_argument("--device", default="cpu")

    parser = argparse.ArgumentParser(prog="framework")
    baseline = add_client_commands(
        parser,
        framework_arguments=framework_arguments,
        client_description="join",
        baseline_help="train centrally",
        baseline_description="train centrally",
        baseline_defaults=TrainConfig(epochs=4, learning_rate=0.2),
        baseline_val_fraction=0.3,
    )
    baseline.add_argument("--framework-only", action="store_true")
    client = parser.parse_args(["client", "--federation", "f", "--device", "gpu"])
    assert (client.command, client.federation, client.model, client.device) == (
        "client",
        "f",
        "mnist-mlp",
        "gpu",
    )
    assert client.partition_scheme == "iid"  # the shared client options
    assert not hasattr(client, "epochs")
    args = parser.parse_args(["baseline", "--data-dir", str(tmp_path), "--val-fraction", "0"])
    assert (args.command, args.model, args.device, args.data_dir) == (
        "baseline",
        "mnist-mlp",
        "cpu",
        tmp_path,
    )
    assert (args.epochs, args.learning_rate, args.val_fraction) == (4, 0.2, 0.0)
    assert parser.parse_args(["baseline"]).val_fraction == 0.3  # the framework's default
    assert parser.parse_args(["baseline", "--framework-only"]).framework_only
    assert not hasattr(args, "federation")
    with pytest.raises(SystemExit):
        parser.parse_args([])  # a command is required


def test_display_name_is_service_and_replica_in_a_compose_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from orchard.client.cli import default_display_name

    names = {
        "3f2a9c1b7d0e": "172.18.0.5",
        "proj-client_pytorch-1": "172.18.0.4",
        "proj-client_pytorch-2": "172.18.0.5",
    }

    def resolve(name: str) -> str:
        try:
            return names[name]
        except KeyError:
            raise socket.gaierror(-2, "Name or service not known") from None

    monkeypatch.setattr(socket, "gethostname", lambda: "3f2a9c1b7d0e")
    monkeypatch.setattr(socket, "gethostbyname", resolve)
    monkeypatch.delenv("ORCHARD_SERVICE", raising=False)
    monkeypatch.setenv("ORCHARD_COMPOSE_PROJECT", "proj")
    assert default_display_name() == "3f2a9c1b7d0e"
    monkeypatch.setenv("ORCHARD_SERVICE", "client_pytorch")
    assert default_display_name() == "client_pytorch-2"
    monkeypatch.setenv("ORCHARD_SERVICE", "client_mxnet")  # not this container's service
    assert default_display_name() == "3f2a9c1b7d0e"


def test_a_client_on_synthetic_data_says_so_in_its_name(tmp_path: Path) -> None:
    from orchard.client.cli import label_synthetic
    from orchard.client.runtime import ClientSettings
    from orchard.data.client_data import DataSettings
    from orchard.data.synth import write_synthetic

    settings = ClientSettings(federation="f", display_name="client_mxnet-1")
    data = DataSettings(dataset="mnist", data_dir=tmp_path)
    assert label_synthetic(settings, data).display_name == "client_mxnet-1"
    write_synthetic(tmp_path, "mnist", n_train=20, n_test=10)
    assert label_synthetic(settings, data).display_name == "client_mxnet-1 (SYNTHETIC data)"


# --- error handling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("config 'epochs' must be at least 1, got 0"),
        DataError("model 'cifar10-cnn' takes 3x32x32 images"),
        DatasetError("CIFAR-10 not found: place the tarball"),
        DeviceError("--device cuda (ORCHARD_DEVICE) asks for a GPU"),
        SpecError("tensor 'fc1.weight': expected shape [128, 784]"),
        PermissionError("[Errno 13] Permission denied: 'data'"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_problems_the_user_can_fix_are_one_line_and_exit_2(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    def command() -> int:
        raise error

    with caplog.at_level(logging.INFO):
        assert run_command(command, logging.getLogger("orchard_test")) == 2
    assert [r.getMessage() for r in caplog.records] == [str(error)]
    assert caplog.records[0].levelname == "ERROR"


def test_a_bug_keeps_its_traceback() -> None:
    def command() -> int:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_command(command, logging.getLogger("orchard_test"))


def test_ctrl_c_exits_130() -> None:
    def command() -> int:
        raise KeyboardInterrupt

    assert run_command(command, logging.getLogger("orchard_test")) == 130
    assert run_command(lambda: 0, logging.getLogger("orchard_test")) == 0


def test_a_client_that_cannot_read_its_data_tells_the_federation_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from orchard.client import cli
    from orchard.client.adapter import FrameworkAdapter
    from orchard.client.runtime import ClientSettings
    from orchard.spec import ModelSpec

    reported: list[tuple[str, str, str]] = []

    def report(settings: ClientSettings, reason: str, *, model_spec: ModelSpec | None) -> int:
        assert model_spec is not None
        reported.append((settings.display_name, reason, model_spec.model_id))
        return 2

    monkeypatch.setattr(cli, "report_fatal", report)
    commands = cli.FrameworkCommands(
        framework="test",
        title="Test",
        adapter=lambda device: cast(FrameworkAdapter[Any, Any], SimpleNamespace(device=device)),
        models=MODELS,
        default_model="mnist-mlp",
        datasets=DATASETS,
        baseline_defaults=TrainConfig(),
        baseline_val_fraction=0.1,
        baseline_about="",
    )
    argv = ["client", "--federation", "demo", "--name", "site-1", "--no-download"]
    code = cli.framework_main(commands, [*argv, "--data-dir", str(tmp_path)])
    assert code == 2
    assert len(reported) == 1
    name, reason, model_id = reported[0]
    assert (name, model_id) == ("site-1", "mnist-mlp")
    assert reason.startswith("cannot load its mnist data: no usable train-images-idx3-ubyte")
    assert str(tmp_path) in reason
