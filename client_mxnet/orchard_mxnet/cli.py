"""``python -m orchard_mxnet client|baseline``: the shared command line, for Apache MXNet.

The commands, options, ``ORCHARD_*`` environment variables and error handling
are every client's (:func:`orchard.client.cli.framework_main`): problems the
user can fix (no GPU, wrong model/dataset pair, a failed download) end with
one clear line and exit status 2 instead of a traceback. This module says
only what is MXNet's: the adapter, the models, the datasets and the
tutorial's hyperparameters.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final

from orchard.client.cli import FrameworkCommands, build_framework_parser, framework_main
from orchard_mxnet.baseline import DEFAULT_MODEL, TUTORIAL_TRAINING, TUTORIAL_VAL_FRACTION
from orchard_mxnet.client import MXNetAdapter
from orchard_mxnet.data import DATASETS
from orchard_mxnet.models import MODEL_IDS

__all__ = ["COMMANDS", "build_parser", "main"]

#: This client's command line, described for :func:`orchard.client.cli.framework_main`.
COMMANDS: Final = FrameworkCommands(
    framework="mxnet",
    title="Apache MXNet",
    adapter=MXNetAdapter,
    models=MODEL_IDS,
    default_model=DEFAULT_MODEL,
    datasets=DATASETS,
    baseline_defaults=TUTORIAL_TRAINING,
    baseline_val_fraction=TUTORIAL_VAL_FRACTION,
    baseline_about="Defaults follow MXNet's handwritten-digit tutorial.",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m orchard_mxnet``."""
    return build_framework_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    return framework_main(COMMANDS, argv)
