"""A local simulation worker: ``python -m orchard.simulation.worker``, driven over its pipes.

It imports core and whatever adapter ``client_fn`` imports, never the server,
so it runs in any environment that has Orchard's core (``.venv-mxnet`` for
MXNet clients). The protocol is :mod:`orchard.simulation.wire` on stdin and on
the process's original stdout; ``print`` and log output from client code go
to stderr so they cannot corrupt a frame.

When the driver offers shared memory (a probe segment in ``init``), the
worker answers ``ready`` with ``shm`` empty if it could open it, or the
reason it could not; the driver then sends model arrays through segments
(:mod:`orchard.simulation.shm`) or keeps them on the pipe for this worker.
With shared memory, a fit job may also ask the worker to keep its result and
fold it into the worker's partial sums once the driver has accepted it
(:mod:`orchard.simulation.partial`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from orchard.logs import take_stdout
from orchard.messages import Result
from orchard.simulation.context import ClientFnError
from orchard.simulation.job import JobResult, WorkerRuntime
from orchard.simulation.partial import PartialSums
from orchard.simulation.shm import SegmentError, WorkerSegments
from orchard.simulation.wire import (
    Frame,
    ProtocolError,
    config_from_json,
    decode_job,
    encode,
    read_frame,
    result_frame,
    spec_from_json,
)
from orchard.typing import NDArrays

log = logging.getLogger("orchard.simulation")


def _write(out: BinaryIO, parts: list[bytes | memoryview]) -> None:
    for part in parts:
        out.write(part)
    out.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Answer frames until the driver closes the pipe; returns the exit code."""
    try:
        header, _ = read_frame(inp)
    except ProtocolError:
        return 0
    if header.get("op") != "init":
        _write(out, encode({"op": "error", "message": "expected an init frame"}))
        return 2
    try:
        runtime = WorkerRuntime(
            header["client_fn"],
            federation=header["federation"],
            model_spec=spec_from_json(header["spec"]),
            node_config=config_from_json(header["node_config"]),
        )
    except (ClientFnError, ImportError) as exc:
        _write(out, encode({"op": "error", "message": str(exc)}))
        return 2
    _lower_priority(header.get("nice", 0))
    segments: WorkerSegments | None = None
    refusal = ""
    if header.get("shm"):
        try:
            segments = WorkerSegments(header["shm"])
        except (SegmentError, OSError, KeyError, ValueError) as exc:
            refusal = f"{type(exc).__name__}: {exc}"
    _write(out, encode({"op": "ready", "pid": os.getpid(), "shm": refusal}))
    folder = _Folder(runtime, segments)
    while True:
        try:
            frame = read_frame(inp)
        except ProtocolError:
            return 0  # the driver is done
        folder.settle(frame[0].get("settle"))
        if frame[0].get("op") == "settle":
            _write(out, encode({"op": "settled"}))
            continue
        _write(out, folder.hold(frame[0], _answer(runtime, segments, frame)))


@dataclass(slots=True)
class _Held:
    """A result this worker keeps until the driver decides on it."""

    task_id: str
    sink: int
    partial: PartialSums
    arrays: NDArrays


class _Folder:
    """This worker's side of folding: the result it holds and its partial sums."""

    def __init__(self, runtime: WorkerRuntime, segments: WorkerSegments | None) -> None:
        self.shapes = [t.shape for t in runtime.model_spec.tensors]
        self.segments = segments
        self.held: _Held | None = None

    def settle(self, decision: Mapping[str, Any] | None) -> None:
        """Fold or drop the held result as the driver decided (nothing without a decision)."""
        if decision is None:
            return
        held, self.held = self.held, None
        if held is None or held.task_id != decision.get("task_id"):
            # The driver counts the folds in the partial's header, so a decision
            # that finds nothing to fold only leaves that update out, visibly.
            log.error(
                "a decision on %r, but this worker holds %r",
                decision.get("task_id"),
                held and held.task_id,
            )
            return
        if decision.get("drop"):
            return
        scale = decision.get("scale_first")
        try:
            held.partial.fold(
                held.sink,
                held.arrays,
                float(decision["factor"]),
                None if scale is None else float(scale),
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.error("cannot fold the result of %s: %s", held.task_id, exc)

    def hold(self, header: Mapping[str, Any], answer: JobResult) -> list[bytes | memoryview]:
        """``answer``'s frame; a sound fit result of a job that asks for it is kept here."""
        fold = header.get("fold")
        result = answer.result
        if fold is None or self.segments is None or not answer.checked or not result.parameters:
            return _frame(self.segments, header, answer)
        try:
            mapping = self.segments.shared_map(fold["partial"])
            partial = PartialSums(mapping, self.shapes)
        except (SegmentError, OSError, KeyError, TypeError, ValueError) as exc:
            log.warning("result through shared memory, not folded here: %s", exc)
            return _frame(self.segments, header, answer)
        if self.held is not None:  # the driver sends a decision with every frame after one
            log.error("the result of %s was never decided on; dropped", self.held.task_id)
        self.held = _Held(result.task_id, int(fold["sink"]), partial, list(result.parameters))
        kept = dataclasses.replace(result, parameters=[])
        return result_frame(dataclasses.replace(answer, result=kept, held=True))


def _lower_priority(nice: object) -> None:
    """Run ``nice`` steps nicer than the driver that started this worker.

    The driver's one event loop feeds every worker and folds every update;
    when the cores are busy it should get them first (the driver's
    ``SimulationConfig.worker_nice`` says why and by how much). A platform
    without ``os.nice`` keeps the worker as it is, saying so.
    """
    if not isinstance(nice, int) or isinstance(nice, bool) or nice <= 0:
        return
    try:
        os.nice(nice)
    except (AttributeError, OSError) as exc:
        log.warning("the worker keeps its CPU priority (nice %d refused: %s)", nice, exc)


def _answer(runtime: WorkerRuntime, segments: WorkerSegments | None, frame: Frame) -> JobResult:
    """Run one job frame; its parameters come through shared memory when named."""
    header = frame[0]
    params_ref = header.get("params_shm")
    try:
        if params_ref is not None and segments is None:
            raise SegmentError("the job names a shared-memory segment, but none was agreed")
        parameters = segments.params(params_ref) if segments and params_ref else None
    except (SegmentError, OSError, KeyError, TypeError, ValueError) as exc:
        # A job this worker cannot read fails alone, saying why; the worker goes on.
        return JobResult(
            result=Result(
                client_id=str(header.get("client_id", "")),
                task_id=str(header.get("task", {}).get("task_id", "")),
                error=f"the worker cannot read the job's parameters: {exc}",
            )
        )
    return runtime.run(decode_job(frame, parameters))


def _frame(
    segments: WorkerSegments | None, header: Mapping[str, Any], out: JobResult
) -> list[bytes | memoryview]:
    """The result frame of ``out``; its parameters go to the job's result segment when named."""
    result_ref = header.get("result_shm")
    layout = None
    if segments is not None and result_ref is not None and out.result.parameters:
        try:
            layout = segments.write_result(result_ref, out.result.parameters)
        except (SegmentError, OSError) as exc:  # the pipe still carries it
            log.warning("result through the pipe: %s", exc)
    return result_frame(out, layout)


def main() -> int:
    """Entry point: move stdout aside for the protocol, then serve."""
    logging.basicConfig(
        level=os.environ.get("ORCHARD_SIM_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s worker %(process)d %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return serve(sys.stdin.buffer, take_stdout())


if __name__ == "__main__":
    sys.exit(main())
