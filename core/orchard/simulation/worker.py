"""A local simulation worker: ``python -m orchard.simulation.worker``, driven over its pipes.

It imports core and whatever adapter ``client_fn`` imports, never the server,
so it runs in any environment that has Orchard's core (``.venv-mxnet`` for
MXNet clients). The protocol is :mod:`orchard.simulation.wire` on stdin and on
the process's original stdout; ``print`` and log output from client code go
to stderr so they cannot corrupt a frame.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import BinaryIO

from orchard.simulation.context import ClientFnError
from orchard.simulation.job import WorkerRuntime
from orchard.simulation.wire import (
    ProtocolError,
    config_from_json,
    decode_job,
    encode,
    read_frame,
    result_frame,
    spec_from_json,
)


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
    _write(out, encode({"op": "ready", "pid": os.getpid()}))
    while True:
        try:
            frame = read_frame(inp)
        except ProtocolError:
            return 0  # the driver is done
        _write(out, result_frame(runtime.run(decode_job(frame))))


def main() -> int:
    """Entry point: move stdout aside for the protocol, then serve."""
    logging.basicConfig(
        level=os.environ.get("ORCHARD_SIM_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s worker %(process)d %(name)s: %(message)s",
        stream=sys.stderr,
    )
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(sys.stdin.buffer, proto_out)


if __name__ == "__main__":
    sys.exit(main())
