"""Command line: ``python -m orchard_mxnet client|baseline ...``.

``client`` joins a federation with the options every Orchard client shares
(:func:`orchard.client.cli.add_client_arguments`, each with an ``ORCHARD_*``
environment variable) plus this client's ``--model``, ``--dataset`` and
``--device``; ``baseline`` trains the same model centrally for comparison.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from orchard.client.cli import add_client_arguments, configure_logging, settings_from_args
from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.client.runtime import run_client
from orchard.data.partition import PartitionSpec
from orchard.messages import Role
from orchard.models import get_model_spec
from orchard_mxnet.baseline import BaselineConfig, run_baseline
from orchard_mxnet.client import MXNetClient
from orchard_mxnet.data import DATASETS, ClientData, DataSettings
from orchard_mxnet.device import DEVICE_CHOICES, resolve_context
from orchard_mxnet.models import MODEL_IDS
from orchard_mxnet.train import OPTIMIZERS

__all__ = ["build_parser", "main"]

#: The ``framework`` this client announces when it joins.
FRAMEWORK = "mxnet"

_log = logging.getLogger("orchard_mxnet")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"ORCHARD_{name}") or default


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dataset, --device and --dataset-mirror, shared by both commands."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=MODEL_IDS,
        default=_env("MODEL", "mnist-mlp"),
        help="model id (ORCHARD_MODEL; default mnist-mlp)",
    )
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default=_env("DATASET", "mnist"),
        help="MNIST-format dataset to train on (ORCHARD_DATASET; default mnist)",
    )
    g.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default=_env("DEVICE", "auto"),
        help="auto: a GPU when MXNet sees one, else the CPU (ORCHARD_DEVICE; default auto)",
    )
    g.add_argument(
        "--dataset-mirror",
        default=None,
        help="base URL serving the dataset files instead of the official host "
        "(default: ORCHARD_DATASET_MIRROR, else the official URLs)",
    )


def _add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BaselineConfig()
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("DATA_DIR", "data")),
        help="dataset cache directory (ORCHARD_DATA_DIR; default ./data)",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="default %(default)s")
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="default %(default)s"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=defaults.learning_rate, help="default %(default)s"
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument(
        "--momentum", type=float, default=defaults.momentum, help="SGD momentum (default 0)"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training set held out for per-epoch validation (default 0.1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=int(_env("SEED", "0")),
        help="seeds weights, split and shuffling (ORCHARD_SEED; default 0)",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (ORCHARD_LOG_LEVEL)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m orchard_mxnet`` parser with its two commands."""
    parser = argparse.ArgumentParser(
        prog="python -m orchard_mxnet",
        description="Orchard's Apache MXNet client: MNIST models with Gluon.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = commands.add_parser(
        "client",
        help="join a federation and train on this client's partition",
        description="Join a federation and train on this client's partition.",
    )
    add_client_arguments(client)
    _add_model_arguments(client)
    baseline = commands.add_parser(
        "baseline",
        help="train centrally on the whole dataset (the comparison for a federation)",
        description="Train centrally on the whole dataset, printing accuracy and "
        "cross-entropy per epoch and the final test evaluation.",
    )
    _add_model_arguments(baseline)
    _add_baseline_arguments(baseline)
    return parser


def _client_factory(
    args: argparse.Namespace, *, role: Role
) -> Callable[[ClientContext], NumPyClient]:
    """Build the client when the runtime knows this client's partition (after joining)."""
    device = resolve_context(args.device)  # fails before connecting when no GPU exists
    data_settings = DataSettings(
        dataset=args.dataset, data_dir=args.data_dir, mirror=args.dataset_mirror
    )

    def factory(ctx: ClientContext) -> NumPyClient:
        partition = PartitionSpec(
            scheme=args.partition_scheme,
            num_partitions=ctx.num_partitions,
            seed=args.seed,
            alpha=args.dirichlet_alpha if args.partition_scheme == "dirichlet" else None,
        )
        data = ClientData(
            data_settings,
            model_id=args.model,
            partition=partition,
            partition_id=ctx.partition_id,
            seed=args.seed,
        )
        # Read (and if needed download) the data now, so a missing dataset
        # fails at start-up and not in the middle of the first round.
        _ = data.test if role is Role.EVALUATOR else data.train
        return MXNetClient(model_id=args.model, data=data, ctx=device, role=role, seed=args.seed)

    return factory


def _run_client(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, framework=FRAMEWORK)
    factory = _client_factory(args, role=settings.role)
    return run_client(factory, settings, model_spec=get_model_spec(args.model))


def _run_baseline(args: argparse.Namespace) -> int:
    ctx = resolve_context(args.device)
    run_baseline(
        DataSettings(
            dataset=args.dataset,
            data_dir=args.data_dir,
            mirror=args.dataset_mirror,
            val_fraction=args.val_fraction,
        ),
        BaselineConfig(
            model_id=args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            momentum=args.momentum,
            seed=args.seed,
        ),
        ctx=ctx,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command and return its exit code.

    Configuration mistakes (unknown device, bad hyperparameter, missing
    dataset) end with one clear line and exit code 2 instead of a traceback.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "client":
            return _run_client(args)
        return _run_baseline(args)
    except (ValueError, OSError) as exc:
        _log.error("%s", exc)
        _log.debug("details", exc_info=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
