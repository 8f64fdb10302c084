"""Start real server and client processes on loopback for end-to-end tests.

Every process logs to a file under the test's tmp_path; on failure the tests
print the tails, so a red test says what the processes saw.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def server_python() -> str:
    """Interpreter that runs the server (the main env, also from the MXNet env)."""
    return os.environ.get("ORCHARD_SERVER_PYTHON") or (
        sys.executable if _has_server(sys.executable) else str(REPO / ".venv/bin/python")
    )


def _has_server(python: str) -> bool:
    try:
        import orchard_server  # noqa: F401
    except ImportError:
        return False
    return python == sys.executable


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(
    path: Path, *, server: Mapping[str, Any], federations: Mapping[str, Mapping[str, Any]]
) -> Path:
    """A server config file (a small TOML writer: tests need no extra package)."""
    lines = ["[server]"] + [f"{k} = {_toml_value(v)}" for k, v in server.items()]
    for name, fed in federations.items():
        lines += ["", f"[federations.{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in fed.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def fedavg_federation(
    model: str,
    *,
    clients: int,
    num_rounds: int,
    fit_config: Mapping[str, Any],
    evaluate_config: Mapping[str, Any],
    seed: int = 1,
    round_timeout: float = 120.0,
) -> dict[str, Any]:
    """A FedAvg federation table in which every round waits for all ``clients``."""
    return {
        "model": model,
        "num_rounds": num_rounds,
        "strategy": "fedavg",
        "seed": seed,
        "min_fit_clients": clients,
        "min_evaluate_clients": clients,
        "min_available_clients": clients,
        "round_timeout": round_timeout,
        "wait_timeout": 120.0,
        "fit_config": dict(fit_config),
        "evaluate_config": dict(evaluate_config),
    }


class Proc:
    """A child process with its log file."""

    def __init__(
        self, name: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = log
        self._fh = log.open("ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            list(args), stdout=self._fh, stderr=subprocess.STDOUT, env=full_env, cwd=REPO
        )

    def wait(self, timeout: float) -> int:
        """Exit code, killing the process if it overstays."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s\n{self.tail()}"
            ) from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) if still running."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            if sig == signal.SIGKILL:
                self.popen.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log."""
        self._fh.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text[-lines:])

    def close(self) -> None:
        """Kill and close the log."""
        self.kill()
        self._fh.close()


def start_server(
    tmp: Path, config: Path, *, name: str = "server", extra: Sequence[str] = ()
) -> Proc:
    """Start ``python -m orchard_server`` with ``config`` and wait until it is healthy."""
    proc = Proc(
        name,
        [server_python(), "-m", "orchard_server", "--config", str(config), "--linger", "5", *extra],
        tmp / f"{name}.log",
    )
    return proc


def wait_healthy(port: int, proc: Proc, timeout: float = 60.0) -> None:
    """Poll the gRPC health service until it says SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise AssertionError(f"server exited with {proc.popen.returncode}\n{proc.tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"server not healthy after {timeout} s\n{proc.tail()}")


def start_logreg_client(
    tmp: Path,
    port: int,
    federation: str,
    name: str,
    *extra: str,
    python: str | None = None,
    insecure: bool = True,
) -> Proc:
    """Start the reference NumPy client (plain text unless ``insecure=False``)."""
    args = [
        python or sys.executable,
        "-m",
        "orchard.examples.logreg",
        "--server",
        f"127.0.0.1:{port}",
        "--federation",
        federation,
        "--name",
        name,
        "--connect-timeout",
        "60",
    ]
    if insecure:
        args.append("--insecure")
    return Proc(name, [*args, *extra], tmp / f"{name}.log")


def read_history(state_dir: Path, federation: str) -> dict[str, Any]:
    """The history JSON the server wrote for ``federation``."""
    data: dict[str, Any] = json.loads((state_dir / federation / "history.json").read_text())
    return data


def tails(procs: Iterable[Proc]) -> str:
    """The log tails of ``procs``, for an assertion message that shows what they saw."""
    return "\n".join(p.tail() for p in procs)


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    """A list the test appends its processes to; every one is killed at the end."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.close()


@dataclass(frozen=True)
class LoopbackServer:
    """A running test server: its process, port and state directory."""

    proc: Proc
    port: int
    state_dir: Path

    def history(self, federation: str) -> dict[str, Any]:
        """The history the server wrote for ``federation``."""
        return read_history(self.state_dir, federation)


def start_loopback_server(
    workdir: Path,
    federations: Mapping[str, Mapping[str, Any]],
    *,
    procs: list[Proc],
    heartbeat_timeout: float = 10.0,
    max_poll_seconds: float = 5.0,
    extra: Sequence[str] = (),
) -> LoopbackServer:
    """Start a plain-text server on a free loopback port and wait until it is healthy.

    Its config (``workdir/server.toml``) hosts ``federations`` and keeps its
    state in ``workdir/state``; heartbeats every 0.5 s let a test notice a dead
    client within seconds. The process joins ``procs`` before the wait, so
    the caller's cleanup kills it even when it never becomes healthy.
    """
    port = free_port()
    state_dir = workdir / "state"
    config = write_config(
        workdir / "server.toml",
        server={
            "address": f"127.0.0.1:{port}",
            "state_dir": str(state_dir),
            "insecure": True,
            "heartbeat_interval": 0.5,
            "heartbeat_timeout": heartbeat_timeout,
            "max_poll_seconds": max_poll_seconds,
        },
        federations=federations,
    )
    proc = start_server(workdir, config, extra=extra)
    procs.append(proc)
    wait_healthy(port, proc)
    return LoopbackServer(proc=proc, port=port, state_dir=state_dir)
