"""Fuzz targets for serde, shared by the hypothesis tests and the coverage-guided runner.

A target takes raw bytes, as an attacker could put them on the wire, and feeds
them to the decoding functions the server (and the client) apply to what they
receive. The rule: a malformed message is refused with :class:`SerdeError` or
:class:`SpecError` (``ValueError`` subclasses naming the field), or by
protobuf's own ``DecodeError`` before serde sees it; any other exception, a
hang or a crash of the interpreter is a bug.

``python -m tests.helpers.fuzz --seconds 30`` runs every target under atheris
(libFuzzer, coverage-guided) for that long and prints one JSON line per target
with the number of inputs tried; ``make fuzz`` calls it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from google.protobuf.message import DecodeError

from orchard import serde
from orchard.spec import SpecError
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import tensor_pb2 as tpb

#: The server refuses uploads above this; the fuzz targets use the same kind of cap.
MAX_BYTES: Final = 1 << 20

#: Errors that mean "refused with a clear message"; anything else is a bug.
REFUSALS: Final = (serde.SerdeError, SpecError, DecodeError)


def _split(data: bytes) -> list[bytes]:
    """Length-prefixed pieces (one byte of length each), for multi-message streams."""
    pieces, i = [], 0
    while i < len(data):
        n = data[i]
        pieces.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return pieces


def _push_stream(data: bytes) -> None:
    messages = [pb.PushResultRequest.FromString(p) for p in _split(data)]
    reader = serde.ResultReader(messages[0] if messages else None)
    reader.announced(max_bytes=MAX_BYTES)
    for message in messages[1:]:
        reader.add(message)
    reader.finish()


def _pull_stream(data: bytes) -> None:
    messages = [pb.PullTaskResponse.FromString(p) for p in _split(data)]
    first = messages[0] if messages else None
    # The client side has no byte cap of its own: skip headers announcing more
    # than the fuzz budget allows (memory, not correctness, would be tested).
    if (
        first is not None
        and first.WhichOneof("item") == "task"
        and first.task.parameters.total_bytes > MAX_BYTES
    ):
        return
    serde.task_from_stream(iter(messages))


def _assemble(data: bytes) -> None:
    pieces = _split(data)
    header = tpb.ParametersHeader.FromString(pieces[0] if pieces else b"")
    chunks = [tpb.TensorChunk.FromString(p) for p in pieces[1:]]
    assembler = serde.ParametersAssembler(header, max_bytes=MAX_BYTES)
    for chunk in chunks:
        assembler.add(chunk)
    assembler.finish()


#: Decoders by the first byte of the input (modulo their number).
DECODERS: Final[tuple[tuple[str, Callable[[bytes], object]], ...]] = (
    ("join", lambda d: serde.join_from_proto(pb.JoinRequest.FromString(d))),
    ("join_version", lambda d: serde.join_api_version(pb.JoinRequest.FromString(d))),
    ("heartbeat", lambda d: serde.heartbeat_from_proto(pb.HeartbeatRequest.FromString(d))),
    ("poll", lambda d: serde.poll_from_proto(pb.PullTaskRequest.FromString(d))),
    ("leave", lambda d: serde.leave_from_proto(pb.LeaveRequest.FromString(d))),
    ("session", lambda d: serde.session_from_proto(pb.JoinResponse.FromString(d))),
    ("status", lambda d: serde.status_from_proto(pb.HeartbeatResponse.FromString(d))),
    ("spec", lambda d: serde.model_spec_from_proto(tpb.ModelSpec.FromString(d))),
    ("push_stream", _push_stream),
    ("pull_stream", _pull_stream),
    ("assemble", _assemble),
)


def _framed(messages: list[bytes]) -> bytes:
    return b"".join(bytes([len(m)]) + m for m in messages if len(m) < 256)


def seed_corpus() -> list[bytes]:
    """Valid inputs for every decoder, so mutation starts from well-formed messages.

    Random bytes seldom parse into a header whose fields agree; starting from
    real messages lets the fuzzer reach the checks behind the parsing.
    """
    import numpy as np

    from orchard.messages import API_VERSION, JoinInfo, LeaveNotice, Result, TaskPoll
    from orchard.spec import ModelSpec, TensorSpec

    spec = ModelSpec("tiny", (TensorSpec("w", (2, 3)), TensorSpec("b", (3,), "int32")))
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, -2, 3], np.int32)]
    result = Result(
        client_id="c",
        task_id="t",
        num_examples=4,
        loss=0.5,
        metrics={"accuracy": 0.25, "note": "x"},
        names=("w", "b"),
        parameters=arrays,
    )
    push = [m.SerializeToString() for m in serde.result_to_stream(result, chunk_bytes=8)]
    header = serde.parameters_header(("w", "b"), arrays)
    chunks = [c.SerializeToString() for c in serde.iter_chunks(arrays, 8)]
    join = JoinInfo(
        api_version=API_VERSION, federation="f", instance_id="i", model_spec=spec, auth_token="t"
    )
    messages = {
        "join": serde.join_to_proto(join).SerializeToString(),
        "join_version": serde.join_to_proto(join).SerializeToString(),
        "heartbeat": serde.heartbeat_to_proto("c").SerializeToString(),
        "poll": serde.poll_to_proto(
            TaskPoll(client_id="c", wait_seconds=1.0, max_chunk_bytes=8)
        ).SerializeToString(),
        "leave": serde.leave_to_proto(LeaveNotice(client_id="c", reason="r")).SerializeToString(),
        "spec": serde.model_spec_to_proto(spec).SerializeToString(),
        "push_stream": _framed(push),
        "assemble": _framed([header.SerializeToString(), *chunks]),
    }
    names = [name for name, _ in DECODERS]
    return [bytes([names.index(name)]) + data for name, data in messages.items()]


def serde_target(data: bytes) -> None:
    """Decode ``data`` as the message its first byte selects; refusals are fine."""
    if not data:
        return
    _, decode = DECODERS[data[0] % len(DECODERS)]
    with contextlib.suppress(*REFUSALS):
        decode(data[1:])


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def run_atheris(seconds: int) -> dict[str, object]:
    """Fuzz :func:`serde_target` under atheris in a child process; its figures as a dict.

    libFuzzer owns the process it runs in (it exits when done), hence the child.
    ``crashed`` is True when it found an input that raised something other than a
    refusal; the child's output then holds the traceback and the input.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orchard-fuzz-") as corpus:
        for i, data in enumerate(seed_corpus()):
            (Path(corpus) / f"seed-{i}").write_bytes(data)
        child = subprocess.run(
            [sys.executable, "-m", "tests.helpers.fuzz_child", str(seconds), corpus],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )
    match = _DONE.search(child.stderr)
    return {
        "target": "serde",
        "engine": "atheris",
        "inputs": int(match.group(1)) if match else None,
        "seconds": round(time.monotonic() - started, 1),
        "crashed": child.returncode != 0,
        "tail": "" if child.returncode == 0 else child.stderr[-3000:],
    }


def main(argv: list[str] | None = None) -> int:
    """``--seconds N``: fuzz for N seconds and print the figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args(argv)
    figures = run_atheris(args.seconds)
    print(json.dumps(figures), flush=True)
    return 1 if figures["crashed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
