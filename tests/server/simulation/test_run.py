"""The engine on small settings, local backend: per-task clients, state, admission, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchard.messages import FederationState
from orchard.simulation.clients import null_client
from orchard_server.admission import AdmissionError, Refusal
from orchard_server.simulation import run_simulation
from tests.server.simulation.conftest import PROBE, small_federation


def _fit_metrics(result_history: Any, rnd: int) -> list[dict[str, Any]]:
    record = result_history.rounds[rnd - 1]
    return [dict(c.metrics) for c in record.fit.participants]


def test_every_task_gets_a_fresh_client_and_no_state_unless_asked() -> None:
    result = run_simulation(PROBE, 4, small_federation(), workers=2)
    assert result.state is FederationState.FINISHED, result.reason
    for rnd in (1, 2):
        metrics = _fit_metrics(result.history, rnd)
        assert len(metrics) == 4
        assert all(m["fits_before"] == 0 for m in metrics)
        assert all(m["state"] == -1 for m in metrics)
    pids = {m["pid"] for rnd in (1, 2) for m in _fit_metrics(result.history, rnd)}
    assert len(pids) <= 2  # memory is bounded by the workers, not the clients


def test_keep_state_hands_each_client_its_own_store(tmp_path: Path) -> None:
    result = run_simulation(
        PROBE, 4, small_federation(num_rounds=3), workers=2, keep_state=True, state_dir=tmp_path
    )
    assert result.state is FederationState.FINISHED, result.reason
    assert sorted(m["state"] for m in _fit_metrics(result.history, 3)) == [3, 3, 3, 3]
    assert (tmp_path / "sim" / "history.json").is_file()


def test_same_model_whatever_the_number_of_workers() -> None:
    one = run_simulation(PROBE, 4, small_federation(), workers=1)
    two = run_simulation(PROBE, 4, small_federation(), workers=3)
    for a, b in zip(one.parameters, two.parameters, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(
        one.parameters[0],
        run_simulation(PROBE, 4, small_federation(seed=8), workers=1).parameters[0],
    )


def test_admission_refuses_more_clients_than_the_federation_holds() -> None:
    with pytest.raises(AdmissionError) as info:
        run_simulation(PROBE, 5, small_federation(max_clients=4), workers=1)
    assert info.value.kind is Refusal.FULL
    assert "max_clients=4" in str(info.value)


def test_virtual_clients_carry_the_federation_token() -> None:
    result = run_simulation(PROBE, 4, small_federation(auth_token="s3cret"), workers=1)
    assert result.state is FederationState.FINISHED, result.reason


def test_a_client_past_its_deadline_is_dropped_and_its_worker_replaced() -> None:
    fed = small_federation(round_timeout=3.0, min_fit_clients=3, num_rounds=2)
    result = run_simulation(PROBE, 4, fed, workers=2, node_config={"partition_0": "sleep"})
    assert result.state is FederationState.FINISHED, result.reason
    for record in result.history.rounds:
        assert len(record.fit.participants) == 3
        (reason,) = record.fit.dropped.values()
        assert "deadline" in reason


def test_failing_and_crashing_clients_are_dropped_like_deployed_ones() -> None:
    fed = small_federation(min_fit_clients=2, num_rounds=2, fraction_evaluate=1.0)
    result = run_simulation(
        PROBE, 4, fed, workers=2, node_config={"partition_1": "raise", "partition_2": "exit"}
    )
    assert result.state is FederationState.FINISHED, result.reason
    first, second = result.history.rounds
    reasons = " | ".join(first.fit.dropped.values())
    assert "task failed on the client: RuntimeError: this client always fails" in reasons
    assert "died with exit code 3" in reasons
    # The crashed worker was replaced: round 2 has only the always-failing client missing.
    assert len(second.fit.participants) == 3


def test_a_virtual_clients_nan_update_is_refused_as_a_deployed_ones() -> None:
    # The worker's scan finds it and leaves the verdict to the driver's full check.
    fed = small_federation(min_fit_clients=3, num_rounds=1)
    result = run_simulation(PROBE, 4, fed, workers=2, node_config={"partition_3": "nan"})
    assert result.state is FederationState.FINISHED, result.reason
    (record,) = result.history.rounds
    assert len(record.fit.participants) == 3
    ((name, reason),) = record.fit.dropped.items()
    assert "virtual-3" in name
    assert reason.startswith("update rejected: tensor ") and "1 of" in reason
    assert reason.endswith("values are NaN or infinite")
    assert all(np.isfinite(p).all() for p in result.parameters)


def test_a_client_fn_that_is_not_importable_is_refused_early() -> None:
    from orchard.simulation.context import ClientFnError

    with pytest.raises(ClientFnError, match="module-level"):
        run_simulation(lambda ctx: null_client(ctx), 4, small_federation())  # noqa: PLW0108


def test_null_clients_over_a_registered_model() -> None:
    fed = small_federation(tensors=(), model="mnist-mlp", num_rounds=1, evaluate_every=0)
    result = run_simulation(null_client, 4, fed, workers=2, node_config={"delta": 0.5})
    assert result.state is FederationState.FINISHED, result.reason
    init = run_simulation(null_client, 4, fed, workers=1, node_config={"delta": 0.0})
    np.testing.assert_allclose(result.parameters[0], init.parameters[0] + 0.5, rtol=1e-6)
