"""The client half of Orchard's simulation engine: what runs inside a worker.

A simulation's virtual clients are created on demand by a user's
``client_fn(context)`` for each task, inside worker processes that import
only this package (core) and a framework adapter, never the server. The
server half (``orchard_server.simulation``) admits the virtual clients, runs
the real round loop and hands each task to a backend, which sends a
:class:`~orchard.simulation.job.Job` to a worker and gets a
:class:`~orchard.simulation.job.JobResult` back.
"""

from orchard.simulation.context import ClientFn, ClientState, SimulationContext, load_client_fn
from orchard.simulation.job import Job, JobResult, WorkerRuntime

__all__ = [
    "ClientFn",
    "ClientState",
    "Job",
    "JobResult",
    "SimulationContext",
    "WorkerRuntime",
    "load_client_fn",
]
