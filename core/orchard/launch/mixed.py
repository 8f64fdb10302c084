"""A mixed federation: a PyTorch client and an MXNet client train one global model.

What ``make fashion-federation`` runs (``python -m orchard.launch
fashion-federation``): a server, ``python -m orchard_pytorch client`` in the
main environment and ``python -m orchard_mxnet client`` in the MXNet one
federate one model with FedAvg (McMahan et al., 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data"). Each client trains on a
fixed half of the training set and evaluates every round's global model on
the whole official test set, so their accuracies are comparable: the table
shows the global model's accuracy and each framework's, round by round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard.launch.launcher import ClientOptions, Launcher
from orchard.launch.process import LaunchError
from orchard.typing import Scalar

__all__ = [
    "FRAMEWORKS",
    "MixedFederation",
    "MixedOutcome",
    "RoundSummary",
    "accuracy_table",
    "mixed_server_config",
    "round_summaries",
    "run_mixed_federation",
]

#: The client kinds of a mixed federation, one client each, in partition order.
FRAMEWORKS: tuple[str, ...] = ("pytorch", "mxnet")


def _default_fit() -> dict[str, Scalar]:
    return {"epochs": 1, "batch_size": 64, "learning_rate": 0.1}


@dataclass(frozen=True, kw_only=True)
class MixedFederation:
    """The federation's settings: model, data, rounds and each round's training."""

    federation: str = "fashion-mnist"
    model: str = "mnist-mlp"
    #: The clients' --dataset (its files are read from the data directory).
    dataset: str = "fashion-mnist"
    data_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    #: Use the files without checking the official checksums (re-packed or generated copies).
    no_verify: bool = False
    num_rounds: int = 5
    seed: int = 0
    fit_config: Mapping[str, Scalar] = field(default_factory=_default_fit)
    evaluate_batch_size: int = 256
    round_timeout: float = 600.0
    heartbeat_timeout: float = 30.0
    #: Compute threads per client (OMP_NUM_THREADS): the clients share the machine's cores.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {self.num_rounds}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True, kw_only=True)
class RoundSummary:
    """One round, read from the server's history."""

    round: int
    #: The weighted federated evaluation of the round's global model.
    accuracy: float
    loss: float
    #: framework -> (accuracy, loss) of that framework's client on the same model.
    by_framework: Mapping[str, tuple[float, float]]
    train_loss: float | None
    num_examples: int
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class MixedOutcome:
    """The rounds of a finished mixed federation and how long it took."""

    settings: MixedFederation
    rounds: tuple[RoundSummary, ...]
    wall_s: float
    history: Mapping[str, Any]


def mixed_server_config(settings: MixedFederation) -> dict[str, Any]:
    """The server's config: one FedAvg federation in which every round waits for both clients."""
    clients = len(FRAMEWORKS)
    return {
        "server": {
            "insecure": True,
            "heartbeat_interval": 0.5,
            "heartbeat_timeout": settings.heartbeat_timeout,
            "max_poll_seconds": 2.0,
        },
        "federations": {
            settings.federation: {
                "model": settings.model,
                "num_rounds": settings.num_rounds,
                "strategy": "fedavg",
                "seed": settings.seed,
                "min_fit_clients": clients,
                "min_evaluate_clients": clients,
                "min_available_clients": clients,
                "round_timeout": settings.round_timeout,
                "wait_timeout": 120.0,
                "fit_config": dict(settings.fit_config),
                # Both clients evaluate on the whole official test split.
                "evaluate_config": {"batch_size": settings.evaluate_batch_size, "split": "test"},
            }
        },
    }


def _summary(record: Mapping[str, Any]) -> RoundSummary:
    evaluate = record.get("evaluate") or {}
    participants = evaluate.get("participants") or []
    by_framework = {
        p["framework"]: (float(p["metrics"]["accuracy"]), float(p["loss"])) for p in participants
    }
    if evaluate.get("loss") is None or len(by_framework) != len(participants):
        raise LaunchError(f"round {record['round']} has no complete evaluation: {record}")
    train_loss = record["fit"]["metrics"].get("train_loss")
    return RoundSummary(
        round=int(record["round"]),
        accuracy=float(evaluate["metrics"]["accuracy"]),
        loss=float(evaluate["loss"]),
        by_framework=by_framework,
        train_loss=None if train_loss is None else float(train_loss),
        num_examples=int(record["fit"]["num_examples"]),
        duration_s=float(record["duration_s"]),
    )


def round_summaries(history: Mapping[str, Any]) -> tuple[RoundSummary, ...]:
    """Every round of ``history`` (the server's history.json) as a :class:`RoundSummary`."""
    return tuple(_summary(record) for record in history["rounds"])


def _row(r: RoundSummary) -> str:
    torch_acc = r.by_framework.get("pytorch", (math.nan, math.nan))[0]
    mx_acc = r.by_framework.get("mxnet", (math.nan, math.nan))[0]
    train = "-" if r.train_loss is None else f"{r.train_loss:.4f}"
    return (
        f"| {r.round} | {r.accuracy:.4f} | {torch_acc:.4f} | {mx_acc:.4f} | {r.loss:.4f} "
        f"| {train} | {r.duration_s:.1f} s |"
    )


_HEADER = (
    "| round | global accuracy | PyTorch client | MXNet client | test loss "
    "| train loss | round time |\n|---:|---:|---:|---:|---:|---:|---:|"
)


def accuracy_table(rounds: tuple[RoundSummary, ...]) -> str:
    """The rounds as a Markdown table: global accuracy, each client's, losses, time."""
    return "\n".join([_HEADER, *(_row(r) for r in rounds)])


def run_mixed_federation(
    launcher: Launcher,
    settings: MixedFederation,
    *,
    timeout: float = 3600.0,
    mxnet_python: str | None = None,
    on_round: Callable[[RoundSummary], None] | None = None,
) -> MixedOutcome:
    """Start the server and one client per framework with ``launcher``; wait; summarise.

    ``on_round`` is called once per round as soon as the server recorded it
    (progress). The MXNet client runs with ``mxnet_python``, else the
    interpreter :func:`~orchard.launch.kinds.find_python` finds. The caller
    owns ``launcher``: leaving its ``with`` block stops anything still running.
    """
    started = time.monotonic()
    server = launcher.start_server(mixed_server_config(settings))
    data_dir = settings.data_dir.resolve()
    for partition, framework in enumerate(FRAMEWORKS):
        launcher.start_client(
            framework,
            ClientOptions(
                federation=settings.federation,
                name=framework,
                # Fixed partitions (not first come, first served) keep runs reproducible.
                partition_id=partition,
                num_partitions=len(FRAMEWORKS),
                seed=settings.seed,
                model=settings.model,
                dataset=settings.dataset,
                data_dir=data_dir,
                device="cpu",
                no_verify=settings.no_verify,
                env={"OMP_NUM_THREADS": str(settings.threads), "ORCHARD_LOG_LEVEL": "INFO"},
            ),
            python=mxnet_python if framework == "mxnet" else None,
        )
    reported = 0

    def progress() -> None:
        nonlocal reported
        if on_round is None:
            return
        try:
            records = server.history(settings.federation)["rounds"]
        except (LaunchError, ValueError):  # not written yet, or being replaced
            return
        for record in records[reported:]:
            on_round(_summary(record))
            reported += 1

    history = launcher.wait(timeout, progress=progress)[settings.federation]
    rounds = round_summaries(history)
    if len(rounds) != settings.num_rounds:
        raise LaunchError(
            f"{len(rounds)} of {settings.num_rounds} rounds in the history", logs=launcher.tails()
        )
    return MixedOutcome(
        settings=settings, rounds=rounds, wall_s=time.monotonic() - started, history=history
    )
