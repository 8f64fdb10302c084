"""Orchard's aggregation server. It never imports an ML framework.

``python -m orchard_server --config server.toml`` runs it; the names below
are for embedding it (tests, simulations): the round loop (:class:`Federation`)
runs against any :class:`ClientPool`, gRPC-backed in :class:`OrchardServer`,
in-process with :class:`InMemoryClientPool`.
"""

from orchard_server.app import OrchardServer
from orchard_server.config import ConfigError, FederationConfig, ServerConfig, load_config
from orchard_server.federation import EvaluateFn, Federation
from orchard_server.pool import ClientDroppedError, ClientInfo, ClientPool, InMemoryClientPool

__all__ = [
    "ClientDroppedError",
    "ClientInfo",
    "ClientPool",
    "ConfigError",
    "EvaluateFn",
    "Federation",
    "FederationConfig",
    "InMemoryClientPool",
    "OrchardServer",
    "ServerConfig",
    "load_config",
]
