"""Ready-made client functions and ``client_fn`` references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from orchard.client.training import ConfigError
from orchard.messages import Role, Task, TaskType
from orchard.models import MNIST_MLP
from orchard.simulation import Job, SimulationContext, WorkerRuntime, load_client_fn
from orchard.simulation.clients import NullClient, StragglerClient, null_client
from orchard.simulation.context import ClientFnError, client_fn_ref
from orchard.typing import Config, Metrics, NDArrays


class _Recorder(NullClient):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        self.epochs.append(int(config["epochs"]))
        return super().fit(parameters, config)


def test_null_client_adds_its_delta() -> None:
    new, n, _ = NullClient(0.5).fit([np.zeros(2, dtype=np.float32)], {})
    assert new[0].dtype == np.float32 and np.array_equal(new[0], [0.5, 0.5]) and n == 1


def test_stragglers_are_drawn_from_seed_round_and_partition() -> None:
    def epochs(partition: int, rnd: int) -> int:
        inner = _Recorder()
        client = StragglerClient(inner, partition_id=partition, fraction=0.5, drop=False)
        client.fit([], {"epochs": 5, "seed": 7, "round": rnd})
        return inner.epochs[0]

    draws = [epochs(p, r) for p in range(20) for r in (1, 2)]
    assert draws == [epochs(p, r) for p in range(20) for r in (1, 2)]
    assert 5 in draws and any(1 <= d < 5 for d in draws)


def test_fedavg_drops_a_straggler_and_one_epoch_cannot_straggle() -> None:
    dropper = StragglerClient(_Recorder(), partition_id=0, fraction=1.0, drop=True)
    with pytest.raises(RuntimeError, match="dropped"):
        dropper.fit([], {"epochs": 3, "seed": 0, "round": 1})
    with pytest.raises(ConfigError, match="epochs >= 2"):
        dropper.fit([], {"epochs": 1, "seed": 0, "round": 1})


def test_client_fn_references() -> None:
    assert client_fn_ref(null_client) == "orchard.simulation.clients:null_client"
    assert load_client_fn("orchard.simulation.clients:null_client") is null_client
    with pytest.raises(ClientFnError, match="no attribute"):
        load_client_fn("orchard.simulation.clients:nothing")
    with pytest.raises(ClientFnError, match="cannot import"):
        load_client_fn("no_such_module_xyz:fn")
    with pytest.raises(ClientFnError, match="module-level"):
        client_fn_ref(lambda ctx: null_client(ctx))  # noqa: PLW0108


def test_a_client_fn_in_a_script_file_is_loaded_by_path(tmp_path: Path) -> None:
    script = tmp_path / "my_sim.py"
    script.write_text(
        "from orchard.simulation.clients import NullClient\n"
        "def make(ctx):\n    return NullClient(ctx.partition_id)\n"
        "if __name__ == '__main__':\n    raise SystemExit('must not run')\n"
    )
    fn = load_client_fn(f"{script}:make")
    ctx = SimulationContext(
        federation="f", client_id="c", partition_id=2, num_partitions=3, model_spec=MNIST_MLP
    )
    assert fn(ctx).fit([np.zeros(1)], {})[0][0][0] == 2


def test_the_worker_runtime_reports_a_failing_client_fn_as_a_failed_result() -> None:
    runtime = WorkerRuntime(
        "orchard.simulation.clients:adapter_client",
        federation="f",
        model_spec=MNIST_MLP,
        node_config={"framework": "tensorflow"},
    )
    task = Task(
        task_id="t", type=TaskType.FIT, round=1, config={}, timeout=1.0, names=(), parameters=[]
    )
    out = runtime.run(
        Job(client_id="c", partition_id=0, num_partitions=1, role=Role.TRAINER, task=task)
    )
    assert "client_fn failed" in out.result.error and "tensorflow" in out.result.error


def _fit_job(parameters: NDArrays) -> Job:
    task = Task(
        task_id="t",
        type=TaskType.FIT,
        round=1,
        config={},
        timeout=1.0,
        names=tuple(MNIST_MLP.names),
        parameters=parameters,
    )
    return Job(client_id="c", partition_id=0, num_partitions=1, role=Role.TRAINER, task=task)


@pytest.mark.parametrize(
    ("delta", "checked"), [(0.5, True), (float("nan"), False), (float("inf"), False)]
)
def test_the_worker_runtime_says_whether_a_result_passed_the_spec(
    delta: float, checked: bool
) -> None:
    runtime = WorkerRuntime(
        null_client, federation="f", model_spec=MNIST_MLP, node_config={"delta": delta}
    )
    zeros = [np.zeros(t.shape, dtype=t.dtype) for t in MNIST_MLP.tensors]
    out = runtime.run(_fit_job(zeros))
    assert out.result.error == "" and len(out.result.parameters) == len(zeros)
    assert out.checked is checked
    # A result of the wrong layout is not vouched for either (the driver names the problem).
    assert runtime.run(_fit_job(zeros[:-1])).checked is False
    evaluation = dataclasses.replace(_fit_job(zeros).task, type=TaskType.EVALUATE)
    job = dataclasses.replace(_fit_job(zeros), task=evaluation)
    assert runtime.run(job).checked is False  # no parameters to vouch for
