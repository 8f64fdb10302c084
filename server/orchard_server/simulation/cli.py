"""``orchard-sim --config sim.toml``: run a simulation from a config file.

The file is a deployment config plus a ``[simulation]`` table (see
:mod:`orchard_server.simulation.config`); ``--set`` overrides either part.
Exits 0 when every federation finished, 1 when one failed, 2 on a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from orchard.messages import FederationState
from orchard_server.admission import AdmissionError
from orchard_server.config import ConfigError
from orchard_server.history import HISTORY_FILE
from orchard_server.plot import plot_history
from orchard_server.simulation.backend import WorkerStartError
from orchard_server.simulation.config import load_simulation_config
from orchard_server.simulation.run import simulate

log = logging.getLogger("orchard.simulation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchard-sim",
        description="Run a federation of virtual clients through Orchard's server round loop.",
    )
    parser.add_argument("--config", type=Path, required=True, help="simulation TOML file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, e.g. simulation.num_clients=20 or federations.NAME.num_rounds=3",
    )
    parser.add_argument("--state-dir", type=Path, help="where history and checkpoints go")
    parser.add_argument("--plot", action="store_true", help="write plot.png next to history.json")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server, simulation = load_simulation_config(args.config, overrides=args.set)
    except ConfigError as exc:
        print(f"orchard-sim: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or server.state_dir
    code = 0
    for federation in server.federations:
        try:
            result = asyncio.run(simulate(federation, simulation, state_dir=state_dir))
        except (ConfigError, AdmissionError, WorkerStartError) as exc:
            print(f"orchard-sim: federation {federation.name!r}: {exc}", file=sys.stderr)
            return 2
        print(f"federation {federation.name!r}: {result.state.value}: {result.reason}")
        if result.directory is not None:
            history = result.directory / HISTORY_FILE
            if history.is_file():
                print(f"history: {history}")
                if args.plot:
                    plot_history(result.history, result.directory / "plot.png")
            else:  # the writer records rounds: a run that completed none has no history
                print("history: none written (no round completed)")
        if result.state is not FederationState.FINISHED:
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
