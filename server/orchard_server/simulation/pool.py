"""The simulation's :class:`~orchard_server.pool.ClientPool`: virtual clients, admitted as real.

Every virtual client joins through the federation's
:class:`~orchard_server.admission.Admission` (version, credentials, room,
partition) when the simulation starts, so a simulation refuses exactly what a
deployment would. It holds no client object: for each task a backend worker
builds the client with ``client_fn`` and discards it afterwards; only the
client's state store (when asked) survives, here, between its tasks.
A task that misses its deadline, fails in the client or loses its worker
drops the client for that task, as :class:`~orchard_server.grpc_pool.GrpcClientPool`
drops a deployed client.

With FedAvg's mean (:class:`~orchard_server.strategy.aggregate.WeightedMean`)
and the local backend, the workers fold their own clients' updates
(:meth:`SimulationPool.fold_into`, :mod:`orchard_server.simulation.folds`):
each result is checked here as any other, without its parameters, and the
driver adds one partial sum per worker at the end of the fan-out.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import numpy as np

from orchard.messages import API_VERSION, JoinInfo, Result, Role, Task, TaskType
from orchard.simulation.job import Job, JobResult
from orchard.spec import SpecError
from orchard.typing import NDArray
from orchard_server.admission import Admission, AdmissionPolicy
from orchard_server.fanout import fold_model_sized
from orchard_server.pool import ClientDroppedError, ClientInfo, ClientPool, UpdateSink
from orchard_server.results import InvalidResultError, ResultPolicy
from orchard_server.simulation.backend import Backend, WorkerLostError
from orchard_server.simulation.folds import FoldRequest, WorkerFolds
from orchard_server.strategy.aggregate import Aggregator, WeightedMean

__all__ = ["SimulationPool"]


class SimulationPool(ClientPool):
    """``num_clients`` virtual trainers (and optionally one evaluator) run by a backend."""

    def __init__(
        self,
        policy: AdmissionPolicy,
        backend: Backend,
        *,
        group_sizes: Sequence[int],
        frameworks: Sequence[str] = (),
        keep_state: bool = False,
        evaluator: bool = False,
        results: ResultPolicy | None = None,
    ) -> None:
        """Admit every virtual client; raises ``AdmissionError`` as a refused join would.

        ``results`` checks every answer where it enters, as a deployment's pool does.
        """
        super().__init__(policy, results)
        self.backend = backend
        self.keep_state = keep_state
        self._admission = Admission([self])
        self._infos: dict[str, ClientInfo] = {}
        self._group: dict[str, int] = {}
        self._states: dict[str, dict[str, NDArray]] = {}
        self._by_role: dict[Role, list[ClientInfo]] = {role: [] for role in Role}
        #: The open fan-out whose fit results the workers fold (fold_into).
        self._folds: _WorkerSink | None = None
        num_clients = sum(group_sizes)
        self._num_partitions = num_clients
        partition = 0
        for group, size in enumerate(group_sizes):
            framework = frameworks[group] if group < len(frameworks) else "simulation"
            for _ in range(size):
                self._join(
                    f"virtual-{partition}",
                    group,
                    framework,
                    Role.TRAINER,
                    partition_id=partition,
                    num_partitions=num_clients,
                )
                partition += 1
        if evaluator:
            self._join(
                "virtual-evaluator",
                0,
                frameworks[0] if frameworks else "simulation",
                Role.EVALUATOR,
            )
        self._membership_changed()

    def _join(
        self,
        instance_id: str,
        group: int,
        framework: str,
        role: Role,
        *,
        partition_id: int | None = None,
        num_partitions: int | None = None,
    ) -> None:
        admitted = self._admission.admit(
            JoinInfo(
                api_version=API_VERSION,
                federation=self.federation,
                instance_id=instance_id,
                display_name=instance_id,
                framework=framework,
                role=role,
                auth_token=self.policy.auth_token,
                partition_id=partition_id,
                num_partitions=num_partitions,
            )
        )
        info = ClientInfo(
            client_id=instance_id,
            display_name=instance_id,
            framework=framework,
            role=admitted.role,
            partition_id=admitted.partition_id,
            instance_id=instance_id,
        )
        self._infos[instance_id] = info
        self._group[instance_id] = group
        self._by_role[info.role].append(info)

    def members(self) -> list[ClientInfo]:
        return list(self._infos.values())

    def may_take_over(self, instance_id: str, secret: str, identity: str = "") -> bool:
        """Virtual clients are the simulation's own: any may replace an instance."""
        return True

    def clients(self, role: Role = Role.TRAINER) -> list[ClientInfo]:
        return list(self._by_role[role])

    def state_of(self, client_id: str) -> dict[str, NDArray] | None:
        """A client's stored state (None: none kept)."""
        return self._states.get(client_id)

    def fold_into(self, aggregator: Aggregator) -> UpdateSink | None:
        """The workers fold the next fan-out's fit results when ``aggregator`` is a plain mean.

        Other aggregates (order statistics, clipping) need every update as it
        is, so their results come back whole.
        """
        if type(aggregator) is not WeightedMean:
            return None
        folds = self.backend.open_folds()
        if folds is None:
            return None
        self._folds = _WorkerSink(self, aggregator, folds)
        return self._folds

    async def run_task(self, client_id: str, task: Task) -> Result:
        info = self._infos.get(client_id)
        if info is None:
            raise ClientDroppedError(client_id, "not connected")
        job = Job(
            client_id=client_id,
            partition_id=info.partition_id,
            num_partitions=self._num_partitions,
            role=info.role,
            task=task,
            state=self._states.get(client_id, {}) if self.keep_state else None,
        )
        sink = self._folds
        fold = sink.request(client_id, task) if sink is not None else None
        try:
            out = await asyncio.wait_for(
                self.backend.run(self._group[client_id], job, fold), task.timeout
            )
        except TimeoutError:
            raise ClientDroppedError(
                client_id, f"missed the deadline of {task.timeout:g} s"
            ) from None
        except WorkerLostError as exc:
            raise ClientDroppedError(client_id, str(exc)) from None
        result = out.result
        if result.error:
            raise ClientDroppedError(client_id, f"task failed on the client: {result.error}")
        if out.held:  # checked when it came (_WorkerSink.decide)
            refusal = sink.refused.pop(task.task_id, None) if sink is not None else "no fold open"
            if refusal is not None:
                raise ClientDroppedError(client_id, f"update rejected: {refusal}")
        else:
            try:
                self.results.check(self.spec, task, result, values_checked=out.checked)
            except (SpecError, InvalidResultError) as exc:
                raise ClientDroppedError(client_id, f"update rejected: {exc}") from None
        if self.keep_state and out.state is not None:
            self._states[client_id] = out.state
        return result


class _WorkerSink:
    """One fan-out whose fit results the local workers fold (:meth:`SimulationPool.fold_into`)."""

    def __init__(self, pool: SimulationPool, aggregator: WeightedMean, folds: WorkerFolds) -> None:
        self.pool = pool
        self.aggregator = aggregator
        self.folds = folds
        #: Task id -> client id of every result accepted to be folded by its worker.
        self.accepted: dict[str, str] = {}
        #: Task id -> why the result a worker kept was refused (read by run_task).
        self.refused: dict[str, str] = {}
        self.collected: set[str] = set()

    def request(self, client_id: str, task: Task) -> FoldRequest | None:
        """The fold request for ``task`` (None: not a fit task, or the fan-out is over)."""
        if task.type is not TaskType.FIT or self.folds.closed:
            return None

        def decide(out: JobResult) -> int | None:
            # The checks a deployment's pool makes, less the parameters' values
            # and layout (the worker checked those against the same spec).
            try:
                self.pool.results.check(self.pool.spec, task, out.result, parameters_held=True)
            except (SpecError, InvalidResultError) as exc:
                self.refused[task.task_id] = str(exc)
                return None
            self.accepted[task.task_id] = client_id
            return self.pool.results.weight(out.result.num_examples)

        return FoldRequest(self.folds, decide)

    def took(self, task_id: str) -> bool:
        if task_id not in self.accepted:
            return False
        self.collected.add(task_id)
        return True

    async def close(self) -> dict[str, str]:
        if self.pool._folds is self:
            self.pool._folds = None
        partials, lost = await self.folds.close(self.collected)
        dtypes = [np.dtype(t.dtype) for t in self.pool.spec.tensors]
        for partial in partials:
            add = functools.partial(
                self.aggregator.add_sums,
                partial.sums,
                dtypes,
                count=len(partial.tasks),
                total=partial.total,
                shared_weight=partial.shared_weight,
            )
            await fold_model_sized(add, sum(s.nbytes for s in partial.sums))
        partials.clear()  # views of the workers' segments, which the next fan-out reuses
        return {self.accepted[t]: why for t, why in lost.items() if t in self.collected}
