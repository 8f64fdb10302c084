"""Container health probe: is the Orchard server answering gRPC health checks?

Docker (and Swarm) run this inside the server container; clients start only
once it succeeds (``depends_on: condition: service_healthy``). It asks the
standard ``grpc.health.v1`` service rather than probing the TCP port: an open
port does not mean the gRPC server answers, and the server reports SERVING
only once its federations are restored and its services registered.

Settings come from the server's own environment: ``ORCHARD_ADDRESS`` (the
port to probe on loopback), ``ORCHARD_INSECURE``, and for TLS
``ORCHARD_CA_CERT`` (the CA that signed the server's certificate) and
``ORCHARD_TLS_SERVER_NAME`` (a name in the certificate; default localhost).
Exit status 0 means SERVING, 1 anything else, as Docker expects.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TRUE = {"1", "true", "yes", "on"}


def probe_target(address: str) -> str:
    """Loopback address with the port the server listens on (from host:port)."""
    _, sep, port = address.rpartition(":")
    return f"127.0.0.1:{port if sep and port.isdigit() else '8080'}"


def open_channel(target: str) -> grpc.Channel:
    """Plain text when the server runs insecure, else TLS verified against the CA."""
    if os.environ.get("ORCHARD_INSECURE", "").lower() in TRUE:
        return grpc.insecure_channel(target)
    ca_path = os.environ.get("ORCHARD_CA_CERT") or os.environ.get("ORCHARD_TLS_CERT")
    if not ca_path:
        raise SystemExit(
            "healthcheck: TLS server but neither ORCHARD_CA_CERT nor ORCHARD_TLS_CERT set"
        )
    with open(ca_path, "rb") as fh:
        credentials = grpc.ssl_channel_credentials(root_certificates=fh.read())
    name = os.environ.get("ORCHARD_TLS_SERVER_NAME") or "localhost"
    return grpc.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", name)]
    )


def main(argv: list[str]) -> int:
    """Probe once; print the status for ``docker inspect``'s health log."""
    target = argv[1] if len(argv) > 1 else probe_target(os.environ.get("ORCHARD_ADDRESS", ""))
    with open_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3.0)
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name} {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
