"""The local backend's transport: model arrays through shared memory, the pipe as fallback.

Real worker processes (the driver's interpreter and, where the checkout has
one, the MXNet environment's with NumPy 1.23) run the probe client; the
driver's segments are checked to be gone after the backend closes, after a
worker dies and after the driver itself is killed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from orchard.messages import Role, Task, TaskType
from orchard.simulation import shm
from orchard.simulation.job import Job, JobResult
from orchard.spec import ModelSpec, TensorSpec
from orchard_server.simulation import backend as backend_module
from orchard_server.simulation.backend import LocalBackend, WorkerLostError, WorkerSetup
from orchard_server.simulation.config import ClientGroup
from tests.helpers.memfd import open_segments
from tests.server.simulation.conftest import PROBE

pytestmark = pytest.mark.skipif(bool(shm.available()), reason=shm.available() or "")

_ROOT = Path(__file__).resolve().parents[3]
MXNET_PYTHON = _ROOT / ".venv-mxnet" / "bin" / "python"
SPEC = ModelSpec("probe", (TensorSpec("w", (300, 200)), TensorSpec("b", (200,))))


def _params() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal(t.shape).astype(np.float32) for t in SPEC.tensors]


def _job(partition: int, params: list[np.ndarray], kind: TaskType = TaskType.FIT) -> Job:
    return Job(
        client_id=f"virtual-{partition}",
        partition_id=partition,
        num_partitions=4,
        role=Role.TRAINER,
        task=Task(
            task_id=f"t{partition}",
            type=kind,
            round=1,
            config={"round": 1, "seed": 11},
            timeout=60.0,
            names=tuple(SPEC.names),
            parameters=params,
        ),
    )


def _backend(
    *,
    python: str = "",
    shared: bool = True,
    node_config: dict[str, str] | None = None,
    nice: int = 0,
    workers: int = 1,
) -> LocalBackend:
    group = ClientGroup(
        client_fn=PROBE, num_clients=4, python=python, node_config=dict(node_config or {})
    )
    setup = WorkerSetup(group=group, federation="sim", spec=SPEC, shared_memory=shared, nice=nice)
    return LocalBackend([setup], [workers])


def _expected(params: list[np.ndarray], partition: int) -> list[np.ndarray]:
    """What the probe client returns (its seeded step; see clients.py)."""
    rng = np.random.default_rng([11, partition])
    return [p + np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) * 0.01 for p in params]


async def _run_jobs(
    backend: LocalBackend, partitions: list[int]
) -> list[tuple[str, bool, list[np.ndarray]]]:
    """Each job's error, whether its result was lent from a segment and copies of its arrays.

    Copies: a result's views are released before the next job, as the server does.
    """
    params = _params()
    await backend.start()
    try:
        outs = []
        for p in partitions:
            out = (await backend.run(0, _job(p, params))).result
            lent = backend.workers[0].slots.segments == 1  # one segment, lent to this result
            outs.append((out.error or "", lent, [a.copy() for a in out.parameters]))
            del out
        assert all(w.shared for w in backend.workers) == backend._pools[0].setup.shared_memory
        assert backend.broadcast.segments == (1 if backend.workers[0].shared else 0)
        return outs
    finally:
        await backend.close()


@pytest.mark.parametrize("python", ["", "mxnet"])
@pytest.mark.parametrize("shared", [True, False])
def test_results_are_the_clients_whatever_the_transport(python: str, shared: bool) -> None:
    if python == "mxnet":
        if not MXNET_PYTHON.is_file():
            pytest.skip("no .venv-mxnet in this checkout")
        python = str(MXNET_PYTHON)  # NumPy 1.23 on the worker's side
    before = open_segments()
    outs = asyncio.run(_run_jobs(_backend(python=python, shared=shared), [0, 1, 2]))
    for partition, (error, lent, arrays) in zip([0, 1, 2], outs, strict=True):
        assert error == ""
        assert lent == shared  # through shared memory, the server got views of a segment
        for got, want in zip(arrays, _expected(_params(), partition), strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    gc.collect()
    assert open_segments() - before == set()


@pytest.mark.parametrize("nice", [0, 3])
def test_workers_run_as_much_nicer_than_the_driver_as_set(nice: int) -> None:
    async def priorities() -> list[int]:
        backend = _backend(nice=nice, workers=2)
        await backend.start()
        try:
            return [os.getpriority(os.PRIO_PROCESS, pid) for pid in backend.pids]
        finally:
            await backend.close()

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert asyncio.run(priorities()) == [min(mine + nice, 19)] * 2


def test_a_worker_that_dies_mid_job_leaves_no_segment_behind() -> None:
    before = open_segments()

    async def main() -> None:
        backend = _backend(node_config={"partition_2": "exit"})
        await backend.start()
        try:
            with pytest.raises(WorkerLostError, match="exit code 3"):
                await backend.run(0, _job(2, _params()))
            out = await backend.run(0, _job(1, _params()))  # a fresh worker took its place
            assert not out.result.error and backend.workers[0].shared
        finally:
            await backend.close()

    asyncio.run(main())
    gc.collect()
    assert open_segments() - before == set()


def test_a_server_holding_every_result_gets_more_segments_not_a_stalled_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend_module, "_SLOT_PATIENCE", 0.2)

    async def main() -> list[JobResult]:
        backend = _backend()
        await backend.start()
        try:
            held = [await backend.run(0, _job(p, _params())) for p in range(3)]
            assert backend.workers[0].slots.limit == 3
            return held
        finally:
            await backend.close()

    with caplog.at_level(logging.WARNING, logger="orchard.simulation"):
        held = asyncio.run(main())
    assert "has held all 2 of its results unreleased" in caplog.text
    for partition, out in enumerate(held):  # still intact after the worker stopped
        assert np.array_equal(out.result.parameters[1], _expected(_params(), partition)[1])


def test_a_killed_driver_leaves_no_segment_and_no_worker(tmp_path: Path) -> None:
    """SIGKILL: no cleanup code runs, yet nothing is left in /dev/shm and the workers exit."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(_ROOT)!r})
        from tests.server.simulation import test_local_transport as t

        async def main():
            backend = t._backend()
            await backend.start()
            open({str(pids)!r}, "w").write(" ".join(map(str, backend.pids)))
            params = t._params()
            while True:
                await backend.run(0, t._job(0, params))

        asyncio.run(main())
        """
    )
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    driver = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver exited early"
            time.sleep(0.1)
        time.sleep(0.5)  # jobs in flight, segments in use
        workers = [int(p) for p in pids.read_text().split()]
        assert workers
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in workers if Path(f"/proc/{p}/status").exists()]
    zombies = [p for p in alive if "zombie" in Path(f"/proc/{p}/status").read_text()]
    assert alive == zombies, "workers outlived their driver"
    if os.path.isdir("/dev/shm"):
        assert {n for n in set(os.listdir("/dev/shm")) - shm_before if "orchard" in n} == set()
