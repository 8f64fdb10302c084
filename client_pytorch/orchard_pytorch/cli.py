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

import torch

from orchard.client.cli import (
    add_client_commands,
    add_dataset_arguments,
    configure_logging,
    data_settings_from_args,
    label_synthetic,
    partition_from_args,
    settings_from_args,
)
from orchard.client.numpy_client import ClientContext
from orchard.client.runtime import report_fatal, run_client
from orchard.data.download import DownloadError
from orchard.data.errors import DatasetError
from orchard.data.partition import PartitionError
from orchard.env import env_default
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
    load_split,
)
from orchard_pytorch.device import DEVICE_CHOICES, DeviceError, resolve_device
from orchard_pytorch.models import MODEL_BUILDERS
from orchard_pytorch.train import ConfigError, TrainConfig, TrainingError

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


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options of both commands: model, dataset, download source, device."""
    g = add_dataset_arguments(
        parser,
        models=sorted(MODEL_BUILDERS),
        default_model="cifar10-cnn",
        datasets=sorted(DATASETS),
    )
    g.add_argument(
        "--device",
        default=env_default("DEVICE", "auto"),
        help=f"{'|'.join(DEVICE_CHOICES)}|cuda:N; auto picks CUDA when available "
        "(ORCHARD_DEVICE; default auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m orchard_pytorch``."""
    parser = argparse.ArgumentParser(
        prog="python -m orchard_pytorch",
        description="Orchard's PyTorch client and its centralized baseline.",
    )
    add_client_commands(
        parser,
        framework_arguments=_add_common,
        client_description="Join an Orchard federation as a PyTorch client.",
        baseline_help="train centrally on the whole training set (the tutorial), "
        "report test metrics",
        baseline_description="Centralized training with the same model, data and loops as "
        "the client.",
        baseline_defaults=TUTORIAL_TRAINING,
    )
    return parser


def _run_client(args: argparse.Namespace) -> int:
    data_settings = data_settings_from_args(args, DataSettings)
    settings = label_synthetic(settings_from_args(args, framework="pytorch"), data_settings)
    device = resolve_device(args.device)
    evaluator = settings.role is Role.EVALUATOR
    # Read (and if needed download) the files before joining: a missing
    # dataset fails here with one clear line instead of in round 1.
    split: OfficialSplit = "test" if evaluator else "train"
    model_spec = get_model_spec(args.model)
    try:
        preloaded = {split: load_split(data_settings, split)}
    except (DataError, DatasetError, DownloadError) as exc:
        logger.error("%s", exc)
        # The federation learns why at once, instead of waiting for us in vain.
        reason = f"cannot load its {data_settings.dataset} data: {exc}"
        return report_fatal(settings, reason, model_spec=model_spec)

    def factory(ctx: ClientContext) -> TorchClient:
        # Called once after joining: ctx carries the partition to load (the
        # user's explicit one, else the server's assignment).
        data = DataBundle(
            data_settings,
            partition=partition_from_args(args, ctx.num_partitions),
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
    return run_client(factory, settings, model_spec=model_spec)


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
            data=data_settings_from_args(args, DataSettings),
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
