"""The client pool: how the round loop reaches clients, without knowing gRPC.

The round loop only calls :class:`ClientPool`. The gRPC servicer implements it
for deployments (:mod:`orchard_server.grpc_pool`); :class:`InMemoryClientPool`
drives NumPyClients in this process for unit tests and simulation, so both
share every line of server logic.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchard.client.numpy_client import ClientContext, NumPyClient, execute_task
from orchard.messages import Result, Role, Task, TaskType
from orchard.spec import ModelSpec, SpecError


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

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Stable order across restarts (session ids are random, partitions are not)."""
        return (self.partition_id, self.instance_id, self.client_id)


def validate_result(spec: ModelSpec, task: Task, result: Result) -> None:
    """Raise :class:`SpecError` unless a fit result matches the federation's spec.

    Shared by every pool so a malformed update is refused the same way whether
    it came over gRPC or from an in-process client.
    """
    if result.error or task.type is not TaskType.FIT:
        return
    if result.names and tuple(result.names) != tuple(spec.names):
        for i, (want, got) in enumerate(zip(spec.names, result.names, strict=False)):
            if want != got:
                raise SpecError(f"tensor #{i}: expected {want!r}, got {got!r}")
        raise SpecError(f"expected {len(spec.names)} tensors, got {len(result.names)}")
    spec.validate(result.parameters)
    if result.num_examples <= 0:
        raise SpecError(
            f"num_examples must be positive for a fit result, got {result.num_examples}"
        )


class ClientPool(abc.ABC):
    """The clients of one federation.

    Implementations call :meth:`_membership_changed` whenever a client joins or
    leaves, which wakes :meth:`wait_for_clients`.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Event()

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


class InMemoryClientPool(ClientPool):
    """NumPyClients in this process, each run in a worker thread.

    Parameters still go through a copy (as they would through the wire), so a
    client cannot alias the server's global model.
    """

    def __init__(self, spec: ModelSpec, federation: str = "simulation") -> None:
        super().__init__()
        self._spec = spec
        self._federation = federation
        self._clients: dict[str, tuple[ClientInfo, NumPyClient]] = {}

    def add(
        self,
        factory: Callable[[ClientContext], NumPyClient],
        *,
        partition_id: int,
        num_partitions: int,
        role: Role = Role.TRAINER,
        name: str = "",
    ) -> ClientInfo:
        """Create and connect a client (as a join would)."""
        client_id = f"sim-{len(self._clients)}"
        ctx = ClientContext(
            federation=self._federation,
            client_id=client_id,
            partition_id=partition_id,
            num_partitions=num_partitions,
            model_spec=self._spec,
        )
        info = ClientInfo(
            client_id=client_id,
            display_name=name or client_id,
            framework="in-process",
            role=role,
            partition_id=partition_id,
            instance_id=client_id,
        )
        self._clients[client_id] = (info, factory(ctx))
        self._membership_changed()
        return info

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
            validate_result(self._spec, task, result)
        except SpecError as exc:
            raise ClientDroppedError(client_id, f"update rejected: {exc}") from None
        return result
