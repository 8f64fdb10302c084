"""One task of one virtual client, and the runtime a worker uses to carry it out.

Every backend (local worker processes, Ray actors) ships a :class:`Job` to a
worker and gets a :class:`JobResult` back; :class:`WorkerRuntime` is the one
code path in between: build the client with ``client_fn``, run the task with
:func:`~orchard.client.numpy_client.execute_task` (the gRPC runtime's own), and
return the client's state when the simulation keeps it. So a virtual client
fails, reports and seeds exactly as a deployed one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from orchard.client.numpy_client import execute_task
from orchard.messages import Result, Role, Task
from orchard.simulation.context import ClientFn, ClientState, SimulationContext, load_client_fn
from orchard.spec import ModelSpec, SpecError
from orchard.typing import NDArray, NDArrays, Scalar

__all__ = ["Job", "JobResult", "WorkerRuntime"]

log = logging.getLogger("orchard.simulation")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """Run ``task`` as the virtual client of ``partition_id``."""

    client_id: str
    partition_id: int
    num_partitions: int
    role: Role
    task: Task
    #: The client's stored state (None: the simulation keeps no state).
    state: dict[str, NDArray] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """The client's result, its state afterwards, and how long the worker spent."""

    result: Result
    state: dict[str, NDArray] | None = None
    #: Seconds from creating the client to its result (the client's own time).
    seconds: float = 0.0
    #: The worker found the result's parameters to match the model spec, every
    #: value finite; the driver then checks only their layout (see :meth:`WorkerRuntime.run`).
    checked: bool = False
    #: The worker keeps the parameters (``result.parameters`` is empty) until the
    #: driver says whether to fold them into its partial sums (:mod:`orchard.simulation.partial`).
    held: bool = False


class WorkerRuntime:
    """A worker's side of a simulation: ``client_fn`` and the settings every client shares."""

    def __init__(
        self,
        client_fn: ClientFn | str,
        *,
        federation: str,
        model_spec: ModelSpec,
        node_config: Mapping[str, Scalar],
    ) -> None:
        self.client_fn = load_client_fn(client_fn) if isinstance(client_fn, str) else client_fn
        self.federation = federation
        self.model_spec = model_spec
        self.node_config = dict(node_config)

    def run(self, job: Job) -> JobResult:
        """Create the client, run the task, discard the client.

        A ``client_fn`` that raises is a failed result, as a client that
        crashes while loading its data would be; the server drops it.
        """
        started = time.perf_counter()
        state = ClientState(dict(job.state)) if job.state is not None else None
        context = SimulationContext(
            federation=self.federation,
            client_id=job.client_id,
            partition_id=job.partition_id,
            num_partitions=job.num_partitions,
            model_spec=self.model_spec,
            role=job.role,
            node_config=self.node_config,
            state=state,
        )
        try:
            client = self.client_fn(context)
        except Exception as exc:  # the user's code failed: reported, not fatal
            log.exception("client_fn failed for %s", job.client_id)
            result = Result(
                client_id=job.client_id,
                task_id=job.task.task_id,
                error=f"client_fn failed: {type(exc).__name__}: {exc}",
            )
        else:
            result = execute_task(client, job.task, client_id=job.client_id)
        seconds = time.perf_counter() - started
        return JobResult(
            result=result,
            state=state.arrays if state is not None else None,
            seconds=seconds,
            checked=self._check(result),
        )

    def _check(self, result: Result) -> bool:
        """True when ``result``'s parameters match the model spec, every value finite.

        The scan for NaN and infinity reads the whole update; done here, it
        runs in the workers, in parallel, instead of one after another in the
        driver, where it was a fifth of a round of 100 null clients. The
        workers are the simulation's own processes, so their word is as good
        as the driver's. A result that fails is not refused here: the driver
        checks it in full and refuses it with the message a deployment gives.
        """
        if result.error or not result.parameters:
            return False
        try:
            self.model_spec.validate(result.parameters)
        except SpecError:
            return False
        return True

    def run_with(self, job: Job, parameters: NDArrays) -> JobResult:
        """:meth:`run` with the task's parameters passed apart from the job.

        The Ray backend puts a round's parameters in Ray's object store once
        and passes that one object to every job, instead of serializing the
        model into each job.
        """
        task = dataclasses.replace(job.task, parameters=list(parameters))
        return self.run(dataclasses.replace(job, task=task))
