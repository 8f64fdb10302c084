"""The adapters the contract suite runs against: those importable in this environment.

Each framework lives in its own virtual environment (PyTorch in ``.venv``,
MXNet in ``.venv-mxnet``), so every adapter is a parameter of the suite and
the ones whose framework is not installed here are skipped with the reason;
``make test-main`` and ``make test-mxnet`` together run the suite against
both. A new adapter is one more line in :data:`ADAPTERS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from orchard.client.adapter import FrameworkAdapter
from tests.helpers.client_data import GeneratedMnist, cached_mnist

__all__ = ["ADAPTERS", "AdapterFactory", "AdapterSource", "adapter", "adapter_type", "digits"]

#: Builds an adapter for a ``--device`` value.
AdapterFactory = Callable[[str], FrameworkAdapter[Any, Any]]


class AdapterSource(NamedTuple):
    """Where an adapter class lives and which environment has its framework."""

    framework: str
    module: str
    name: str
    environment: str


#: Every framework adapter of the repository.
ADAPTERS: tuple[AdapterSource, ...] = (
    AdapterSource("pytorch", "orchard_pytorch.client", "PyTorchAdapter", ".venv (make test-main)"),
    AdapterSource("mxnet", "orchard_mxnet.client", "MXNetAdapter", ".venv-mxnet (make test-mxnet)"),
)


def _params() -> list[Any]:
    params = []
    for source in ADAPTERS:
        try:
            module = importlib.import_module(source.module)
        except ImportError as exc:
            reason = (
                f"the {source.framework} adapter is not importable here ({exc}); "
                f"its contract runs in {source.environment}"
            )
            params.append(pytest.param(None, id=source.framework, marks=pytest.mark.skip(reason)))
            continue
        params.append(pytest.param(getattr(module, source.name), id=source.framework))
    return params


@pytest.fixture(params=_params())
def adapter_type(request: pytest.FixtureRequest) -> AdapterFactory:
    """The adapter class (called with a device, it gives an adapter)."""
    factory: AdapterFactory = request.param
    return factory


@pytest.fixture
def adapter(adapter_type: AdapterFactory) -> FrameworkAdapter[Any, Any]:
    """The adapter on the CPU."""
    return adapter_type("cpu")


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> GeneratedMnist:
    """Learnable MNIST-format files (200 training, 50 test images), in a cache directory."""
    root: Path = tmp_path_factory.mktemp("contract-digits")
    return cached_mnist(root)
