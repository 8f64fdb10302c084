"""Start a local federation as processes: a server and clients of any installed kind.

The launcher is what ``make fashion-federation``, ``make bench`` and the
end-to-end tests run on: it starts ``python -m orchard_server`` from a config
file or document, clients of any kind (``pytorch``, ``mxnet`` from its own
environment, the reference ``numpy`` client, the ``echo`` client) each with
its log file, waits with bounds, collects the history and stops everything
it started. It imports no ML framework: each process is an interpreter path
and a module (:mod:`orchard.launch.kinds`). See docs/launcher.md.
"""

from orchard.launch.kinds import CLIENT_KINDS, KINDS, Kind, find_python
from orchard.launch.launcher import (
    ClientOptions,
    Launcher,
    Server,
    config_document,
    free_port,
    read_history,
    write_config,
)
from orchard.launch.process import LaunchError, Process, SetupError, tails

__all__ = [
    "CLIENT_KINDS",
    "KINDS",
    "ClientOptions",
    "Kind",
    "LaunchError",
    "Launcher",
    "Process",
    "Server",
    "SetupError",
    "config_document",
    "find_python",
    "free_port",
    "read_history",
    "tails",
    "write_config",
]
