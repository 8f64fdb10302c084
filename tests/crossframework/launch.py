"""Run a framework client's real command line, after registering generated files.

``python -m tests.crossframework.launch pytorch|mxnet [--generated DIR --variant
NAME] -- client ...``. The shared MNIST reader verifies every file against the
official checksums, which generated test files cannot match; with
``--generated`` the files in DIR are registered as variant NAME with their own
checksums first -- exactly how real downloads are verified -- so the client
under test runs unmodified. Runs in either environment: it imports only the
chosen framework's client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from orchard.data import mnist
from tests.helpers.datasets import UNREACHABLE, generated_mnist_variant


def main(argv: Sequence[str] | None = None) -> int:
    """Register generated files if asked, then run the client; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" belongs to the client, untouched by this parser.
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        prog="python -m tests.crossframework.launch",
        usage="%(prog)s pytorch|mxnet [--generated DIR [--variant NAME]] -- CLIENT_ARGS...",
    )
    parser.add_argument("framework", choices=("pytorch", "mxnet"))
    parser.add_argument("--generated", type=Path, help="directory of generated MNIST files")
    parser.add_argument("--variant", default="mnist", help="variant name to register them as")
    args = parser.parse_args(argv[:split])
    client_args = argv[split + 1 :]
    if args.generated is not None:
        mnist.VARIANTS[args.variant] = generated_mnist_variant(
            args.generated, base_url=UNREACHABLE, name=args.variant
        )
    if args.framework == "pytorch":
        from orchard_pytorch.cli import main as run
    else:
        from orchard_mxnet.cli import main as run
    return run(client_args)


if __name__ == "__main__":
    sys.exit(main())
