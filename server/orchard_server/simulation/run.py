"""Running a simulation: the deployment's round loop over virtual clients.

:func:`run_simulation` is the researcher's function, :func:`simulate` the
coroutine under it (and under ``orchard-sim``). Both build the real
:class:`~orchard_server.federation.Federation` with a
:class:`~orchard_server.simulation.pool.SimulationPool`, so rounds,
sampling, strategies, retries, evaluation, history and checkpoints are the
deployment's code, unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchard.messages import FederationState
from orchard.simulation.context import ClientFn, client_fn_ref
from orchard.typing import Config, NDArrays
from orchard_server.admission import AdmissionPolicy
from orchard_server.config import ConfigError, FederationConfig
from orchard_server.evaluation import EvaluateFn
from orchard_server.federation import Federation
from orchard_server.history import History
from orchard_server.results import ResultPolicy
from orchard_server.simulation.backend import Backend, LocalBackend, WorkerSetup
from orchard_server.simulation.config import Resources, SimulationConfig
from orchard_server.simulation.pool import SimulationPool
from orchard_server.strategy import Strategy

__all__ = ["SimulationResult", "make_backend", "run_simulation", "simulate"]

log = logging.getLogger("orchard.simulation")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    """How a simulation ended, its history and its final global model."""

    state: FederationState
    reason: str
    history: History
    parameters: NDArrays
    #: Where history.json and the checkpoint are (None: a temporary directory, removed).
    directory: Path | None


def make_backend(federation: FederationConfig, simulation: SimulationConfig) -> Backend:
    """The backend ``simulation.backend`` names, with a worker pool per client group."""
    groups = simulation.client_groups()
    spec = federation.model_spec()
    if simulation.backend == "ray":
        from orchard_server.simulation.ray_backend import RayBackend

        if any(g.python for g in groups):
            raise ConfigError(
                "simulation: 'python' (a worker interpreter) applies to the local backend; "
                "Ray actors run the cluster's interpreter"
            )
        setups = [WorkerSetup(group=g, federation=federation.name, spec=spec) for g in groups]
        sizes = [g.workers for g in groups] if all(g.workers for g in groups) else None
        return RayBackend(
            setups,
            sizes,
            resources=simulation.resources,
            address=simulation.ray_address,
            workers=simulation.workers,
        )
    threads = max(1, int(simulation.resources.num_cpus))
    setups = [
        WorkerSetup(
            group=g,
            federation=federation.name,
            spec=spec,
            threads=threads,
            nice=simulation.worker_nice,
        )
        for g in groups
    ]
    return LocalBackend(setups, simulation.worker_counts())


async def simulate(
    federation: FederationConfig,
    simulation: SimulationConfig,
    *,
    state_dir: Path,
    strategy: Strategy | None = None,
    evaluate_fn: EvaluateFn | None = None,
    backend: Backend | None = None,
) -> SimulationResult:
    """Run ``federation`` over ``simulation``'s virtual clients; state goes to ``state_dir``.

    As in a deployment, an existing checkpoint in ``state_dir/NAME`` is resumed.
    """
    groups = simulation.client_groups()
    policy = AdmissionPolicy.from_config(federation)
    backend = backend or make_backend(federation, simulation)
    frameworks = [str(g.node_config.get("framework", "simulation")) for g in groups]
    pool = SimulationPool(
        policy,
        backend,
        group_sizes=[g.num_clients for g in groups],
        frameworks=frameworks,
        keep_state=simulation.keep_state,
        evaluator=simulation.centralized_evaluation,
        results=ResultPolicy.from_config(federation),
    )
    fed = Federation(federation, pool, state_dir, strategy=strategy, evaluate_fn=evaluate_fn)
    await backend.start()
    try:
        log.info(
            "simulation %r: %d virtual clients on the %s backend",
            federation.name,
            simulation.num_clients,
            simulation.backend,
        )
        state = await fed.run()
    finally:
        await backend.close()
    return SimulationResult(
        state=state,
        reason=fed.reason,
        history=fed.history,
        parameters=fed.parameters,
        directory=fed.directory,
    )


def run_simulation(
    client_fn: ClientFn | str,
    num_clients: int,
    federation: FederationConfig,
    *,
    backend: str = "local",
    workers: int = 0,
    node_config: Config | None = None,
    keep_state: bool = False,
    centralized_evaluation: bool = False,
    resources: Resources | None = None,
    ray_address: str = "",
    python: str = "",
    state_dir: Path | None = None,
    strategy: Strategy | None = None,
    evaluate_fn: EvaluateFn | None = None,
) -> SimulationResult:
    """Run a federation of ``num_clients`` virtual clients made by ``client_fn``.

    ``client_fn(context)`` is a module-level function (or its ``"module:name"``
    reference): workers import it. Without ``state_dir`` the history and
    checkpoint go to a temporary directory that is removed afterwards (the
    result still holds the history and the final parameters).
    """
    simulation = SimulationConfig(
        num_clients=num_clients,
        backend=backend,
        workers=workers,
        client_fn=client_fn_ref(client_fn),
        python=python,
        keep_state=keep_state,
        centralized_evaluation=centralized_evaluation,
        ray_address=ray_address,
        resources=resources or Resources(),
        node_config=dict(node_config or {}),
    )
    if state_dir is not None:
        return asyncio.run(
            simulate(
                federation,
                simulation,
                state_dir=state_dir,
                strategy=strategy,
                evaluate_fn=evaluate_fn,
            )
        )
    with tempfile.TemporaryDirectory(prefix="orchard-sim-") as tmp:
        result = asyncio.run(
            simulate(
                federation,
                simulation,
                state_dir=Path(tmp),
                strategy=strategy,
                evaluate_fn=evaluate_fn,
            )
        )
    return dataclasses.replace(result, directory=None)
