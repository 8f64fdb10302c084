"""The Ray backend on a tiny local Ray instance: same model as the local backend."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from orchard.messages import FederationState
from orchard_server.simulation import Resources, run_simulation
from tests.server.simulation.conftest import PROBE, small_federation

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray instance kept small (2 CPUs, 200 MB object store), stopped afterwards."""
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.timeout(300)
def test_ray_and_local_backends_give_the_same_model(ray_cluster: None) -> None:
    fed = small_federation(num_rounds=2)
    on_ray = run_simulation(PROBE, 4, fed, backend="ray", resources=Resources(num_cpus=1))
    assert on_ray.state is FederationState.FINISHED, on_ray.reason
    local = run_simulation(PROBE, 4, fed, workers=2)
    for a, b in zip(on_ray.parameters, local.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    metrics = [dict(c.metrics) for c in on_ray.history.rounds[-1].fit.participants]
    assert all(m["fits_before"] == 0 for m in metrics)


@pytest.mark.timeout(300)
def test_ray_drops_a_client_past_its_deadline(ray_cluster: None) -> None:
    fed = small_federation(round_timeout=5.0, min_fit_clients=3, num_rounds=1)
    result = run_simulation(PROBE, 4, fed, backend="ray", node_config={"partition_3": "sleep"})
    assert result.state is FederationState.FINISHED, result.reason
    (reason,) = result.history.rounds[0].fit.dropped.values()
    assert "deadline" in reason
