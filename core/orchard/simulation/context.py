"""What a virtual client is told when ``client_fn`` creates it, and how ``client_fn`` is found.

A worker process may run in another interpreter (MXNet lives in its own
environment), so ``client_fn`` travels as a reference, ``"package.module:name"``
or ``"path/to/file.py:name"``, and is imported by the worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchard.client.numpy_client import NumPyClient
from orchard.messages import Role
from orchard.spec import ModelSpec
from orchard.typing import NDArray, Scalar

__all__ = ["ClientFn", "ClientState", "SimulationContext", "client_fn_ref", "load_client_fn"]


@dataclass(slots=True)
class ClientState:
    """One virtual client's state kept between its tasks (only when the simulation asks).

    A virtual client is discarded after each task; what it stores here (named
    arrays, e.g. a personalised layer or an optimizer's momentum) is handed
    back to the next client ``client_fn`` builds for the same partition,
    whichever worker runs it.
    """

    arrays: dict[str, NDArray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationContext:
    """What ``client_fn`` gets: which partition the client is and its settings."""

    federation: str
    #: The virtual client's id in the pool (``virtual-7``), for logs.
    client_id: str
    partition_id: int
    num_partitions: int
    model_spec: ModelSpec
    role: Role = Role.TRAINER
    #: The ``[simulation.node_config]`` table: settings every client reads
    #: (framework, dataset, data_dir, partitioning, ...).
    node_config: Mapping[str, Scalar] = field(default_factory=dict)
    #: This client's state store, when the simulation keeps state; else None.
    state: ClientState | None = None


#: Creates the virtual client for one task.
ClientFn = Callable[[SimulationContext], NumPyClient]


class ClientFnError(ValueError):
    """A ``client_fn`` reference cannot be resolved; the message says why."""


def client_fn_ref(fn: ClientFn | str) -> str:
    """The importable reference of ``fn`` (a reference string passes through).

    Functions defined in a script run as ``__main__`` are referred to by the
    script's path, so a worker imports the file as a module (its
    ``if __name__ == "__main__"`` block does not run again).
    """
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        raise ClientFnError(
            f"client_fn {fn!r} must be a module-level function (not a lambda or closure): "
            "worker processes import it by name"
        )
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file is None:
            raise ClientFnError(
                "client_fn is defined in an interactive session; put it in a module or script"
            )
        return f"{Path(main_file).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def load_client_fn(ref: str) -> ClientFn:
    """Import ``"module:name"`` or ``"file.py:name"``; errors name the reference."""
    target, sep, name = ref.partition(":")
    if not sep or not target or not name:
        raise ClientFnError(f"client_fn {ref!r} must look like 'package.module:function'")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(
                f"_orchard_client_fn_{abs(hash(target))}", target
            )
            if spec is None or spec.loader is None:
                raise ClientFnError(f"client_fn {ref!r}: cannot load {target}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except (ImportError, OSError) as exc:
        raise ClientFnError(f"client_fn {ref!r}: cannot import {target}: {exc}") from exc
    obj: object = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ClientFnError(f"client_fn {ref!r}: {target} has no attribute {name!r}")
    if not callable(obj):
        raise ClientFnError(f"client_fn {ref!r} is not callable")
    fn: ClientFn = obj
    return fn
