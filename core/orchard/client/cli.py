"""Command-line options shared by every framework client.

Each option has an ``ORCHARD_*`` environment variable as its default, so a
container is configured with environment variables and a person with flags.
A framework client composes its commands from these groups and adds only what
is its own (``--device`` and its choices); that keeps the option names,
environment variables and defaults the same in every client.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from orchard.client.runtime import ClientSettings, TlsSettings
from orchard.client.training import OPTIMIZERS, TrainConfig
from orchard.data.client_data import DataSettings, check_compatible
from orchard.data.client_data import default_dataset as default_dataset_of
from orchard.data.partition import SCHEMES, PartitionSpec
from orchard.data.synth import is_synthetic
from orchard.env import env_default, env_flag, env_float, env_int
from orchard.messages import Role

__all__ = [
    "add_baseline_arguments",
    "add_client_arguments",
    "add_client_commands",
    "add_dataset_arguments",
    "configure_logging",
    "data_settings_from_args",
    "default_display_name",
    "env_default",
    "env_flag",
    "env_float",
    "env_int",
    "label_synthetic",
    "partition_from_args",
    "settings_from_args",
]

SettingsT = TypeVar("SettingsT", bound=DataSettings)


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every client has (server, federation, data, partition, TLS)."""
    g = parser.add_argument_group("federation")
    g.add_argument(
        "--server",
        default=env_default("SERVER", "localhost:8080"),
        help="server address host:port (ORCHARD_SERVER)",
    )
    g.add_argument(
        "--federation",
        default=env_default("FEDERATION"),
        required=env_default("FEDERATION") is None,
        help="name of the federation to join (ORCHARD_FEDERATION)",
    )
    g.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=env_default("ROLE", Role.TRAINER.value),
        help="trainer, or evaluator holding the central test set (ORCHARD_ROLE)",
    )
    g.add_argument(
        "--name",
        default=env_default("CLIENT_NAME", ""),
        help="display name in the server's logs (ORCHARD_CLIENT_NAME; default: SERVICE-N in a "
        "compose stack that sets ORCHARD_SERVICE and ORCHARD_COMPOSE_PROJECT, else the host name)",
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=float(env_default("CONNECT_TIMEOUT", "300") or 300),
        help="give up after this many seconds without the server (ORCHARD_CONNECT_TIMEOUT)",
    )
    d = parser.add_argument_group("data")
    d.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env_default("DATA_DIR", "data") or "data"),
        help="dataset cache directory (ORCHARD_DATA_DIR)",
    )
    d.add_argument(
        "--partition-id",
        type=int,
        default=env_int("PARTITION_ID"),
        help="this client's partition; default: assigned by the server (ORCHARD_PARTITION_ID)",
    )
    d.add_argument(
        "--num-partitions",
        type=int,
        default=env_int("NUM_PARTITIONS"),
        help="number of partitions; default: the server's (ORCHARD_NUM_PARTITIONS)",
    )
    d.add_argument(
        "--partition-scheme",
        choices=list(SCHEMES),
        default=env_default("PARTITION_SCHEME", "iid"),
        help="how the training set is split (ORCHARD_PARTITION_SCHEME)",
    )
    d.add_argument(
        "--dirichlet-alpha",
        type=float,
        default=float(env_default("DIRICHLET_ALPHA", "0.5") or 0.5),
        help="concentration of the Dirichlet split (ORCHARD_DIRICHLET_ALPHA)",
    )
    d.add_argument(
        "--seed",
        type=int,
        default=env_int("SEED") or 0,
        help="seed of partitioning and local shuffling (ORCHARD_SEED)",
    )
    t = parser.add_argument_group("security")
    t.add_argument(
        "--ca-cert",
        type=Path,
        default=Path(v) if (v := env_default("CA_CERT")) else None,
        help="CA bundle that signed the server's certificate (ORCHARD_CA_CERT)",
    )
    t.add_argument(
        "--server-name",
        default=env_default("TLS_SERVER_NAME"),
        help="expected name in the server's certificate (ORCHARD_TLS_SERVER_NAME)",
    )
    t.add_argument(
        "--insecure",
        action="store_true",
        default=env_flag("INSECURE"),
        help="plain-text connection, for loopback and tests (ORCHARD_INSECURE=1)",
    )
    t.add_argument(
        "--auth-token",
        default=env_default("AUTH_TOKEN", ""),
        help="shared secret of the federation (ORCHARD_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (ORCHARD_LOG_LEVEL)",
    )


def configure_logging(level: str) -> None:
    """Readable one-line logs with a timestamp, for terminals and containers."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


#: Set by the compose files: the client's service (``client_pytorch``) and the
#: compose project (``${COMPOSE_PROJECT_NAME}``).
SERVICE_ENV_VAR = "ORCHARD_SERVICE"
PROJECT_ENV_VAR = "ORCHARD_COMPOSE_PROJECT"

#: Replica numbers tried after the last one that exists, before giving up.
_REPLICA_GAP = 4


def default_display_name() -> str:
    """``<service>-<replica>`` (``client_pytorch-2``) in a compose stack, else the host name.

    A container's host name is its id, which says nothing in the server's
    log. Compose names replicas ``<project>-<service>-<n>`` and Docker's DNS
    resolves those names on the stack's network, so a client whose compose
    file sets ``ORCHARD_SERVICE`` and ``ORCHARD_COMPOSE_PROJECT`` finds its
    own number by resolving them until one has its address (a reverse lookup
    would answer from ``/etc/hosts``, with the id). Anything unexpected falls
    back to the host name.
    """
    host = socket.gethostname()
    service = os.environ.get(SERVICE_ENV_VAR, "").strip()
    project = os.environ.get(PROJECT_ENV_VAR, "").strip()
    if not service or not project:
        return host
    try:
        mine = socket.gethostbyname(host)
    except OSError:
        return host
    number, misses = 0, 0
    while misses < _REPLICA_GAP:
        number += 1
        try:
            address = socket.gethostbyname(f"{project}-{service}-{number}")
        except OSError:
            misses += 1
            continue
        if address == mine:
            return f"{service}-{number}"
        misses = 0
    return host


def settings_from_args(args: argparse.Namespace, *, framework: str) -> ClientSettings:
    """Runtime settings from parsed options; refuses contradictions up front."""
    if args.partition_id is not None and args.num_partitions is None:
        raise SystemExit("--partition-id needs --num-partitions (or ORCHARD_NUM_PARTITIONS)")
    if args.partition_id is not None and not 0 <= args.partition_id < args.num_partitions:
        raise SystemExit(
            f"--partition-id {args.partition_id} is outside 0..{args.num_partitions - 1}"
        )
    if args.ca_cert is not None and not args.ca_cert.is_file():
        raise SystemExit(f"--ca-cert {args.ca_cert}: no such file")
    return ClientSettings(
        server=args.server,
        federation=args.federation,
        framework=framework,
        display_name=args.name or default_display_name(),
        role=Role(args.role),
        auth_token=args.auth_token,
        tls=TlsSettings(ca_cert=args.ca_cert, insecure=args.insecure, server_name=args.server_name),
        partition_id=args.partition_id,
        num_partitions=args.num_partitions,
        connect_timeout=args.connect_timeout,
    )


def label_synthetic(settings: ClientSettings, data: DataSettings) -> ClientSettings:
    """``settings`` with ``(SYNTHETIC data)`` after the display name when the data are synthetic.

    Results trained or scored on ``orchard-data synth`` files must not pass
    for real ones: the name carries the label into the server's log and into
    every line of the history that names this client.
    """
    if not is_synthetic(data.data_dir, data.dataset):
        return settings
    return dataclasses.replace(settings, display_name=f"{settings.display_name} (SYNTHETIC data)")


def add_dataset_arguments(
    parser: argparse.ArgumentParser,
    *,
    models: Sequence[str],
    default_model: str,
    datasets: Sequence[str],
    default_dataset: str | None = None,
) -> argparse._ArgumentGroup:
    """Add --model, --dataset and the download options (mirror, verification, download).

    ``models`` and ``datasets`` are what this framework client can run;
    ``default_dataset=None`` leaves ``args.dataset`` None, meaning the
    model's own dataset (:func:`data_settings_from_args` resolves it).
    Returns the group, so the client adds its ``--device`` beside them.
    """
    own = ", ".join(f"{default_dataset_of(m)} for {m}" for m in models)
    g = parser.add_argument_group("model and data")
    g.add_argument(
        "--model",
        choices=list(models),
        default=env_default("MODEL") or default_model,
        help=f"model id (ORCHARD_MODEL; default {default_model})",
    )
    g.add_argument(
        "--dataset",
        choices=list(datasets),
        default=env_default("DATASET") or default_dataset,
        help=f"dataset to train on (ORCHARD_DATASET; default: {default_dataset or own})",
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
        default=env_flag("NO_VERIFY"),
        help="use dataset files found in the data directory without checking the official "
        "checksums, e.g. re-packed copies (ORCHARD_NO_VERIFY=1; downloads are always verified)",
    )
    g.add_argument(
        "--no-download",
        action="store_true",
        default=env_flag("NO_DOWNLOAD"),
        help="fail instead of downloading missing files (ORCHARD_NO_DOWNLOAD=1)",
    )
    return g


def add_baseline_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """Add the options of a centralized baseline: data directory, hyperparameters, seed.

    ``defaults`` are the framework's tutorial hyperparameters; each option
    can also come from its ``ORCHARD_*`` variable.
    """
    b = parser.add_argument_group("training")
    b.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env_default("DATA_DIR", "data") or "data"),
        help="dataset cache directory (ORCHARD_DATA_DIR; default ./data)",
    )
    # (flags, ORCHARD_<name>, default, what the option is for)
    integers = (
        (("--epochs",), "EPOCHS", defaults.epochs, ""),
        (("--batch-size",), "BATCH_SIZE", defaults.batch_size, ""),
        (("--seed",), "SEED", defaults.seed, "initial weights, splits and shuffling "),
    )
    for flags, name, value, what in integers:
        b.add_argument(
            *flags,
            type=int,
            default=env_int(name, value),
            help=f"{what}(ORCHARD_{name}; default {value})",
        )
    numbers = (
        (("--learning-rate", "--lr"), "LEARNING_RATE", defaults.learning_rate, ""),
        (("--momentum",), "MOMENTUM", defaults.momentum, "SGD momentum "),
    )
    for options, name, number, what in numbers:
        b.add_argument(
            *options,
            type=float,
            default=env_float(name, number),
            help=f"{what}(ORCHARD_{name}; default {number})",
        )
    b.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=env_default("OPTIMIZER", defaults.optimizer),
        help=f"(ORCHARD_OPTIMIZER; default {defaults.optimizer})",
    )
    parser.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (ORCHARD_LOG_LEVEL)",
    )


def add_client_commands(
    parser: argparse.ArgumentParser,
    *,
    framework_arguments: Callable[[argparse.ArgumentParser], None],
    client_description: str,
    baseline_help: str,
    baseline_description: str,
    baseline_defaults: TrainConfig,
) -> argparse.ArgumentParser:
    """Add a framework client's two commands to ``parser``; returns the baseline's parser.

    ``client`` joins a federation (:func:`add_client_arguments`);
    ``baseline`` trains the same model centrally for comparison
    (:func:`add_baseline_arguments` with ``baseline_defaults``). Both get
    the framework's own options from ``framework_arguments`` (typically
    :func:`add_dataset_arguments` and a ``--device``); the returned parser
    takes options only the framework's baseline has.
    """
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = commands.add_parser(
        "client",
        help="join a federation and train on this client's partition",
        description=client_description,
    )
    add_client_arguments(client)
    framework_arguments(client)
    baseline = commands.add_parser("baseline", help=baseline_help, description=baseline_description)
    framework_arguments(baseline)
    add_baseline_arguments(baseline, baseline_defaults)
    return baseline


def data_settings_from_args(args: argparse.Namespace, settings_type: type[SettingsT]) -> SettingsT:
    """The data settings the options of :func:`add_dataset_arguments` describe.

    A missing ``--dataset`` is the model's own; a model that cannot read the
    dataset's images is refused here, before anything is downloaded.
    ``settings_type`` is :class:`~orchard.data.client_data.DataSettings` or
    a framework's narrower subclass.
    """
    dataset = args.dataset or default_dataset_of(args.model)
    check_compatible(args.model, dataset)
    return settings_type(
        dataset=dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
        mirror=args.dataset_mirror,
        verify=not args.no_verify,
    )


def partition_from_args(args: argparse.Namespace, num_partitions: int) -> PartitionSpec:
    """This client's partitioning: the user's scheme and seed over ``num_partitions``.

    ``num_partitions`` is known only after joining (the user's explicit
    count, else the server's assignment), so clients call this then.
    """
    return PartitionSpec(
        scheme=args.partition_scheme,
        num_partitions=num_partitions,
        seed=args.seed,
        alpha=args.dirichlet_alpha if args.partition_scheme == "dirichlet" else None,
    )
