"""Start a server and clients of any kind as processes; wait with bounds; stop them all.

:class:`Launcher` is a context manager: whatever it started is stopped when
the ``with`` block ends, also on an exception or a Ctrl-C. Each process logs
to ``RUN_DIR/<name>.log``; every error is a :class:`LaunchError` naming the
process at fault and showing the log tails.

    with Launcher(Path("runs/demo")) as launcher:
        server = launcher.start_server({"federations": {"blobs": {...}}})
        for i in range(3):
            launcher.start_client("numpy", ClientOptions(federation="blobs", name=f"c{i}"))
        histories = launcher.wait(timeout=300)
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    # Any dataclass instance: core cannot import orchard_server.ServerConfig.
    from _typeshed import DataclassInstance

from orchard.launch.kinds import CLIENT_KINDS, find_python, get_kind
from orchard.launch.process import LaunchError, Process, SetupError, tails

__all__ = [
    "ClientOptions",
    "Launcher",
    "Server",
    "config_document",
    "free_port",
    "read_history",
    "write_config",
]

#: How often waits look again.
_POLL_S = 0.2
#: The health check's channel tries to connect every 50 ms while its call
#: waits for a connection. gRPC's own reconnect backoff (1 s, growing 1.6
#: times per failure) made start_server return 0.4 to 2.2 s after the server
#: was serving, long enough for a fast federation to run dozens of rounds
#: unseen; a channel of its own (a local subchannel pool) shares no backoff
#: with other channels to the same address.
_HEALTH_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 50),
    ("grpc.use_local_subchannel_pool", 1),
)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_ready(value: Any) -> Any:
    """Paths as strings, tuples as lists: what a TOML writer accepts."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _toml_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_toml_ready(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A config value as TOML data: dataclasses as tables, tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_document(config: DataclassInstance) -> dict[str, Any]:
    """The TOML document of a server config object (``orchard_server.ServerConfig``).

    The file format is ``[server]`` (every field but ``federations``) and one
    ``[federations.NAME]`` table per federation (every field but ``name``);
    unset (``None``) fields are left out, so the server applies its defaults.
    Works from the dataclass's fields, so the launcher needs no server import.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise SetupError(f"not a server config object: {config!r}")
    table = _plain(config)
    federations = table.pop("federations", [])
    return {
        "server": table,
        "federations": {fed.pop("name"): fed for fed in federations},
    }


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    """Write a server config (``{"server": {...}, "federations": {NAME: {...}}}``) as TOML.

    Written by tomli-w, so any string, nested table or list is quoted
    correctly; ``None`` has no TOML form and is refused, naming the key.
    """
    try:
        text = tomli_w.dumps(_toml_ready(document))
    except TypeError as exc:
        raise SetupError(f"cannot write {path} as TOML: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read_history(state_dir: Path, federation: str) -> dict[str, Any]:
    """The history the server wrote for ``federation`` (``STATE_DIR/NAME/history.json``)."""
    path = state_dir / federation / "history.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise LaunchError(
            f"no history for federation {federation!r}: {path} does not exist"
        ) from None
    return data


@dataclass(frozen=True, kw_only=True)
class Server:
    """A server the launcher started: its process, where it listens, where its state goes."""

    process: Process
    #: host:port clients connect to (loopback when it listens on every interface).
    address: str
    state_dir: Path
    config: Path
    federations: tuple[str, ...]
    insecure: bool

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.address.rpartition(":")[2])

    def history(self, federation: str) -> dict[str, Any]:
        """The history it wrote for ``federation``."""
        return read_history(self.state_dir, federation)


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How to start one client: the shared client options plus the framework's own.

    Every kind takes the federation options; ``model``, ``dataset``,
    ``device`` and ``no_verify`` are for the framework kinds (``pytorch``,
    ``mxnet``). ``args`` are passed through unchanged (any option of the
    client's command line); ``env`` adds environment variables.
    """

    federation: str
    name: str
    #: host:port; None means the server this launcher started.
    server: str | None = None
    #: Plain text; None means "as the launched server" (plain text when it is).
    insecure: bool | None = None
    ca_cert: Path | None = None
    partition_id: int | None = None
    num_partitions: int | None = None
    seed: int | None = None
    connect_timeout: float = 60.0
    data_dir: Path | None = None
    model: str | None = None
    dataset: str | None = None
    device: str | None = None
    no_verify: bool = False
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def framework_options(self) -> dict[str, object]:
        """The framework-only options that are set (a non-framework kind refuses them)."""
        values = {
            "model": self.model,
            "dataset": self.dataset,
            "device": self.device,
            "no_verify": self.no_verify or None,
        }
        return {k: v for k, v in values.items() if v is not None}


class Launcher:
    """Starts processes, waits for them with bounds, and stops every one it started."""

    def __init__(self, run_dir: Path, *, stop_timeout: float = 10.0) -> None:
        """``run_dir`` receives the logs (``<name>.log``), written configs and, by default,
        the server's state; ``stop_timeout`` bounds each SIGTERM before SIGKILL."""
        self.run_dir = run_dir.resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stop_timeout = stop_timeout
        self.processes: list[Process] = []
        self.clients: list[Process] = []
        self.server: Server | None = None
        self._servers: list[Process] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- starting ------------------------------------------------------------------

    def start_process(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        """Start any command as ``name``, logging to ``RUN_DIR/<name>.log``.

        It is stopped by :meth:`stop` like every other process started here.
        """
        if any(p.name == name for p in self.processes):
            raise SetupError(f"a process named {name!r} was already started", process=name)
        proc = Process(name, argv, log=self.run_dir / f"{name}.log", env=env, cwd=cwd)
        self.processes.append(proc)
        return proc

    def start_server(
        self,
        config: Path | Mapping[str, Any] | DataclassInstance,
        *,
        name: str = "server",
        linger: float = 1.0,
        health_timeout: float = 60.0,
        ca_cert: Path | None = None,
        python: str | None = None,
        args: Sequence[str] = (),
    ) -> Server:
        """Start ``python -m orchard_server`` and wait (at most ``health_timeout`` s) until
        its gRPC health service says SERVING.

        ``config`` is a TOML file, the document itself or an
        ``orchard_server.ServerConfig`` (:func:`config_document`); the last
        two are written to ``RUN_DIR/<name>.toml``. Without ``server.address``
        the server gets a free loopback port (and, for a document naming neither TLS files nor
        ``insecure``, plain text: it is reachable from this machine only);
        without ``server.state_dir`` it keeps its state in ``RUN_DIR/state``.
        A TLS server is checked over TLS with ``ca_cert``. ``linger`` is how
        long it serves after its last federation ended; ``python`` overrides
        the interpreter.
        """
        from_file = isinstance(config, Path)
        if isinstance(config, Path):
            path = config.resolve()
            try:
                document = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SetupError(
                    f"cannot read server config {config}: {exc}", process=name
                ) from None
        elif isinstance(config, Mapping):
            document = dict(config)
            path = self.run_dir / f"{name}.toml"
        else:
            document = config_document(config)
            path = self.run_dir / f"{name}.toml"
        table: Mapping[str, Any] = document.get("server", {})
        address = str(table.get("address") or f"127.0.0.1:{free_port()}")
        state_dir = Path(table.get("state_dir") or self.run_dir / "state").resolve()
        insecure = bool(table.get("insecure", False))
        if from_file:
            overrides = ["--address", address, "--state-dir", str(state_dir)]
        else:
            server_table = {**table, "address": address, "state_dir": state_dir}
            if "address" not in table and "insecure" not in table and "tls_cert" not in table:
                # A loopback-only server the launcher placed itself: plain text.
                insecure = server_table["insecure"] = True
            write_config(path, {**document, "server": server_table})
            overrides = []
        if not insecure and ca_cert is None:
            raise SetupError(
                f"{name} serves TLS: pass ca_cert (the CA that signed its certificate) "
                "so the launcher can check its health",
                process=name,
            )
        interpreter = find_python(get_kind("server"), python)
        argv = [interpreter, "-m", "orchard_server", "--config", str(path)]
        argv += ["--linger", f"{linger:g}", *overrides, *args]
        proc = self.start_process(name, argv)
        self._servers.append(proc)
        host, _, port = address.rpartition(":")
        connect = f"127.0.0.1:{port}" if host in ("", "0.0.0.0", "[::]", "::") else address
        server = Server(
            process=proc,
            address=connect,
            state_dir=state_dir,
            config=path,
            federations=tuple(document.get("federations", {})),
            insecure=insecure,
        )
        self.server = server
        self._wait_healthy(server, health_timeout, ca_cert)
        return server

    def _wait_healthy(self, server: Server, timeout: float, ca_cert: Path | None) -> None:
        proc = server.process
        if server.insecure:
            channel = grpc.insecure_channel(server.address, options=_HEALTH_CHANNEL_OPTIONS)
        else:
            assert ca_cert is not None  # checked by start_server
            credentials = grpc.ssl_channel_credentials(root_certificates=ca_cert.read_bytes())
            channel = grpc.secure_channel(
                server.address, credentials, options=_HEALTH_CHANNEL_OPTIONS
            )
        deadline = time.monotonic() + timeout
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if proc.returncode is not None:
                    raise LaunchError(
                        f"{proc.name} exited with status {proc.returncode} before serving",
                        process=proc.name,
                        logs=proc.tail(),
                    )
                try:
                    # Waits (up to 1 s, then the loop looks at the process again) for a
                    # connection, and answers as soon as there is one; the 1 s also bounds
                    # the answer of a server too busy to reply at once, as before.
                    reply = stub.Check(
                        health_pb2.HealthCheckRequest(service=""),
                        timeout=1.0,
                        wait_for_ready=True,
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError as exc:
                    if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue  # the call has waited already
                time.sleep(_POLL_S)
        raise LaunchError(
            f"{proc.name} not healthy after {timeout:g} s (gRPC health on {server.address})",
            process=proc.name,
            logs=proc.tail(),
        )

    def start_client(
        self,
        kind: str,
        options: ClientOptions,
        *,
        python: str | None = None,
        module: Sequence[str] | None = None,
    ) -> Process:
        """Start a client of ``kind`` (``pytorch``, ``mxnet``, ``numpy``, ``echo``).

        Runs ``python -m <module> [client] <options>`` with the kind's
        interpreter (``python`` overrides it). ``module`` replaces
        ``-m <module> [client]``'s module part, e.g. with a wrapper that
        prepares something and then runs the client's command line.
        """
        spec = get_kind(kind)
        if kind not in CLIENT_KINDS:
            raise SetupError(
                f"{kind!r} is not a client kind (known: {', '.join(CLIENT_KINDS)})", process=kind
            )
        framework_only = options.framework_options()
        if framework_only and not spec.framework:
            raise SetupError(
                f"client {options.name!r}: the {kind} client takes no "
                f"{', '.join(sorted(framework_only))} option",
                process=options.name,
            )
        interpreter = find_python(spec, python)
        head = list(module) if module is not None else [spec.module]
        argv = [interpreter, "-m", *head, *spec.command, *self._client_args(options)]
        proc = self.start_process(options.name, argv, env=options.env)
        self.clients.append(proc)
        return proc

    def _client_args(self, options: ClientOptions) -> list[str]:
        address = options.server
        insecure = options.insecure
        if address is None or insecure is None:
            if self.server is None:
                raise SetupError(
                    f"client {options.name!r}: no server started here; set its server "
                    "address and insecure",
                    process=options.name,
                )
            address = address or self.server.address
            insecure = self.server.insecure if insecure is None else insecure
        args = ["--server", address, "--federation", options.federation, "--name", options.name]
        args += ["--connect-timeout", f"{options.connect_timeout:g}"]
        if insecure:
            args.append("--insecure")
        optional: tuple[tuple[str, object], ...] = (
            ("--ca-cert", options.ca_cert),
            ("--partition-id", options.partition_id),
            ("--num-partitions", options.num_partitions),
            ("--seed", options.seed),
            ("--data-dir", options.data_dir),
            ("--model", options.model),
            ("--dataset", options.dataset),
            ("--device", options.device),
        )
        for flag, value in optional:
            if value is not None:
                args += [flag, str(value)]
        if options.no_verify:
            args.append("--no-verify")
        return [*args, *options.args]

    # -- waiting and stopping ------------------------------------------------------

    def tails(self) -> str:
        """The log tails of every process started, for an error message."""
        return tails(self.processes)

    def wait(
        self,
        timeout: float,
        *,
        clients: Sequence[Process] | None = None,
        client_timeout: float = 30.0,
        progress: Callable[[], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Wait until the server ends, then its clients; return each federation's history.

        At most ``timeout`` s for the server, then ``client_timeout`` s for
        ``clients`` (default: every client started here) to exit. Any of them
        failing (a non-zero exit status), also early, or overstaying is a
        :class:`LaunchError`. ``progress`` is called on every poll (for
        showing rounds as they finish).
        """
        if self.server is None:
            raise LaunchError("wait: no server was started")
        server = self.server.process
        watched = list(self.clients if clients is None else clients)
        deadline = time.monotonic() + timeout
        while server.running:
            for proc in watched:
                code = proc.returncode
                if code not in (None, 0):
                    raise LaunchError(
                        f"{proc.name} exited with status {code}",
                        process=proc.name,
                        logs=self.tails(),
                    )
            if progress is not None:
                progress()
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{server.name} still running after {timeout:g} s",
                    process=server.name,
                    logs=self.tails(),
                )
            time.sleep(_POLL_S)
        if progress is not None:
            progress()
        if server.returncode != 0:
            raise LaunchError(
                f"{server.name} exited with status {server.returncode}",
                process=server.name,
                logs=self.tails(),
            )
        client_deadline = time.monotonic() + client_timeout
        for proc in watched:
            try:
                code = proc.popen.wait(timeout=max(client_deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise LaunchError(
                    f"{proc.name} still running {client_timeout:g} s after the server ended",
                    process=proc.name,
                    logs=self.tails(),
                ) from None
            if code != 0:
                raise LaunchError(
                    f"{proc.name} exited with status {code}", process=proc.name, logs=self.tails()
                )
        return {name: self.server.history(name) for name in self.server.federations}

    def stop(self) -> None:
        """Stop every process started here: clients and other processes first, then servers.

        Each phase sends SIGTERM to every process group in it (so their
        children too), then SIGKILL to those still running after
        ``stop_timeout``: stopping N processes takes at most two bounds, not N.
        Clients go first so they can still tell the server they leave.
        """
        servers = [p for p in self.processes if p in self._servers]
        others = [p for p in self.processes if p not in self._servers]
        for phase in (others, servers):
            running = [p for p in reversed(phase) if p.running]
            for proc in running:
                proc.terminate()
            deadline = time.monotonic() + self.stop_timeout
            for proc in running:
                try:
                    proc.popen.wait(timeout=max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    proc.kill(timeout=self.stop_timeout)
