"""The classic papers, one command each: ``python -m orchard_server.simulation.baselines``.

* ``tutorial``: the seed tutorial (PyTorch, CIFAR-10): 10 partitions each
  split 90/10 into train and validation, FedAvg with fraction_fit=1.0,
  fraction_evaluate=0.5, min_fit_clients=10, min_evaluate_clients=5,
  min_available_clients=10, accuracy aggregated by weighted average, 5
  rounds; ``--centralized`` adds centralized evaluation on the test set.
* ``fedavg``: McMahan et al. 2017, "Communication-Efficient Learning of Deep
  Networks from Decentralized Data" (AISTATS), the MNIST CNN (1,663,370
  parameters): K=100 clients, IID or pathological non-IID (sorted by label,
  200 shards of 300, 2 per client), C=0.1, B in {10, 50, full}, E in {1, 5},
  learning rate 0.1; writes accuracy-per-round plots and a table of rounds
  to reach a target accuracy beside the paper's Table 2.
* ``fedprox``: Li et al. 2020, "Federated Optimization in Heterogeneous
  Networks" (MLSys): mu in {0, 0.01, 1} and 0%, 50% or 90% stragglers doing
  fewer local epochs; FedAvg drops the stragglers, FedProx keeps their partial
  work; accuracy and training-loss plots per setting.

Every run is a real simulation (:func:`~orchard_server.simulation.run.simulate`)
of framework clients (:func:`orchard.simulation.clients.adapter_client`) in
PyTorch or MXNet. Lists of values (``--batch 10 50 full --epochs 1 5``) run
every combination. Output goes to ``--out``: one folder per setting with its
``history.json``, plus ``accuracy.png`` (and ``train_loss.png``) and
``results.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from orchard.data.client_data import DataError, load_split
from orchard.data.errors import DatasetError
from orchard.simulation.clients import data_settings
from orchard.typing import Config
from orchard_server.config import FederationConfig
from orchard_server.history import History
from orchard_server.plot import round_axis
from orchard_server.records import RoundRecord
from orchard_server.simulation.config import SimulationConfig
from orchard_server.simulation.run import simulate

log = logging.getLogger("orchard.simulation")

#: McMahan et al. 2017, Table 2 (MNIST CNN, 99% test accuracy): rounds to reach
#: the target, (IID, pathological non-IID), by (E, B); B None is the full batch.
PAPER_TABLE2: Final[dict[tuple[int, int | None], tuple[int, int]]] = {
    (1, None): (626, 483),  # FedSGD
    (5, None): (179, 1000),
    (1, 50): (65, 600),
    (1, 10): (34, 350),
    (5, 50): (29, 334),
    (5, 10): (20, 229),
}

#: Where Debian's dataset-fashion-mnist installs the files.
DEBIAN_FASHION_MNIST: Final = Path("/usr/share/datasets/fashion-mnist")

#: A batch size no client's data reaches: the full batch (B = infinity).
FULL_BATCH: Final = 1 << 30


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One run of a baseline grid."""

    name: str
    label: str
    federation: FederationConfig
    simulation: SimulationConfig


def _batch(text: str) -> int | None:
    if text in ("full", "inf", "all"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch size must be >= 1 or 'full', got {text}")
    return value


def _node_config(args: argparse.Namespace, **extra: float | int | str | bool) -> Config:
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = (
            DEBIAN_FASHION_MNIST
            if args.dataset == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir()
            else Path("data")
        )
    return {
        "framework": args.framework,
        "dataset": args.dataset,
        "data_dir": str(data_dir),
        "download": bool(args.download),
        "verify": not args.no_verify,
        **extra,
    }


def _simulation(
    args: argparse.Namespace, num_clients: int, node_config: Config
) -> SimulationConfig:
    python = args.python or ""
    if not python and args.framework == "mxnet" and args.backend == "local":
        from orchard.launch.kinds import find_python, get_kind

        python = find_python(get_kind("mxnet"))
    return SimulationConfig(
        num_clients=num_clients,
        backend=args.backend,
        workers=args.workers,
        python=python,
        centralized_evaluation=True,
        node_config=node_config,
    )


def fedavg_settings(args: argparse.Namespace) -> list[Setting]:
    """Every (partitioning, B, E) combination of the ``fedavg`` command."""
    out = []
    for scheme, batch, epochs in itertools.product(args.partitioning, args.batch, args.epochs):
        b = "full" if batch is None else str(batch)
        name = f"fedavg-{args.framework}-{scheme}-B{b}-E{epochs}"
        per_round = max(1, round(args.fraction * args.clients))
        fed = FederationConfig(
            name=name,
            model=args.model,
            num_rounds=args.rounds,
            strategy="fedavg",
            seed=args.seed,
            fraction_fit=args.fraction,
            min_fit_clients=per_round,
            min_available_clients=args.clients,
            fraction_evaluate=0.0,  # the clients hold no validation data: test set only
            min_evaluate_clients=1,
            max_clients=args.clients + 1,
            evaluate_every=args.eval_every,
            round_timeout=args.round_timeout,
            fit_config={
                "epochs": epochs,
                "batch_size": FULL_BATCH if batch is None else batch,
                "learning_rate": args.lr,
            },
            evaluate_config={"batch_size": 1000},
        )
        node = _node_config(
            args,
            model=args.model,
            partitioning=scheme,
            shards_per_client=2,
            partition_seed=args.seed,
            val_fraction=0.0,
        )
        label = f"{'IID' if scheme == 'iid' else 'non-IID'} B={b} E={epochs}"
        out.append(
            Setting(
                name=name,
                label=label,
                federation=fed,
                simulation=_simulation(args, args.clients, node),
            )
        )
    return out


def fedprox_settings(args: argparse.Namespace) -> list[Setting]:
    """FedAvg (stragglers dropped) and FedProx for each mu, at each straggler share.

    Without stragglers FedAvg is FedProx with mu=0 (nothing to drop, no
    proximal term): when mu=0 is asked for, that setting is run once.
    """
    out = []
    for stragglers in args.stragglers:
        runs: list[tuple[str, float, bool]] = []
        if stragglers > 0 or 0.0 not in args.mu:
            runs.append(("FedAvg", 0.0, True))
        runs += [(f"FedProx mu={mu:g}", mu, False) for mu in args.mu]
        for label, mu, drop in runs:
            slug = "fedavg" if drop else f"fedprox-mu{mu:g}"
            name = f"{slug}-{args.framework}-s{round(stragglers * 100)}"
            fed = FederationConfig(
                name=name,
                model=args.model,
                num_rounds=args.rounds,
                strategy="fedprox" if mu > 0 else "fedavg",
                strategy_options={"proximal_mu": mu} if mu > 0 else {},
                seed=args.seed,
                fraction_fit=args.fraction,
                min_fit_clients=1,
                min_available_clients=args.clients,
                fraction_evaluate=0.0,  # the clients hold no validation data: test set only
                min_evaluate_clients=1,
                max_clients=args.clients + 1,
                evaluate_every=args.eval_every,
                round_retries=10,
                round_timeout=args.round_timeout,
                fit_config={
                    "epochs": args.epochs,
                    "batch_size": args.batch,
                    "learning_rate": args.lr,
                },
                evaluate_config={"batch_size": 1000},
            )
            node = _node_config(
                args,
                model=args.model,
                partitioning=args.partitioning,
                shards_per_client=2,
                partition_seed=args.seed,
                val_fraction=0.0,
                straggler_fraction=float(stragglers),
                drop_stragglers=drop,
            )
            out.append(
                Setting(
                    name=name,
                    label=f"{label}, {round(stragglers * 100)}% stragglers",
                    federation=fed,
                    simulation=_simulation(args, args.clients, node),
                )
            )
    return out


def tutorial_settings(args: argparse.Namespace) -> list[Setting]:
    """The seed tutorial: PyTorch, CIFAR-10, 10 clients, 5 rounds (see the module docs)."""
    fed = FederationConfig(
        name="tutorial",
        model="cifar10-cnn",
        num_rounds=args.rounds,
        strategy="fedavg",
        seed=args.seed,
        fraction_fit=1.0,
        fraction_evaluate=0.5,
        min_fit_clients=10,
        min_evaluate_clients=5,
        min_available_clients=10,
        round_timeout=args.round_timeout,
        fit_config={"epochs": 1, "batch_size": 32, "learning_rate": 0.001, "momentum": 0.9},
        evaluate_config={"batch_size": 256},
    )
    node = _node_config(args, model="cifar10-cnn", partitioning="iid", val_fraction=0.1)
    sim = SimulationConfig(
        num_clients=10,
        backend=args.backend,
        workers=args.workers,
        python=args.python or "",
        centralized_evaluation=args.centralized,
        node_config=node,
    )
    return [Setting(name="tutorial", label="tutorial", federation=fed, simulation=sim)]


def _accuracy(record: RoundRecord) -> float | None:
    for source in (record.centralized, record.evaluate):
        if source is not None:
            value = source.metrics.get("accuracy")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def _train_loss(record: RoundRecord) -> float | None:
    value = record.fit.metrics.get("train_loss")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def rounds_to_reach(history: History, target: float) -> int | None:
    """The first round whose test accuracy reaches ``target`` (None: never)."""
    for record in history.rounds:
        accuracy = _accuracy(record)
        if accuracy is not None and accuracy >= target:
            return record.round
    return None


def plot_curves(runs: Sequence[tuple[Setting, History]], path: Path, *, metric: str) -> None:
    """One curve per setting of test accuracy (or training loss) per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    get = _accuracy if metric == "accuracy" else _train_loss
    fig, ax = plt.subplots(figsize=(8, 5))
    for setting, history in runs:
        points = [(r.round, get(r)) for r in history.rounds]
        xs = [x for x, y in points if y is not None]
        ys = [y for _, y in points if y is not None]
        if xs:
            ax.plot(xs, ys, marker=".", label=setting.label)
    round_axis(ax, "communication round")
    ax.set_ylabel("test accuracy" if metric == "accuracy" else "training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fedavg_table(runs: Sequence[tuple[Setting, History]], args: argparse.Namespace) -> str:
    """Markdown: rounds to reach the target per setting, beside McMahan et al.'s Table 2."""
    lines = [
        f"Rounds to reach {args.target:.0%} test accuracy ({args.dataset}, {args.framework}, "
        f"K={args.clients}, C={args.fraction:g}, lr {args.lr:g}); '>N' means not within "
        "the N rounds run. Paper: McMahan et al. 2017, Table 2 (MNIST CNN, 99%).",
        "",
        "| setting | rounds run | best accuracy | rounds to target | paper (MNIST, 99%) |",
        "|---|---|---|---|---|",
    ]
    for setting, history in runs:
        fit = setting.federation.fit_config
        batch = None if fit["batch_size"] == FULL_BATCH else int(fit["batch_size"])
        paper = PAPER_TABLE2.get((int(fit["epochs"]), batch))
        iid = setting.simulation.node_config.get("partitioning") == "iid"
        paper_text = "-" if paper is None else str(paper[0] if iid else paper[1])
        reached = rounds_to_reach(history, args.target)
        accs = [a for a in map(_accuracy, history.rounds) if a is not None]
        best = f"{max(accs):.4f}" if accs else "-"
        ran = len(history.rounds)
        rounds = str(reached) if reached else f">{ran}"
        lines.append(f"| {setting.label} | {ran} | {best} | {rounds} | {paper_text} |")
    return "\n".join(lines) + "\n"


def fedprox_table(runs: Sequence[tuple[Setting, History]]) -> str:
    """Markdown: final and best accuracy and last training loss per setting."""
    lines = [
        "| setting | rounds | final accuracy | best accuracy | final training loss |",
        "|---|---|---|---|---|",
    ]
    for setting, history in runs:
        accs = [a for a in map(_accuracy, history.rounds) if a is not None]
        losses = [x for x in map(_train_loss, history.rounds) if x is not None]
        lines.append(
            f"| {setting.label} | {len(history.rounds)} | "
            f"{accs[-1]:.4f} | {max(accs):.4f} | {losses[-1]:.4f} |"
            if accs and losses
            else f"| {setting.label} | {len(history.rounds)} | - | - | - |"
        )
    return "\n".join(lines) + "\n"


def check_data(node_config: Config) -> None:
    """Read both official splits once, here, before any virtual client starts.

    Missing or damaged files are then one error naming them, not a failure of
    every sampled client in every round; and with ``--download`` the files are
    fetched once, by this process, rather than by each worker.
    """
    settings = data_settings(node_config)
    for split in ("train", "test"):
        load_split(settings, split)


async def run_settings(settings: Sequence[Setting], out: Path) -> list[tuple[Setting, History]]:
    """Run each setting in turn (its state in ``out/NAME``, resumed if already there)."""
    runs = []
    for setting in settings:
        log.info("baseline setting %s (%s)", setting.name, setting.label)
        result = await simulate(setting.federation, setting.simulation, state_dir=out)
        if result.reason and result.state.value != "finished":
            log.error("setting %s: %s", setting.name, result.reason)
        runs.append((setting, result.history))
    return runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchard_server.simulation.baselines",
        description="Reproduce the seed tutorial, FedAvg (McMahan 2017) or FedProx (Li 2020).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, dataset: str, rounds: int) -> None:
        p.add_argument("--framework", choices=("pytorch", "mxnet"), default="pytorch")
        p.add_argument("--dataset", default=dataset, help=f"default {dataset}")
        p.add_argument(
            "--data-dir",
            type=Path,
            help="dataset files or cache (default: Debian's Fashion-MNIST, else ./data)",
        )
        p.add_argument("--download", action="store_true", help="download the dataset if missing")
        p.add_argument("--no-verify", action="store_true", help="skip checksums (generated files)")
        p.add_argument("--rounds", type=int, default=rounds)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--backend", choices=("local", "ray"), default="local")
        p.add_argument("--workers", type=int, default=0, help="0: one per core")
        p.add_argument(
            "--python", help="interpreter of the workers (default: this one; MXNet's env for mxnet)"
        )
        p.add_argument(
            "--eval-every", type=int, default=1, help="test-set evaluation every N rounds"
        )
        p.add_argument("--round-timeout", type=float, default=3600.0)
        p.add_argument("--out", type=Path, help="output folder (default runs/baselines/COMMAND)")

    tutorial = sub.add_parser("tutorial", help="the seed tutorial: PyTorch on CIFAR-10")
    common(tutorial, dataset="cifar10", rounds=5)
    tutorial.add_argument(
        "--centralized", action="store_true", help="also evaluate on the test set"
    )

    fedavg = sub.add_parser("fedavg", help="McMahan et al. 2017 (MNIST CNN)")
    common(fedavg, dataset="mnist", rounds=50)
    fedavg.add_argument("--model", default="mnist-cnn")
    fedavg.add_argument("--clients", type=int, default=100)
    fedavg.add_argument("--fraction", type=float, default=0.1, help="C")
    fedavg.add_argument("--batch", type=_batch, nargs="+", default=[10], help="B: sizes or 'full'")
    fedavg.add_argument("--epochs", type=int, nargs="+", default=[1], help="E")
    fedavg.add_argument("--lr", type=float, default=0.1)
    fedavg.add_argument("--partitioning", nargs="+", choices=("iid", "shards"), default=["iid"])
    fedavg.add_argument("--iid", dest="partitioning", action="store_const", const=["iid"])
    fedavg.add_argument("--non-iid", dest="partitioning", action="store_const", const=["shards"])
    fedavg.add_argument(
        "--target", type=float, default=0.99, help="accuracy the table counts rounds to"
    )

    fedprox = sub.add_parser("fedprox", help="Li et al. 2020 (systems heterogeneity)")
    common(fedprox, dataset="mnist", rounds=50)
    fedprox.add_argument("--model", default="mnist-cnn")
    fedprox.add_argument("--clients", type=int, default=100)
    fedprox.add_argument("--fraction", type=float, default=0.1)
    fedprox.add_argument("--mu", type=float, nargs="+", default=[0.0, 0.01, 1.0])
    fedprox.add_argument("--stragglers", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    fedprox.add_argument("--epochs", type=int, default=20)
    fedprox.add_argument("--batch", type=int, default=10)
    fedprox.add_argument("--lr", type=float, default=0.01)
    fedprox.add_argument("--partitioning", choices=("iid", "shards"), default="shards")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out: Path = args.out or Path("runs/baselines") / args.command
    if args.command == "tutorial":
        settings = tutorial_settings(args)
    elif args.command == "fedavg":
        settings = fedavg_settings(args)
    else:
        if any(not 0 <= s <= 1 for s in args.stragglers):
            print("--stragglers are fractions in [0, 1]", file=sys.stderr)
            return 2
        settings = fedprox_settings(args)
    try:
        check_data(_node_config(args))
    except DatasetError as exc:
        print(
            f"baselines {args.command}: {exc}\n(this command's --download fetches the official "
            "files; --no-verify accepts generated ones)",
            file=sys.stderr,
        )
        return 2
    except DataError as exc:
        print(f"baselines {args.command}: {exc}", file=sys.stderr)
        return 2
    runs = asyncio.run(run_settings(settings, out))
    plot_curves(runs, out / "accuracy.png", metric="accuracy")
    if args.command == "fedavg":
        table = fedavg_table(runs, args)
    else:
        plot_curves(runs, out / "train_loss.png", metric="train_loss")
        table = fedprox_table(runs)
    (out / "results.md").write_text(table)
    print(table)
    print(f"plots and histories in {out}")
    return 0 if all(len(h.rounds) == s.federation.num_rounds for s, h in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
