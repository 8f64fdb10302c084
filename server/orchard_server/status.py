"""``orchard-server status``: what every federation of a running server is doing.

Calls the read-only ``GetStatus`` RPC (protos/orchard/v1) and prints one
block per federation: model, strategy, round k of n and its phase, state,
and the connected clients with framework, role and partition.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import grpc

from orchard import serde
from orchard.messages import FederationState, FederationSummary
from orchard.v1 import federation_service_pb2_grpc as pb_grpc

__all__ = ["build_status_parser", "fetch_status", "format_status", "status_main"]


def build_status_parser() -> argparse.ArgumentParser:
    """The ``status`` command line."""
    parser = argparse.ArgumentParser(
        prog="orchard-server status",
        description="Print the federations, rounds and clients of a running Orchard server.",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("ORCHARD_SERVER", "localhost:8080"),
        help="host:port of the server's gRPC API (ORCHARD_SERVER)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("ORCHARD_WEB_TOKEN", ""),
        help="the server's web token, when it has one (ORCHARD_WEB_TOKEN)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="plain text, for a server run with insecure = true"
    )
    parser.add_argument("--ca-cert", type=Path, help="CA certificate that signed the server's")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    return parser


def fetch_status(
    server: str,
    *,
    token: str = "",
    insecure: bool = False,
    ca_cert: Path | None = None,
    timeout: float = 10.0,
) -> list[FederationSummary]:
    """Ask a server for its federations' status (raises grpc.RpcError on failure)."""
    if insecure:
        channel = grpc.insecure_channel(server)
    else:
        root = ca_cert.read_bytes() if ca_cert else None
        channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(root))
    with channel:
        stub = pb_grpc.FederationServiceStub(channel)
        response = stub.GetStatus(serde.status_request_to_proto(token), timeout=timeout)
    return serde.federation_summaries_from_proto(response)


def format_status(summaries: Sequence[FederationSummary]) -> str:
    """The status as a person reads it: one block per federation."""
    lines: list[str] = []
    for f in summaries:
        progress = f"round {f.rounds_completed}/{f.num_rounds} done"
        if f.state is FederationState.RUNNING and f.round > f.rounds_completed:
            progress += f", round {f.round} {f.phase or 'between phases'}"
        state = f.state.value + (f": {f.reason}" if f.reason else "")
        lines.append(f"{f.name}: {f.model_id}, {f.strategy}, {progress}; {state}")
        kinds = Counter(f"{c.framework or 'unknown'} {c.role.value}" for c in f.clients)
        lines.append(
            f"  {len(f.clients)} clients"
            + (": " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) if kinds else "")
        )
        if f.clients:
            width = max(len(c.display_name) for c in f.clients)
            for c in f.clients:
                lines.append(
                    f"    {c.display_name:<{width}}  {c.framework or 'unknown':<8}  "
                    f"{c.role.value:<9}  partition {c.partition_id}"
                )
    return "\n".join(lines)


def status_main(argv: Sequence[str]) -> int:
    """``orchard-server status ...``; 0 on success, 1 when the server cannot answer."""
    args = build_status_parser().parse_args(list(argv))
    try:
        summaries = fetch_status(
            args.server,
            token=args.token,
            insecure=args.insecure,
            ca_cert=args.ca_cert,
            timeout=args.timeout,
        )
    except grpc.RpcError as exc:
        print(
            f"orchard-server status: {args.server}: {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"orchard-server status: {exc}", file=sys.stderr)
        return 2
    print(format_status(summaries))
    return 0
