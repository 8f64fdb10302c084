"""The MXNet interpreter the cross-framework tests launch (skip if there is none).

(``processes``, child processes killed at the end of a test, is
:func:`tests.helpers.processes.processes`.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.crossframework import mxnet_python
from tests.helpers.processes import processes

__all__ = ["mxnet_interpreter", "processes"]


@pytest.fixture(scope="session")
def mxnet_interpreter() -> Path:
    """``.venv-mxnet/bin/python`` or ``$ORCHARD_MXNET_PYTHON``; skips when absent."""
    python = mxnet_python()
    if python is None:
        configured = os.environ.get("ORCHARD_MXNET_PYTHON")
        pytest.skip(
            f"no MXNet interpreter: ORCHARD_MXNET_PYTHON={configured!r} is not an executable file"
            if configured
            else "no MXNet interpreter: .venv-mxnet/bin/python does not exist (run `make setup`) "
            "and ORCHARD_MXNET_PYTHON is not set"
        )
    return python
