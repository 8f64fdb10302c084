"""Reaching clients: a bounded wait for enough of them, and task fan-out.

:func:`wait_for_clients` waits for a number of trainers, saying every 10 s
why it waits, and gives up after a timeout (at once when told to stop).
:func:`fan_out` sends a task to each chosen client through the
:class:`.ClientPool`, collects results as they arrive and names every client
that gave none, with the reason (dropped by the pool, missed the deadline,
update rejected), each in one log line. Fit results can be folded into the
strategy's aggregator the moment they arrive, after which their arrays are
dropped, so memory stays O(model) for mean-type aggregates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchard.messages import Result, Role, Task
from orchard.typing import NDArrays
from orchard_server.events import drop_kind
from orchard_server.pool import ClientDroppedError, ClientInfo, ClientPool, UpdateSink
from orchard_server.strategy import AggregationError

log = logging.getLogger("orchard.server")

#: Receives each fit result's parameters and example count (an aggregator's ``add``).
Fold = Callable[[NDArrays, int], None]

#: Updates up to this size are folded on the event loop; larger ones in a worker thread.
#: A 16 MiB fold takes about 4 ms here. Below that, a thread costs more than it
#: frees: NumPy drops and retakes the GIL around every block of the fold, and
#: each retake waits for the busy event loop, so 100 virtual clients of the MNIST
#: CNN (6.65 MB) took 0.57 s a round with threaded folds and 0.46 s inline
#: (``python -m benchmarks.simulation --only null_round_local``). Larger folds
#: would stall every other federation and heartbeat on the loop for longer.
INLINE_FOLD_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class Fanout:
    """What came back from one fan-out."""

    #: The clients that answered, with their results (arrays dropped once folded).
    results: list[tuple[ClientInfo, Result]]
    #: ``"name (client id)"`` -> why that client gave no usable result.
    dropped: dict[str, str]
    #: Seconds from sending to the last answer or the deadline.
    duration: float


async def fan_out(
    pool: ClientPool,
    task: Task,
    client_ids: Sequence[str],
    *,
    task_prefix: str,
    fold: Fold | None = None,
    sink: UpdateSink | None = None,
    name: str | None = None,
) -> Fanout:
    """Send ``task`` to every client; collect results until all answered or ``task.timeout``.

    Each client gets its own task id (``task_prefix`` plus a random suffix).
    ``name`` is the federation as logs and events name it (the pool's by default).
    ``fold`` receives each result's parameters as soon as it arrives; an
    update it refuses (:class:`.AggregationError`) counts that client as
    dropped, naming the reason, and the others go on. A result the pool's
    ``sink`` folds itself (:meth:`.ClientPool.fold_into`) is taken as folded.
    """
    started = time.monotonic()
    federation = pool.federation if name is None else name
    infos = {c.client_id: c for r in Role for c in pool.clients(r)}
    # Finished tasks, in the order they finished. One callback per task and one
    # timer for the deadline: ``asyncio.wait`` over the pending tasks added and
    # removed a callback on every one of them at every wake-up, quadratic in
    # the clients: 0.23 s of CPU against 0.08 s now for a fan-out to 1,000
    # clients answering within 0.5 s, and 12% of the event loop's GIL-holding
    # samples in a simulated round of 100 (docs/performance.md, item 17).
    finished: deque[asyncio.Task[Result]] = deque()
    wake = asyncio.Event()

    def arrived_now(fut: asyncio.Task[Result]) -> None:
        finished.append(fut)
        wake.set()

    def send(cid: str) -> asyncio.Task[Result]:
        mine = dataclasses.replace(task, task_id=f"{task_prefix}-{uuid.uuid4().hex[:8]}")
        sent = asyncio.ensure_future(pool.run_task(cid, mine))
        sent.add_done_callback(arrived_now)
        return sent

    # A comprehension: no name outlives it holding a task (and so its result).
    pending = {send(cid): cid for cid in client_ids}
    results: list[tuple[ClientInfo, Result]] = []
    dropped: dict[str, str] = {}
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        wake.set()

    timer = asyncio.get_running_loop().call_later(task.timeout, expire)
    try:
        while pending:
            if not finished and not expired:
                wake.clear()
                await wake.wait()
            if not finished:  # the deadline passed
                for fut, cid in pending.items():
                    fut.cancel()
                    _drop(
                        dropped,
                        pool,
                        federation,
                        task,
                        infos=infos,
                        client_id=cid,
                        reason=f"missed the round deadline of {task.timeout:g} s",
                    )
                break
            # A finished task holds its result, model-sized, and the server holds an
            # upload slot (orchard_server.uploads) or a simulation worker's shared
            # segment until those arrays are freed: no name here may keep a result
            # past its fold, or the next upload or job waits for room that never
            # comes. ``_collect``'s locals die with its call.
            arrived = deque((pending.pop(fut), fut) for fut in finished)
            finished.clear()
            while arrived:
                entry = await _collect(
                    *arrived.popleft(),
                    fold=fold,
                    sink=sink,
                    dropped=dropped,
                    pool=pool,
                    federation=federation,
                    task=task,
                    infos=infos,
                )
                if entry is not None:
                    results.append(entry)
    finally:
        timer.cancel()
    return Fanout(results=results, dropped=dropped, duration=time.monotonic() - started)


async def wait_for_clients(
    pool: ClientPool,
    count: int,
    *,
    timeout: float,
    why: str,
    name: str,
    stop: asyncio.Event | None = None,
) -> int:
    """Wait up to ``timeout`` s for ``count`` trainers; returns how many are connected.

    Fewer than ``count`` means it gave up. Logs every 10 s how many of how
    many it has, why it waits (``why``) and when it will give up, naming the
    federation (``name``). Setting ``stop`` (a client reported that it can
    never take part) ends the wait at once: waiting on would only hide why.
    """
    deadline = time.monotonic() + timeout
    while True:
        have = len(pool.clients())
        remaining = deadline - time.monotonic()
        if have >= count or remaining <= 0 or (stop is not None and stop.is_set()):
            return have
        log.info(
            "federation %r: waiting for clients: %d of %d connected (%s); giving up in %.0f s",
            name,
            have,
            count,
            why,
            remaining,
        )
        joined = asyncio.ensure_future(pool.wait_for_clients(count, min(10.0, remaining)))
        waits: set[asyncio.Future[bool]] = {joined}
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            if not waiting.done():
                waiting.cancel()
        if joined.done() and not joined.cancelled() and joined.result():
            return len(pool.clients())


def _drop(
    dropped: dict[str, str],
    pool: ClientPool,
    federation: str,
    task: Task,
    *,
    infos: dict[str, ClientInfo],
    client_id: str,
    reason: str,
) -> None:
    """Count ``client_id`` as dropped from ``task`` for ``reason``: one log line and
    one ``client_dropped`` event (the web view, metrics and TensorBoard read it)."""
    name = _name(infos, client_id)
    dropped[name] = reason
    log.warning(
        "federation %r round %d: %s dropped from %s: %s",
        federation,
        task.round,
        name,
        task.type.value,
        reason,
        extra={"federation": federation, "round": task.round, "client": client_id},
    )
    pool.events.client_dropped(federation, task.round, name, drop_kind(reason), reason)


async def _collect(
    cid: str,
    finished: asyncio.Task[Result],
    *,
    fold: Fold | None,
    sink: UpdateSink | None,
    dropped: dict[str, str],
    pool: ClientPool,
    federation: str,
    task: Task,
    infos: dict[str, ClientInfo],
) -> tuple[ClientInfo, Result] | None:
    """One client's answer: folded (its arrays dropped) and named, or its drop recorded."""
    try:
        result = finished.result()
    except ClientDroppedError as exc:
        _drop(dropped, pool, federation, task, infos=infos, client_id=cid, reason=exc.reason)
        return None
    if sink is not None and sink.took(result.task_id):
        result = _without_parameters(result)
    elif fold is not None:
        try:
            await fold_model_sized(
                functools.partial(fold, result.parameters, result.num_examples),
                sum(a.nbytes for a in result.parameters),
            )
        except AggregationError as exc:  # the aggregator is left unchanged
            reason = f"update rejected by the aggregator: {exc}"
            _drop(dropped, pool, federation, task, infos=infos, client_id=cid, reason=reason)
            return None
        result = _without_parameters(result)
    info = infos.get(cid) or ClientInfo(
        client_id=cid,
        display_name=cid,
        framework="",
        role=Role.TRAINER,
        partition_id=-1,
        instance_id=cid,
    )
    return info, result


async def fold_model_sized(call: Callable[[], None], nbytes: int) -> None:
    """Run a fold of ``nbytes`` on the event loop, or in a worker thread when it is
    larger than :data:`INLINE_FOLD_BYTES` (which says why)."""
    if nbytes <= INLINE_FOLD_BYTES:
        call()
    else:
        await asyncio.to_thread(call)


def retract(
    fit: Fanout, lost: Mapping[str, str], *, pool: ClientPool, federation: str, task: Task
) -> Fanout:
    """``fit`` with the clients in ``lost`` (client id -> reason) counted as dropped.

    A pool that folds results itself (:class:`.UpdateSink`) may find at the
    fan-out's end that updates it took were lost after all (a simulation
    worker died before folding them).
    """
    if not lost:
        return fit
    infos = {info.client_id: info for info, _ in fit.results}
    dropped = dict(fit.dropped)
    for client_id, reason in lost.items():
        _drop(dropped, pool, federation, task, infos=infos, client_id=client_id, reason=reason)
    kept = [(info, result) for info, result in fit.results if info.client_id not in lost]
    return Fanout(results=kept, dropped=dropped, duration=fit.duration)


def _without_parameters(result: Result) -> Result:
    """Drop a folded result's arrays at once, so memory stays O(model)."""
    return dataclasses.replace(result, names=(), parameters=[])


def _name(infos: dict[str, ClientInfo], client_id: str) -> str:
    info = infos.get(client_id)
    return f"{info.display_name} ({client_id})" if info else client_id
