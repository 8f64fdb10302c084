"""Ready-made ``client_fn`` functions: a framework client on a partition, and a null client.

:func:`adapter_client` builds Orchard's generic
:class:`~orchard.client.adapter.AdapterClient` for the framework the node
config names, on the context's partition, exactly as ``python -m
orchard_pytorch client`` would after joining. The dataset is read once per
worker process and shared by every virtual client it creates, so creating a
client per task costs a partition lookup, not a file read.

Node config keys (``[simulation.node_config]``): ``framework`` (pytorch,
mxnet), ``model``, ``dataset``, ``data_dir``, ``download`` (false),
``verify`` (true), ``val_fraction`` (0.1), ``partitioning`` (iid, shards,
dirichlet), ``partitions`` (0: one per client; more splits the data finer
than the clients, e.g. 10 clients on McMahan's 100 shares), ``partition_seed``
(0), ``alpha``, ``shards_per_client`` (2),
``device`` (cpu), ``seed`` (0: initial weights, unused once the server's
parameters arrive), and for FedProx's systems heterogeneity
``straggler_fraction`` (0) and ``drop_stragglers`` (false).

Stragglers follow Li et al. 2020, "Federated Optimization in Heterogeneous
Networks" (MLSys), section 5.2: in each round a fraction of the selected
devices can only do ``x`` local epochs, ``x`` drawn uniformly from
``1..E-1``; FedAvg drops them, FedProx keeps their partial work. Which client
straggles, and how much, is drawn from (seed, round, partition), so it does
not depend on the worker that runs it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from orchard.client.adapter import AdapterClient, FrameworkAdapter
from orchard.client.numpy_client import NumPyClient
from orchard.client.training import ConfigError
from orchard.data.client_data import DataSettings, OfficialSplit, load_split
from orchard.data.partition import PartitionSpec
from orchard.messages import Role
from orchard.simulation.context import SimulationContext
from orchard.typing import Config, Metrics, NDArrays, Scalar

__all__ = ["ADAPTERS", "NullClient", "adapter_client", "null_client"]

#: Framework name -> the adapter class implementing it ("module:Class").
ADAPTERS: dict[str, str] = {
    "pytorch": "orchard_pytorch.client:PyTorchAdapter",
    "mxnet": "orchard_mxnet.client:MXNetAdapter",
}


def _get(cfg: Mapping[str, Scalar], key: str, default: Scalar) -> Any:
    return cfg.get(key, default)


@functools.cache
def _adapter(framework: str, device: str) -> FrameworkAdapter[Any, Any]:
    try:
        ref = ADAPTERS[framework]
    except KeyError:
        raise ConfigError(
            f"node_config framework {framework!r} is not one of {', '.join(ADAPTERS)}"
        ) from None
    module, _, name = ref.partition(":")
    adapter: FrameworkAdapter[Any, Any] = getattr(importlib.import_module(module), name)(device)
    return adapter


@functools.cache
def _split(settings: DataSettings, split: OfficialSplit) -> tuple[np.ndarray, np.ndarray]:
    """A dataset split, read once per worker process."""
    return load_split(settings, split)


@functools.lru_cache(maxsize=4)
def _partitions(spec: PartitionSpec, settings: DataSettings) -> list[np.ndarray]:
    """Every partition's indices, computed once per worker (not once per virtual client)."""
    return spec.partition(_split(settings, "train")[1])


def data_settings(cfg: Mapping[str, Scalar]) -> DataSettings:
    """The node config's dataset settings."""
    return DataSettings(
        dataset=str(_get(cfg, "dataset", "cifar10")),
        data_dir=Path(str(_get(cfg, "data_dir", "data"))),
        download=bool(_get(cfg, "download", False)),
        verify=bool(_get(cfg, "verify", True)),
        val_fraction=float(_get(cfg, "val_fraction", 0.1)),
    )


def partition_spec(cfg: Mapping[str, Scalar], num_partitions: int) -> PartitionSpec:
    """The node config's partitioning of ``num_partitions`` clients."""
    alpha = cfg.get("alpha")
    return PartitionSpec(
        scheme=str(_get(cfg, "partitioning", "iid")),  # type: ignore[arg-type]
        num_partitions=num_partitions,
        seed=int(_get(cfg, "partition_seed", 0)),
        alpha=None if alpha is None else float(alpha),
        shards_per_client=int(_get(cfg, "shards_per_client", 2)),
    )


class _CachedPartition:
    """A :class:`PartitionSpec` stand-in whose ``select`` reads the worker's cache."""

    def __init__(self, spec: PartitionSpec, settings: DataSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.num_partitions = spec.num_partitions

    def select(self, labels: object, partition_id: int) -> np.ndarray:
        return _partitions(self.spec, self.settings)[partition_id]


def adapter_client(context: SimulationContext) -> NumPyClient:
    """The framework client of the context's partition (see the module docs for the keys)."""
    cfg = context.node_config
    framework = str(_get(cfg, "framework", "pytorch"))
    model_id = str(_get(cfg, "model", context.model_spec.model_id))
    adapter = _adapter(framework, str(_get(cfg, "device", "cpu")))
    settings = data_settings(cfg)
    trainer = context.role is Role.TRAINER
    count = int(_get(cfg, "partitions", 0)) or context.num_partitions
    if count < context.num_partitions:
        raise ConfigError(
            f"node_config partitions={count} is below the {context.num_partitions} clients"
        )
    spec = partition_spec(cfg, count) if trainer else None
    preloaded = {"test": _split(settings, "test")}
    if trainer:
        preloaded["train"] = _split(settings, "train")
    data = adapter.client_data(
        settings,
        model_id=model_id,
        partition=_CachedPartition(spec, settings) if spec else None,  # type: ignore[arg-type]
        partition_id=context.partition_id,
        seed=int(_get(cfg, "partition_seed", 0)) + context.partition_id,
        preloaded=preloaded,  # type: ignore[arg-type]
    )
    client = AdapterClient(
        adapter, model_id=model_id, data=data, role=context.role, seed=int(_get(cfg, "seed", 0))
    )
    fraction = float(_get(cfg, "straggler_fraction", 0.0))
    if fraction > 0 and trainer:
        return StragglerClient(
            client,
            partition_id=context.partition_id,
            fraction=fraction,
            drop=bool(_get(cfg, "drop_stragglers", False)),
        )
    return client


class StragglerDroppedError(RuntimeError):
    """A straggler under FedAvg: it cannot finish its epochs, so it sends nothing."""


class StragglerClient(NumPyClient):
    """Li et al. 2020's systems heterogeneity around a client (see the module docs)."""

    def __init__(
        self, inner: NumPyClient, *, partition_id: int, fraction: float, drop: bool
    ) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"straggler_fraction must be in [0, 1], got {fraction}")
        self.inner = inner
        self.partition_id = partition_id
        self.fraction = fraction
        self.drop = drop

    def get_parameters(self, config: Config) -> NDArrays:
        return self.inner.get_parameters(config)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        epochs = int(config.get("epochs", 1))
        seed = int(config.get("seed", 0)) % 2**63
        rng = np.random.default_rng([seed, int(config.get("round", 0)), self.partition_id])
        if rng.random() >= self.fraction:
            return self.inner.fit(parameters, config)
        if epochs < 2:
            raise ConfigError("stragglers do fewer epochs than E: set epochs >= 2")
        if self.drop:
            raise StragglerDroppedError(
                f"straggler: partition {self.partition_id} cannot finish {epochs} epochs "
                "this round and is dropped (FedAvg)"
            )
        partial = int(rng.integers(1, epochs))
        new, n, metrics = self.inner.fit(parameters, {**config, "epochs": partial})
        return new, n, {**metrics, "straggler_epochs": partial}

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        return self.inner.evaluate(parameters, config)


class NullClient(NumPyClient):
    """Trains nothing: returns the parameters it got plus ``delta`` (benchmarks, tests).

    It costs one array addition, so a simulation of null clients measures
    the engine's own overhead per task.
    """

    def __init__(self, delta: float = 0.001, num_examples: int = 1) -> None:
        self.delta = np.float32(delta)
        self.num_examples = num_examples

    def get_parameters(self, config: Config) -> NDArrays:
        return []

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        return [p + self.delta for p in parameters], self.num_examples, {}

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        return 0.0, self.num_examples, {"accuracy": 0.0}


def null_client(context: SimulationContext) -> NumPyClient:
    """A :class:`NullClient` (node config ``delta``, default 0.001)."""
    return NullClient(float(_get(context.node_config, "delta", 0.001)))
