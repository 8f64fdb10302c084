"""``orchard-server`` / ``python -m orchard_server``: run the aggregation server.

``orchard-server status --server ADDR`` instead prints what a running server
does (:mod:`orchard_server.status`).

``orchard-server enroll --credentials-file FILE NAME`` enrolls a client in a
federation's credentials file (see :mod:`.credentials`) and prints its secret
once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from orchard.allocator import tune_allocator
from orchard.logs import LOG_FORMATS, configure_logging
from orchard_server.app import OrchardServer
from orchard_server.checkpoint import CheckpointError
from orchard_server.config import ConfigError, load_config
from orchard_server.credentials import CredentialsError, enroll
from orchard_server.initial import InitError
from orchard_server.status import status_main
from orchard_server.strategy import StrategyError


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option also has an environment variable."""
    parser = argparse.ArgumentParser(
        prog="orchard-server",
        description="Orchard aggregation server: hosts federations over the orchard.v1 gRPC API. "
        "'orchard-server status --server ADDR' prints what a running server does.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(p) if (p := os.environ.get("ORCHARD_CONFIG")) else None,
        help="TOML config file (ORCHARD_CONFIG)",
    )
    parser.add_argument("--address", help="listen address host:port (ORCHARD_ADDRESS)")
    parser.add_argument(
        "--state-dir", type=Path, help="checkpoints, history and plots go here (ORCHARD_STATE_DIR)"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="serve without TLS, on purpose (ORCHARD_INSECURE=1)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. federations.mnist.num_rounds=5 "
        "(repeatable; ORCHARD_SET='k=v;k=v')",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=10.0,
        help="seconds to keep serving after the last federation ended",
    )
    parser.add_argument("--log-level", default=os.environ.get("ORCHARD_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("ORCHARD_LOG_FORMAT", "text"),
        help="text: lines for people; json: one event per line with federation, round "
        "and client ids (ORCHARD_LOG_FORMAT)",
    )
    return parser


def enroll_main(argv: list[str]) -> int:
    """``orchard-server enroll``: add or re-key a client; prints its secret once."""
    parser = argparse.ArgumentParser(
        prog="orchard-server enroll",
        description="Enroll a client in a federation's credentials file (secrets are stored "
        "hashed; the new secret is printed once, give it to the client as NAME:SECRET).",
    )
    parser.add_argument("--credentials-file", type=Path, required=True)
    parser.add_argument("name", help="the client's name (its certificate's common name, for mTLS)")
    args = parser.parse_args(argv)
    try:
        secret = enroll(args.credentials_file, args.name)
    except CredentialsError as exc:
        print(f"orchard-server enroll: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}:{secret}")
    print(
        f"enrolled {args.name!r} in {args.credentials_file}; the line above is its token "
        "(--auth-token), shown only now",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0: all federations finished)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    if argv[:1] == ["enroll"]:
        return enroll_main(argv[1:])
    args = build_parser().parse_args(argv)
    # Megabyte chunks without a page fault per byte, and one malloc arena, so a
    # thread's freed chunks serve the others (orchard.allocator). Before any thread.
    tune_allocator(arenas=1)
    configure_logging(args.log_level, args.log_format)
    # Third-party chatter (matplotlib's font cache, PIL's plugins) is not the
    # server's news: warnings only, whatever the server's own level.
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    overrides = list(args.set)
    if args.address:
        overrides.append(f"server.address={args.address!r}".replace("'", '"'))
    if args.state_dir:
        overrides.append(f'server.state_dir="{args.state_dir}"')
    if args.insecure:
        overrides.append("server.insecure=true")
    try:
        config = load_config(args.config, overrides=overrides)
        server = OrchardServer(config)
    except (ConfigError, CheckpointError, InitError, StrategyError, CredentialsError) as exc:
        print(f"orchard-server: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(server.run(linger=args.linger))
