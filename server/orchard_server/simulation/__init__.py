"""Orchard's simulation engine: many virtual clients through the deployment's round loop.

``run_simulation(client_fn, num_clients, federation_config, backend=...)``
and ``orchard-sim --config sim.toml`` run a federation whose clients are
created on demand by ``client_fn(context)`` for each task, in worker
processes (``local``) or Ray actors (``ray``), admitted by the same
:class:`~orchard_server.admission.Admission` as gRPC clients and driven by
the same :class:`~orchard_server.federation.Federation`. See
``docs/simulation.md``.
"""

from orchard.simulation.context import ClientState, SimulationContext
from orchard_server.simulation.backend import (
    Backend,
    LocalBackend,
    WorkerLostError,
    WorkerStartError,
)
from orchard_server.simulation.config import (
    ClientGroup,
    Resources,
    SimulationConfig,
    load_simulation_config,
)
from orchard_server.simulation.pool import SimulationPool
from orchard_server.simulation.run import SimulationResult, make_backend, run_simulation, simulate

__all__ = [
    "Backend",
    "ClientGroup",
    "ClientState",
    "LocalBackend",
    "Resources",
    "SimulationConfig",
    "SimulationContext",
    "SimulationPool",
    "SimulationResult",
    "WorkerLostError",
    "WorkerStartError",
    "load_simulation_config",
    "make_backend",
    "run_simulation",
    "simulate",
]
