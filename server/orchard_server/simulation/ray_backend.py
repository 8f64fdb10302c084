"""The ``ray`` backend: workers are Ray actors, on one machine or a cluster.

For users who outgrow one machine. Each actor is a
:class:`~orchard.simulation.job.WorkerRuntime` (core only, never the
server), created with the resources each virtual client needs
(``[simulation.resources]``: CPUs, GPUs), so Ray places as many actors as
the cluster holds. A round's parameters go into Ray's object store once
and every job of the round refers to that one object (the actors read it
without a copy), rather than each job carrying the model.
``ray_address`` names an existing cluster (``auto``,
``ray://head:10001``); empty starts a local Ray instance for the simulation
and stops it afterwards. Ray is an optional extra: ``pip install
'orchard-server[ray]'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from orchard.simulation import shm
from orchard.simulation.job import Job, JobResult, WorkerRuntime
from orchard.typing import NDArrays
from orchard_server.simulation.backend import (
    Backend,
    WorkerLostError,
    WorkerSetup,
    WorkerStartError,
)
from orchard_server.simulation.config import Resources
from orchard_server.simulation.folds import FoldRequest

__all__ = ["RayBackend"]

log = logging.getLogger("orchard.simulation")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise WorkerStartError(
            "the ray backend needs Ray: pip install 'orchard-server[ray]'"
        ) from None
    return ray


class _ActorPool:
    def __init__(self, setup: WorkerSetup, size: int, resources: Resources) -> None:
        self.setup = setup
        self.size = size
        self.resources = resources
        self.idle: asyncio.Queue[Any] = asyncio.Queue()
        self.all: set[Any] = set()

    def _new(self) -> Any:
        ray = _ray()
        actor_class = ray.remote(WorkerRuntime).options(
            num_cpus=self.resources.num_cpus, num_gpus=self.resources.num_gpus
        )
        actor = actor_class.remote(
            self.setup.group.client_fn,
            federation=self.setup.federation,
            model_spec=self.setup.spec,
            node_config=self.setup.group.node_config,
        )
        self.all.add(actor)
        return actor

    async def start(self) -> None:
        actors = [self._new() for _ in range(self.size)]
        try:
            # A cheap call proves each actor imported client_fn.
            await asyncio.gather(*(a.__ray_ready__.remote() for a in actors))
        except Exception as exc:
            raise WorkerStartError(f"a Ray worker could not start: {exc}") from None
        for actor in actors:
            self.idle.put_nowait(actor)

    def _replace(self, lost: Any) -> None:
        ray = _ray()
        self.all.discard(lost)
        ray.kill(lost)
        self.idle.put_nowait(self._new())

    async def run(self, job: Job, parameters: Any) -> JobResult:
        """Run ``job`` (its task's parameters stripped) with ``parameters``, an object ref."""
        ray = _ray()
        actor = await self.idle.get()
        try:
            out: JobResult = await actor.run_with.remote(job, parameters)
        except asyncio.CancelledError:
            self._replace(actor)
            raise
        except ray.exceptions.RayActorError as exc:
            self._replace(actor)
            raise WorkerLostError(f"its Ray actor died: {exc}") from None
        self.idle.put_nowait(actor)
        return out

    def close(self) -> None:
        ray = _ray()
        for actor in self.all:
            ray.kill(actor)
        self.all.clear()


class RayBackend(Backend):
    """Ray actors as workers (see the module docs)."""

    def __init__(
        self,
        setups: list[WorkerSetup],
        sizes: list[int] | None,
        *,
        resources: Resources,
        address: str = "",
        workers: int = 0,
    ) -> None:
        self._setups = setups
        self._sizes = sizes
        self._resources = resources
        self._address = address
        self._workers = workers
        self._pools: list[_ActorPool] = []
        self._started_ray = False
        #: The last parameter set put in the object store: (identity key, arrays, object ref).
        self._shared: tuple[tuple[int, ...], Any, Any] | None = None

    async def start(self) -> None:
        ray = _ray()
        if not ray.is_initialized():
            if self._address:
                ray.init(address=self._address, log_to_driver=True)
            else:
                ray.init(include_dashboard=False, log_to_driver=True)
            self._started_ray = True
        sizes = self._sizes
        if sizes is None:
            cpus = int(ray.cluster_resources().get("CPU", 1) // self._resources.num_cpus) or 1
            total = self._workers or cpus
            share = max(1, total // len(self._setups))
            sizes = [min(share, s.group.num_clients + 1) for s in self._setups]
        self._pools = [
            _ActorPool(s, n, self._resources) for s, n in zip(self._setups, sizes, strict=True)
        ]
        try:
            await asyncio.gather(*(p.start() for p in self._pools))
        except BaseException:
            await self.close()
            raise
        log.info("ray backend: %s actor(s)", ", ".join(str(p.size) for p in self._pools))

    def _object(self, parameters: NDArrays) -> Any:
        """The object ref of ``parameters``, put once per distinct set (a round's tasks share one).

        Keyed on the identity of the list and its arrays, which the cache holds,
        as :class:`~orchard.simulation.shm.Broadcast` does; jobs in flight keep
        an older set's object alive through their own references.
        """
        key = shm.set_key(parameters)
        if self._shared is None or self._shared[0] != key:
            self._shared = (key, parameters, _ray().put(list(parameters)))
        return self._shared[2]

    async def run(self, group: int, job: Job, fold: FoldRequest | None = None) -> JobResult:
        """Run ``job`` on an actor of ``group``; its result comes back whole (``fold`` unused)."""
        ref = self._object(job.task.parameters)
        stripped = dataclasses.replace(job, task=dataclasses.replace(job.task, parameters=[]))
        return await self._pools[group].run(stripped, ref)

    async def close(self) -> None:
        self._shared = None
        for pool in self._pools:
            pool.close()
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False

    @property
    def pids(self) -> list[int]:
        return []
