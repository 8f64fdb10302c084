"""The launcher (:mod:`orchard.launch`) against real server and client processes.

A small federation of the reference NumPy client and the echo client runs to
the end through the API and through ``python -m orchard.launch run``; the
errors a user can meet (a client kind that is not installed, a server that
never becomes healthy, a client that fails) are launcher errors naming the
process and showing its log, within the stated bounds; and ``stop()``
leaves no process behind.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

import orchard.launch
from orchard.examples.logreg import logreg_spec
from orchard.launch import (
    ClientOptions,
    Launcher,
    LaunchError,
    SetupError,
    config_document,
    free_port,
    write_config,
)

pytestmark = pytest.mark.slow

TENSORS = [{"name": t.name, "shape": list(t.shape)} for t in logreg_spec().tensors]


def _config(clients: int, rounds: int = 2, **server: Any) -> dict[str, Any]:
    return {
        "server": {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0, **server},
        "federations": {
            "blobs": {
                "model": "logreg",
                "tensors": TENSORS,
                "num_rounds": rounds,
                "min_fit_clients": clients,
                "min_evaluate_clients": clients,
                "min_available_clients": clients,
                "wait_timeout": 60.0,
            }
        },
    }


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` is dead within ``within`` seconds.

    A killed grandchild is reaped by init, not by us, a moment later; a
    zombie waiting for that is dead already.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_the_public_names_are_the_documented_ones() -> None:
    assert sorted(orchard.launch.__all__) == sorted(
        [
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
    )


def test_a_numpy_and_an_echo_client_federate_and_the_history_comes_back(tmp_path: Path) -> None:
    with Launcher(tmp_path) as launcher:
        server = launcher.start_server(_config(clients=2))
        numpy = launcher.start_client("numpy", ClientOptions(federation="blobs", name="logreg"))
        echo = launcher.start_client("echo", ClientOptions(federation="blobs", name="echo"))
        histories = launcher.wait(timeout=120)
    assert list(histories) == ["blobs"]
    rounds = histories["blobs"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    names = sorted(p["client"] for p in rounds[0]["fit"]["participants"])
    assert len(names) == 2 and "echo" in names[0] + names[1] and "logreg" in "".join(names)
    # Logs and the written config are in the run directory; the server kept
    # its state in RUN_DIR/state and listened on loopback, in plain text.
    for proc in (server.process, numpy, echo):
        assert proc.log == tmp_path / f"{proc.name}.log"
        assert proc.returncode == 0
    assert "joined federation" in numpy.read_log()
    written = tomllib.loads((tmp_path / "server.toml").read_text())
    assert written["server"]["address"] == server.address
    assert written["server"]["insecure"] is True
    assert server.state_dir == tmp_path / "state"
    assert server.address.startswith("127.0.0.1:")


def test_a_client_kind_that_is_not_installed_is_a_setup_error_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An MXNet interpreter that is not one: the variable is checked first.
    monkeypatch.setenv("ORCHARD_MXNET_PYTHON", str(tmp_path / "no-such-python"))
    with Launcher(tmp_path) as launcher:
        with pytest.raises(SetupError, match=r"ORCHARD_MXNET_PYTHON=.*not an executable file"):
            launcher.start_client(
                "mxnet", ClientOptions(federation="x", name="mx", server="127.0.0.1:1")
            )
        # An interpreter that lacks the package is refused naming it and the fix.
        monkeypatch.setenv("ORCHARD_MXNET_PYTHON", sys.executable)
        if importlib.util.find_spec("mxnet") is None:  # the main environment
            with pytest.raises(
                SetupError, match=r"cannot import orchard_mxnet and mxnet: .*make setup"
            ):
                launcher.start_client(
                    "mxnet", ClientOptions(federation="x", name="mx", server="127.0.0.1:1")
                )
        with pytest.raises(SetupError, match="unknown process kind 'tensorflow'"):
            launcher.start_client(
                "tensorflow", ClientOptions(federation="x", name="tf", server="127.0.0.1:1")
            )
        with pytest.raises(SetupError, match="the numpy client takes no model option"):
            launcher.start_client(
                "numpy",
                ClientOptions(federation="x", name="np", server="127.0.0.1:1", model="mnist-mlp"),
            )
        assert launcher.processes == []


def test_a_server_that_never_becomes_healthy_is_reported_within_the_bound(
    tmp_path: Path,
) -> None:
    # An "interpreter" that says something and then hangs, serving nothing.
    fake = tmp_path / "hung-python"
    fake.write_text('#!/bin/sh\necho "pretending to start: $*"\nexec sleep 300\n')
    fake.chmod(0o755)
    with Launcher(tmp_path, stop_timeout=5.0) as launcher:
        started = time.monotonic()
        with pytest.raises(LaunchError) as caught:
            launcher.start_server(_config(clients=1), python=str(fake), health_timeout=2.0)
        elapsed = time.monotonic() - started
        hung = launcher.processes[0]
        assert hung.running
    assert elapsed < 10.0
    assert caught.value.process == "server"
    message = str(caught.value)
    assert "server not healthy after 2 s" in message
    assert "pretending to start: -m orchard_server --config" in message  # the log tail
    assert _gone(hung.pid)


def test_start_server_returns_as_soon_as_a_slow_server_serves(tmp_path: Path) -> None:
    # A "server" that starts serving gRPC health 1.3 s after it was launched, and
    # writes down when. With gRPC's default reconnect backoff the launcher's checks
    # came at about 0, 1 and 2.6 s, so it returned 0.8 s or more after the server
    # served (0.4 to 2.2 s measured with real servers); now it must see it at once.
    port = free_port()
    served_at = tmp_path / "served_at"
    serve_at = time.monotonic() + 1.3
    fake = tmp_path / "slow-python"
    fake.write_text(
        f"""#!{sys.executable}
import time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2_grpc
time.sleep(max(0.0, {serve_at!r} - time.monotonic()))
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port("127.0.0.1:{port}")
server.start()
open({str(served_at)!r}, "w").write(repr(time.monotonic()))
time.sleep(300)
"""
    )
    fake.chmod(0o755)
    with Launcher(tmp_path, stop_timeout=5.0) as launcher:
        launcher.start_server(
            _config(clients=1, address=f"127.0.0.1:{port}", insecure=True), python=str(fake)
        )
        returned = time.monotonic()
    late = returned - float(served_at.read_text())
    assert late < 0.5, f"start_server returned {late:.2f} s after the server was serving"


def test_a_server_that_exits_at_start_is_reported_with_its_exit_status_and_log(
    tmp_path: Path,
) -> None:
    config = _config(clients=1)
    config["federations"]["blobs"]["strategy"] = "no-such-strategy"
    with Launcher(tmp_path) as launcher, pytest.raises(LaunchError) as caught:
        launcher.start_server(config)
    message = str(caught.value)
    assert "server exited with status 2 before serving" in message
    assert "no-such-strategy" in message


def test_a_failing_client_fails_the_wait_at_once_naming_it(tmp_path: Path) -> None:
    with Launcher(tmp_path) as launcher:
        launcher.start_server(_config(clients=2))
        launcher.start_client("numpy", ClientOptions(federation="blobs", name="good"))
        launcher.start_client("numpy", ClientOptions(federation="nope", name="lost"))
        started = time.monotonic()
        with pytest.raises(LaunchError) as caught:
            launcher.wait(timeout=120)
    # Long before the server's 60 s wait for clients: the lost client's exit is enough.
    assert time.monotonic() - started < 30
    assert caught.value.process == "lost"
    assert "lost exited with status 2" in str(caught.value)
    assert "no federation named 'nope'" in str(caught.value)


def test_a_wait_past_its_bound_is_an_error_and_stop_leaves_no_process_behind(
    tmp_path: Path,
) -> None:
    launcher = Launcher(tmp_path, stop_timeout=5.0)
    try:
        server = launcher.start_server(_config(clients=2))
        # One client of two: the federation never starts a round.
        client = launcher.start_client("numpy", ClientOptions(federation="blobs", name="alone"))
        # A process that ignores SIGTERM and has a child: SIGKILL must reach both.
        stubborn = launcher.start_process(
            "stubborn",
            ["sh", "-c", "trap '' TERM; sleep 300 & echo child $!; wait"],
        )
        deadline = time.monotonic() + 10
        while "child" not in stubborn.read_log():
            assert time.monotonic() < deadline, stubborn.tail()
            time.sleep(0.05)
        grandchild = int(stubborn.read_log().split()[1])
        with pytest.raises(LaunchError, match="server still running after 1 s"):
            launcher.wait(timeout=1.0)
    finally:
        started = time.monotonic()
        launcher.stop()
        stopped_in = time.monotonic() - started
    pids = [server.process.pid, client.pid, stubborn.pid, grandchild]
    assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
    # One bound for the clients' phase (SIGTERM to all, then SIGKILL to the
    # stubborn one); the server stops at once.
    assert stopped_in < 5.0 + 3.0
    assert stubborn.returncode == -signal.SIGKILL
    assert client.returncode is not None


def test_a_config_file_keeps_its_own_settings(tmp_path: Path) -> None:
    path = write_config(tmp_path / "mine.toml", _config(clients=1, rounds=1, insecure=True))
    with Launcher(tmp_path / "run") as launcher:
        server = launcher.start_server(path, linger=0.5)
        launcher.start_client("numpy", ClientOptions(federation="blobs", name="solo"))
        histories = launcher.wait(timeout=60)
    assert server.config == path
    # No state_dir in the file: the launcher's run directory holds the state.
    assert (tmp_path / "run" / "state" / "blobs" / "history.json").is_file()
    assert len(histories["blobs"]["rounds"]) == 1


def test_write_config_writes_toml_and_refuses_what_toml_cannot_hold(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {"server": {"state_dir": tmp_path / 'odd "dir"'}, "federations": {"a b": {"x": [1, 2]}}},
    )
    assert tomllib.loads(path.read_text()) == {
        "server": {"state_dir": str(tmp_path / 'odd "dir"')},
        "federations": {"a b": {"x": [1, 2]}},
    }
    with pytest.raises(SetupError, match="cannot write"):
        write_config(tmp_path / "bad.toml", {"server": {"tls_cert": None}})


def test_the_run_command_starts_a_server_and_clients_and_prints_the_rounds(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "server.toml", _config(clients=2, insecure=True))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchard.launch",
            "run",
            "--config",
            str(config),
            "--client",
            "numpy",
            "--client",
            "echo:1",
            "--run-dir",
            str(tmp_path / "run"),
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "federation 'blobs': 2 round(s)" in done.stdout
    assert "  round 2, loss " in done.stdout
    assert (tmp_path / "run" / "numpy-0.log").is_file()
    assert (tmp_path / "run" / "echo-1.log").is_file()


def test_the_run_command_refuses_an_unknown_kind(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchard.launch", "run", "--config", "x", "--client", "jax"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown client kind 'jax'" in done.stderr


def test_sigterm_to_the_command_stops_everything_it_started(tmp_path: Path) -> None:
    # Two clients needed, one started: the federation waits until stopped.
    config = write_config(tmp_path / "server.toml", _config(clients=2, insecure=True))
    command = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchard.launch",
            "run",
            "--config",
            str(config),
            "--client",
            "numpy",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None
        assert command.stdout.readline().startswith("server on 127.0.0.1:")
        client_log = tmp_path / "run" / "numpy-0.log"
        deadline = time.monotonic() + 30
        while "joined federation" not in client_log.read_text():
            assert time.monotonic() < deadline, client_log.read_text()
            time.sleep(0.1)
        command.send_signal(signal.SIGTERM)
        _, err = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == 130, err
    assert "stopped every process it started" in err
    # The client left on the launcher's SIGTERM, as on any SIGTERM.
    assert "left federation 'blobs' (SIGTERM)" in client_log.read_text()


def test_a_server_config_object_round_trips_and_starts_a_server(tmp_path: Path) -> None:
    server_config = pytest.importorskip("orchard_server.config")
    config = server_config.ServerConfig(
        address=f"127.0.0.1:{free_port()}",
        state_dir=tmp_path / "objects",
        insecure=True,
        heartbeat_interval=0.5,
        heartbeat_timeout=3.0,
        federations=(
            server_config.FederationConfig(
                name="blobs",
                model="logreg",
                tensors=logreg_spec().tensors,
                num_rounds=1,
                min_fit_clients=1,
                min_evaluate_clients=1,
                min_available_clients=1,
                fit_config={"epochs": 2, "learning_rate": 0.05},
            ),
        ),
    )
    document = config_document(config)
    assert "tls_cert" not in document["server"]  # None: left to the server's default
    path = write_config(tmp_path / "object.toml", document)
    assert server_config.load_config(path, environ={}) == config
    with Launcher(tmp_path / "run") as launcher:
        server = launcher.start_server(config)
        launcher.start_client("numpy", ClientOptions(federation="blobs", name="solo"))
        histories = launcher.wait(timeout=60)
    assert server.state_dir == tmp_path / "objects"
    assert len(histories["blobs"]["rounds"]) == 1
    with pytest.raises(SetupError, match="not a server config object"):
        config_document(3)  # type: ignore[arg-type]
