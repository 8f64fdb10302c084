"""The client pool: how the round loop reaches clients, without knowing gRPC.

The round loop only calls :class:`ClientPool`. The gRPC servicer implements it
for deployments (:mod:`orchard_server.grpc_pool`), the simulation engine for
virtual clients run by worker processes or Ray actors
(:mod:`orchard_server.simulation.pool`), and :class:`InMemoryClientPool`
drives NumPyClient objects in this process's threads, for tests whose fake
clients cannot cross a process boundary; all share every line of server logic.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchard.client.numpy_client import ClientContext, NumPyClient, execute_task
from orchard.messages import API_VERSION, JoinInfo, Result, Role, Task
from orchard.spec import ModelSpec, SpecError
from orchard_server.admission import Admission, AdmissionPolicy
from orchard_server.events import Events
from orchard_server.partitions import PartitionRegistry
from orchard_server.results import InvalidResultError, ResultPolicy
from orchard_server.strategy.aggregate import Aggregator


class ClientDroppedError(Exception):
    """A client left a task without a usable result; ``reason`` says why."""

    def __init__(self, client_id: str, reason: str) -> None:
        super().__init__(f"{client_id}: {reason}")
        self.client_id = client_id
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """A connected client as the round loop sees it."""

    client_id: str
    display_name: str
    framework: str
    role: Role
    partition_id: int
    instance_id: str
    #: The proven identity (enrolled name or client certificate), else "".
    identity: str = ""

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Stable order across restarts (session ids are random, partitions are not)."""
        return (self.partition_id, self.instance_id, self.client_id)


class ClientPool(abc.ABC):
    """The clients of one federation, admitted by its :class:`AdmissionPolicy`.

    Implementations call :meth:`_membership_changed` whenever a client joins or
    leaves, which wakes :meth:`wait_for_clients`. :attr:`events` is the
    federation's event stream (:mod:`.events`): the pool publishes what only
    it sees (bytes moved, client progress), the round loop the rest.
    """

    def __init__(self, policy: AdmissionPolicy, results: ResultPolicy | None = None) -> None:
        self._changed = asyncio.Event()
        self._policy = policy
        self.events = Events()
        self._results = results or ResultPolicy()

    @property
    def results(self) -> ResultPolicy:
        """What a result may hold and how example counts weigh (checked on entry)."""
        return self._results

    @property
    def policy(self) -> AdmissionPolicy:
        """The federation's joining rules (admission reads them)."""
        return self._policy

    @property
    def federation(self) -> str:
        """Name of the federation these clients belong to."""
        return self._policy.federation

    @property
    def spec(self) -> ModelSpec:
        """The model spec every update is validated against."""
        return self._policy.spec

    @property
    def partitions(self) -> PartitionRegistry:
        """Partitions handed out to this federation's clients (the checkpoint keeps them)."""
        return self._policy.partitions

    def members(self) -> list[ClientInfo]:
        """Every connected client, of every role."""
        return [c for role in Role for c in self.clients(role)]

    def _membership_changed(self) -> None:
        self._changed.set()

    @abc.abstractmethod
    def clients(self, role: Role = Role.TRAINER) -> list[ClientInfo]:
        """Connected clients of a role, in a stable order."""

    async def wait_for_clients(self, count: int, timeout: float, role: Role = Role.TRAINER) -> bool:
        """Wait until ``count`` clients of ``role`` are connected; False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.clients(role)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    @abc.abstractmethod
    async def run_task(self, client_id: str, task: Task) -> Result:
        """Have one client run ``task``; the result is validated against the spec.

        Raises :class:`ClientDroppedError` when the client disconnects, fails,
        sends an invalid result or misses ``task.timeout``.
        """

    def fold_into(self, aggregator: Aggregator) -> UpdateSink | None:
        """A sink that folds this pool's next fit results into ``aggregator`` itself.

        None (the default): results come back whole and the round loop folds
        them. A simulation's local workers fold their own clients' updates
        (:mod:`orchard_server.simulation.folds`); such a pool returns fit
        results without parameters while the sink is open.
        """
        return None


class UpdateSink(Protocol):
    """Where a pool folds a fan-out's fit results itself (:meth:`ClientPool.fold_into`)."""

    def took(self, task_id: str) -> bool:
        """Whether the result of ``task_id`` is folded here (the fan-out takes it as folded)."""
        ...

    async def close(self) -> dict[str, str]:
        """Fold what is left into the aggregator, at the fan-out's end.

        Returns client id -> why its update, taken as folded, was lost after
        all (the round loop counts those clients as dropped).
        """
        ...


class InMemoryClientPool(ClientPool):
    """NumPyClients in this process, each run in a worker thread.

    Every client is admitted by the same :class:`Admission` as a gRPC join, so
    it is refused (and assigned partitions) exactly as a deployed one.
    Parameters still go through a copy (as they would through the wire), so a
    client cannot alias the server's global model.
    """

    def __init__(
        self,
        spec: ModelSpec,
        federation: str = "simulation",
        *,
        policy: AdmissionPolicy | None = None,
        results: ResultPolicy | None = None,
    ) -> None:
        """``policy`` defaults to an open federation whose clients fix their partitions."""
        if policy is None:
            policy = AdmissionPolicy(
                federation=federation,
                spec=spec,
                partitions=PartitionRegistry(0, federation=federation),
            )
        elif policy.federation != federation or policy.spec != spec:
            raise ValueError(
                f"policy of federation {policy.federation!r} (model {policy.spec.model_id!r}) "
                f"does not fit pool {federation!r} (model {spec.model_id!r})"
            )
        super().__init__(policy, results)
        self._admission = Admission([self])
        self._clients: dict[str, tuple[ClientInfo, NumPyClient]] = {}
        self._joins = 0

    def add(
        self,
        factory: Callable[[ClientContext], NumPyClient],
        join: JoinInfo | None = None,
        *,
        partition_id: int | None = None,
        num_partitions: int | None = None,
        role: Role = Role.TRAINER,
        name: str = "",
    ) -> ClientInfo:
        """Admit and connect a client, as a gRPC join would.

        ``join`` is what the client says about itself; without it, the keyword
        arguments build one (API version of this code, this federation, a
        fresh instance id ``sim-N``). Raises
        :class:`~orchard_server.admission.AdmissionError` exactly where the
        servicer would refuse the same join.
        """
        client_id = f"sim-{self._joins}"
        if join is None:
            join = JoinInfo(
                api_version=API_VERSION,
                federation=self.federation,
                instance_id=client_id,
                display_name=name,
                framework="in-process",
                role=role,
                partition_id=partition_id,
                num_partitions=num_partitions,
            )
        admitted = self._admission.admit(join)
        self._joins += 1
        for old_id, (old, _) in list(self._clients.items()):
            if old.instance_id == join.instance_id:
                self.remove(old_id)
        ctx = ClientContext(
            federation=admitted.federation,
            client_id=client_id,
            partition_id=admitted.partition_id,
            num_partitions=admitted.num_partitions,
            model_spec=admitted.spec,
        )
        info = ClientInfo(
            client_id=client_id,
            display_name=join.display_name or client_id,
            framework=join.framework or "in-process",
            role=admitted.role,
            partition_id=admitted.partition_id,
            instance_id=join.instance_id,
        )
        self._clients[client_id] = (info, factory(ctx))
        self._membership_changed()
        return info

    def may_take_over(self, instance_id: str, secret: str, identity: str = "") -> bool:
        """In-process clients are the server's own code: any may replace an instance."""
        return True

    def remove(self, client_id: str) -> None:
        """Disconnect a client."""
        self._clients.pop(client_id, None)
        self._membership_changed()

    def clients(self, role: Role = Role.TRAINER) -> list[ClientInfo]:
        return sorted(
            (i for i, _ in self._clients.values() if i.role is role), key=lambda i: i.sort_key
        )

    async def run_task(self, client_id: str, task: Task) -> Result:
        entry = self._clients.get(client_id)
        if entry is None:
            raise ClientDroppedError(client_id, "not connected")
        _, client = entry
        params = [p.copy() for p in task.parameters]
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(
                    execute_task, client, task, client_id=client_id, parameters=params
                ),
                task.timeout,
            )
        except TimeoutError:
            raise ClientDroppedError(
                client_id, f"missed the deadline of {task.timeout:g} s"
            ) from None
        if client_id not in self._clients:
            raise ClientDroppedError(client_id, "disconnected during the task")
        if result.error:
            raise ClientDroppedError(client_id, f"task failed on the client: {result.error}")
        try:
            self.results.check(self.spec, task, result)
        except (SpecError, InvalidResultError) as exc:
            raise ClientDroppedError(client_id, f"update rejected: {exc}") from None
        return result
