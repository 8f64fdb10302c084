"""Where a simulation's tasks run: the backend interface and the ``local`` backend.

A backend owns one pool of workers per client group and runs a
:class:`~orchard.simulation.job.Job` on an idle worker of the job's group.
Workers live for the whole simulation and create a fresh virtual client for
every job, so memory is bounded by the number of workers, not by the number of
virtual clients.

The ``local`` backend starts each worker as ``python -m
orchard.simulation.worker`` with the group's interpreter (the MXNet
environment's for MXNet clients) and speaks :mod:`orchard.simulation.wire`
over its pipes. Model arrays travel through shared memory
(:mod:`orchard.simulation.shm`): a round's parameters are written once into a
segment every worker maps. With FedAvg's mean, each worker keeps its
clients' fit results and folds the ones the driver accepts into partial sums
of its own (:mod:`.folds`), and the driver adds one partial per worker at
the end of the fan-out; otherwise each result comes back in a segment of its
worker's, handed to the server as views without a copy, and a worker whose
result segments the server still holds waits before its next job. Either
way memory stays bounded by the workers. A worker that cannot open the driver's segments
(checked when it starts) gets raw NumPy buffers on its pipe instead. A job
cancelled while its worker runs it (its deadline passed) or a worker that dies
takes that worker down; a fresh one replaces it, as a deployed client that
missed a deadline is dropped and another takes its place.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from orchard.messages import TaskType
from orchard.simulation import shm
from orchard.simulation.job import Job, JobResult
from orchard.simulation.wire import (
    ProtocolError,
    config_to_json,
    decode_result,
    encode,
    header_length,
    job_frame,
    parse_header,
    spec_to_json,
    to_array,
)
from orchard.spec import ModelSpec
from orchard_server.simulation.config import ClientGroup
from orchard_server.simulation.folds import FoldLog, FoldRequest, WorkerFolds

__all__ = ["Backend", "LocalBackend", "WorkerLostError", "WorkerStartError"]

log = logging.getLogger("orchard.simulation")

#: StreamReader buffer of a worker's pipe: large reads of parameters in few steps.
_PIPE_LIMIT = 1 << 24


class WorkerLostError(RuntimeError):
    """The worker running a job died; the job's client is dropped."""


class WorkerStartError(RuntimeError):
    """A worker could not start (interpreter, import or ``client_fn`` problem)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSetup:
    """What every worker of a group is started with."""

    group: ClientGroup
    federation: str
    spec: ModelSpec
    #: Threads each worker's frameworks may use (OMP_NUM_THREADS).
    threads: int = 1
    #: How much nicer than the driver each worker runs (``SimulationConfig.worker_nice``).
    nice: int = 0
    #: Model arrays through shared memory where the worker can open it (else the pipe).
    shared_memory: bool = True

    @property
    def result_bytes(self) -> int:
        """The size of a result segment: a fit result's arrays, as the spec says."""
        return shm.capacity([(t.shape, t.dtype) for t in self.spec.tensors])

    def init_header(self) -> dict[str, Any]:
        return {
            "op": "init",
            "client_fn": self.group.client_fn,
            "federation": self.federation,
            "spec": spec_to_json(self.spec),
            "node_config": config_to_json(self.group.node_config),
            "nice": self.nice,
        }


class Backend(abc.ABC):
    """Runs jobs on workers; one pool of workers per client group."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start every worker (a broken setup fails here, before the first round)."""

    @abc.abstractmethod
    async def run(self, group: int, job: Job, fold: FoldRequest | None = None) -> JobResult:
        """Run ``job`` on an idle worker of ``group``; raises :class:`WorkerLostError`.

        Cancelling the call (a missed deadline) stops the worker it ran on.
        ``fold``: the worker may keep a fit result and fold it itself
        (:mod:`.folds`); backends that cannot ignore it.
        """

    def open_folds(self) -> WorkerFolds | None:
        """A fan-out whose fit results the workers fold themselves, or None (they cannot)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every worker."""

    @property
    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Process ids of the workers (memory accounting in benchmarks)."""


#: Seconds a worker waits for the server to release one of its result segments
#: before it gets another (see _Process._result_slot).
_SLOT_PATIENCE = 2.0

#: Frames up to this size are joined into one write (headers; arrays are written as they are).
_JOIN_BYTES = 1 << 16

#: Seconds a worker has to answer a ``settle`` frame (it folds at most one update).
SETTLE_TIMEOUT = 30.0

#: Linux's fcntl to resize a pipe (F_SETPIPE_SZ), and the size asked for.
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1 << 20


def _widen_pipes(proc: asyncio.subprocess.Process) -> None:
    """Ask for 1 MiB pipes (Linux; default 64 KiB): 16x fewer reads and writes per model."""
    for stream in (proc.stdin, proc.stdout):
        transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


class _Process:
    """One local worker process, its pipes and its result segments."""

    def __init__(self, proc: asyncio.subprocess.Process, broadcast: shm.Broadcast) -> None:
        self.proc = proc
        self.broadcast = broadcast
        loop = asyncio.get_running_loop()
        self._freed = asyncio.Event()
        self._waiting = False

        def freed() -> None:  # any thread: the server drops a result's arrays where it folds
            if self._waiting:  # else no wake-up of the event loop is needed
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(self._freed.set)

        self.slots = shm.ResultSlots(on_free=freed)
        #: Whether the current job reached the worker (a cancel before that spares it).
        self.busy = False
        #: Whether model arrays go through shared memory (agreed when it started).
        self.shared = False
        self.result_bytes = 0
        #: The fan-out this worker folds results for, and its partial-sums segment.
        self.fold_log: FoldLog | None = None
        self.partial: shm.Segment | None = None
        #: Its job was cancelled while it ran: it is being stopped.
        self.doomed = False
        #: One frame exchange at a time: a job, or settling a fan-out's folds.
        self._io = asyncio.Lock()

    @classmethod
    async def start(cls, setup: WorkerSetup, broadcast: shm.Broadcast) -> _Process:
        python = setup.group.python or sys.executable
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, str(setup.threads))
        try:
            proc = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "orchard.simulation.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=_PIPE_LIMIT,
            )
        except OSError as exc:
            raise WorkerStartError(f"cannot start a worker with {python}: {exc}") from None
        _widen_pipes(proc)
        worker = cls(proc, broadcast)
        init = setup.init_header()
        probe = None
        if setup.shared_memory:
            why = shm.available()
            if why:
                log.warning("model arrays go through the workers' pipes: %s", why)
            else:
                probe = shm.probe()
                if probe is not None:
                    init["shm"] = probe[1]
        try:
            await worker._send(encode(init))
            header, _ = await worker._read()
        except (ProtocolError, ConnectionError) as exc:
            code = await worker.stop()
            raise WorkerStartError(
                f"a worker ({python}) exited with code {code} while starting: {exc}; is "
                "orchard (core) importable by that interpreter (PYTHONPATH)?"
            ) from None
        finally:
            if probe is not None:
                probe[0].close()
        if header.get("op") != "ready":
            await worker.stop()
            raise WorkerStartError(f"a worker refused to start: {header.get('message')}")
        if probe is not None:
            refusal = header.get("shm", "the worker does not speak shared memory")
            worker.shared = not refusal
            worker.result_bytes = setup.result_bytes
            if refusal:
                log.warning(
                    "worker %s cannot open the driver's shared memory (%s): model arrays "
                    "go through its pipe",
                    proc.pid,
                    refusal,
                )
        return worker

    async def _send(self, parts: list[bytes | memoryview]) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        if sum(len(p) for p in parts) <= _JOIN_BYTES:
            parts = [b"".join(parts)]  # one write, one wake-up of the worker
        for part in parts:
            stdin.write(part)
        await stdin.drain()

    async def _read(self) -> tuple[dict[str, Any], list[Any]]:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            length = header_length(await stdout.readexactly(4))
            header, sizes = parse_header(await stdout.readexactly(length))
            arrays = [to_array(await stdout.readexactly(n), d, s) for d, s, n in sizes]
        except asyncio.IncompleteReadError:
            raise ProtocolError("the worker closed its pipe") from None
        return header, arrays

    async def call(self, job: Job, fold: FoldRequest | None = None) -> JobResult:
        async with self._io:
            try:
                return await self._call(job, fold)
            except asyncio.CancelledError:
                if self.busy:  # before the pipe is free for anyone else
                    self.doomed = True
                raise

    def _fold_ref(self, folds: WorkerFolds) -> dict[str, Any] | None:
        """The job frame's ``fold`` field: this worker's partial sums for ``folds``' fan-out."""
        if self.fold_log is None or self.fold_log.sink != folds.sink:
            self.fold_log = FoldLog(folds.sink)
        if self.partial is None:
            try:
                self.partial = folds.new_segment()
            except shm.SegmentError as exc:
                log.warning("worker %s: results go to the server to fold: %s", self.proc.pid, exc)
                return None
        folds.workers.add(self)
        return {"sink": folds.sink, "partial": self.partial.ref()}

    async def _call(self, job: Job, fold: FoldRequest | None) -> JobResult:
        params_key = params_ref = None
        slot = None
        fold_ref = None
        if fold is not None and self.shared and not fold.folds.closed:
            fold_ref = self._fold_ref(fold.folds)
        try:
            if self.shared:
                try:
                    if job.task.type is TaskType.FIT and fold_ref is None:
                        # (a result kept for folding that fails the worker's
                        # checks comes back through the pipe, and is refused)
                        slot = await self._result_slot()
                    if job.task.parameters:
                        params_key, params_ref = self.broadcast.acquire(job.task.parameters)
                except shm.SegmentError as exc:  # e.g. out of memory: the pipe still works
                    log.warning("model arrays through the pipe for this job: %s", exc)
            frame = job_frame(
                job,
                params_shm=params_ref,
                result_shm=None if slot is None else slot.ref(),
                fold=fold_ref,
                settle=None if self.fold_log is None else self.fold_log.take_pending(),
            )
            self.busy = True
            await self._send(frame)
            header, arrays = await self._read()
            parameters = self._result_parameters(header, slot)
            slot = None  # leased to the result's arrays, or given back
            self.busy = False
            out = decode_result((header, arrays), parameters)
            if out.held:
                if fold is None or fold_ref is None or self.fold_log is None:
                    raise ProtocolError("the worker kept a result it was not asked to fold")
                # Decided now, before this worker takes another job: the decision
                # goes with the next frame it gets.
                self.fold_log.decide(out.result.task_id, fold.decide(out))
            return out
        except (ProtocolError, ConnectionError, shm.SegmentError) as exc:
            # The pipe closes just before the process ends: give it a moment to
            # report its own exit code before stopping it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2.0)
            code = await self.stop()
            raise WorkerLostError(
                f"its worker process (pid {self.proc.pid}) died with exit code {code}: {exc}"
            ) from None
        finally:
            if slot is not None:  # the worker may still write into it: never reused
                self.slots.discard(slot)
            if params_key is not None:
                self.broadcast.release(params_key)

    async def _result_slot(self) -> shm.Segment | None:
        """A result segment, waiting while the server holds all of this worker's results.

        The server folds a result and drops its arrays within milliseconds; one
        that keeps them longer than ``_SLOT_PATIENCE`` (a strategy holding every
        update without copying it) gets one more segment for this worker rather
        than a stalled worker.
        """
        self._waiting = True  # before take(): a release after it must wake this wait
        try:
            while True:
                self._freed.clear()
                slot = self.slots.take(self.result_bytes)
                if slot is not None or self.slots.closed:
                    return slot
                if not self.slots.exhausted:
                    continue  # one was released just now
                try:
                    await asyncio.wait_for(self._freed.wait(), _SLOT_PATIENCE)
                except TimeoutError:
                    self.slots.grow()
                    log.warning(
                        "worker %s: the server has held all %d of its results unreleased for "
                        "%g s; allowing %d (more shared memory)",
                        self.proc.pid,
                        self.slots.limit - 1,
                        _SLOT_PATIENCE,
                        self.slots.limit,
                    )
        finally:
            self._waiting = False

    def _result_parameters(
        self, header: dict[str, Any], slot: shm.Segment | None
    ) -> list[Any] | None:
        """A result's parameters as views of ``slot`` when the worker put them there."""
        layout = header.get("result_layout")
        if slot is None:
            if layout is not None:
                raise ProtocolError("a result in shared memory that was not offered")
            return None
        if layout is None:
            self.slots.give_back(slot)
            return None
        placements = shm.layout_from_json(layout, slot.size, f"result segment {slot.name}")
        return self.slots.lease(slot, placements)

    async def settle(self) -> str:
        """Write this worker's last fold decision and wait until it is applied.

        Returns how the worker ended the fan-out ("settled", or its pid and exit
        code): one that cannot answer is stopped first, so that its partial
        sums are read with no fold under way.
        """
        async with self._io:
            decision = None if self.fold_log is None else self.fold_log.take_pending()
            if self.proc.returncode is None and not self.doomed:
                try:
                    await asyncio.wait_for(self._settle(decision), SETTLE_TIMEOUT)
                except (ProtocolError, ConnectionError, TimeoutError) as exc:
                    log.warning("worker %s did not settle its folds: %s", self.proc.pid, exc)
                else:
                    return "settled"
            await self.stop()
            return f"pid {self.proc.pid}, exit code {self.proc.returncode}"

    async def _settle(self, decision: dict[str, Any] | None) -> None:
        await self._send(encode({"op": "settle", "settle": decision}))
        header, _ = await self._read()
        if header.get("op") != "settled":
            raise ProtocolError(f"expected 'settled', got {header.get('op')!r}")

    async def stop(self) -> int | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)
        self.slots.close()
        return self.proc.returncode


class _LocalPool:
    """The workers of one group: a queue of idle ones, replaced when one is lost."""

    def __init__(self, setup: WorkerSetup, size: int, broadcast: shm.Broadcast) -> None:
        self.setup = setup
        self.size = size
        self.broadcast = broadcast
        self.idle: asyncio.Queue[_Process] = asyncio.Queue()
        self.all: set[_Process] = set()
        self._spares: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        workers = await asyncio.gather(
            *(_Process.start(self.setup, self.broadcast) for _ in range(self.size)),
            return_exceptions=True,
        )
        errors = [w for w in workers if isinstance(w, BaseException)]
        for w in workers:
            if isinstance(w, _Process):
                self.all.add(w)
                self.idle.put_nowait(w)
        if errors:
            raise errors[0]

    def _replace(self, lost: _Process) -> None:
        self.all.discard(lost)

        async def spare() -> None:
            try:
                worker = await _Process.start(self.setup, self.broadcast)
            except WorkerStartError as exc:
                log.error("could not replace a lost worker: %s", exc)
                return
            self.all.add(worker)
            self.idle.put_nowait(worker)

        task = asyncio.ensure_future(spare())
        self._spares.add(task)
        task.add_done_callback(self._spares.discard)

    async def run(self, job: Job, fold: FoldRequest | None = None) -> JobResult:
        worker = await self.idle.get()
        try:
            out = await worker.call(job, fold)
        except WorkerLostError:
            self._replace(worker)
            raise
        except asyncio.CancelledError:
            if not worker.busy:  # cancelled before the job reached it: still a good worker
                self.idle.put_nowait(worker)
                raise
            # The job's deadline passed while the worker was busy: stop it, start another.
            await asyncio.shield(worker.stop())
            self._replace(worker)
            raise
        self.idle.put_nowait(worker)
        return out

    async def close(self) -> None:
        for task in list(self._spares):
            task.cancel()
        for worker in list(self.all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        await asyncio.gather(*(self._close_one(w) for w in list(self.all)))
        self.all.clear()

    @staticmethod
    async def _close_one(worker: _Process) -> None:
        try:
            await asyncio.wait_for(worker.proc.wait(), 5)
        except TimeoutError:
            await worker.stop()
        worker.slots.close()
        if worker.partial is not None:
            worker.partial.close()  # or with the last view of its sums


class LocalBackend(Backend):
    """Worker processes on this machine, one per core unless told."""

    def __init__(self, setups: list[WorkerSetup], sizes: list[int]) -> None:
        #: The parameter sets in shared memory, one segment each for every worker of every group.
        self.broadcast = shm.Broadcast()
        self._pools = [_LocalPool(s, n, self.broadcast) for s, n in zip(setups, sizes, strict=True)]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(p.start() for p in self._pools))
        except BaseException:
            await self.close()
            raise
        log.info(
            "local backend: %s",
            ", ".join(
                f"{p.size} worker(s) of {p.setup.group.python or sys.executable} "
                f"running {p.setup.group.client_fn}"
                for p in self._pools
            ),
        )

    async def run(self, group: int, job: Job, fold: FoldRequest | None = None) -> JobResult:
        return await self._pools[group].run(job, fold)

    def open_folds(self) -> WorkerFolds | None:
        """Workers fold their own results into partial sums (:mod:`.folds`) in shared memory."""
        if shm.available():
            return None
        spec = self._pools[0].setup.spec
        return WorkerFolds([tuple(t.shape) for t in spec.tensors])

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self._pools))
        self.broadcast.close()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for p in self._pools for w in p.all]

    @property
    def workers(self) -> list[_Process]:
        """Every live worker (tests: transport, segments)."""
        return [w for p in self._pools for w in p.all]
