"""Command-line options shared by every framework client.

Each option has an ``ORCHARD_*`` environment variable as its default, so a
container is configured with environment variables and a person with flags.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from orchard.client.runtime import ClientSettings, TlsSettings
from orchard.messages import Role


def env_default(name: str, default: str | None = None) -> str | None:
    """The value of ``ORCHARD_<name>`` or ``default``."""
    return os.environ.get(f"ORCHARD_{name}", default)


def _env_int(name: str) -> int | None:
    value = env_default(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"ORCHARD_{name}={value!r} is not an integer") from None


def _env_flag(name: str) -> bool:
    return (env_default(name, "") or "").lower() in {"1", "true", "yes", "on"}


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
        help="display name in the server's logs (ORCHARD_CLIENT_NAME; default host name)",
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
        default=_env_int("PARTITION_ID"),
        help="this client's partition; default: assigned by the server (ORCHARD_PARTITION_ID)",
    )
    d.add_argument(
        "--num-partitions",
        type=int,
        default=_env_int("NUM_PARTITIONS"),
        help="number of partitions; default: the server's (ORCHARD_NUM_PARTITIONS)",
    )
    d.add_argument(
        "--partition-scheme",
        choices=["iid", "shards", "dirichlet"],
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
        default=_env_int("SEED") or 0,
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
        default=_env_flag("INSECURE"),
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
        display_name=args.name,
        role=Role(args.role),
        auth_token=args.auth_token,
        tls=TlsSettings(ca_cert=args.ca_cert, insecure=args.insecure, server_name=args.server_name),
        partition_id=args.partition_id,
        num_partitions=args.num_partitions,
        connect_timeout=args.connect_timeout,
    )
