"""Command line: ``python -m orchard_mxnet client|baseline ...``.

``client`` joins a federation with the options every Orchard client shares
(:mod:`orchard.client.cli`, each with an ``ORCHARD_*`` environment variable:
server and partition, model, dataset and download source) plus this client's
``--device``; ``baseline`` trains the same model centrally for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence

import numpy as np

from orchard.client.cli import (
    add_client_commands,
    add_dataset_arguments,
    configure_logging,
    data_settings_from_args,
    label_synthetic,
    partition_from_args,
    settings_from_args,
)
from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.client.runtime import report_fatal, run_client
from orchard.data.client_data import OfficialSplit, load_split
from orchard.env import env_default
from orchard.messages import Role
from orchard.models import get_model_spec
from orchard_mxnet.baseline import TUTORIAL_TRAINING, BaselineConfig, run_baseline
from orchard_mxnet.client import MXNetClient
from orchard_mxnet.data import DATASETS, ClientData, DataSettings
from orchard_mxnet.device import DEVICE_CHOICES, resolve_context
from orchard_mxnet.models import MODEL_IDS
from orchard_mxnet.train import TrainConfig

__all__ = ["build_parser", "main"]

#: The ``framework`` this client announces when it joins.
FRAMEWORK = "mxnet"

_log = logging.getLogger("orchard_mxnet")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared model and dataset options, and this client's --device; for both commands."""
    g = add_dataset_arguments(
        parser,
        models=MODEL_IDS,
        default_model="mnist-mlp",
        datasets=DATASETS,
        default_dataset="mnist",
    )
    g.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default=env_default("DEVICE") or "auto",
        help="auto: a GPU when MXNet sees one, else the CPU (ORCHARD_DEVICE; default auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m orchard_mxnet`` parser with its two commands."""
    parser = argparse.ArgumentParser(
        prog="python -m orchard_mxnet",
        description="Orchard's Apache MXNet client: MNIST models with Gluon.",
    )
    baseline = add_client_commands(
        parser,
        framework_arguments=_add_model_arguments,
        client_description="Join a federation and train on this client's partition.",
        baseline_help="train centrally on the whole dataset (the comparison for a federation)",
        baseline_description="Train centrally on the whole dataset, printing accuracy and "
        "cross-entropy per epoch and the final test evaluation.",
        baseline_defaults=TUTORIAL_TRAINING,
    )
    baseline.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training set held out for per-epoch validation (default 0.1)",
    )
    return parser


def _client_factory(
    args: argparse.Namespace,
    *,
    role: Role,
    data_settings: DataSettings | None = None,
    preloaded: dict[OfficialSplit, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Callable[[ClientContext], NumPyClient]:
    """Build the client when the runtime knows this client's partition (after joining).

    ``preloaded`` holds splits already read (``_run_client`` reads them before
    joining); others are read when first used.
    """
    device = resolve_context(args.device)  # fails before connecting when no GPU exists
    if data_settings is None:
        data_settings = data_settings_from_args(args, DataSettings)
    arrays = preloaded if preloaded is not None else {}

    def factory(ctx: ClientContext) -> NumPyClient:
        data = ClientData(
            data_settings,
            model_id=args.model,
            partition=partition_from_args(args, ctx.num_partitions),
            partition_id=ctx.partition_id,
            seed=args.seed,
            preloaded=arrays,
        )
        arrays.clear()  # the data object owns the arrays now
        return MXNetClient(model_id=args.model, data=data, ctx=device, role=role, seed=args.seed)

    return factory


def _run_client(args: argparse.Namespace) -> int:
    data_settings = data_settings_from_args(args, DataSettings)
    settings = label_synthetic(settings_from_args(args, framework=FRAMEWORK), data_settings)
    model_spec = get_model_spec(args.model)
    # Read (and if needed download) the files before joining: a missing
    # dataset fails here, and the federation is told why at once.
    split: OfficialSplit = "test" if settings.role is Role.EVALUATOR else "train"
    try:
        preloaded = {split: load_split(data_settings, split)}
    except (ValueError, OSError) as exc:
        _log.error("%s", exc)
        reason = f"cannot load its {data_settings.dataset} data: {exc}"
        return report_fatal(settings, reason, model_spec=model_spec)
    factory = _client_factory(
        args, role=settings.role, data_settings=data_settings, preloaded=preloaded
    )
    return run_client(factory, settings, model_spec=model_spec)


def _run_baseline(args: argparse.Namespace) -> int:
    ctx = resolve_context(args.device)
    run_baseline(
        dataclasses.replace(
            data_settings_from_args(args, DataSettings), val_fraction=args.val_fraction
        ),
        BaselineConfig(
            model_id=args.model,
            training=TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                optimizer=args.optimizer,
                momentum=args.momentum,
                seed=args.seed,
            ),
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
