"""Run a mixed PyTorch + MXNet federation and print its accuracy per round.

``python -m tests.crossframework.mixed --dataset fashion-mnist --data-dir
/usr/share/datasets/fashion-mnist`` (what ``make fashion-federation`` runs):
a server, one PyTorch client (this interpreter) and one MXNet client
(``.venv-mxnet``, or ``--mxnet-python``) federate one model with FedAvg, each
training on half of the training set and evaluating every round's global
model on the whole official test set. Prints a Markdown table and writes it,
with the server's state, history and every process's log, under ``--workdir``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.crossframework import (
    ClientDataSource,
    FederationRunError,
    MixedFederation,
    accuracy_table,
    mxnet_python,
    run_mixed_federation,
)


def build_parser() -> argparse.ArgumentParser:
    """Options with the defaults of ``make fashion-federation``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.crossframework.mixed",
        description="A server, a PyTorch client and an MXNet client training one model.",
    )
    parser.add_argument("--model", choices=("mnist-mlp", "mnist-cnn"), default="mnist-mlp")
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="fashion-mnist")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/usr/share/datasets/fashion-mnist"),
        help="directory holding the four IDX files (default: Debian's dataset-fashion-mnist)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("runs/fashion-federation"))
    parser.add_argument(
        "--mxnet-python",
        type=Path,
        default=None,
        help="the MXNet environment's interpreter (default: $ORCHARD_MXNET_PYTHON, "
        "else .venv-mxnet/bin/python)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the federation; 0 when it finished, 2 on a setup problem, 1 on failure."""
    args = build_parser().parse_args(argv)
    mxnet = args.mxnet_python or mxnet_python()
    if mxnet is None:
        print("no MXNet interpreter: run `make setup` or pass --mxnet-python", file=sys.stderr)
        return 2
    if not args.data_dir.is_dir():
        print(
            f"{args.data_dir}: no such directory (install dataset-fashion-mnist)", file=sys.stderr
        )
        return 2
    settings = MixedFederation(
        federation=args.dataset,
        model=args.model,
        num_rounds=args.rounds,
        seed=args.seed,
        fit_config={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
    )
    print(
        f"{args.model} on {args.dataset} ({args.data_dir}): 1 PyTorch + 1 MXNet client, "
        f"FedAvg, {args.rounds} rounds of {args.epochs} epoch(s), SGD lr {args.learning_rate}, "
        f"batch {args.batch_size}; logs in {args.workdir}",
        flush=True,
    )
    previous = args.workdir / "state"
    if previous.exists():
        # A run is a demonstration from scratch: the server would otherwise
        # resume the finished federation of the last run and train nothing.
        shutil.rmtree(previous)
        print(f"removed the previous run's server state ({previous})", flush=True)
    started = time.monotonic()
    try:
        outcome = run_mixed_federation(
            args.workdir.resolve(),
            settings,
            ClientDataSource(data_dir=args.data_dir.resolve(), dataset=args.dataset),
            mxnet=mxnet,
            timeout=3600.0,
        )
    except FederationRunError as exc:
        print(exc, file=sys.stderr)
        return 1
    table = accuracy_table(outcome)
    (args.workdir / "accuracy.md").write_text(table + "\n")
    print(table)
    print(
        f"finished in {time.monotonic() - started:.0f} s; table in {args.workdir / 'accuracy.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
