"""What a federated PyTorch client adds to local training (issue 12: at most 5%).

One case compares, on the same generated CIFAR-10 files (official binary
format, :mod:`orchard.data.synth`), the same model (``cifar10-cnn``), the
same training examples (9,000 of 10,000 by default: 10% are held out for
validation on both sides), batch size, optimizer (SGD, learning rate 0.01,
momentum 0.9, the deployment's fit config) and one epoch at a time:

* **centralized**: the project's centralized script, the shared
  :func:`orchard.client.baseline.run_baseline` on the PyTorch adapter (what
  ``python -m orchard_pytorch baseline`` runs; here the adapter also counts
  the CPU time of the validation pass after each epoch), for ``rounds``
  epochs in one process; each epoch's examples per second as its training
  loop times it, and per CPU second of the process (validation left out);
* **federated**: a real server and one PyTorch client process started
  through :mod:`orchard.launch`, ``rounds`` rounds of one epoch each (FedAvg,
  no evaluation); the client reports, per round
  (:func:`orchard.client.adapter.fit_metrics`), examples per second inside
  its training loop and over its whole fit (loading the global parameters,
  training, reading the new ones back) and per CPU second of its process
  during that fit, and the server's history gives the fit phase as the
  server saw it (sending the task, the client's fit, receiving the update),
  from which the round's examples per second follow.

Both sides get the same ``OMP_NUM_THREADS`` (torch's intra-op thread count;
the line reports what each process actually used). The first epoch and the
first round of every run are warm-up (data preparation, allocator and kernel
caches) and are left out; each line reports medians of the rest and every
measured value (``*_all``), so the spread is visible. The runs alternate
(centralized, federated, federated, centralized, ...) so a load that drifts
during the case weighs on both sides alike.

``overhead_pct`` is ``100 * (1 - fit / centralized)`` with the whole fit's
rate: what the client costs beside training; ``train_loop_overhead_pct``
uses the loop's own rate, ``round_overhead_pct`` the server's view of the
fit phase (parameter transfer both ways included). Those compare medians
taken in different processes (and, sequentially, at different times).
``fit_vs_loop_pct`` and ``round_vs_loop_pct`` compare within each round
(the whole fit, and the server's fit phase, against that round's own
training loop): paired, so machine noise mostly cancels; they measure what
the client does around the loop, not whether the loop itself runs slower in
the client process (that is the cross-process comparison above).
``cpu_overhead_pct`` compares per CPU second instead of per second: the
client's whole fit (every thread of its process) against the centralized
loop. It barely moves with other programs' load, which the wall-clock
figures on a shared machine do.

Run the centralized half alone with ``python -m benchmarks.client_overhead
--data-dir DIR`` (a directory holding ``cifar-10-binary.tar.gz``; one JSON
line per epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from orchard.data.synth import write_synthetic
from orchard.launch import ClientOptions, Launcher, find_python
from orchard.launch.kinds import get_kind

NAME = "client"

MODEL: Final = "cifar10-cnn"
DATASET: Final = "cifar10"
#: The validation share both sides hold out (the client's default).
VAL_FRACTION: Final = 0.1
#: The deployment's CIFAR-10 fit config (deploy/server.toml), one epoch per round.
FIT_CONFIG: Final[dict[str, Any]] = {
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.01,
    "momentum": 0.9,
}
#: Issue 12's bound on what the client adds.
TARGET_PCT: Final = 5.0
#: The client's device line names its torch thread count.
_THREADS_LINE = re.compile(r"using device cpu \((\d+) threads\)")


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a torch process ``threads`` intra-op threads."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def overhead_pct(federated: float, centralized: float) -> float:
    """How much slower the federated rate is, in percent of the centralized one."""
    return 100.0 * (1.0 - federated / centralized)


def centralized_argv(data_dir: Path, *, epochs: int, seed: int) -> list[str]:
    """The command of the centralized half (:func:`main`) with the PyTorch client's interpreter."""
    python = find_python(get_kind("pytorch"))
    return [
        python,
        "-m",
        "benchmarks.client_overhead",
        "--data-dir",
        str(data_dir),
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
    ]


def epoch_lines(text: str) -> list[dict[str, Any]]:
    """The per-epoch JSON lines of the centralized half's output (other lines are skipped)."""
    lines = []
    for line in text.splitlines():
        if line.startswith('{"centralized_epoch"'):
            lines.append(json.loads(line))
    return lines


def run_centralized(
    data_dir: Path, *, epochs: int, threads: int, seed: int, timeout: float
) -> list[dict[str, Any]]:
    """Run the centralized script for ``epochs`` epochs in a fresh process; its epoch lines."""
    argv = centralized_argv(data_dir, epochs=epochs, seed=seed)
    env = {**os.environ, **thread_env(threads)}
    done = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=timeout, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the centralized run exited with status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return epoch_lines(done.stdout)


def client_threads(log: Path) -> int | None:
    """The torch thread count the client's log states, or None when it states none."""
    match = _THREADS_LINE.search(log.read_text(errors="replace"))
    return int(match.group(1)) if match else None


def round_rates(history: dict[str, Any]) -> list[dict[str, float]]:
    """Per round of a one-client history: the client's ``train``, ``fit`` and ``fit_cpu``
    rates, the ``round`` rate (its examples over the server's fit phase) and ``examples``."""
    out: list[dict[str, float]] = []
    for record in history["rounds"]:
        fit = record["fit"]
        (outcome,) = fit["participants"]
        metrics = outcome["metrics"]
        out.append(
            {
                "train": float(metrics["train_examples_per_second"]),
                "fit": float(metrics["fit_examples_per_second"]),
                "fit_cpu": float(metrics["fit_cpu_examples_per_second"]),
                "round": outcome["num_examples"] / fit["duration_s"],
                "examples": outcome["num_examples"],
            }
        )
    return out


def run_federated(
    data_dir: Path, workdir: Path, *, rounds: int, threads: int, seed: int, timeout: float
) -> dict[str, Any]:
    """A server and one PyTorch client for ``rounds`` one-epoch rounds.

    Returns ``threads`` (the client's) and ``rounds`` (:func:`round_rates`,
    warm-up included).
    """
    federation = {
        "model": MODEL,
        "num_rounds": rounds,
        "seed": seed,
        "min_fit_clients": 1,
        "min_evaluate_clients": 1,
        "min_available_clients": 1,
        "num_partitions": 1,
        "evaluate_every": 0,
        "round_timeout": timeout,
        "wait_timeout": timeout,
        "fit_config": FIT_CONFIG,
    }
    server_table = {"heartbeat_interval": 2.0, "heartbeat_timeout": 60.0}
    with Launcher(workdir) as launcher:
        launcher.start_server(
            {"server": server_table, "federations": {DATASET: federation}},
            linger=0.5,
            health_timeout=120.0,
        )
        client = launcher.start_client(
            "pytorch",
            ClientOptions(
                federation=DATASET,
                name="client-0",
                data_dir=data_dir,
                device="cpu",
                partition_id=0,
                num_partitions=1,
                seed=seed,
                env=thread_env(threads),
            ),
        )
        history = launcher.wait(timeout * rounds)[DATASET]
    return {"threads": client_threads(client.log), "rounds": round_rates(history)}


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 1)


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 1) for v in values]


@dataclass
class _Samples:
    """The measured values of one case, pooled over its runs."""

    centralized: list[float] = field(default_factory=list)
    #: Examples per CPU second: the centralized loop's, the client's whole fit's.
    centralized_cpu: list[float] = field(default_factory=list)
    fit_cpu: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    fit: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    #: Per round: what the whole fit and the round add to the same round's loop, in %.
    fit_vs_loop: list[float] = field(default_factory=list)
    round_vs_loop: list[float] = field(default_factory=list)
    counts: set[int] = field(default_factory=set)
    threads: dict[str, set[int | None]] = field(
        default_factory=lambda: {"centralized": set(), "client": set()}
    )

    def add_centralized(self, epochs: Sequence[dict[str, Any]]) -> None:
        """Pool measured epoch lines of the centralized half (warm-up already left out)."""
        for epoch in epochs:
            self.threads["centralized"].add(epoch["threads"])
            self.counts.add(epoch["examples"])
            self.centralized.append(epoch["examples_per_second"])
            if epoch["cpu_examples_per_second"] is not None:
                self.centralized_cpu.append(epoch["cpu_examples_per_second"])

    def add_federated(self, threads: int | None, measured: Sequence[dict[str, float]]) -> None:
        """Pool measured rounds (:func:`round_rates`, warm-up already left out)."""
        self.threads["client"].add(threads)
        for r in measured:
            self.counts.add(int(r["examples"]))
            self.train.append(r["train"])
            self.fit.append(r["fit"])
            self.fit_cpu.append(r["fit_cpu"])
            self.rounds.append(r["round"])
            self.fit_vs_loop.append(overhead_pct(r["fit"], r["train"]))
            self.round_vs_loop.append(overhead_pct(r["round"], r["train"]))

    def line(self, repeats: int) -> dict[str, Any]:
        """The case's JSON line; refuses sides that trained on different example counts."""
        if len(self.counts) != 1:
            raise RuntimeError(
                f"the two sides trained on different example counts: {sorted(self.counts)}"
            )
        if not self.centralized_cpu or not self.fit_cpu:
            raise RuntimeError(
                f"no measured CPU rates ({len(self.centralized_cpu)} centralized, "
                f"{len(self.fit_cpu)} federated); raise --client-rounds"
            )
        central = statistics.median(self.centralized)
        return {
            "model": MODEL,
            "dataset": f"{DATASET} (generated, official binary format)",
            "train_examples": next(iter(self.counts)),
            **{k: v for k, v in FIT_CONFIG.items() if k != "epochs"},
            "optimizer": "sgd",
            "epochs_per_round": FIT_CONFIG["epochs"],
            "threads": {k: sorted(v, key=str) for k, v in self.threads.items()},
            "repeats": repeats,
            "centralized_measured": len(self.centralized),
            "rounds_measured": len(self.fit),
            "centralized_examples_per_second": _median(self.centralized),
            "client_train_examples_per_second": _median(self.train),
            "client_fit_examples_per_second": _median(self.fit),
            "round_examples_per_second": _median(self.rounds),
            "overhead_pct": round(overhead_pct(statistics.median(self.fit), central), 2),
            "train_loop_overhead_pct": round(
                overhead_pct(statistics.median(self.train), central), 2
            ),
            "round_overhead_pct": round(overhead_pct(statistics.median(self.rounds), central), 2),
            "centralized_cpu_examples_per_second": _median(self.centralized_cpu),
            "client_fit_cpu_examples_per_second": _median(self.fit_cpu),
            "cpu_overhead_pct": round(
                overhead_pct(
                    statistics.median(self.fit_cpu), statistics.median(self.centralized_cpu)
                ),
                2,
            ),
            "fit_vs_loop_pct": round(statistics.median(self.fit_vs_loop), 2),
            "round_vs_loop_pct": round(statistics.median(self.round_vs_loop), 2),
            "target_pct": TARGET_PCT,
            "centralized_all": _rounded(self.centralized),
            "client_train_all": _rounded(self.train),
            "client_fit_all": _rounded(self.fit),
            "round_all": _rounded(self.rounds),
            "centralized_cpu_all": _rounded(self.centralized_cpu),
            "client_fit_cpu_all": _rounded(self.fit_cpu),
        }


def run_case(
    data_dir: Path,
    workdir: Path,
    *,
    rounds: int,
    threads: int,
    repeats: int,
    seed: int = 0,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """``repeats`` centralized and federated runs, one at a time, alternating (ABBA...)."""
    started = time.monotonic()
    samples = _Samples()
    for repeat in range(repeats):
        order = ("centralized", "federated") if repeat % 2 == 0 else ("federated", "centralized")
        for side in order:
            if side == "centralized":
                epochs = run_centralized(
                    data_dir, epochs=rounds, threads=threads, seed=seed, timeout=timeout
                )
                samples.add_centralized(epochs[1:])
            else:
                fed = run_federated(
                    data_dir,
                    workdir / f"federated-{repeat}",
                    rounds=rounds,
                    threads=threads,
                    seed=seed,
                    timeout=timeout,
                )
                samples.add_federated(fed["threads"], fed["rounds"][1:])
    return {**samples.line(repeats), "wall_s": round(time.monotonic() - started, 1)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument(
        "--client-examples",
        type=int,
        default=10_000,
        help="generated CIFAR-10 training images (90%% are trained on; default 10000)",
    )
    group.add_argument(
        "--client-rounds",
        type=int,
        default=8,
        help="epochs (centralized) and rounds (federated) per run, the first a warm-up "
        "(min 4; default 8)",
    )
    group.add_argument(
        "--client-threads",
        type=int,
        default=1,
        help="torch threads of both sides (OMP_NUM_THREADS; default 1)",
    )
    group.add_argument(
        "--client-repeats",
        type=int,
        default=2,
        help="runs of each side, alternating (default 2)",
    )


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One JSON line."""
    if args.client_rounds < 4:
        raise SystemExit("--client-rounds must be at least 4 (a warm-up and 3 measured)")
    for option in ("client_threads", "client_repeats"):
        if getattr(args, option) < 1:
            raise SystemExit(f"--{option.replace('_', '-')} must be at least 1")
    if args.client_examples < 100:
        raise SystemExit("--client-examples must be at least 100")
    data_dir = workdir / "data"
    write_synthetic(data_dir, DATASET, n_train=args.client_examples, n_test=10)
    yield run_case(
        data_dir,
        workdir,
        rounds=args.client_rounds,
        threads=args.client_threads,
        repeats=args.client_repeats,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The centralized half: train ``--epochs`` epochs with the centralized script, printing
    one JSON line per epoch as it ends: ``{"centralized_epoch", "examples",
    "examples_per_second", "cpu_examples_per_second", "threads"}``.

    ``cpu_examples_per_second`` divides by this process's CPU time between
    two epoch ends less the baseline's validation pass in between (the
    client's ``fit_cpu_examples_per_second`` has no evaluation in it either).
    """
    parser = argparse.ArgumentParser(description="the centralized half of the client benchmark")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # torch only in this child: the benchmark process itself never loads it.
    import torch

    from orchard.client.baseline import BaselineEpoch, BaselineSettings, run_baseline
    from orchard.client.training import EvalResult, TrainConfig
    from orchard.data.client_data import DataSettings
    from orchard_pytorch.client import PyTorchAdapter
    from orchard_pytorch.data import ImageSet
    from orchard_pytorch.models import SpecNet

    class EvalTimedAdapter(PyTorchAdapter):
        """The PyTorch adapter, counting the CPU seconds its evaluations take."""

        eval_cpu_seconds = 0.0

        def evaluate(self, model: SpecNet, data: ImageSet, *, batch_size: int) -> EvalResult:
            started = time.process_time()
            try:
                return super().evaluate(model, data, batch_size=batch_size)
            finally:
                self.eval_cpu_seconds += time.process_time() - started

    training = TrainConfig(
        epochs=args.epochs,
        batch_size=FIT_CONFIG["batch_size"],
        learning_rate=FIT_CONFIG["learning_rate"],
        momentum=FIT_CONFIG["momentum"],
        seed=args.seed,
    )
    data = DataSettings(
        dataset=DATASET, data_dir=args.data_dir, download=False, val_fraction=VAL_FRACTION
    )
    adapter = EvalTimedAdapter("cpu")
    # What the baseline trains on, counted here: its epochs do not carry the count.
    examples = len(adapter.client_data(data, model_id=MODEL, seed=args.seed).train)
    last_cpu, last_eval = time.process_time(), 0.0

    def epoch_done(epoch: BaselineEpoch) -> None:
        nonlocal last_cpu, last_eval
        cpu = time.process_time()
        train_cpu = (cpu - last_cpu) - (adapter.eval_cpu_seconds - last_eval)
        last_cpu, last_eval = cpu, adapter.eval_cpu_seconds
        line = {
            "centralized_epoch": epoch.train.epoch,
            "examples": examples,
            "examples_per_second": epoch.train.examples_per_second,
            "cpu_examples_per_second": examples / train_cpu if train_cpu > 0 else None,
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(line), flush=True)

    run_baseline(
        adapter,
        BaselineSettings(model_id=MODEL, data=data, training=training),
        report=lambda line: print(line, file=sys.stderr),
        on_epoch=epoch_done,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
