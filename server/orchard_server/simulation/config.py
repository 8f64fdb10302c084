"""The ``[simulation]`` table of a simulation config, and reading a whole ``sim.toml``.

A simulation config is a deployment config (``[server]``, ``[federations.NAME]``,
the same keys, checked the same way) plus one ``[simulation]`` table::

    [simulation]
    num_clients = 100
    backend = "local"            # or "ray"
    workers = 0                  # 0: one per core (local), or per CPU of the cluster (ray)
    client_fn = "orchard.simulation.clients:adapter_client"
    python = ""                  # interpreter of the local workers ("": this one)
    worker_nice = 0              # local workers run this much nicer than the driver (0 to 19)
    keep_state = false           # keep each client's state store between its tasks
    centralized_evaluation = false
    ray_address = ""             # "": start a local Ray instance; "auto" or "ray://host:10001"
    [simulation.resources]       # per virtual client (Ray schedules by them)
    num_cpus = 1
    num_gpus = 0
    [simulation.node_config]     # what every client_fn reads
    framework = "pytorch"
    dataset = "cifar10"

A mixed simulation lists ``[[simulation.groups]]``, each with its own
``client_fn``, ``python``, ``workers``, ``num_clients`` and ``node_config``
(merged over the shared one); the groups' clients add up to ``num_clients``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from orchard.typing import Config
from orchard_server.config import ConfigError, ServerConfig, config_from_data

__all__ = [
    "BACKENDS",
    "DEFAULT_CLIENT_FN",
    "DEFAULT_WORKER_NICE",
    "ClientGroup",
    "Resources",
    "SimulationConfig",
    "load_simulation_config",
]

#: The backends a simulation can run on.
BACKENDS: Final = ("local", "ray")

#: The framework client on a partition (``orchard.simulation.clients``).
DEFAULT_CLIENT_FN: Final = "orchard.simulation.clients:adapter_client"

#: The local workers' ``nice`` above the driver's (0: the same priority). The
#: driver (round loop, fan-out, the check of every result) is one process
#: every job passes through, the workers are many: where it also does
#: per-update work, the driver going first when the cores are contended keeps
#: every worker fed. 100 null MNIST CNN clients on 2 workers and 2 cores, while
#: the driver folded every update: 0.241 to 0.279 s a round with 5 and 10,
#: against 0.271 to 0.316 s with 0. Since the workers fold FedAvg's updates
#: themselves, 5 and 0 measure the same there (0.184 to 0.252 s against 0.199
#: to 0.276 s), so the default stays 0: on a shared machine, nicer workers
#: also yield to everyone else's processes. (docs/simulation.md, "The sixth
#: VM again".)
DEFAULT_WORKER_NICE: Final = 0
#: The most ``nice`` adds on Linux (priority 19 is the lowest).
MAX_WORKER_NICE: Final = 19


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What one virtual client needs while it runs (Ray schedules its actors by it)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus <= 0:
            raise ConfigError(f"simulation.resources.num_cpus must be > 0, got {self.num_cpus}")
        if self.num_gpus < 0:
            raise ConfigError(f"simulation.resources.num_gpus must be >= 0, got {self.num_gpus}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientGroup:
    """Virtual clients created by one ``client_fn`` in workers of one interpreter."""

    client_fn: str
    num_clients: int
    #: Interpreter of this group's local workers ("": the driver's).
    python: str = ""
    #: Worker processes or actors of this group (0: the simulation's default).
    workers: int = 0
    node_config: Config = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ConfigError(f"a client group needs num_clients >= 1, got {self.num_clients}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if ":" not in self.client_fn:
            raise ConfigError(
                f"client_fn {self.client_fn!r} must look like 'package.module:function'"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """How many virtual clients, created by what, run where."""

    num_clients: int
    backend: str = "local"
    #: Worker processes (local) or actors (ray) in all; 0: one per core or cluster CPU.
    workers: int = 0
    client_fn: str = DEFAULT_CLIENT_FN
    python: str = ""
    keep_state: bool = False
    #: How much lower the local workers' CPU priority is than the driver's (``nice``).
    worker_nice: int = DEFAULT_WORKER_NICE
    #: Add a virtual evaluator holding the test set (centralized evaluation each round).
    centralized_evaluation: bool = False
    ray_address: str = ""
    resources: Resources = field(default_factory=Resources)
    node_config: Config = field(default_factory=dict)
    groups: tuple[ClientGroup, ...] = ()

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ConfigError(f"simulation.num_clients must be >= 1, got {self.num_clients}")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"simulation.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.workers < 0:
            raise ConfigError(f"simulation.workers must be >= 0, got {self.workers}")
        if not 0 <= self.worker_nice <= MAX_WORKER_NICE:
            raise ConfigError(
                f"simulation.worker_nice must be 0 to {MAX_WORKER_NICE}, got {self.worker_nice}"
            )
        if self.groups and sum(g.num_clients for g in self.groups) != self.num_clients:
            raise ConfigError(
                f"simulation.groups hold {sum(g.num_clients for g in self.groups)} clients, "
                f"but num_clients is {self.num_clients}"
            )
        if self.ray_address and self.backend != "ray":
            raise ConfigError("simulation.ray_address is set but the backend is not 'ray'")

    def client_groups(self) -> tuple[ClientGroup, ...]:
        """The groups, with shared settings filled in (one group when none are listed)."""
        if not self.groups:
            return (
                ClientGroup(
                    client_fn=self.client_fn,
                    num_clients=self.num_clients,
                    python=self.python,
                    workers=self.workers,
                    node_config=dict(self.node_config),
                ),
            )
        return tuple(
            ClientGroup(
                client_fn=g.client_fn,
                num_clients=g.num_clients,
                python=g.python,
                workers=g.workers,
                node_config={**self.node_config, **g.node_config},
            )
            for g in self.groups
        )

    def worker_counts(self, available: int | None = None) -> list[int]:
        """Workers per group: as set, else the default spread over the groups (at least one)."""
        groups = self.client_groups()
        total = self.workers or available or os.cpu_count() or 1
        share = max(1, total // len(groups))
        return [min(g.workers or share, g.num_clients + 1) for g in groups]


_SIM_KEYS: Final = {
    "num_clients": int,
    "backend": str,
    "workers": int,
    "client_fn": str,
    "python": str,
    "keep_state": bool,
    "worker_nice": int,
    "centralized_evaluation": bool,
    "ray_address": str,
}


def _check(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key} must be {kind.__name__}, got {value!r}")
    return value


def _scalars(where: str, table: Any) -> Config:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key, value in table.items():
        if not isinstance(value, bool | int | float | str):
            raise ConfigError(f"{where}.{key} must be a number, boolean or string")
    return dict(table)


def simulation_from_table(table: Mapping[str, Any]) -> SimulationConfig:
    """The :class:`SimulationConfig` of a ``[simulation]`` table; unknown keys are errors."""
    where = "simulation"
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in _SIM_KEYS:
            out[key] = _check(where, key, value, _SIM_KEYS[key])
        elif key == "resources":
            if not isinstance(value, dict) or set(value) - {"num_cpus", "num_gpus"}:
                raise ConfigError(f"{where}.resources takes num_cpus and num_gpus only")
            out[key] = Resources(
                **{k: _check(f"{where}.resources", k, v, float) for k, v in value.items()}
            )
        elif key == "node_config":
            out[key] = _scalars(f"{where}.node_config", value)
        elif key == "groups":
            if not isinstance(value, list):
                raise ConfigError(
                    f"{where}.groups must be an array of tables [[simulation.groups]]"
                )
            out[key] = tuple(_group(f"{where}.groups[{i}]", g) for i, g in enumerate(value))
        else:
            known = sorted([*_SIM_KEYS, "resources", "node_config", "groups"])
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
    if "num_clients" not in out:
        raise ConfigError(f"{where}.num_clients is required")
    return SimulationConfig(**out)


def _group(where: str, table: Any) -> ClientGroup:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    kinds = {"client_fn": str, "num_clients": int, "python": str, "workers": int}
    out: dict[str, Any] = {"client_fn": DEFAULT_CLIENT_FN}
    for key, value in table.items():
        if key in kinds:
            out[key] = _check(where, key, value, kinds[key])
        elif key == "node_config":
            out[key] = _scalars(f"{where}.node_config", value)
        else:
            raise ConfigError(
                f"{where}: unknown key {key!r} (known: {', '.join([*kinds, 'node_config'])})"
            )
    if "num_clients" not in out:
        raise ConfigError(f"{where}.num_clients is required")
    return ClientGroup(**out)


def load_simulation_config(
    path: Path, *, overrides: Sequence[str] = ()
) -> tuple[ServerConfig, SimulationConfig]:
    """Read a ``sim.toml``: the deployment config and its ``[simulation]`` table.

    ``--set`` overrides reach both (``simulation.num_clients=20``,
    ``federations.NAME.num_rounds=3``). A simulation opens no port, so the
    server table's TLS settings are not required.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    sim_table = dict(data.pop("simulation", {}) or {})
    rest: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if key.strip().startswith("simulation."):
            if not sep:
                raise ConfigError(f"override {item!r} must look like key.path=value")
            node: dict[str, Any] = sim_table
            parts = key.strip().split(".")[1:]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = _parse(value.strip())
        else:
            rest.append(item)
    if not sim_table:
        raise ConfigError(f"config file {path} has no [simulation] table")
    server = dict(data.get("server", {}))
    server.setdefault("insecure", True)  # nothing is served
    data["server"] = server
    config = config_from_data(data, overrides=rest, environ={})
    return config, simulation_from_table(sim_table)


def _parse(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
