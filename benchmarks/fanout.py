"""The round loop's own cost of collecting answers: :func:`orchard_server.fanout.fan_out`.

A round sends a task to every sampled client and handles each answer as it
arrives. This suite runs that fan-out alone, against a pool of clients that
answer with nothing to fold after a seeded random delay (uniform over
``--fanout-spread`` seconds, as answers spread over a real round), and reports
the CPU seconds the event loop's process spent (``time.process_time``) and the
wall time, for each number of clients. Waiting for N answers should cost
O(N): ``asyncio.wait`` over the pending tasks made it O(N^2) (docs/performance.md,
item 17).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchard.examples.logreg import logreg_spec
from orchard.messages import Result, Role, Task, TaskType
from orchard_server.admission import AdmissionPolicy
from orchard_server.fanout import fan_out
from orchard_server.partitions import PartitionRegistry
from orchard_server.pool import ClientInfo, ClientPool

NAME = "fanout"


class _Delayed(ClientPool):
    """``n`` clients, each answering an evaluation after its own seeded delay."""

    def __init__(self, n: int, spread: float, seed: int) -> None:
        policy = AdmissionPolicy(
            federation="fanout", spec=logreg_spec(), partitions=PartitionRegistry(n)
        )
        super().__init__(policy)
        rng = random.Random(seed)
        self._delays = {f"c{i}": rng.uniform(0.0, spread) for i in range(n)}
        self._infos = [
            ClientInfo(
                client_id=cid,
                display_name=cid,
                framework="bench",
                role=Role.TRAINER,
                partition_id=i,
                instance_id=cid,
            )
            for i, cid in enumerate(self._delays)
        ]

    def clients(self, role: Role = Role.TRAINER) -> list[ClientInfo]:
        return list(self._infos) if role is Role.TRAINER else []

    async def run_task(self, client_id: str, task: Task) -> Result:
        await asyncio.sleep(self._delays[client_id])
        return Result(client_id=client_id, task_id=task.task_id, num_examples=1, loss=0.0)


def measure(clients: int, spread: float, seed: int = 0) -> dict[str, Any]:
    """One fan-out of an evaluation task to ``clients`` clients."""
    pool = _Delayed(clients, spread, seed)
    task = Task(
        task_id="",
        type=TaskType.EVALUATE,
        round=1,
        config={},
        timeout=spread + 60.0,
        names=(),
        parameters=[],
    )

    async def once() -> tuple[int, float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = await fan_out(pool, task, [c.client_id for c in pool.clients()], task_prefix="b")
        return len(out.results), time.process_time() - cpu, time.perf_counter() - wall

    answered, cpu_s, wall_s = asyncio.run(once())
    return {
        "clients": clients,
        "answered": answered,
        "spread_s": spread,
        "cpu_s": round(cpu_s, 4),
        "cpu_ms_per_client": round(cpu_s * 1e3 / clients, 4),
        "wall_s": round(wall_s, 3),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument(
        "--fanout-clients", default="100,1000,5000", help="comma-separated client counts"
    )
    group.add_argument("--fanout-spread", type=float, default=0.5)


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One line per number of clients."""
    for n in (int(x) for x in args.fanout_clients.split(",")):
        yield measure(n, args.fanout_spread)
