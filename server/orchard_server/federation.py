"""The round loop of one federation.

It talks to a :class:`~orchard_server.pool.ClientPool`, never to gRPC, so the
same code runs deployments and in-process simulations. Each round: wait
(bounded) for enough clients, sample, send fit tasks, fold results into the
strategy's aggregator as they arrive (memory O(model) for mean-type
strategies), apply the server optimizer, evaluate, then write the history and
a checkpoint atomically (in a background thread, :mod:`.writer`, so the next
round starts at once; the checkpoint at most every ``checkpoint_interval``
seconds). Restarting with the same config resumes from the last checkpoint's
round and redoes any after it to the same result; a run that had finished is
archived and a new one starts (:mod:`.runs`). A client that can never take
part (a fatal leave) fails the federation at once (:meth:`Federation.fail`).

The loop and its retries live here; the other jobs have their own units: the
strategy (:mod:`.strategy`) selects clients, aggregates and steps, task
fan-out is :mod:`.fanout`, evaluation :mod:`.evaluation`, the round records
:mod:`.records`, and checkpoint glue :mod:`.checkpoint`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

from orchard.messages import (
    ClientSummary,
    FederationState,
    FederationSummary,
    Task,
    TaskType,
)
from orchard.spec import ModelSpec
from orchard.typing import Config, NDArrays
from orchard_server.checkpoint import load_federation, save_federation
from orchard_server.config import FederationConfig, strategy_from_config
from orchard_server.evaluation import EvaluateFn, centralized_evaluation, federated_evaluation
from orchard_server.events import Events, FederationView, Phase
from orchard_server.fanout import Fanout, Fold, fan_out, retract, wait_for_clients
from orchard_server.history import HISTORY_FILE, History
from orchard_server.initial import initial_parameters
from orchard_server.pool import ClientPool, UpdateSink
from orchard_server.records import FitRecord, RoundRecord, format_metrics
from orchard_server.runs import archive_run
from orchard_server.strategy import (
    Aggregator,
    State,
    Strategy,
    round_rng,
)
from orchard_server.writer import Snapshot, StateWriter

log = logging.getLogger("orchard.server")

__all__ = ["EvaluateFn", "Federation", "FederationFailedError", "task_seed"]


def task_seed(seed: int, rnd: int) -> int:
    """The ``seed`` every fit task of round ``rnd`` carries, in ``[0, 2**63)``.

    From the federation seed and the round only; each client mixes in its
    partition (:func:`orchard.client.training.fit_seed`), so its shuffling
    depends on (seed, round, partition) and never on process state: a fit
    redone after a server restart shuffles as the aborted one did.
    """
    state = np.random.SeedSequence([seed % 2**63, rnd]).generate_state(1, dtype=np.uint64)
    return int(state[0]) % 2**63


class FederationFailedError(RuntimeError):
    """The federation cannot go on; the message says why."""


class Federation:
    """One named federation: its model, strategy, rounds and state on disk.

    ``strategy`` (selection + aggregate + server optimizer) defaults to the one
    the config describes (:func:`strategy_from_config`); a strategy object
    passed in governs selection, aggregation and the server step instead.

    The loop publishes what it does to :attr:`events` (the pool's stream, so
    pool and loop events arrive in one place); :attr:`view` is the live state
    kept from them (:mod:`.events`).
    """

    def __init__(
        self,
        config: FederationConfig,
        pool: ClientPool,
        state_dir: Path,
        *,
        strategy: Strategy | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.spec: ModelSpec = config.model_spec()
        self.strategy = strategy if strategy is not None else strategy_from_config(config)
        self.directory = state_dir / config.name
        self.evaluate_fn = evaluate_fn
        self.state = FederationState.WAITING
        self.reason = ""
        self.rounds_completed = 0
        self.history = History(federation=config.name)
        self.parameters: NDArrays = []
        self._opt_state: State | None = None
        self.events: Events = pool.events
        self.view = FederationView()
        self.events.subscribe(self.view)
        #: Set by :meth:`fail`: a client reported that it can never take part.
        self._fatal = asyncio.Event()
        self._writer = StateWriter(
            self.directory, title=self.title, checkpoint_interval=config.checkpoint_interval
        )

    # -- set-up -----------------------------------------------------------------

    @property
    def title(self) -> str:
        """The federation with its model and dataset, e.g. ``cifar10: cifar10-cnn on cifar10``."""
        dataset = self.config.dataset_label
        return f"{self.config.name}: {self.spec.model_id}" + (f" on {dataset}" if dataset else "")

    @property
    def checkpoint_path(self) -> Path:
        """Where the checkpoint of this federation lives."""
        return self.directory / "checkpoint.npz"

    @property
    def history_path(self) -> Path:
        """Where the history of this federation's run lives (docs/history.md)."""
        return self.directory / HISTORY_FILE

    def restore_or_init(self) -> None:
        """Resume from the checkpoint if there is one, else build initial parameters."""
        resumed = load_federation(self.checkpoint_path, self.spec, self.strategy.optimizer)
        if resumed is not None and resumed.round >= self.config.num_rounds:
            archived = archive_run(self.directory, self.checkpoint_path)
            log.info(
                "federation %r: the previous run finished all %d rounds; its results are in "
                "%s; starting a new run",
                self.config.name,
                resumed.round,
                archived,
            )
            resumed = None
        elif resumed is None and self.history_path.exists():
            archived = archive_run(self.directory, self.history_path)
            log.warning(
                "federation %r: a history but no checkpoint to resume from (the run failed "
                "or was stopped before its first checkpoint, or the checkpoint was removed); "
                "those files are in %s; starting a new run",
                self.config.name,
                archived,
            )
        if resumed is None:
            self.parameters, source = initial_parameters(
                self.spec, self.config.init_file, self.config.seed
            )
            self._opt_state = self.strategy.init(self.parameters)
            log.info(
                "federation %r: new, model %s (%d parameters, %.1f MB), initial parameters "
                "from %s, strategy %s, %d rounds",
                self.config.name,
                self.spec.model_id,
                self.spec.num_parameters,
                self.spec.nbytes / 1e6,
                source,
                self.strategy.name,
                self.config.num_rounds,
            )
            return
        self.parameters = resumed.parameters
        self.rounds_completed = resumed.round
        self._opt_state = resumed.opt_state
        self.history = resumed.history
        self.view.load_history(self.history.rounds)
        # The pool's admission hands out partitions; the checkpoint keeps them.
        self.pool.partitions.restore(resumed.meta.get("partitions", {}))
        log.info(
            "federation %r: resumed from %s after round %d of %d",
            self.config.name,
            self.checkpoint_path,
            self.rounds_completed,
            self.config.num_rounds,
        )

    def _snapshot(self) -> Snapshot:
        """The state after the round just completed, as immutable values for the writer.

        The parameter list and optimizer state are never changed in place (each
        server step builds new ones), so the writer may read them while the
        next round runs; the history's record list is copied (its encoded rounds are shared).
        """
        assert self._opt_state is not None, "saved before restore_or_init"
        history = self.history.copy()
        meta = {
            "partitions": self.pool.partitions.to_json(),
            "model_id": self.spec.model_id,
            "strategy": self.strategy.name,
        }
        path, rnd, parameters, opt_state = (
            self.checkpoint_path,
            self.rounds_completed,
            self.parameters,
            self._opt_state,
        )

        def save_checkpoint() -> None:
            save_federation(
                path,
                round=rnd,
                parameters=parameters,
                opt_state=opt_state,
                history=history,
                meta=meta,
            )

        return Snapshot(round=rnd, history=history, save_checkpoint=save_checkpoint)

    def flush(self) -> None:
        """Block until the last completed round's checkpoint and history are on disk."""
        self._writer.flush()

    def fail(self, reason: str) -> None:
        """End the federation at once: a client reported a problem no wait can fix.

        Called when a client leaves with ``fatal`` set (its dataset cannot be
        loaded, say): waiting ``wait_timeout`` for clients that will never
        come would only hide the reason. The state changes here, so anyone
        asking (a PullTask, the process exit code) sees it before the round
        loop wakes up and stops.
        """
        if self.state in (FederationState.FINISHED, FederationState.FAILED):
            return
        self.state, self.reason = FederationState.FAILED, reason
        self._fatal.set()
        # Published here, once: the view, metrics and TensorBoard see the end now,
        # and the round loop, when it stops on it, does not announce it again.
        self.events.federation_ended(self.config.name, self.state, self.reason)

    def _check_not_failed(self) -> None:
        if self._fatal.is_set():
            raise FederationFailedError(self.reason)

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> FederationState:
        """Run the remaining rounds; returns the final state (never raises on client trouble)."""
        if not self.parameters:
            self.restore_or_init()
        if self.state in (FederationState.FINISHED, FederationState.FAILED):
            return self.state
        try:
            try:
                while self.rounds_completed < self.config.num_rounds:
                    await self._round(self.rounds_completed + 1)
                self._check_not_failed()  # failed during the last round: not finished
            finally:
                # Also when stopped (cancelled): the last completed round reaches the disk.
                # In a worker thread: the final plot can take seconds, and the event loop
                # must keep answering heartbeats meanwhile.
                await asyncio.to_thread(self.flush)
        except FederationFailedError as exc:
            self.state, self.reason = FederationState.FAILED, str(exc)
            log.error("federation %r failed: %s", self.config.name, exc, extra=self._extra())
            if not self._fatal.is_set():  # fail() published the end already
                self.events.federation_ended(self.config.name, self.state, self.reason)
            return self.state
        except Exception as exc:  # a bug must end this federation, not the whole server
            self.state = FederationState.FAILED
            self.reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("federation %r failed with an internal error", self.config.name)
            self.events.federation_ended(self.config.name, self.state, self.reason)
            return self.state
        self.state = FederationState.FINISHED
        self.reason = f"completed {self.config.num_rounds} rounds"
        log.info(
            "federation %r finished: %s; history in %s",
            self.config.name,
            self.reason,
            self.history_path,
            extra=self._extra(),
        )
        self.events.federation_ended(self.config.name, self.state, self.reason)
        return self.state

    def _extra(self, rnd: int | None = None) -> dict[str, object]:
        """The structured-log fields of a line about this federation (and round)."""
        extra: dict[str, object] = {"federation": self.config.name}
        if rnd is not None:
            extra["round"] = rnd
        return extra

    def summary(self) -> FederationSummary:
        """The federation at a glance (status call, web view), read now."""
        return FederationSummary(
            name=self.config.name,
            model_id=self.spec.model_id,
            strategy=self.strategy.name,
            state=self.state,
            reason=self.reason,
            rounds_completed=self.rounds_completed,
            num_rounds=self.config.num_rounds,
            round=self.view.round,
            phase=self.view.phase.value if self.view.phase else "",
            clients=tuple(
                ClientSummary(
                    display_name=c.display_name,
                    framework=c.framework,
                    role=c.role,
                    partition_id=c.partition_id,
                )
                for c in self.pool.members()
            ),
        )

    async def _round(self, rnd: int) -> None:
        """One round: fit (tried again while too few results come back), step, evaluate."""
        select = self.strategy.select
        name, events = self.config.name, self.events
        started = time.monotonic()
        # Log lines name their federation: one server runs several side by side.
        label = f"federation {name!r} round {rnd}/{self.config.num_rounds}"
        fit: Fanout | None = None
        attempts = 0
        dropped: dict[str, str] = {}
        aggregate: NDArrays | None = None
        events.round_started(name, rnd, self.config.num_rounds)
        while aggregate is None:
            attempts += 1
            if attempts > self.config.round_retries + 1:
                raise FederationFailedError(
                    f"round {rnd} got too few results {attempts - 1} times "
                    f"(min_fit_clients={select.min_fit_clients}); dropped: "
                    f"{', '.join(dropped) or 'none'} (reasons logged above)"
                )
            self._check_not_failed()
            need, wait = select.min_available_clients, self.config.wait_timeout
            with events.phase(name, rnd, Phase.WAITING):
                have = await wait_for_clients(
                    self.pool,
                    need,
                    timeout=wait,
                    why="min_available_clients",
                    name=name,
                    stop=self._fatal,
                )
            self._check_not_failed()
            if have < need:
                raise FederationFailedError(
                    f"gave up after waiting {wait:.0f} s for clients: "
                    f"{have} of {need} connected (min_available_clients)"
                )
            self.state = FederationState.RUNNING
            with events.phase(name, rnd, Phase.SAMPLING):
                # Clients in the pool's stable order (partition, instance id) and a
                # generator of (seed, round, attempt) alone: a resumed server re-draws
                # the same clients (sampling docs in strategy.selection).
                rng = round_rng(self.config.seed, rnd, attempt=attempts, purpose="fit")
                selected = select.select_fit([c.client_id for c in self.pool.clients()], rng)
            config: Config = {
                **self.config.fit_config,
                **self.strategy.fit_config,
                "round": rnd,
                "seed": task_seed(self.config.seed, rnd),
            }
            aggregator = self.strategy.new_aggregator(self.parameters)
            fold = functools.partial(_weighted_add, aggregator, self.pool.results.weight)
            with events.phase(name, rnd, Phase.TRAINING):
                fit = await self._send(
                    TaskType.FIT, rnd, selected, config, fold, sink=self.pool.fold_into(aggregator)
                )
            dropped.update(fit.dropped)
            if len(fit.results) >= select.min_fit_clients:
                # Model-sized work: off the event loop, like the step (and large folds).
                aggregate = await asyncio.to_thread(aggregator.result)
                del aggregator  # its float64 sums (two models) go before the server step
            else:
                log.warning(
                    "%s: only %d of %d needed results (dropped: %s); %s",
                    label,
                    len(fit.results),
                    select.min_fit_clients,
                    ", ".join(fit.dropped) or "none",  # each one's reason was logged once
                    "retrying" if attempts <= self.config.round_retries else "giving up",
                    extra=self._extra(rnd),
                )
        assert fit is not None
        # Model-sized NumPy work runs in a worker thread, so the event loop
        # keeps answering heartbeats and polls meanwhile.
        assert self._opt_state is not None, "a round ran before restore_or_init"
        with events.phase(name, rnd, Phase.AGGREGATING):
            self.parameters, self._opt_state = await asyncio.to_thread(
                self.strategy.step, self.parameters, aggregate, self._opt_state
            )
        fit_record = FitRecord.of(
            fit.results,
            dropped=dropped,
            selected=len(fit.results) + len(fit.dropped),  # in the last attempt
            attempts=attempts,
            duration=fit.duration,
            weight=self.pool.results.weight,
        )
        log.info(
            "%s: %d of %d clients answered in %.1f s%s",
            label,
            len(fit.results),
            fit_record.selected,
            fit.duration,
            format_metrics(fit_record.metrics, "train_"),
            extra=self._extra(rnd),
        )
        evaluate = centralized = None
        if self.config.evaluate_every and rnd % self.config.evaluate_every == 0:
            pool, config = self.pool, self.config.evaluate_config

            def send(kind: TaskType, ids: Sequence[str], cfg: Config) -> Awaitable[Fanout]:
                return self._send(kind, rnd, ids, cfg)

            # The evaluator has its own, shorter deadline: one stalled evaluator
            # must not cost a whole round_timeout every round.
            evaluator_timeout = min(self.config.evaluator_timeout, self.config.round_timeout)

            def send_central(kind: TaskType, ids: Sequence[str], cfg: Config) -> Awaitable[Fanout]:
                return self._send(kind, rnd, ids, cfg, timeout=evaluator_timeout)

            with events.phase(name, rnd, Phase.EVALUATING):
                evaluate = await federated_evaluation(
                    rnd,
                    pool=pool,
                    select=select,
                    rng=round_rng(self.config.seed, rnd, purpose="evaluate"),
                    config=config,
                    send=send,
                    label=label,
                )
                centralized = await centralized_evaluation(
                    rnd,
                    self.parameters,
                    evaluate_fn=self.evaluate_fn,
                    pool=pool,
                    config=config,
                    send=send_central,
                    label=label,
                )
        self.rounds_completed = rnd
        record = RoundRecord(
            round=rnd,
            fit=fit_record,
            evaluate=evaluate,
            centralized=centralized,
            duration_s=round(time.monotonic() - started, 3),
            finished_at=round(time.time(), 6),
        )
        self.history.add_round(record)
        # Written by a background thread (the phase is the hand-over the round loop
        # waits for): the next round starts at once.
        with events.phase(name, rnd, Phase.CHECKPOINTING):
            self._writer.submit(self._snapshot())
        events.round_completed(name, record)

    async def _send(
        self,
        kind: TaskType,
        rnd: int,
        client_ids: Sequence[str],
        config: Config,
        fold: Fold | None = None,
        *,
        sink: UpdateSink | None = None,
        timeout: float | None = None,
    ) -> Fanout:
        """Fan one task with the current global parameters out to ``client_ids``
        (with ``timeout`` seconds to answer, round_timeout by default).

        ``sink``: the pool folds results itself (:meth:`.ClientPool.fold_into`);
        it is closed here, and updates it lost count as dropped.
        """
        task = Task(
            task_id="",
            type=kind,
            round=rnd,
            config=config,
            timeout=self.config.round_timeout if timeout is None else timeout,
            names=tuple(self.spec.names),
            parameters=self.parameters,
        )
        prefix = f"{self.config.name}-r{rnd}-{kind.value}"
        name = self.config.name
        try:
            out = await fan_out(
                self.pool, task, client_ids, task_prefix=prefix, fold=fold, sink=sink, name=name
            )
        finally:
            lost = await sink.close() if sink is not None else {}
        return retract(out, lost, pool=self.pool, federation=name, task=task)


def _weighted_add(
    aggregator: Aggregator, weight: Callable[[int], int], arrays: NDArrays, n: int
) -> None:
    """Fold an update into the aggregate with the federation's weight of its example count.

    The values are not scanned again: the pool checked them where the result
    entered (:meth:`.ClientPool.run_task` returns only results its
    :class:`~orchard_server.results.ResultPolicy` accepted).
    """
    aggregator.add(arrays, weight(n), assume_finite=True)
