"""The NumPy-level client interface the runtime calls (framework adapters reach it
through :class:`orchard.client.adapter.AdapterClient`).

Modelled on Flower's ``NumPyClient``: parameters are ordered lists of NumPy
arrays in the model spec's order, so the runtime (and the server) never see a
framework type.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field

from orchard.client.progress import ProgressBoard
from orchard.messages import Result, Task, TaskType
from orchard.spec import ModelSpec
from orchard.typing import Config, Metrics, NDArrays

log = logging.getLogger("orchard.client")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientContext:
    """What a client learns when it joins, before it loads its data.

    ``partition_id``/``num_partitions`` are the server's assignment, unless
    the user fixed them on the command line (then those win).
    """

    federation: str
    client_id: str
    partition_id: int
    num_partitions: int
    model_spec: ModelSpec
    #: Where training posts how far it is; the runtime's heartbeats report it.
    progress: ProgressBoard = field(default_factory=ProgressBoard, compare=False, repr=False)


class NumPyClient(abc.ABC):
    """A federated client: get, fit and evaluate parameters as NumPy arrays."""

    @abc.abstractmethod
    def get_parameters(self, config: Config) -> NDArrays:
        """The current local parameters, in the model spec's order."""

    @abc.abstractmethod
    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        """Train from ``parameters``; return new parameters, the number of
        training examples (not batches) and metrics."""

    @abc.abstractmethod
    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        """Evaluate ``parameters``; return loss, number of examples and metrics."""


def execute_task(
    client: NumPyClient, task: Task, *, client_id: str, parameters: NDArrays | None = None
) -> Result:
    """Run ``task`` on ``client``; an exception in the adapter becomes a failed result.

    One implementation for the gRPC runtime and the in-process pool, so a
    simulated client reports exactly what a deployed one would. ``parameters``
    replaces ``task.parameters`` (the in-process pool passes copies). A fit's
    ``train_loss`` metric becomes the result's loss (None when the framework
    gives none, so the server leaves it out of averages). Only ``Exception`` is
    caught: a ``BaseException`` (SIGTERM handling) still ends the task.
    """
    params = task.parameters if parameters is None else parameters
    try:
        if task.type is TaskType.FIT:
            new, num_examples, metrics = client.fit(params, task.config)
            raw_loss = metrics.get("train_loss")
            return Result(
                client_id=client_id,
                task_id=task.task_id,
                num_examples=int(num_examples),
                loss=float(raw_loss)
                if isinstance(raw_loss, int | float) and not isinstance(raw_loss, bool)
                else None,
                metrics=dict(metrics),
                names=task.names,
                parameters=list(new),
            )
        loss, num_examples, metrics = client.evaluate(params, task.config)
        return Result(
            client_id=client_id,
            task_id=task.task_id,
            num_examples=int(num_examples),
            loss=float(loss),
            metrics=dict(metrics),
        )
    except Exception as exc:  # the adapter's failure is reported, not fatal
        log.exception("task %s raised", task.task_id)
        return Result(
            client_id=client_id, task_id=task.task_id, error=f"{type(exc).__name__}: {exc}"
        )
