"""Round cadence and server memory: a real server and echo clients over loopback gRPC.

Each case starts ``orchard_server`` and N echo clients (null training: each
returns the parameters it received plus a constant) as separate processes
through :mod:`orchard.launch`, runs a warm-up round and at least five
measured rounds of FedAvg without evaluation, and reports:

* ``round_s``: median of the history's ``duration_s`` (fit, aggregation, step);
* ``cadence_s``: median time from one round's end to the next (``finished_at``
  differences): what a user waits for, including the checkpoint and history writes;
* ``server_peak_rss_mb``: the server's ``VmHWM`` (peak resident set), sampled while
  it serves and lingers, and ``server_baseline_rss_mb``: its ``VmRSS`` once it
  is healthy and before any client joined (the initial model is loaded by then).

The echo client is :mod:`orchard.examples.echo`; docs/performance.md explains
the numbers and where the time goes.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchard.launch import ClientOptions, Launcher
from orchard.models import get_model_spec

NAME = "rounds"


@dataclass(frozen=True, slots=True)
class Workload:
    """A model the federation exchanges: a registered model id or inline tensors."""

    name: str
    #: Registered model id (``orchard.models``), or "" for ``tensors``.
    model: str = ""
    #: Inline tensors: (name, number of float32 parameters).
    tensors: tuple[tuple[str, int], ...] = ()

    @property
    def parameters(self) -> int:
        """Number of float32 parameters."""
        if self.model:
            return get_model_spec(self.model).num_parameters
        return sum(n for _, n in self.tensors)

    def federation_table(self) -> dict[str, Any]:
        """The model part of a federation's config."""
        if self.model:
            return {"model": self.model}
        return {
            "model": self.name,
            "tensors": [{"name": n, "shape": [size]} for n, size in self.tensors],
        }


#: The workloads of issue 12's tables (and the 1 GiB model of ``make bench-large``).
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("mnist-cnn", model="mnist-cnn"),
        Workload("11.2m", tensors=(("w", 11_200_000),)),
        Workload("1gib", tensors=tuple((f"w{i}", 1 << 25) for i in range(8))),
    )
}

#: ``make bench``'s default cases: (workload, clients).
DEFAULT_CASES = "mnist-cnn:2,mnist-cnn:8,mnist-cnn:32,11.2m:8,11.2m:32"
#: ``make bench-large``: the 1 GiB model.
LARGE_CASES = "1gib:2"


def parse_cases(text: str) -> list[tuple[Workload, int]]:
    """``"mnist-cnn:2,11.2m:8"`` -> [(workload, clients), ...]; errors name the bad item."""
    cases = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in WORKLOADS:
            raise SystemExit(
                f"unknown workload {name!r} in {item!r}; known: {', '.join(WORKLOADS)}"
            )
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"case {item!r}: the client count must be a positive integer")
        cases.append((WORKLOADS[name], int(count)))
    return cases


def _proc_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cadences(rounds: list[dict[str, Any]]) -> list[float]:
    """Seconds between consecutive rounds' ``finished_at``."""
    ends = [r.get("finished_at") for r in rounds]
    return [b - a for a, b in itertools.pairwise(ends) if a is not None and b is not None]


def run_case(
    workload: Workload,
    clients: int,
    rounds: int,
    workdir: Path,
    *,
    server_settings: dict[str, Any] | None = None,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """One case: ``rounds`` rounds (the first is the warm-up) of ``clients`` echo clients."""
    federation = {
        **workload.federation_table(),
        "num_rounds": rounds,
        "min_fit_clients": clients,
        "min_available_clients": clients,
        "evaluate_every": 0,
        "round_timeout": 600.0,
        "wait_timeout": 600.0,
    }
    server_table = {
        "heartbeat_interval": 2.0,
        "heartbeat_timeout": 60.0,
        "max_poll_seconds": 10.0,
        **(server_settings or {}),
    }
    started = time.monotonic()
    with Launcher(workdir) as launcher:
        server = launcher.start_server(
            {"server": server_table, "federations": {workload.name: federation}},
            linger=1.0,
            health_timeout=300.0,
        )
        pid = server.process.pid
        baseline_kb = _proc_kb(pid, "VmRSS")
        for i in range(clients):
            launcher.start_client("echo", ClientOptions(federation=workload.name, name=f"echo-{i}"))
        peak_kb = 0

        def sample() -> None:
            nonlocal peak_kb
            peak_kb = max(peak_kb, _proc_kb(pid, "VmHWM"))

        history = launcher.wait(timeout, progress=sample)[workload.name]
    measured = history["rounds"][1:]
    round_times = [r["duration_s"] for r in measured]
    cadence = cadences(history["rounds"])
    model_mb = workload.parameters * 4 / 1e6
    return {
        "workload": workload.name,
        "clients": clients,
        "parameters": workload.parameters,
        "model_mb": round(model_mb, 2),
        "rounds_measured": len(measured),
        "round_s": round(statistics.median(round_times), 4),
        "cadence_s": round(statistics.median(cadence), 4) if cadence else None,
        "round_s_all": round_times,
        "server_baseline_rss_mb": round(baseline_kb / 1024, 1),
        "server_peak_rss_mb": round(peak_kb / 1024, 1),
        "server_peak_over_baseline_in_models": round(
            (peak_kb - baseline_kb) * 1024 / (model_mb * 1e6), 2
        ),
        "wall_s": round(time.monotonic() - started, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument(
        "--round-cases",
        default=DEFAULT_CASES,
        help=f"comma-separated WORKLOAD:CLIENTS (workloads: {', '.join(WORKLOADS)}; "
        f"default {DEFAULT_CASES}; make bench-large runs {LARGE_CASES})",
    )
    group.add_argument(
        "--rounds", type=int, default=11, help="rounds per case, the first a warm-up (min 6)"
    )


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One JSON line per case."""
    if args.rounds < 6:
        raise SystemExit("--rounds must be at least 6 (a warm-up round and 5 measured ones)")
    for workload, clients in parse_cases(args.round_cases):
        yield run_case(workload, clients, args.rounds, workdir / f"{workload.name}-{clients}")
