"""``orchard-server`` / ``python -m orchard_server``: run the aggregation server.

``orchard-server status --server ADDR`` instead prints what a running server
does (:mod:`orchard_server.status`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from orchard.logs import LOG_FORMATS, configure_logging
from orchard_server.app import OrchardServer
from orchard_server.checkpoint import CheckpointError
from orchard_server.config import ConfigError, load_config
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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0: all federations finished)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
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
    except (ConfigError, CheckpointError, InitError, StrategyError) as exc:
        print(f"orchard-server: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(server.run(linger=args.linger))
