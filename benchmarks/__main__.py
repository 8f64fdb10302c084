"""Run Orchard's benchmarks: one JSON line per case on stdout.

Benchmarks are modules registered in :data:`SUITES`. A suite module has

* ``NAME``: the suite's name (``--suite NAME`` picks suites; every line carries it);
* ``add_arguments(parser)``: its own options (prefix them with the suite's name);
* ``run(args, workdir) -> Iterator[dict]``: one JSON-ready dict per case.

Add a suite by writing such a module and appending it to :data:`SUITES`.
Every line also records the machine (CPUs, load average, versions), because
the numbers are only meaningful beside it. Numbers are benchmarks, never test
assertions: CI must not fail on machine noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

import grpc
import numpy as np

from benchmarks import aggregation, client_overhead, fanout, rounds, serde_cost, transport


class Suite(Protocol):
    """What a benchmark module provides."""

    NAME: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]: ...


#: Every suite, in run order.
SUITES: list[ModuleType] = [serde_cost, aggregation, fanout, transport, rounds, client_overhead]


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "grpcio": grpc.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen suites, print one JSON line per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [cast(Suite, s).NAME for s in SUITES]
    parser.add_argument(
        "--suite",
        action="append",
        choices=names,
        help="run only this suite (repeatable; default: all)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    for module in SUITES:
        cast(Suite, module).add_arguments(parser)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every Launcher stops the processes it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    for module in SUITES:
        suite = cast(Suite, module)
        if args.suite and suite.NAME not in args.suite:
            continue
        for case in suite.run(args, workdir / suite.NAME):
            line = {"suite": suite.NAME, **case, "machine": machine(), "at": time.time()}
            print(json.dumps(line), flush=True)
    print(f"benchmarks: run directory {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
