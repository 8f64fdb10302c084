"""The round loop of one federation.

It talks to a :class:`~orchard_server.pool.ClientPool`, never to gRPC, so the
same code runs deployments and in-process simulations. Each round: wait
(bounded) for enough clients, sample, send fit tasks, fold results into the
strategy's aggregator as they arrive (memory O(model) for mean-type
strategies), apply the server optimizer, evaluate, then write the history and
a checkpoint atomically. Restarting with the same config resumes from the last
completed round; a run that had finished is archived and a new one starts
(:mod:`orchard_server.runs`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchard.messages import FederationState, Result, Role, Task, TaskType
from orchard.spec import ModelSpec
from orchard.typing import Config, Metrics, NDArrays
from orchard_server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from orchard_server.config import FederationConfig
from orchard_server.history import History
from orchard_server.initial import parameters_from_file, seeded_parameters
from orchard_server.pool import ClientDroppedError, ClientInfo, ClientPool
from orchard_server.runs import archive_finished_run
from orchard_server.strategy import (
    AggregationError,
    Strategy,
    make_strategy,
    sample_clients,
    state_from_arrays,
    state_to_arrays,
    weighted_average_metrics,
)

log = logging.getLogger("orchard.server")

#: An in-process centralized evaluation: (round, parameters) -> (loss, metrics).
EvaluateFn = Callable[[int, NDArrays], tuple[float, Metrics]]


class FederationFailedError(RuntimeError):
    """The federation cannot go on; the message says why."""


@dataclass(slots=True)
class _Phase:
    """Outcome of sending one kind of task to a set of clients."""

    results: list[tuple[ClientInfo, Result]]
    dropped: dict[str, str]
    duration: float


class Federation:
    """One named federation: its model, strategy, rounds and state on disk."""

    def __init__(
        self,
        config: FederationConfig,
        pool: ClientPool,
        state_dir: Path,
        *,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.spec: ModelSpec = config.model_spec()
        self.strategy: Strategy = make_strategy(config.strategy, config.strategy_options)
        self.directory = state_dir / config.name
        self.evaluate_fn = evaluate_fn
        self.state = FederationState.WAITING
        self.reason = ""
        self.rounds_completed = 0
        self.history = History(federation=config.name)
        self.parameters: NDArrays = []
        self._rng = np.random.default_rng(config.seed)
        self._opt_state: Any = None
        #: instance_id -> partition, kept across restarts.
        self.partitions: dict[str, int] = {}
        #: Set by :meth:`fail`: a client reported that it can never take part.
        self._fatal = asyncio.Event()

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

    def restore_or_init(self) -> None:
        """Resume from the checkpoint if there is one, else build initial parameters."""
        checkpoint = load_checkpoint(self.checkpoint_path, self.spec)
        if checkpoint is not None and checkpoint.round >= self.config.num_rounds:
            archived = archive_finished_run(self.directory, self.checkpoint_path)
            log.info(
                "federation %r: the previous run finished all %d rounds; its results are in "
                "%s; starting a new run",
                self.config.name,
                checkpoint.round,
                archived,
            )
            checkpoint = None
        if checkpoint is None:
            if self.config.init_file is not None:
                self.parameters = parameters_from_file(self.spec, self.config.init_file)
                source = f"file {self.config.init_file}"
            else:
                self.parameters = seeded_parameters(self.spec, self.config.seed)
                source = f"seed {self.config.seed}"
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
        self.parameters = checkpoint.parameters
        self.rounds_completed = checkpoint.round
        self._opt_state = state_from_arrays(
            self.strategy.optimizer, self.parameters, checkpoint.optimizer_state
        )
        self._rng.bit_generator.state = checkpoint.meta["rng"]
        self.history = History.from_json(checkpoint.meta["history"])
        self.partitions = {k: int(v) for k, v in checkpoint.meta.get("partitions", {}).items()}
        log.info(
            "federation %r: resumed from %s after round %d of %d",
            self.config.name,
            self.checkpoint_path,
            self.rounds_completed,
            self.config.num_rounds,
        )

    def _save(self) -> None:
        meta = {
            "rng": self._rng.bit_generator.state,
            "history": self.history.to_json(),
            "partitions": self.partitions,
            "model_id": self.spec.model_id,
            "strategy": self.strategy.name,
        }
        save_checkpoint(
            self.checkpoint_path,
            Checkpoint(
                round=self.rounds_completed,
                parameters=self.parameters,
                optimizer_state=state_to_arrays(self._opt_state),
                meta=meta,
            ),
        )
        self.history.save(self.directory, title=self.title)

    def assign_partition(self, instance_id: str, live: Sequence[ClientInfo]) -> int:
        """The partition of a joining client: its old one, else the least used one."""
        if instance_id in self.partitions:
            return self.partitions[instance_id]
        counts = dict.fromkeys(range(self.config.partitions), 0)
        for info in live:
            if info.role is Role.TRAINER and info.partition_id in counts:
                counts[info.partition_id] += 1
        partition = min(counts, key=lambda p: (counts[p], p))
        if counts[partition] > 0:
            log.warning(
                "federation %r: more clients than its %d partitions; partition %d is now shared",
                self.config.name,
                self.config.partitions,
                partition,
            )
        self.partitions[instance_id] = partition
        return partition

    def record_partition(self, instance_id: str, partition_id: int, num_partitions: int) -> int:
        """Record a partition the client's user fixed, so history and later assignments know."""
        if num_partitions != self.config.partitions:
            log.warning(
                "federation %r: %s uses partition %d of %d, but the federation splits "
                "data into %d partitions",
                self.config.name,
                instance_id[:12],
                partition_id,
                num_partitions,
                self.config.partitions,
            )
        self.partitions[instance_id] = partition_id
        return partition_id

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

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> FederationState:
        """Run the remaining rounds; returns the final state (never raises on client trouble)."""
        if not self.parameters:
            self.restore_or_init()
        if self.state in (FederationState.FINISHED, FederationState.FAILED):
            return self.state
        try:
            while self.rounds_completed < self.config.num_rounds:
                await self._round(self.rounds_completed + 1)
        except FederationFailedError as exc:
            self.state, self.reason = FederationState.FAILED, str(exc)
            log.error("federation %r failed: %s", self.config.name, exc)
            return self.state
        except Exception as exc:  # a bug must end this federation, not the whole server
            self.state = FederationState.FAILED
            self.reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("federation %r failed with an internal error", self.config.name)
            return self.state
        self.state = FederationState.FINISHED
        self.reason = f"completed {self.config.num_rounds} rounds"
        log.info(
            "federation %r finished: %s; history in %s",
            self.config.name,
            self.reason,
            self.directory / "history.json",
        )
        return self.state

    async def _wait_for_clients(self, count: int, why: str) -> None:
        """Bounded wait for ``count`` trainers, explaining every 10 s why it waits."""
        deadline = time.monotonic() + self.config.wait_timeout
        while True:
            if self._fatal.is_set():
                raise FederationFailedError(self.reason)
            have = len(self.pool.clients())
            if have >= count:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FederationFailedError(
                    f"gave up after waiting {self.config.wait_timeout:.0f} s for clients: "
                    f"{have} of {count} connected ({why})"
                )
            log.info(
                "federation %r: waiting for clients: %d of %d connected (%s); giving up in %.0f s",
                self.config.name,
                have,
                count,
                why,
                remaining,
            )
            joined = asyncio.ensure_future(self.pool.wait_for_clients(count, min(10.0, remaining)))
            fatal = asyncio.ensure_future(self._fatal.wait())
            await asyncio.wait({joined, fatal}, return_when=asyncio.FIRST_COMPLETED)
            fatal.cancel()
            if not joined.done():
                joined.cancel()
            elif joined.result():
                return

    async def _round(self, rnd: int) -> None:
        cfg = self.config
        started = time.monotonic()
        fit: _Phase | None = None
        attempts = 0
        dropped: dict[str, str] = {}
        aggregate: NDArrays | None = None
        while aggregate is None:
            attempts += 1
            if attempts > cfg.round_retries + 1:
                raise FederationFailedError(
                    f"round {rnd} got too few results {attempts - 1} times "
                    f"(min_fit_clients={cfg.min_fit_clients}); dropped: "
                    f"{', '.join(dropped) or 'none'} (reasons logged above)"
                )
            await self._wait_for_clients(cfg.min_available_clients, "min_available_clients")
            self.state = FederationState.RUNNING
            selected = sample_clients(
                [c.client_id for c in self.pool.clients()],
                fraction=cfg.fraction_fit,
                min_clients=cfg.min_fit_clients,
                rng=self._rng,
            )
            config: Config = {
                **cfg.fit_config,
                **self.strategy.fit_config,
                "round": rnd,
                "seed": cfg.seed * 100_003 + rnd,
            }
            aggregator = self.strategy.new_aggregator()
            fit = await self._phase(
                TaskType.FIT,
                rnd,
                selected,
                config,
                aggregator.add,
            )
            dropped.update(fit.dropped)
            if len(fit.results) >= cfg.min_fit_clients:
                aggregate = aggregator.result()
            else:
                log.warning(
                    "round %d/%d: only %d of %d needed results (dropped: %s); %s",
                    rnd,
                    cfg.num_rounds,
                    len(fit.results),
                    cfg.min_fit_clients,
                    ", ".join(fit.dropped) or "none",  # each one's reason was logged once
                    "retrying" if attempts <= cfg.round_retries else "giving up",
                )
        assert fit is not None
        # Model-sized NumPy work runs in a worker thread, so the event loop
        # keeps answering heartbeats and polls meanwhile.
        self.parameters, self._opt_state = await asyncio.to_thread(
            self.strategy.step, self.parameters, aggregate, self._opt_state
        )
        train_metrics = weighted_average_metrics(
            [(r.num_examples, {**r.metrics, "train_loss": r.loss}) for _, r in fit.results]
        )
        record: dict[str, Any] = {
            "round": rnd,
            "fit": {
                "selected": len(fit.results) + len(fit.dropped),  # in the last attempt
                "participants": [_describe(i, r) for i, r in fit.results],
                "dropped": dropped,
                "num_examples": sum(r.num_examples for _, r in fit.results),
                "metrics": train_metrics,
                "attempts": attempts,
                "duration_s": round(fit.duration, 3),
            },
            "evaluate": None,
            "centralized": None,
        }
        log.info(
            "round %d/%d: %d of %d clients answered in %.1f s%s",
            rnd,
            cfg.num_rounds,
            len(fit.results),
            record["fit"]["selected"],
            fit.duration,
            _fmt(train_metrics, "train_"),
        )
        if cfg.evaluate_every and rnd % cfg.evaluate_every == 0:
            record["evaluate"] = await self._evaluate(rnd)
            record["centralized"] = await self._centralized(rnd)
        record["duration_s"] = round(time.monotonic() - started, 3)
        self.rounds_completed = rnd
        self.history.add_round(record)
        await asyncio.to_thread(self._save)

    async def _evaluate(self, rnd: int) -> dict[str, Any] | None:
        cfg = self.config
        trainers = [c.client_id for c in self.pool.clients()]
        if len(trainers) < cfg.min_evaluate_clients:
            log.warning(
                "round %d: federated evaluation skipped: %d clients connected, "
                "min_evaluate_clients=%d",
                rnd,
                len(trainers),
                cfg.min_evaluate_clients,
            )
            return None
        selected = sample_clients(
            trainers,
            fraction=cfg.fraction_evaluate,
            min_clients=cfg.min_evaluate_clients,
            rng=self._rng,
        )
        phase = await self._phase(
            TaskType.EVALUATE, rnd, selected, {**cfg.evaluate_config, "round": rnd}, None
        )
        if not phase.results:
            return {
                "loss": None,
                "metrics": {},
                "participants": [],
                "dropped": phase.dropped,
                "duration_s": round(phase.duration, 3),
            }
        total = sum(r.num_examples for _, r in phase.results)
        loss = sum(r.loss * r.num_examples for _, r in phase.results) / max(total, 1)
        metrics = weighted_average_metrics([(r.num_examples, r.metrics) for _, r in phase.results])
        log.info(
            "round %d/%d: federated evaluation on %d clients (%d examples): loss %.4f%s",
            rnd,
            cfg.num_rounds,
            len(phase.results),
            total,
            loss,
            _fmt(metrics),
        )
        return {
            "loss": loss,
            "metrics": metrics,
            "num_examples": total,
            "participants": [_describe(i, r) for i, r in phase.results],
            "dropped": phase.dropped,
            "duration_s": round(phase.duration, 3),
        }

    async def _centralized(self, rnd: int) -> dict[str, Any] | None:
        """Evaluate the new global model centrally: in process, or on evaluator clients."""
        if self.evaluate_fn is not None:
            loss, metrics = await asyncio.to_thread(self.evaluate_fn, rnd, self.parameters)
            log.info(
                "round %d/%d: centralized evaluation: loss %.4f%s",
                rnd,
                self.config.num_rounds,
                loss,
                _fmt(metrics),
            )
            return {"loss": float(loss), "metrics": dict(metrics), "source": "server"}
        evaluators = self.pool.clients(Role.EVALUATOR)
        if not evaluators:
            return None
        phase = await self._phase(
            TaskType.EVALUATE,
            rnd,
            [evaluators[0].client_id],
            {**self.config.evaluate_config, "round": rnd, "centralized": True, "split": "test"},
            None,
        )
        if not phase.results:
            log.warning("round %d: centralized evaluation failed: %s", rnd, phase.dropped)
            return {"loss": None, "metrics": {}, "dropped": phase.dropped}
        info, result = phase.results[0]
        log.info(
            "round %d/%d: centralized evaluation on %s (%d examples): loss %.4f%s",
            rnd,
            self.config.num_rounds,
            info.display_name,
            result.num_examples,
            result.loss,
            _fmt(result.metrics),
        )
        return {
            "loss": result.loss,
            "metrics": dict(result.metrics),
            "num_examples": result.num_examples,
            "source": info.display_name,
        }

    async def _phase(
        self,
        kind: TaskType,
        rnd: int,
        client_ids: Sequence[str],
        config: Config,
        fold: Callable[[NDArrays, int], None] | None,
    ) -> _Phase:
        """Send one task per client; collect results until all answered or the deadline.

        ``fold`` receives each fit result's parameters as soon as it arrives
        (the strategy's aggregator), after which the arrays are dropped.
        """
        started = time.monotonic()
        infos = {c.client_id: c for r in Role for c in self.pool.clients(r)}
        task = Task(
            task_id="",
            type=kind,
            round=rnd,
            config=config,
            timeout=self.config.round_timeout,
            names=tuple(self.spec.names),
            parameters=self.parameters,
        )
        pending: dict[asyncio.Task[Result], str] = {}
        for cid in client_ids:
            task_id = f"{self.config.name}-r{rnd}-{kind.value}-{uuid.uuid4().hex[:8]}"
            mine = dataclasses.replace(task, task_id=task_id)
            pending[asyncio.ensure_future(self.pool.run_task(cid, mine))] = cid
        results: list[tuple[ClientInfo, Result]] = []
        dropped: dict[str, str] = {}
        deadline = started + self.config.round_timeout
        while pending:
            remaining = deadline - time.monotonic()
            done, _ = await asyncio.wait(
                pending, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                for fut, cid in pending.items():
                    fut.cancel()
                    dropped[_name(infos, cid)] = (
                        f"missed the round deadline of {self.config.round_timeout:g} s"
                    )
                    log.warning(
                        "round %d: %s dropped from %s: %s",
                        rnd,
                        _name(infos, cid),
                        kind.value,
                        dropped[_name(infos, cid)],
                    )
                break
            for fut in done:
                cid = pending.pop(fut)
                try:
                    result = fut.result()
                except ClientDroppedError as exc:
                    dropped[_name(infos, cid)] = exc.reason
                    log.warning(
                        "round %d: %s dropped from %s: %s",
                        rnd,
                        _name(infos, cid),
                        kind.value,
                        exc.reason,
                    )
                    continue
                if fold is not None:
                    try:
                        await asyncio.to_thread(fold, result.parameters, result.num_examples)
                    except AggregationError as exc:  # the aggregator is left unchanged
                        dropped[_name(infos, cid)] = f"update rejected by the aggregator: {exc}"
                        log.warning("round %d: %s dropped from %s: %s", rnd, _name(infos, cid),
                                    kind.value, dropped[_name(infos, cid)])  # fmt: skip
                        continue
                    result = _without_parameters(result)
                info = infos.get(cid) or ClientInfo(
                    client_id=cid,
                    display_name=cid,
                    framework="",
                    role=Role.TRAINER,
                    partition_id=-1,
                    instance_id=cid,
                )
                results.append((info, result))
        return _Phase(results=results, dropped=dropped, duration=time.monotonic() - started)


def _without_parameters(result: Result) -> Result:
    """Drop a folded result's arrays at once, so memory stays O(model)."""
    return Result(
        client_id=result.client_id,
        task_id=result.task_id,
        num_examples=result.num_examples,
        loss=result.loss,
        metrics=result.metrics,
    )


def _name(infos: dict[str, ClientInfo], client_id: str) -> str:
    info = infos.get(client_id)
    return f"{info.display_name} ({client_id})" if info else client_id


def _describe(info: ClientInfo, result: Result) -> dict[str, Any]:
    """One participant's line in the history, with its own loss and metrics."""
    return {
        "client": info.display_name,
        "client_id": info.client_id,
        "framework": info.framework,
        "partition": info.partition_id,
        "num_examples": result.num_examples,
        "loss": result.loss,
        "metrics": {k: v for k, v in result.metrics.items() if not isinstance(v, bytes)},
    }


def _fmt(metrics: Metrics, prefix: str = "") -> str:
    keys = [k for k in metrics if k.startswith(prefix)] if prefix else list(metrics)
    return "".join(f", {k} {v:.4f}" for k in keys if isinstance(v := metrics[k], float))
