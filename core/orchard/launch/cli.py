"""``orchard-launch`` / ``python -m orchard.launch``: run a local federation of processes.

* ``run``: a server from a TOML config and clients of any kind, until the
  federation ends; prints each federation's rounds.
* ``fashion-federation``: a PyTorch client and an MXNet client train one
  model on Fashion-MNIST (what ``make fashion-federation`` runs); prints the
  accuracy per round and writes it to ``RUN_DIR/accuracy.md``.

Exit status: 0 when everything finished, 1 when a process failed or a bound
passed (the message shows the log tails), 2 for a setup problem (missing
files, a framework that is not installed, bad options).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from orchard.launch.kinds import CLIENT_KINDS, KINDS, find_python
from orchard.launch.launcher import ClientOptions, Launcher
from orchard.launch.mixed import (
    FRAMEWORKS,
    MixedFederation,
    RoundSummary,
    accuracy_table,
    run_mixed_federation,
)
from orchard.launch.process import LaunchError, SetupError

#: The file every MNIST-format dataset has; its absence means "no dataset here".
_TRAIN_IMAGES = "train-images-idx3-ubyte"


def _client_spec(text: str) -> tuple[str, int]:
    """``KIND`` or ``KIND:COUNT`` (argparse type)."""
    kind, _, count = text.partition(":")
    if kind not in CLIENT_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown client kind {kind!r} (known: {', '.join(CLIENT_KINDS)})"
        )
    try:
        number = int(count) if count else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: COUNT must be an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: COUNT must be >= 1")
    return kind, number


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``run`` and ``fashion-federation``."""
    parser = argparse.ArgumentParser(
        prog="orchard-launch",
        description="Start an Orchard server and clients as local processes, wait, stop them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="a server from a config file and clients of any kind, until the federation ends",
        description="Start a server from --config and the --client processes; wait until "
        "the server ends; print each federation's rounds.",
    )
    run.add_argument("--config", type=Path, required=True, help="the server's TOML config")
    run.add_argument(
        "--client",
        dest="clients",
        type=_client_spec,
        action="append",
        default=[],
        metavar="KIND[:COUNT]",
        help=f"clients to start ({', '.join(CLIENT_KINDS)}); repeatable",
    )
    run.add_argument(
        "--federation", help="the federation clients join (default: the config's only one)"
    )
    run.add_argument(
        "--client-arg",
        dest="client_args",
        action="append",
        default=[],
        metavar="ARG",
        help="an option passed to every client, e.g. --client-arg=--data-dir=data; repeatable",
    )
    run.add_argument("--run-dir", type=Path, default=Path("runs/launch"), help="logs go here")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds the run may take")

    fashion = commands.add_parser(
        "fashion-federation",
        help="a PyTorch and an MXNet client train one model on Fashion-MNIST",
        description="A server, one PyTorch client (main environment) and one MXNet client "
        "(.venv-mxnet or ORCHARD_MXNET_PYTHON) federate one model with FedAvg, each training "
        "on half of the training set and evaluating every round's global model on the whole "
        "official test set. Prints a Markdown table of accuracy per round.",
    )
    defaults = MixedFederation()
    fashion.add_argument(
        "--data-dir",
        type=Path,
        default=defaults.data_dir,
        help=f"directory holding the four IDX files (default: {defaults.data_dir}, "
        "from Debian's dataset-fashion-mnist)",
    )
    fashion.add_argument("--dataset", choices=("fashion-mnist", "mnist"), default=defaults.dataset)
    fashion.add_argument("--model", choices=("mnist-mlp", "mnist-cnn"), default=defaults.model)
    fashion.add_argument("--rounds", type=int, default=defaults.num_rounds)
    fit = defaults.fit_config
    fashion.add_argument("--epochs", type=int, default=fit["epochs"], help="local epochs per round")
    fashion.add_argument("--batch-size", type=int, default=fit["batch_size"])
    fashion.add_argument("--learning-rate", type=float, default=fit["learning_rate"])
    fashion.add_argument("--seed", type=int, default=defaults.seed)
    fashion.add_argument(
        "--no-verify",
        action="store_true",
        help="use the files without checking the official checksums (re-packed copies)",
    )
    fashion.add_argument(
        "--threads", type=int, default=defaults.threads, help="compute threads per client"
    )
    fashion.add_argument(
        "--run-dir", type=Path, default=Path("runs/fashion-federation"), help="logs, state, table"
    )
    fashion.add_argument("--timeout", type=float, default=3600.0, help="seconds the run may take")
    fashion.add_argument(
        "--mxnet-python",
        help="the MXNet environment's interpreter (default: $ORCHARD_MXNET_PYTHON, "
        "else .venv-mxnet/bin/python in a checkout)",
    )
    return parser


def _print_rounds(histories: dict[str, dict[str, Any]]) -> None:
    for name, history in histories.items():
        rounds = history.get("rounds", [])
        print(f"federation {name!r}: {len(rounds)} round(s)")
        for record in rounds:
            evaluate = record.get("evaluate") or {}
            loss = evaluate.get("loss")
            metrics = evaluate.get("metrics") or {}
            parts = [f"round {record['round']}"]
            if loss is not None:
                parts.append(f"loss {loss:.4f}")
            if "accuracy" in metrics:
                parts.append(f"accuracy {metrics['accuracy']:.4f}")
            parts.append(f"{record.get('duration_s', 0.0):.1f} s")
            print("  " + ", ".join(parts))


def _run(args: argparse.Namespace) -> int:
    if not args.clients:
        print("orchard-launch run: give at least one --client KIND[:COUNT]", file=sys.stderr)
        return 2
    with Launcher(args.run_dir) as launcher:
        server = launcher.start_server(args.config)
        federation = args.federation
        if federation is None:
            if len(server.federations) != 1:
                raise SetupError(
                    f"the config has federations {list(server.federations)}: choose one "
                    "with --federation"
                )
            federation = server.federations[0]
        index = 0
        for kind, count in args.clients:
            for _ in range(count):
                launcher.start_client(
                    kind,
                    ClientOptions(
                        federation=federation,
                        name=f"{kind}-{index}",
                        args=tuple(args.client_args),
                    ),
                )
                index += 1
        print(f"server on {server.address}, {index} client(s); logs in {launcher.run_dir}")
        histories = launcher.wait(args.timeout)
    _print_rounds(histories)
    return 0


def _has_dataset(data_dir: Path, dataset: str) -> bool:
    return any(
        (where / name).is_file()
        for where in (data_dir, data_dir / dataset)
        for name in (f"{_TRAIN_IMAGES}.gz", _TRAIN_IMAGES)
    )


def _fashion(args: argparse.Namespace) -> int:
    if not _has_dataset(args.data_dir, args.dataset):
        hint = (
            "install them with `sudo apt-get install dataset-fashion-mnist` (Debian), "
            "or pass --data-dir"
            if args.dataset == "fashion-mnist"
            else "pass --data-dir"
        )
        print(f"{args.data_dir}: no {args.dataset} files ({hint})", file=sys.stderr)
        return 2
    for framework in FRAMEWORKS:
        # A missing framework stops here, before anything starts.
        find_python(KINDS[framework], args.mxnet_python if framework == "mxnet" else None)
    try:
        settings = MixedFederation(
            federation=args.dataset,
            model=args.model,
            dataset=args.dataset,
            data_dir=args.data_dir,
            no_verify=args.no_verify,
            num_rounds=args.rounds,
            seed=args.seed,
            fit_config={
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
            },
            threads=args.threads,
        )
    except ValueError as exc:
        print(f"orchard-launch fashion-federation: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.model} on {args.dataset} ({args.data_dir}): 1 PyTorch + 1 MXNet client, "
        f"FedAvg, {args.rounds} rounds of {args.epochs} epoch(s), SGD lr {args.learning_rate}, "
        f"batch {args.batch_size}; logs in {args.run_dir}",
        flush=True,
    )
    previous = args.run_dir / "state"
    if previous.exists():
        # A run is a demonstration from scratch: the server would otherwise
        # resume the finished federation of the last run and train nothing.
        shutil.rmtree(previous)
        print(f"removed the previous run's server state ({previous})", flush=True)

    def on_round(r: RoundSummary) -> None:
        print(
            f"round {r.round}/{args.rounds}: global accuracy {r.accuracy:.4f}, "
            f"test loss {r.loss:.4f} ({r.duration_s:.1f} s)",
            flush=True,
        )

    with Launcher(args.run_dir) as launcher:
        outcome = run_mixed_federation(
            launcher,
            settings,
            timeout=args.timeout,
            mxnet_python=args.mxnet_python,
            on_round=on_round,
        )
    table = accuracy_table(outcome.rounds)
    (args.run_dir / "accuracy.md").write_text(table + "\n")
    print(table)
    print(f"finished in {outcome.wall_s:.0f} s; table in {args.run_dir / 'accuracy.md'}")
    return 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the launcher's ``with`` block stops its children."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    try:
        return _run(args) if args.command == "run" else _fashion(args)
    except LaunchError as exc:
        print(f"orchard-launch: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, SetupError) else 1
    except KeyboardInterrupt:
        print(
            f"orchard-launch: interrupted after {time.monotonic() - started:.0f} s; "
            "stopped every process it started",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
