"""The MXNet interpreter the cross-framework tests launch (skip if there is none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchard.launch import KINDS, SetupError, find_python


@pytest.fixture(scope="session")
def mxnet_interpreter() -> Path:
    """The interpreter the launcher runs MXNet clients with; skips when there is none.

    That is ``$ORCHARD_MXNET_PYTHON`` or ``.venv-mxnet/bin/python``
    (:func:`orchard.launch.find_python`); the skip reason is the launcher's error.
    """
    try:
        return Path(find_python(KINDS["mxnet"]))
    except SetupError as exc:
        pytest.skip(str(exc))
