"""``python -m orchard_pytorch client|baseline``: a thin command line.

Every option has an ``ORCHARD_*`` environment variable as its default (named
in its help), so containers are configured without flags. Problems the user
can fix (no GPU, wrong model/dataset pair, a failed download) end with one
clear line and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from orchard.client.cli import (
    add_client_arguments,
    configure_logging,
    env_default,
    settings_from_args,
)
from orchard.client.numpy_client import ClientContext
from orchard.client.runtime import run_client
from orchard.data.download import DownloadError
from orchard.data.errors import DatasetError
from orchard.data.partition import PartitionError, PartitionSpec
from orchard.messages import Role
from orchard.models import get_model_spec
from orchard.spec import SpecError
from orchard_pytorch.baseline import TUTORIAL_TRAINING, BaselineSettings, run_baseline
from orchard_pytorch.client import TorchClient
from orchard_pytorch.data import (
    DATASETS,
    DataBundle,
    DataError,
    DataSettings,
    OfficialSplit,
    check_compatible,
    load_split,
)
from orchard_pytorch.data import default_dataset as dataset_for
from orchard_pytorch.device import DEVICE_CHOICES, DeviceError, resolve_device
from orchard_pytorch.models import MODEL_BUILDERS
from orchard_pytorch.train import OPTIMIZERS, ConfigError, TrainConfig, TrainingError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("orchard_pytorch")

#: Errors a user can act on: reported in one line, exit status 2.
_USER_ERRORS = (
    ConfigError,
    DataError,
    DatasetError,
    DeviceError,
    DownloadError,
    PartitionError,
    SpecError,
    TrainingError,
)


def _env_float(name: str, default: float) -> float:
    value = env_default(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"ORCHARD_{name}={value!r} is not a number") from None


def _env_int(name: str, default: int) -> int:
    value = env_default(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"ORCHARD_{name}={value!r} is not an integer") from None


def _env_flag(name: str) -> bool:
    return (env_default(name, "") or "").lower() in {"1", "true", "yes", "on"}


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options of both commands: model, dataset, device, download source."""
    g = parser.add_argument_group("PyTorch")
    g.add_argument(
        "--model",
        choices=sorted(MODEL_BUILDERS),
        default=env_default("MODEL", "cifar10-cnn"),
        help="model id (ORCHARD_MODEL; default cifar10-cnn)",
    )
    g.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=env_default("DATASET") or None,
        help="dataset (ORCHARD_DATASET; default: cifar10 for cifar10-cnn, mnist otherwise)",
    )
    g.add_argument(
        "--device",
        default=env_default("DEVICE", "auto"),
        help=f"{'|'.join(DEVICE_CHOICES)}|cuda:N; auto picks CUDA when available "
        "(ORCHARD_DEVICE; default auto)",
    )
    g.add_argument(
        "--dataset-mirror",
        default=env_default("DATASET_MIRROR") or None,
        help="base URL serving the dataset files instead of their official sites, "
        "for air-gapped sites (ORCHARD_DATASET_MIRROR)",
    )
    g.add_argument(
        "--no-verify",
        action="store_true",
        default=_env_flag("NO_VERIFY"),
        help="use dataset files found in the data directory without checking the official "
        "checksums, e.g. re-packed copies (ORCHARD_NO_VERIFY=1; downloads are always verified)",
    )
    g.add_argument(
        "--no-download",
        action="store_true",
        default=_env_flag("NO_DOWNLOAD"),
        help="fail instead of downloading missing files (ORCHARD_NO_DOWNLOAD=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m orchard_pytorch``."""
    parser = argparse.ArgumentParser(
        prog="python -m orchard_pytorch",
        description="Orchard's PyTorch client and its centralized baseline.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    client = commands.add_parser(
        "client",
        help="join a federation and train on this client's partition",
        description="Join an Orchard federation as a PyTorch client.",
    )
    add_client_arguments(client)
    _add_common(client)

    baseline = commands.add_parser(
        "baseline",
        help="train centrally on the whole training set (the tutorial), report test metrics",
        description="Centralized training with the same model, data and loops as the client.",
    )
    _add_common(baseline)
    t = TUTORIAL_TRAINING
    b = baseline.add_argument_group("training")
    b.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env_default("DATA_DIR", "data") or "data"),
        help="dataset cache directory (ORCHARD_DATA_DIR; default ./data)",
    )
    b.add_argument(
        "--epochs",
        type=int,
        default=_env_int("EPOCHS", t.epochs),
        help=f"(ORCHARD_EPOCHS; default {t.epochs})",
    )
    b.add_argument(
        "--batch-size",
        type=int,
        default=_env_int("BATCH_SIZE", t.batch_size),
        help=f"(ORCHARD_BATCH_SIZE; default {t.batch_size})",
    )
    b.add_argument(
        "--learning-rate",
        "--lr",
        type=float,
        default=_env_float("LEARNING_RATE", t.learning_rate),
        help=f"(ORCHARD_LEARNING_RATE; default {t.learning_rate})",
    )
    b.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=env_default("OPTIMIZER", t.optimizer),
        help=f"(ORCHARD_OPTIMIZER; default {t.optimizer})",
    )
    b.add_argument(
        "--momentum",
        type=float,
        default=_env_float("MOMENTUM", t.momentum),
        help=f"SGD momentum (ORCHARD_MOMENTUM; default {t.momentum})",
    )
    b.add_argument(
        "--seed",
        type=int,
        default=_env_int("SEED", t.seed),
        help=f"initial weights and shuffling (ORCHARD_SEED; default {t.seed})",
    )
    b.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (ORCHARD_LOG_LEVEL)",
    )
    return parser


def _data_settings(args: argparse.Namespace) -> DataSettings:
    dataset = args.dataset or dataset_for(args.model)
    check_compatible(args.model, dataset)
    return DataSettings(
        dataset=dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
        mirror=args.dataset_mirror,
        verify=not args.no_verify,
    )


def _run_client(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, framework="pytorch")
    data_settings = _data_settings(args)
    device = resolve_device(args.device)
    evaluator = settings.role is Role.EVALUATOR
    # Read (and if needed download) the files before joining: a missing
    # dataset fails here with one clear line instead of in round 1.
    split: OfficialSplit = "test" if evaluator else "train"
    preloaded = {split: load_split(data_settings, split)}

    def factory(ctx: ClientContext) -> TorchClient:
        # Called once after joining: ctx carries the partition to load (the
        # user's explicit one, else the server's assignment).
        partition = PartitionSpec(
            scheme=args.partition_scheme,
            num_partitions=ctx.num_partitions,
            seed=args.seed,
            alpha=args.dirichlet_alpha if args.partition_scheme == "dirichlet" else None,
        )
        data = DataBundle(
            data_settings,
            partition=partition,
            partition_id=ctx.partition_id,
            seed=args.seed,
            preloaded=preloaded,
        )
        preloaded.clear()  # the bundle owns the arrays now
        return TorchClient(
            model_id=args.model,
            data=data,
            device=device,
            eval_split="test" if evaluator else "val",
            seed=args.seed,
        )

    logger.info(
        "PyTorch %s client for federation %r at %s: model %s on %s",
        settings.role.value,
        settings.federation,
        settings.server,
        args.model,
        data_settings.dataset,
    )
    return run_client(factory, settings, model_spec=get_model_spec(args.model))


def _run_baseline(args: argparse.Namespace) -> int:
    training = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        momentum=args.momentum,
        seed=args.seed,
    )
    result = run_baseline(
        BaselineSettings(
            model_id=args.model,
            data=_data_settings(args),
            training=training,
            device=args.device,
        )
    )
    print(
        f"test loss {result.test.loss:.4f}, accuracy {result.test.accuracy:.4f} "
        f"on {result.test.num_examples} examples "
        f"(last epoch: train loss {result.train.loss:.4f}, accuracy {result.train.accuracy:.4f})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    logger.debug("torch %s, %d CPU threads", torch.__version__, torch.get_num_threads())
    try:
        if args.command == "client":
            return _run_client(args)
        return _run_baseline(args)
    except _USER_ERRORS as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.info("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
