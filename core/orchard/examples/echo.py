"""The echo client: returns the global model slightly changed, at once.

It trains nothing, so a federation of echo clients measures transport and
aggregation alone (``make bench``), for any model spec the server hosts.

Run: ``python -m orchard.examples.echo --server HOST:PORT --federation NAME --insecure``.
"""

from __future__ import annotations

import argparse

import numpy as np

from orchard.client.cli import (
    add_client_arguments,
    configure_logging,
    log_fields,
    settings_from_args,
)
from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.client.runtime import run_client
from orchard.typing import Config, Metrics, NDArrays


class EchoClient(NumPyClient):
    """Adds a constant to every parameter; reports 1,000 examples."""

    def __init__(self, partition_id: int) -> None:
        self.delta = np.float32(0.001 * (partition_id + 1))

    def get_parameters(self, config: Config) -> NDArrays:
        return []

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        return [p + self.delta for p in parameters], 1000, {}

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        return 0.0, 1000, {}


def main(argv: list[str] | None = None) -> int:
    """Run one echo client."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_client_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format, fields=log_fields(args))

    def factory(ctx: ClientContext) -> NumPyClient:
        return EchoClient(ctx.partition_id)

    return run_client(factory, settings_from_args(args, framework="echo"))


if __name__ == "__main__":
    raise SystemExit(main())
