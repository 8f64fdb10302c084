"""The kinds of process the launcher starts, and the interpreter each runs in.

PyTorch and MXNet need different NumPy versions, so they live in different
Python environments and never share a process; the server lives in the main
one. The launcher therefore starts every process with an interpreter path and
a module (``python -m orchard_mxnet client ...``) and imports no framework
itself. For each kind the interpreter is, in order:

1. ``ORCHARD_<KIND>_PYTHON`` (``ORCHARD_SERVER_PYTHON``, ``ORCHARD_PYTORCH_PYTHON``,
   ``ORCHARD_MXNET_PYTHON``), for images and other layouts;
2. this interpreter, when the kind's packages are importable here;
3. in a source checkout, the environment ``make setup`` creates for it
   (``.venv`` or ``.venv-mxnet`` at the repository root).

An interpreter counts only if the kind's packages (Orchard's adapter and the
framework itself) are importable with it, so a missing framework is a
:class:`~orchard.launch.process.SetupError` that says how to get it, before
anything starts.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchard.launch.process import SetupError

__all__ = ["CLIENT_KINDS", "KINDS", "Kind", "checkout_root", "find_python", "get_kind"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """One kind of process: what it runs and where its interpreter comes from."""

    name: str
    #: The packages that must be importable (proof the kind is installed):
    #: Orchard's adapter and the framework itself, which may live apart.
    packages: tuple[str, ...]
    #: ``python -m`` module and the arguments before the common client options.
    module: str
    command: tuple[str, ...] = ()
    #: The environment ``make setup`` creates for it in a checkout (None: any with core).
    venv: str | None = None
    #: Whether it trains a registered model on a dataset (--model, --dataset, --device).
    framework: bool = False
    #: What to do when it is missing.
    install_hint: str = ""

    @property
    def python_variable(self) -> str:
        """The environment variable naming its interpreter."""
        return f"ORCHARD_{self.name.upper()}_PYTHON"


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            name="server",
            packages=("orchard_server",),
            module="orchard_server",
            venv=".venv",
            install_hint="pip install ./server (or `make setup` in a checkout)",
        ),
        Kind(
            name="pytorch",
            packages=("orchard_pytorch", "torch"),
            module="orchard_pytorch",
            command=("client",),
            venv=".venv",
            framework=True,
            install_hint="pip install ./client_pytorch (or `make setup` in a checkout)",
        ),
        Kind(
            name="mxnet",
            packages=("orchard_mxnet", "mxnet"),
            module="orchard_mxnet",
            command=("client",),
            venv=".venv-mxnet",
            framework=True,
            install_hint="create .venv-mxnet (`make setup`) or pip install ./client_mxnet "
            "in an environment with numpy<1.24",
        ),
        Kind(name="numpy", packages=("orchard",), module="orchard.examples.logreg"),
        Kind(name="echo", packages=("orchard",), module="orchard.examples.echo"),
    )
}

#: The kinds :meth:`Launcher.start_client` accepts.
CLIENT_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != "server")


def get_kind(name: str) -> Kind:
    """The kind called ``name``; a clear error for an unknown one."""
    try:
        return KINDS[name]
    except KeyError:
        raise SetupError(
            f"unknown process kind {name!r} (known: {', '.join(KINDS)})", process=name
        ) from None


def checkout_root() -> Path | None:
    """The repository root when Orchard runs from a source checkout, else None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "core" / "orchard").is_dir() else None


def _has_packages(python: str, packages: tuple[str, ...]) -> bool:
    """Whether ``packages`` are importable with ``python`` (found, not imported: no torch load)."""
    # Paths are compared unresolved: every virtual environment's python is a
    # link to the same base interpreter, yet each sees its own packages.
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        return all(importlib.util.find_spec(p) is not None for p in packages)
    probe = (
        "import importlib.util, sys; "
        "sys.exit(any(importlib.util.find_spec(p) is None for p in sys.argv[1:]))"
    )
    try:
        done = subprocess.run(
            [python, "-c", probe, *packages], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_python(kind: Kind, python: str | None = None) -> str:
    """The interpreter that runs ``kind`` (see the module docstring for the order).

    ``python``, when given, is the caller's choice: it must be an executable
    file, and is returned without looking for the package (it may be a
    wrapper that sets the package up).
    """
    if python is not None:
        if not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise SetupError(
                f"{kind.name}: interpreter {python!r} is not an executable file", process=kind.name
            )
        return python
    configured = os.environ.get(kind.python_variable)
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            raise SetupError(
                f"{kind.python_variable}={configured!r} is not an executable file",
                process=kind.name,
            )
        if not _has_packages(configured, kind.packages):
            raise SetupError(
                f"{kind.python_variable}={configured} cannot import {' and '.join(kind.packages)}: "
                f"{kind.install_hint}",
                process=kind.name,
            )
        return configured
    if _has_packages(sys.executable, kind.packages):
        return sys.executable
    root = checkout_root()
    if kind.venv is not None and root is not None:
        candidate = root / kind.venv / "bin" / "python"
        if candidate.is_file() and _has_packages(str(candidate), kind.packages):
            return str(candidate)
    where = f" nor in {root / kind.venv}" if kind.venv and root else ""
    raise SetupError(
        f"no {kind.name} here: {' and '.join(kind.packages)} not importable with "
        f"{sys.executable}{where}, "
        f"and {kind.python_variable} is not set; {kind.install_hint}",
        process=kind.name,
    )
