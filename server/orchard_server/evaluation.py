"""Evaluation of each new global model: federated, and centralized.

* **Federated**: the strategy's selection policy picks trainers, each
  evaluates the model on its own validation data; the record holds their
  example-weighted loss and metrics and each client's own.
* **Centralized**, one of two ways, so the server still imports no ML
  framework: an in-process ``evaluate_fn`` (simulations), or else the first
  connected client with the evaluator role, which holds the test set.

Both return the typed history record (:mod:`.history`), or None when the
evaluation did not take place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from orchard.messages import Role, TaskType
from orchard.typing import Config, Metrics, NDArrays
from orchard_server.fanout import Fanout
from orchard_server.pool import ClientPool
from orchard_server.records import CentralizedRecord, EvaluateRecord, format_metrics
from orchard_server.strategy import SelectionPolicy

log = logging.getLogger("orchard.server")

#: An in-process centralized evaluation: (round, parameters) -> (loss, metrics).
EvaluateFn = Callable[[int, NDArrays], tuple[float, Metrics]]

#: Sends one kind of task with a config to some clients (the federation's fan-out).
Send = Callable[[TaskType, Sequence[str], Config], Awaitable[Fanout]]


async def federated_evaluation(
    rnd: int,
    *,
    pool: ClientPool,
    select: SelectionPolicy,
    rng: np.random.Generator,
    config: Config,
    send: Send,
    label: str,
) -> EvaluateRecord | None:
    """Evaluate on the trainers ``select`` picks; None (logged) when it picks nobody.

    ``label`` is the round as logs show it (``"federation 'blobs' round 3/10"``).
    """
    if not select.evaluates:  # switched off on purpose: nothing to say each round
        return None
    trainers = [c.client_id for c in pool.clients()]
    selected = select.select_evaluate(trainers, rng)
    if not selected:
        log.warning(
            "%s: federated evaluation skipped: %d clients connected, too few for "
            "the selection policy",
            label,
            len(trainers),
        )
        return None
    phase = await send(TaskType.EVALUATE, selected, {**config, "round": rnd})
    record = EvaluateRecord.of(
        phase.results, dropped=phase.dropped, duration=phase.duration, weight=pool.results.weight
    )
    if record.participants:
        log.info(
            "%s: federated evaluation on %d clients (%d examples): loss %s%s",
            label,
            len(record.participants),
            record.num_examples,
            "n/a" if record.loss is None else f"{record.loss:.4f}",
            format_metrics(record.metrics),
        )
    return record


async def centralized_evaluation(
    rnd: int,
    parameters: NDArrays,
    *,
    evaluate_fn: EvaluateFn | None,
    pool: ClientPool,
    config: Config,
    send: Send,
    label: str,
) -> CentralizedRecord | None:
    """Evaluate ``parameters`` in process, else on an evaluator client; None if neither."""
    if evaluate_fn is not None:
        loss, metrics = await asyncio.to_thread(evaluate_fn, rnd, parameters)
        record = CentralizedRecord.of("server", float(loss), metrics)
    else:
        evaluators = pool.clients(Role.EVALUATOR)
        if not evaluators:
            return None
        evaluator = evaluators[0]
        phase = await send(
            TaskType.EVALUATE,
            [evaluator.client_id],
            {**config, "round": rnd, "centralized": True, "split": "test"},
        )
        if not phase.results:
            log.warning("%s: centralized evaluation failed: %s", label, phase.dropped)
            return CentralizedRecord.of(evaluator.display_name, None, {}, dropped=phase.dropped)
        info, result = phase.results[0]
        record = CentralizedRecord.of(
            info.display_name, result.loss, result.metrics, num_examples=result.num_examples
        )
    log.info(
        "%s: centralized evaluation by %s%s: loss %s%s",
        label,
        record.source,
        f" ({record.num_examples} examples)" if record.num_examples else "",
        "n/a" if record.loss is None else f"{record.loss:.4f}",
        format_metrics(record.metrics),
    )
    return record
