"""Soak under churn: hundreds of client sessions, a tenth leaving or crashing every round.

A real server process (started by :mod:`orchard.launch`) hosts one FedAvg
federation over a one-tensor model, ``counts`` (float64, one entry per
partition). This process runs ``--clients`` lightweight client sessions as
asyncio tasks over one gRPC channel, speaking the wire protocol through
:mod:`orchard.serde` as any client does (join, heartbeats, long polls, chunked
results). A session's fit returns the global model plus 1 at its own
partition's entry, with one example, so each round's FedAvg aggregate *proves
who counted*: the round's change is ``1/k`` at exactly the ``k`` partitions whose
results were aggregated, and 0 elsewhere. A result counted twice, or a result
the server acknowledged but did not aggregate, shows up as a wrong entry.

Every round (seeded), ``--churn`` of the sessions are disrupted: half leave
politely (``Leave``), half crash (stop without a word, so the server must drop
them by heartbeat timeout or when they rejoin); each rejoins after a short
random pause with the same instance id, so it gets its partition back.

Checked at the end (the exit status is 1 when any check fails):

* every round completed (the history holds all of them and the server exited 0);
* per round, the partitions in the aggregate equal the history's participants,
  each counted exactly once, and every acknowledged result is among them;
* the server's resident memory (``VmRSS`` of ``/proc/<pid>/status``, sampled
  at each round's end) grew less than ``--max-growth`` from round 5 to the last.

Run: ``python -m benchmarks.soak [--clients 200 --rounds 20]``; one JSON line on
stdout. ``make bench`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from orchard import serde
from orchard.launch import Launcher
from orchard.messages import (
    API_VERSION,
    Finished,
    Idle,
    JoinInfo,
    LeaveNotice,
    Result,
    Task,
    TaskPoll,
    TaskType,
)
from orchard.spec import ModelSpec, TensorSpec
from orchard.v1 import federation_service_pb2_grpc as pb_grpc

FEDERATION = "soak"


@dataclass(frozen=True, kw_only=True)
class SoakSettings:
    """How big and how long the soak is, and how rough."""

    clients: int = 200
    rounds: int = 20
    #: Share of the sessions disrupted (half leave, half crash) every round.
    churn: float = 0.1
    seed: int = 0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 4.0
    #: Memory growth allowed from round ``min(5, rounds)`` to the last (0.1 = 10%).
    max_growth: float = 0.10
    timeout: float = 900.0


@dataclass(kw_only=True)
class Ledger:
    """What the sessions saw: the model each round started from, and results acknowledged."""

    #: round -> the global parameters its fit tasks carried.
    start: dict[int, np.ndarray] = field(default_factory=dict)
    #: round -> partitions whose results the server acknowledged.
    acked: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    leaves: int = 0
    crashes: int = 0
    rejoins: int = 0
    joins: int = 0


class Session:
    """One lightweight client: join, heartbeat, poll, echo its partition, repeat."""

    def __init__(
        self,
        partition: int,
        stub: pb_grpc.FederationServiceAsyncStub,
        spec: ModelSpec,
        settings: SoakSettings,
        ledger: Ledger,
    ) -> None:
        self.partition = partition
        self.instance_id = f"soak-{partition}"
        self.stub = stub
        self.spec = spec
        self.settings = settings
        self.ledger = ledger
        self.client_id = ""
        #: The session secret's call metadata; sent on re-joins too, so a client that
        #: crashed can take its own still-connected session over.
        self.proof: tuple[tuple[str, str], ...] = ()
        self.task: asyncio.Task[None] | None = None
        self.finished = False

    def start(self) -> None:
        """Join and serve tasks in the background."""
        self.task = asyncio.create_task(self._run(), name=self.instance_id)

    async def _join(self) -> None:
        info = JoinInfo(
            api_version=API_VERSION,
            federation=FEDERATION,
            instance_id=self.instance_id,
            display_name=self.instance_id,
            framework="soak",
            model_spec=self.spec,
            partition_id=self.partition,
            num_partitions=self.settings.clients,
        )
        delay = 0.2
        while True:
            try:
                answer = await self.stub.Join(
                    serde.join_to_proto(info), timeout=30, metadata=self.proof
                )
                break
            except grpc.aio.AioRpcError as err:
                if err.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        session = serde.session_from_proto(answer)
        self.client_id = session.client_id
        self.proof = serde.session_metadata(session.secret)
        self.ledger.joins += 1

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self.stub.Heartbeat(
                    serde.heartbeat_to_proto(self.client_id), timeout=10, metadata=self.proof
                )
            except grpc.aio.AioRpcError:
                return  # the poll loop sees the same trouble and rejoins

    async def _run(self) -> None:
        await self._join()
        beats = asyncio.create_task(self._heartbeats())
        try:
            while not self.finished:
                poll = TaskPoll(client_id=self.client_id, wait_seconds=5.0, max_chunk_bytes=0)
                try:
                    stream = self.stub.PullTask(
                        serde.poll_to_proto(poll), timeout=30, metadata=self.proof
                    )
                    messages = [m async for m in stream]
                except grpc.aio.AioRpcError as err:
                    if err.code() is grpc.StatusCode.NOT_FOUND:  # dropped: join again
                        beats.cancel()
                        await self._join()
                        beats = asyncio.create_task(self._heartbeats())
                        continue
                    await asyncio.sleep(0.5)  # the server is restarting or busy: poll again
                    continue
                got = serde.task_from_stream(iter(messages))
                if isinstance(got, Finished):
                    self.finished = True
                elif isinstance(got, Task):
                    await self._answer(got)
                else:
                    assert isinstance(got, Idle)
        finally:
            beats.cancel()

    async def _answer(self, task: Task) -> None:
        counts = task.parameters[0]
        if task.type is TaskType.FIT:
            self.ledger.start.setdefault(task.round, counts.copy())
            update = counts.copy()
            update[self.partition] += 1.0
            params = [update]
        else:
            params = []
        result = Result(
            client_id=self.client_id,
            task_id=task.task_id,
            num_examples=1,
            loss=0.0,
            names=task.names if params else (),
            parameters=params,
        )
        try:
            await self.stub.PushResult(
                serde.result_to_stream(result), timeout=30, metadata=self.proof
            )
        except grpc.aio.AioRpcError:
            return  # the round closed or the session was replaced: not acknowledged
        if task.type is TaskType.FIT:
            self.ledger.acked[task.round].add(self.partition)

    async def disrupt(self, crash: bool, pause: float) -> None:
        """Leave (or crash without a word), wait ``pause`` seconds, rejoin."""
        if self.finished or self.task is None:
            return
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if crash:
            self.ledger.crashes += 1
        else:
            self.ledger.leaves += 1
            notice = LeaveNotice(client_id=self.client_id, reason="soak churn")
            with contextlib.suppress(grpc.aio.AioRpcError):  # already dropped: moot
                await self.stub.Leave(serde.leave_to_proto(notice), timeout=10, metadata=self.proof)
        await asyncio.sleep(pause)
        self.ledger.rejoins += 1
        self.start()


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _history(state_dir: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads((state_dir / FEDERATION / "history.json").read_text())
    except (OSError, ValueError):
        return {"rounds": []}
    return document


def server_config(settings: SoakSettings, state_dir: Path) -> dict[str, Any]:
    """One FedAvg federation over ``counts``: all sessions sampled, half needed."""
    n = settings.clients
    return {
        "server": {
            "insecure": True,
            "state_dir": str(state_dir),
            "heartbeat_interval": settings.heartbeat_interval,
            "heartbeat_timeout": settings.heartbeat_timeout,
            "max_poll_seconds": 5.0,
        },
        "federations": {
            FEDERATION: {
                "model": "soak-counts",
                "tensors": [{"name": "counts", "shape": [n], "dtype": "float64"}],
                "num_rounds": settings.rounds,
                "strategy": "fedavg",
                "seed": settings.seed,
                "fraction_fit": 1.0,
                "min_fit_clients": max(n // 2, 1),
                "min_available_clients": max(n - 2 * int(n * settings.churn) - 1, 1),
                "min_evaluate_clients": 1,
                "evaluate_every": 0,
                "num_partitions": n,
                "max_clients": n,
                "round_timeout": 60.0,
                "wait_timeout": 120.0,
                "round_retries": 0,
            }
        },
    }


def _audit(ledger: Ledger, final: np.ndarray, history: dict[str, Any]) -> dict[str, Any]:
    """Per round: who the aggregate counted, against the history and the acknowledgements."""
    rounds = [r["round"] for r in history["rounds"]]
    counted_total = lost = doubled = mismatched = 0
    for rnd in rounds:
        before = ledger.start.get(rnd)
        after = ledger.start.get(rnd + 1, final if rnd == rounds[-1] else None)
        if before is None or after is None:
            mismatched += 1
            continue
        delta = after - before
        counted = {int(p) for p in np.flatnonzero(np.abs(delta) > 1e-12)}
        k = max(len(counted), 1)
        doubled += sum(1 for p in counted if not np.isclose(delta[p], 1.0 / k, rtol=1e-9))
        participants = {
            int(p["partition"]) for p in history["rounds"][rnd - 1]["fit"]["participants"]
        }
        mismatched += int(counted != participants)
        lost += len(ledger.acked.get(rnd, set()) - counted)
        counted_total += len(counted)
    return {
        "results_counted": counted_total,
        "results_acknowledged": sum(len(v) for v in ledger.acked.values()),
        "lost": lost,
        "counted_twice_or_wrong": doubled,
        "rounds_not_matching_history": mismatched,
    }


async def _drive(settings: SoakSettings, launcher: Launcher, state_dir: Path) -> dict[str, Any]:
    server = launcher.start_server(server_config(settings, state_dir))
    spec = ModelSpec("soak-counts", (TensorSpec("counts", (settings.clients,), "float64"),))
    ledger = Ledger()
    rng = random.Random(settings.seed)
    rss: dict[int, float] = {}
    started = time.monotonic()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub: pb_grpc.FederationServiceAsyncStub = pb_grpc.FederationServiceStub(channel)
        sessions = [Session(p, stub, spec, settings, ledger) for p in range(settings.clients)]
        for s in sessions:
            s.start()
        seen = 0
        churners: set[asyncio.Task[None]] = set()
        while server.process.running:
            if time.monotonic() - started > settings.timeout:
                raise TimeoutError(f"soak not finished in {settings.timeout:.0f} s")
            done = len(_history(state_dir)["rounds"])
            # Rounds can end faster than this loop polls: each completed round gets its
            # own memory sample (the first taken after it ended) and its own churn,
            # however many ended since the last look. A round left without a sample
            # made the growth unknown and the soak fail (a loaded CI machine did).
            if done > seen:
                sample = _rss_mb(server.process.pid)
                for rnd in range(seen + 1, done + 1):
                    rss[rnd] = sample
            for _ in range(seen, done):
                victims = rng.sample(sessions, int(settings.clients * settings.churn))
                for i, victim in enumerate(victims):
                    pause = rng.uniform(0.2, 1.5)
                    job = asyncio.create_task(victim.disrupt(crash=i % 2 == 1, pause=pause))
                    churners.add(job)
                    job.add_done_callback(churners.discard)
            seen = max(seen, done)
            await asyncio.sleep(0.05)
        for s in sessions:
            s.finished = True
        await asyncio.gather(*churners, return_exceptions=True)
        for s in sessions:
            if s.task is not None:
                s.task.cancel()
        await asyncio.gather(*(s.task for s in sessions if s.task), return_exceptions=True)
    code = server.process.wait(30)
    history = _history(state_dir)
    with np.load(state_dir / FEDERATION / "checkpoint.npz") as npz:
        final = npz["param_0"]
    audit = _audit(ledger, final, history)
    # Round 5 on (the first rounds fill caches and pools); the round before the last in short runs.
    first = min(5, max(settings.rounds - 1, 1))
    growth = (rss[settings.rounds] - rss[first]) / rss[first] if rss.get(first) else None
    report: dict[str, Any] = {
        "benchmark": "soak",
        "clients": settings.clients,
        "rounds": settings.rounds,
        "rounds_completed": len(history["rounds"]),
        "server_exit": code,
        "churn_per_round": int(settings.clients * settings.churn),
        "leaves": ledger.leaves,
        "crashes": ledger.crashes,
        "rejoins": ledger.rejoins,
        "joins": ledger.joins,
        **audit,
        "server_rss_mb": {str(k): round(v, 1) for k, v in sorted(rss.items())},
        "rss_growth_from_round": first,
        "rss_growth": None if growth is None else round(growth, 4),
        "wall_s": round(time.monotonic() - started, 1),
    }
    report["ok"] = bool(
        code == 0
        and report["rounds_completed"] == settings.rounds
        and audit["lost"] == 0
        and audit["counted_twice_or_wrong"] == 0
        and audit["rounds_not_matching_history"] == 0
        and growth is not None
        and growth < settings.max_growth
    )
    return report


def run_soak(settings: SoakSettings, workdir: Path | None = None) -> dict[str, Any]:
    """Run the soak (server process + sessions in this process); its report as a dict."""
    with tempfile.TemporaryDirectory(prefix="orchard-soak-") as tmp:
        base = workdir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        with Launcher(base) as launcher:
            return asyncio.run(_drive(settings, launcher, base / "state"))


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print one JSON line; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SoakSettings()
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--churn", type=float, default=defaults.churn)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--max-growth", type=float, default=defaults.max_growth)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = SoakSettings(
        clients=args.clients,
        rounds=args.rounds,
        churn=args.churn,
        seed=args.seed,
        max_growth=args.max_growth,
    )
    report = run_soak(settings, args.workdir)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
