"""The transport floor: what Python gRPC alone takes to move a model to N clients and back.

A round of N clients sends the model to each of them and receives an update
from each. This suite measures that traffic with nothing else: the same gRPC
stack as Orchard (a ``grpc.aio`` server with the server's channel arguments,
synchronous clients with the client runtime's), the model's bytes as 1 MiB
messages (Orchard's default chunk) passed through without serialization,
protobuf, checks, folding or disk writes. Each "round" starts when all N
client processes have asked for the model (a barrier, as a round's tasks go
out together) and ends when the last of them has uploaded it back; the
server times it. After three warm-up rounds it reports the median:

* ``floor_round_s``: no round of N clients over this transport on this
  machine can take less (compare the rounds suite's ``round_s`` for the same
  workload and N);
* ``aggregate_gb_per_s``: the bytes all clients moved, down and up, over it.

Run alone: ``python -m benchmarks --suite transport``. The server and client
roles are this module run as ``python -m benchmarks.transport serve|client``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc

from benchmarks import rounds
from benchmarks.rounds import parse_cases
from orchard import serde
from orchard.client.runtime import CHANNEL_OPTIONS
from orchard.launch import Launcher, free_port
from orchard_server.app import GRPC_SERVER_OPTIONS

NAME = "transport"

#: ``make bench``'s cases: the rounds suite's.
DEFAULT_CASES = rounds.DEFAULT_CASES
_SERVICE = "/orchard.bench.Transport/"
_WARMUP = 3


def _identity(data: bytes) -> bytes:
    return data


def _messages(nbytes: int) -> list[bytes]:
    """``nbytes`` as messages of at most one default chunk."""
    size = serde.DEFAULT_CHUNK_BYTES
    return [bytes(min(size, nbytes - start)) for start in range(0, nbytes, size)]


class _Rounds:
    """The server's side of the rounds: a barrier on the pulls, a clock on the pushes."""

    def __init__(self, clients: int, rounds: int, out: Path) -> None:
        self.clients, self.rounds, self.out = clients, rounds, out
        self.pulled: dict[int, int] = {}
        self.pushed: dict[int, int] = {}
        self.released: dict[int, asyncio.Event] = {}
        self.started: dict[int, float] = {}
        self.durations: list[float] = []

    async def pull(self, rnd: int) -> None:
        """Return once every client has asked for round ``rnd``'s model."""
        event = self.released.setdefault(rnd, asyncio.Event())
        self.pulled[rnd] = self.pulled.get(rnd, 0) + 1
        if self.pulled[rnd] == self.clients:
            self.started[rnd] = time.perf_counter()
            event.set()
        await event.wait()

    def push(self, rnd: int) -> None:
        """Count one upload of round ``rnd``; the last one ends the round."""
        self.pushed[rnd] = self.pushed.get(rnd, 0) + 1
        if self.pushed[rnd] == self.clients:
            self.durations.append(time.perf_counter() - self.started[rnd])
            if len(self.durations) == self.rounds:
                measured = self.durations[_WARMUP:]
                self.out.write_text(json.dumps({"round_s": measured}))


def _round_of(context: grpc.aio.ServicerContext[bytes, bytes]) -> int:
    return int(dict(context.invocation_metadata() or ())["round"])


async def _serve(port: int, nbytes: int, rounds: _Rounds) -> None:
    messages = _messages(nbytes)

    async def pull(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        await rounds.pull(_round_of(context))
        for message in messages:
            await context.write(message)

    async def push(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        received = 0
        async for message in requests:
            received += len(message)
        rounds.push(_round_of(context))
        return received.to_bytes(8, "little")

    handler = grpc.method_handlers_generic_handler(
        _SERVICE.strip("/"),
        {
            "Pull": grpc.unary_stream_rpc_method_handler(
                pull, request_deserializer=_identity, response_serializer=_identity
            ),
            "Push": grpc.stream_unary_rpc_method_handler(
                push, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server = grpc.aio.server(options=list(GRPC_SERVER_OPTIONS))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _client(port: int, nbytes: int, rounds: int) -> None:
    messages = _messages(nbytes)
    options = [*CHANNEL_OPTIONS, ("grpc.max_receive_message_length", 2 * len(messages[0]))]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        pull = channel.unary_stream(
            _SERVICE + "Pull", request_serializer=_identity, response_deserializer=_identity
        )
        push = channel.stream_unary(
            _SERVICE + "Push", request_serializer=_identity, response_deserializer=_identity
        )
        for rnd in range(rounds):
            metadata = (("round", str(rnd)),)
            received = sum(len(m) for m in pull(b"", timeout=120, metadata=metadata))
            ack = int.from_bytes(push(iter(messages), timeout=120, metadata=metadata), "little")
            if received != nbytes or ack != nbytes:
                raise SystemExit(f"moved {received} and {ack} bytes, expected {nbytes}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This suite's options."""
    group = parser.add_argument_group(NAME)
    group.add_argument(
        "--transport-cases",
        default=DEFAULT_CASES,
        help=f"comma-separated WORKLOAD:CLIENTS, as --round-cases (default {DEFAULT_CASES})",
    )
    group.add_argument(
        "--transport-rounds",
        type=int,
        default=10,
        help="measured rounds per case (after 3 warm-up rounds)",
    )


def run_case(workload_bytes: int, clients: int, repeat: int, workdir: Path) -> dict[str, Any]:
    """One case: ``clients`` processes exchanging ``workload_bytes`` with one server."""
    port = free_port()
    out = workdir / "rounds.json"
    me = [sys.executable, "-m", "benchmarks.transport"]
    size = ["--port", str(port), "--bytes", str(workload_bytes), "--rounds", str(_WARMUP + repeat)]
    with Launcher(workdir) as launcher:
        server = launcher.start_process(
            "server", [*me, "serve", *size, "--clients", str(clients), "--out", str(out)]
        )
        procs = [
            launcher.start_process(f"client-{i}", [*me, "client", *size]) for i in range(clients)
        ]
        deadline = time.monotonic() + 120 + repeat * clients
        for proc in procs:
            try:
                code = proc.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0 or not server.running:
                raise SystemExit(
                    f"transport case with {clients} clients failed ({proc.name}: {code})\n"
                    + launcher.tails()
                )
    times = json.loads(out.read_text())["round_s"]
    floor = statistics.median(times)
    return {
        "clients": clients,
        "model_mb": round(workload_bytes / 1e6, 2),
        "chunk_bytes": serde.DEFAULT_CHUNK_BYTES,
        "rounds_measured": len(times),
        "floor_round_s": round(floor, 4),
        "floor_round_s_all": [round(t, 4) for t in times],
        "aggregate_gb_per_s": round(2 * clients * workload_bytes / floor / 1e9, 3),
    }


def run(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    """One JSON line per case."""
    for workload, clients in parse_cases(args.transport_cases):
        case = run_case(
            workload.parameters * 4,
            clients,
            args.transport_rounds,
            workdir / f"transport-{workload.name}-{clients}",
        )
        yield {"workload": workload.name, **case}


def main(argv: list[str] | None = None) -> int:
    """The server and client roles of one case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["serve", "client"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True, help="warm-up rounds included")
    parser.add_argument("--clients", type=int, default=1, help="serve: clients per round")
    parser.add_argument("--out", type=Path, help="serve: where the round times go")
    args = parser.parse_args(argv)
    if args.role == "client":
        _client(args.port, args.bytes, args.rounds)
    elif args.out is None:
        parser.error("serve needs --out")
    else:
        asyncio.run(_serve(args.port, args.bytes, _Rounds(args.clients, args.rounds, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
