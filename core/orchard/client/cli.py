"""The command line of every framework client: options, commands and error handling.

Each option has an ``ORCHARD_*`` environment variable as its default, so a
container is configured with environment variables and a person with flags.
A framework's ``cli`` module describes itself in a :class:`FrameworkCommands`
(its adapter, models, datasets and tutorial hyperparameters) and calls
:func:`framework_main`; the commands (``client``, ``baseline``), option names,
environment variables, defaults and error handling are then the same in every
client by construction. :func:`run_command` is the one place that turns a
problem the user can fix into one clear line and exit status 2. A client whose
dataset cannot be read says so to the server too (a fatal leave), so the
federation fails at once instead of waiting for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from orchard.client.adapter import DEVICE_CHOICES, AdapterClient, DeviceError, FrameworkAdapter
from orchard.client.baseline import BaselineSettings, run_baseline
from orchard.client.curves import EpochCurves
from orchard.client.numpy_client import ClientContext
from orchard.client.runtime import ClientSettings, TlsSettings, report_fatal, run_client
from orchard.client.training import OPTIMIZERS, ConfigError, TrainConfig, TrainingError
from orchard.data.client_data import (
    DataError,
    DataSettings,
    OfficialSplit,
    check_compatible,
    load_split,
)
from orchard.data.client_data import default_dataset as default_dataset_of
from orchard.data.download import DownloadError
from orchard.data.errors import DatasetError
from orchard.data.partition import SCHEMES, PartitionError, PartitionSpec
from orchard.data.synth import is_synthetic
from orchard.env import env_default, env_flag, env_float, env_int
from orchard.logs import LOG_FORMATS
from orchard.logs import configure_logging as setup_logging
from orchard.messages import Role
from orchard.models import get_model_spec
from orchard.spec import SpecError

__all__ = [
    "DATA_LOAD_ERRORS",
    "USER_ERRORS",
    "FrameworkCommands",
    "add_baseline_arguments",
    "add_client_arguments",
    "add_client_commands",
    "add_dataset_arguments",
    "build_framework_parser",
    "configure_logging",
    "data_settings_from_args",
    "default_display_name",
    "env_default",
    "env_flag",
    "env_float",
    "env_int",
    "framework_main",
    "label_synthetic",
    "log_fields",
    "make_client_factory",
    "partition_from_args",
    "run_command",
    "settings_from_args",
]

#: Errors a user can act on (a bad option, config, device, dataset or file):
#: :func:`run_command` reports them in one line with exit status 2.
USER_ERRORS: Final[tuple[type[Exception], ...]] = (
    ConfigError,
    DataError,
    DatasetError,
    DeviceError,
    DownloadError,
    PartitionError,
    SpecError,
    TrainingError,
    OSError,
)

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
        "--tls-cert",
        type=Path,
        default=Path(v) if (v := env_default("CLIENT_CERT")) else None,
        help="this client's certificate for mutual TLS (ORCHARD_CLIENT_CERT)",
    )
    t.add_argument(
        "--tls-key",
        type=Path,
        default=Path(v) if (v := env_default("CLIENT_KEY")) else None,
        help="the key of --tls-cert (ORCHARD_CLIENT_KEY)",
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
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=env_default("LOG_FORMAT", "text"),
        help="text: lines for people; json: one event per line (ORCHARD_LOG_FORMAT)",
    )


def configure_logging(
    level: str, log_format: str = "text", *, fields: Mapping[str, object] | None = None
) -> None:
    """Readable one-line logs with a timestamp, or JSON events (:mod:`orchard.logs`)."""
    setup_logging(level, log_format, fields=fields)


def log_fields(args: argparse.Namespace) -> dict[str, object]:
    """The ids every JSON log line of a client carries (its federation and name)."""
    fields = {
        "federation": getattr(args, "federation", None),
        "client": getattr(args, "name", None),
    }
    return {k: v for k, v in fields.items() if v}


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
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together (mutual TLS)")
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not path.is_file():
            raise SystemExit(f"{flag} {path}: no such file")
    return ClientSettings(
        server=args.server,
        federation=args.federation,
        framework=framework,
        display_name=args.name or default_display_name(),
        role=Role(args.role),
        auth_token=args.auth_token,
        tls=TlsSettings(
            ca_cert=args.ca_cert,
            insecure=args.insecure,
            server_name=args.server_name,
            cert=args.tls_cert,
            key=args.tls_key,
        ),
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


def add_baseline_arguments(
    parser: argparse.ArgumentParser, defaults: TrainConfig, *, val_fraction: float = 0.1
) -> None:
    """Add the options of a centralized baseline: data directory, hyperparameters, seed.

    ``defaults`` are the framework's tutorial hyperparameters and
    ``val_fraction`` its validation share; each option can also come from
    its ``ORCHARD_*`` variable.
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
        (
            ("--val-fraction",),
            "VAL_FRACTION",
            val_fraction,
            "share of the training set held out for per-epoch validation ",
        ),
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
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=env_default("LOG_FORMAT", "text"),
        help="text: lines for people; json: one event per line (ORCHARD_LOG_FORMAT)",
    )


def add_client_commands(
    parser: argparse.ArgumentParser,
    *,
    framework_arguments: Callable[[argparse.ArgumentParser], None],
    client_description: str,
    baseline_help: str,
    baseline_description: str,
    baseline_defaults: TrainConfig,
    baseline_val_fraction: float = 0.1,
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
    client.add_argument(
        "--tensorboard-dir",
        type=Path,
        default=env_default("TENSORBOARD_DIR"),
        help="write this client's per-epoch training curves under "
        "DIR/<federation>/clients/<name> (needs tensorboardX; ORCHARD_TENSORBOARD_DIR)",
    )
    baseline = commands.add_parser("baseline", help=baseline_help, description=baseline_description)
    framework_arguments(baseline)
    add_baseline_arguments(baseline, baseline_defaults, val_fraction=baseline_val_fraction)
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


# --- the commands of a framework client ------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class FrameworkCommands:
    """What a framework's command line needs to know about it; everything else is shared.

    ``adapter`` builds the framework's :class:`~orchard.client.adapter.FrameworkAdapter`
    for a ``--device`` value (raising :class:`~orchard.client.adapter.DeviceError`).
    """

    #: Name announced when joining, and the package suffix (``orchard_<framework>``).
    framework: str
    #: The framework as people write it (``PyTorch``, ``Apache MXNet``).
    title: str
    adapter: Callable[[str], FrameworkAdapter[Any, Any]]
    models: Sequence[str]
    default_model: str
    datasets: Sequence[str]
    #: The framework's tutorial hyperparameters, the baseline's defaults.
    baseline_defaults: TrainConfig
    #: Share of the training set the baseline holds out for validation by default.
    baseline_val_fraction: float
    #: One sentence on what the baseline reproduces.
    baseline_about: str


def _framework_arguments(commands: FrameworkCommands) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        g = add_dataset_arguments(
            parser,
            models=commands.models,
            default_model=commands.default_model,
            datasets=commands.datasets,
        )
        g.add_argument(
            "--device",
            default=env_default("DEVICE") or "auto",
            help=f"{'|'.join(DEVICE_CHOICES)}; auto picks a GPU when {commands.title} sees one "
            "(ORCHARD_DEVICE; default auto)",
        )

    return add


def build_framework_parser(commands: FrameworkCommands) -> argparse.ArgumentParser:
    """The parser of ``python -m orchard_<framework>`` with its ``client`` and ``baseline``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m orchard_{commands.framework}",
        description=f"Orchard's {commands.title} client and its centralized baseline.",
    )
    add_client_commands(
        parser,
        framework_arguments=_framework_arguments(commands),
        client_description=f"Join an Orchard federation as a {commands.title} client.",
        baseline_help="train centrally on the whole training set, report test metrics",
        baseline_description="Centralized training with the same model, data and loops as "
        f"the client. {commands.baseline_about}",
        baseline_defaults=commands.baseline_defaults,
        baseline_val_fraction=commands.baseline_val_fraction,
    )
    return parser


SplitT = TypeVar("SplitT", bound=Sized)


def make_client_factory(
    args: argparse.Namespace, adapter: FrameworkAdapter[Any, SplitT], *, role: Role
) -> Callable[[ClientContext], AdapterClient[Any, SplitT]]:
    """The factory the runtime calls once it knows this client's partition (after joining).

    The split this client needs (``train``, or ``test`` for an evaluator) is
    read, and if needed downloaded, now, before joining: a missing dataset
    fails with one clear line at start-up instead of in round 1, and a
    download does not eat into the first round's time.
    """
    data_settings = data_settings_from_args(args, DataSettings)
    split: OfficialSplit = "test" if role is Role.EVALUATOR else "train"
    preloaded = {split: load_split(data_settings, split)}
    curves = None
    if getattr(args, "tensorboard_dir", None) is not None:
        name = args.name or default_display_name()  # as the server names it
        curves = EpochCurves(args.tensorboard_dir, federation=args.federation, client=name)

    def factory(ctx: ClientContext) -> AdapterClient[Any, SplitT]:
        # ctx carries the partition to load: the user's explicit one, else the server's.
        data = adapter.client_data(
            data_settings,
            model_id=args.model,
            partition=partition_from_args(args, ctx.num_partitions),
            partition_id=ctx.partition_id,
            seed=args.seed,
            preloaded=preloaded,
        )
        preloaded.clear()  # the client's data owns the arrays now
        return AdapterClient(
            adapter,
            model_id=args.model,
            data=data,
            role=role,
            seed=args.seed,
            progress=ctx.progress,
            on_epoch=curves,
        )

    return factory


#: Errors of reading this client's dataset before joining: the federation is
#: told of them at once (:func:`~orchard.client.runtime.report_fatal`).
DATA_LOAD_ERRORS: Final[tuple[type[Exception], ...]] = (
    DataError,
    DatasetError,
    DownloadError,
    OSError,
)


def _run_client(commands: FrameworkCommands, args: argparse.Namespace) -> int:
    data_settings = data_settings_from_args(args, DataSettings)  # wrong pairs fail here
    settings = label_synthetic(
        settings_from_args(args, framework=commands.framework), data_settings
    )
    adapter = commands.adapter(args.device)  # no GPU fails here, before connecting
    logger = logging.getLogger(f"orchard_{commands.framework}")
    model_spec = get_model_spec(args.model)
    try:
        factory = make_client_factory(args, adapter, role=settings.role)
    except DATA_LOAD_ERRORS as exc:
        logger.error("%s", exc)
        # The federation learns why at once, instead of waiting for us in vain.
        reason = f"cannot load its {data_settings.dataset} data: {exc}"
        return report_fatal(settings, reason, model_spec=model_spec)
    logger.info(
        "%s %s client for federation %r at %s: model %s on %s (%s)",
        commands.title,
        settings.role.value,
        settings.federation,
        settings.server,
        args.model,
        data_settings.dataset,
        adapter.device,
    )
    return run_client(factory, settings, model_spec=model_spec)


def _run_baseline(commands: FrameworkCommands, args: argparse.Namespace) -> int:
    data = data_settings_from_args(args, DataSettings)  # wrong pairs fail before the device
    data = dataclasses.replace(data, val_fraction=args.val_fraction)
    adapter = commands.adapter(args.device)
    training = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        momentum=args.momentum,
        seed=args.seed,
    )
    run_baseline(adapter, BaselineSettings(model_id=args.model, data=data, training=training))
    return 0


def run_command(command: Callable[[], int], logger: logging.Logger) -> int:
    """Run ``command``; a problem the user can fix becomes one line and exit status 2.

    :data:`USER_ERRORS` (no GPU, a wrong model/dataset pair, a failed
    download, a bad config, an unreadable file) are logged as their message
    alone (the traceback only at DEBUG level); Ctrl-C exits 130. Anything
    else is a bug and keeps its traceback.
    """
    try:
        return command()
    except USER_ERRORS as exc:
        logger.error("%s", exc)
        logger.debug("details", exc_info=True)
        return 2
    except KeyboardInterrupt:
        logger.info("interrupted")
        return 130


def framework_main(commands: FrameworkCommands, argv: Sequence[str] | None = None) -> int:
    """``python -m orchard_<framework> client|baseline``: parse, run, return the exit status."""
    args = build_framework_parser(commands).parse_args(argv)
    configure_logging(args.log_level, args.log_format, fields=log_fields(args))
    logger = logging.getLogger(f"orchard_{commands.framework}")
    if args.command == "client":
        return run_command(lambda: _run_client(commands, args), logger)
    return run_command(lambda: _run_baseline(commands, args), logger)
