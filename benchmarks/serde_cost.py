"""What encoding and decoding parameters costs, against a plain memory copy.

Encodes a float32 parameter set the way a sender does (header + chunk
messages, serialized to bytes), parses the bytes back into messages and
rebuilds the arrays the way a receiver does (:class:`orchard.serde.ParametersAssembler`),
and divides by the time of one plain copy of the same arrays into new memory
(``ndarray.copy``) (issue 12: at
most 1.5x). Medians over several repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from orchard import serde
from orchard.allocator import tune_allocator
from orchard.messages import Task, TaskType

NAME = "serde"


def _median_time(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(parameters: int, tensors: int, repeat: int, args_chunk: int) -> dict[str, Any]:
    """Encode + decode of ``parameters`` float32 values in ``tensors`` tensors, as a task
    stream in chunks of ``args_chunk`` bytes."""
    rng = np.random.default_rng(0)
    sizes = [parameters // tensors] * tensors
    sizes[-1] += parameters - sum(sizes)
    arrays = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    names = [f"t{i}" for i in range(tensors)]

    def copy() -> None:
        # A copy into new memory, as encoding and decoding write new memory too.
        for src in arrays:
            src.copy()

    task = Task(
        task_id="bench",
        type=TaskType.FIT,
        round=1,
        config={},
        timeout=60.0,
        names=tuple(names),
        parameters=arrays,
    )
    encoded: list[bytes] = []

    def encode() -> None:
        encoded[:] = serde.encode_task(task, args_chunk)

    def decode() -> None:
        out = serde.task_from_bytes(encoded)
        assert isinstance(out, Task) and out.names == tuple(names)

    copy_s = _median_time(copy, repeat)
    encode_s = _median_time(encode, repeat)
    decode_s = _median_time(decode, repeat)
    check = serde.task_from_bytes(encoded)
    assert isinstance(check, Task)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, check.parameters, strict=True))
    nbytes = parameters * 4
    return {
        "parameters": parameters,
        "tensors": tensors,
        "model_mb": round(nbytes / 1e6, 1),
        "chunks": len(encoded) - 1,
        "chunk_bytes": args_chunk,
        "memcpy_s": round(copy_s, 4),
        "encode_s": round(encode_s, 4),
        "decode_s": round(decode_s, 4),
        "encode_plus_decode_over_memcpy": round((encode_s + decode_s) / copy_s, 2),
        "encode_mb_per_s": round(nbytes / 1e6 / encode_s),
        "decode_mb_per_s": round(nbytes / 1e6 / decode_s),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument("--serde-parameters", type=int, default=11_200_000)
    group.add_argument("--serde-repeat", type=int, default=7)
    group.add_argument("--serde-chunk-bytes", type=int, default=serde.DEFAULT_CHUNK_BYTES)


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One line per tensor layout: one big tensor and a many-tensor model."""
    tune_allocator()  # as the server and the client runtime do
    for tensors in (1, 16):
        yield measure(args.serde_parameters, tensors, args.serde_repeat, args.serde_chunk_bytes)
