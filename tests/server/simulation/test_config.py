"""``sim.toml``: the deployment's keys plus a checked ``[simulation]`` table."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchard_server.config import ConfigError
from orchard_server.simulation.config import (
    DEFAULT_CLIENT_FN,
    DEFAULT_WORKER_NICE,
    ClientGroup,
    Resources,
    SimulationConfig,
    load_simulation_config,
)

SIM_TOML = """
[federations.demo]
model = "mnist-mlp"
num_rounds = 2
min_fit_clients = 3
min_available_clients = 3

[simulation]
num_clients = 3
workers = 2
keep_state = true

[simulation.resources]
num_cpus = 1
num_gpus = 0.5

[simulation.node_config]
framework = "pytorch"
dataset = "mnist"
"""


def test_reads_the_federations_and_the_simulation_table(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(SIM_TOML)
    server, sim = load_simulation_config(
        path, overrides=["simulation.num_clients=4", "federations.demo.num_rounds=5"]
    )
    (fed,) = server.federations
    assert fed.name == "demo" and fed.num_rounds == 5
    assert sim.num_clients == 4 and sim.workers == 2 and sim.keep_state
    assert sim.resources == Resources(num_cpus=1.0, num_gpus=0.5)
    assert sim.client_fn == DEFAULT_CLIENT_FN
    assert sim.worker_nice == DEFAULT_WORKER_NICE == 0
    (group,) = sim.client_groups()
    assert group.node_config == {"framework": "pytorch", "dataset": "mnist"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour = 'red'", "unknown key 'colour'"),
        ("backend = 'spark'", "backend must be one of local, ray"),
        ("num_clients = 'ten'", "num_clients must be int"),
        ("worker_nice = 20", "worker_nice must be 0 to 19, got 20"),
        ("worker_nice = -1", "worker_nice must be 0 to 19, got -1"),
        ("worker_nice = true", "worker_nice must be int"),
    ],
)
def test_bad_simulation_keys_are_named(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(SIM_TOML.replace("keep_state = true", f"keep_state = true\n{extra}"))
    if "num_clients = 'ten'" in extra:
        path.write_text(SIM_TOML.replace("num_clients = 3", extra))
    with pytest.raises(ConfigError, match=message):
        load_simulation_config(path)


def test_worker_nice_is_read_from_the_table(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(SIM_TOML.replace("keep_state = true", "keep_state = true\nworker_nice = 4"))
    assert load_simulation_config(path)[1].worker_nice == 4


def test_a_file_without_a_simulation_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(SIM_TOML.split("[simulation]", maxsplit=1)[0])
    with pytest.raises(ConfigError, match=r"no \[simulation\] table"):
        load_simulation_config(path)


def test_groups_must_add_up_and_merge_the_shared_node_config() -> None:
    groups = (
        ClientGroup(client_fn="a:b", num_clients=2, node_config={"framework": "pytorch"}),
        ClientGroup(
            client_fn="a:b", num_clients=3, python="/x/python", node_config={"framework": "mxnet"}
        ),
    )
    sim = SimulationConfig(
        num_clients=5, groups=groups, node_config={"dataset": "mnist"}, workers=4
    )
    merged = sim.client_groups()
    assert [g.node_config for g in merged] == [
        {"dataset": "mnist", "framework": "pytorch"},
        {"dataset": "mnist", "framework": "mxnet"},
    ]
    assert sim.worker_counts() == [2, 2]
    with pytest.raises(ConfigError, match="hold 5 clients, but num_clients is 6"):
        SimulationConfig(num_clients=6, groups=groups)
