"""End to end over loopback: a real server process and real client processes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from orchard import serde
from orchard.client.runtime import ClientSettings, report_fatal
from orchard.examples.logreg import logreg_spec
from orchard.launch import (
    ClientOptions,
    Launcher,
    LaunchError,
    Process,
    free_port,
    read_history,
    write_config,
)
from orchard.messages import API_VERSION, JoinInfo, Result, Task
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import federation_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

SPEC_TENSORS = [{"name": t.name, "shape": list(t.shape)} for t in logreg_spec().tensors]


def federation(**overrides: Any) -> dict[str, Any]:
    """A logreg federation config with fast timings for tests."""
    base: dict[str, Any] = {
        "model": "logreg",
        "tensors": SPEC_TENSORS,
        "num_rounds": 3,
        "strategy": "fedavg",
        "seed": 7,
        "min_fit_clients": 3,
        "min_evaluate_clients": 3,
        "min_available_clients": 3,
        "round_timeout": 60.0,
        "wait_timeout": 60.0,
        "fit_config": {"epochs": 1, "batch_size": 16, "learning_rate": 0.05},
    }
    base.update(overrides)
    return base


class Cluster:
    """A server config with a fixed port, and a launcher that stops everything at the end.

    The port and state directory are fixed so a test can restart the server
    (``start_server("server-2")``) and have it resume.
    """

    def __init__(
        self,
        tmp: Path,
        federations: dict[str, dict[str, Any]],
        server: dict[str, Any] | None = None,
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.state_dir = tmp / "state"
        self.config = write_config(
            tmp / "server.toml",
            {
                "server": {
                    "address": f"127.0.0.1:{self.port}",
                    "state_dir": self.state_dir,
                    "insecure": True,
                    "heartbeat_interval": 0.5,
                    "heartbeat_timeout": 3.0,
                    "max_poll_seconds": 5.0,
                    **(server or {}),
                },
                "federations": federations,
            },
        )
        self.launcher = Launcher(tmp)
        self.server: Process | None = None

    def start_server(self, name: str = "server") -> Process:
        self.server = self.launcher.start_server(self.config, name=name, linger=5.0).process
        return self.server

    def client(self, federation: str, name: str, *extra: str) -> Process:
        options = ClientOptions(federation=federation, name=name, args=extra)
        return self.launcher.start_client("numpy", options)

    def logs(self) -> str:
        return self.launcher.tails()

    def close(self) -> None:
        self.launcher.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    clusters: list[Cluster] = []

    def make(
        federations: dict[str, dict[str, Any]],
        sub: str = "",
        server: dict[str, Any] | None = None,
    ) -> Cluster:
        directory = tmp_path / sub if sub else tmp_path
        directory.mkdir(exist_ok=True)
        cluster = Cluster(directory, federations, server)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def wait_exit(proc: Process | None, cluster: Cluster, timeout: float = 120.0) -> int:
    assert proc is not None
    try:
        return proc.wait(timeout)
    except LaunchError:
        raise AssertionError(f"{proc.name} did not exit\n{cluster.logs()}") from None


def test_three_clients_three_rounds_loss_falls(cluster_factory: Any) -> None:
    cluster = cluster_factory({"blobs": federation()})
    cluster.start_server()
    clients = [cluster.client("blobs", f"client-{i}") for i in range(3)]
    # A fourth client holds the "central" test set and evaluates every global model.
    clients.append(cluster.client("blobs", "evaluator", "--role", "evaluator", "--seed", "9"))
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    for client in clients:
        assert wait_exit(client, cluster, 30) == 0, cluster.logs()
    history = read_history(cluster.state_dir, "blobs")
    rounds = history["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    losses = [r["evaluate"]["loss"] for r in rounds]
    assert losses[0] > losses[1] > losses[2], losses
    assert all(len(r["fit"]["participants"]) == 3 and not r["fit"]["dropped"] for r in rounds)
    partitions = sorted(p["partition"] for p in rounds[0]["fit"]["participants"])
    assert partitions == [0, 1, 2]
    assert all("evaluator" not in str(r["fit"]["participants"]) for r in rounds)
    central = [r["centralized"] for r in rounds]
    assert all(c is not None and c["source"] == "evaluator" for c in central), central
    central_losses = [c["loss"] for c in central]
    assert central_losses[0] > central_losses[-1], central_losses


def test_with_one_upload_slot_every_update_still_lands_in_its_round(
    cluster_factory: Any,
) -> None:
    # The slot of a delivered update is held until its arrays are freed after
    # the fold: if anything kept them, the other clients' uploads would wait
    # for the deadline and be dropped.
    cluster = cluster_factory(
        {"blobs": federation(num_rounds=2, evaluate_every=0, round_timeout=20.0)},
        server={"max_concurrent_uploads": 1},
    )
    cluster.start_server()
    clients = [cluster.client("blobs", f"client-{i}") for i in range(3)]
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    for client in clients:
        assert wait_exit(client, cluster, 30) == 0, cluster.logs()
    rounds = read_history(cluster.state_dir, "blobs")["rounds"]
    assert [len(r["fit"]["participants"]) for r in rounds] == [3, 3], cluster.logs()
    assert not any(r["fit"]["dropped"] for r in rounds)


def test_history_records_partitions_fixed_by_clients(cluster_factory: Any) -> None:
    cluster = cluster_factory(
        {
            "blobs": federation(
                num_rounds=1, min_fit_clients=2, min_evaluate_clients=2, min_available_clients=2
            )
        }
    )
    cluster.start_server()
    clients = [
        cluster.client("blobs", "fixed-2", "--partition-id", "2", "--num-partitions", "3"),
        cluster.client("blobs", "assigned"),
    ]
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    for client in clients:
        assert wait_exit(client, cluster, 30) == 0
    participants = read_history(cluster.state_dir, "blobs")["rounds"][0]["fit"]["participants"]
    by_name = {p["client"]: p["partition"] for p in participants}
    assert by_name["fixed-2"] == 2
    assert by_name["assigned"] in (0, 1)
    assert (cluster.state_dir / "blobs" / "history.png").stat().st_size > 1000


def _final_parameters(state_dir: Path, federation_name: str) -> list[np.ndarray]:
    with np.load(state_dir / federation_name / "checkpoint.npz") as npz:
        return [npz[f"param_{i}"] for i in range(len(logreg_spec().tensors))]


def test_server_sigkill_mid_run_resumes_to_the_same_model(cluster_factory: Any) -> None:
    fed = federation(
        num_rounds=5, min_fit_clients=2, min_evaluate_clients=2, min_available_clients=2
    )
    # Uninterrupted reference run.
    ref = cluster_factory({"blobs": fed}, "reference")
    ref.start_server()
    ref_clients = [ref.client("blobs", f"ref-{i}", "--fit-seconds", "1.0") for i in range(2)]
    assert wait_exit(ref.server, ref) == 0, ref.logs()
    for c in ref_clients:
        wait_exit(c, ref, 30)

    run = cluster_factory({"blobs": fed}, "crash")
    run.start_server("server-1")
    clients = [run.client("blobs", f"client-{i}", "--fit-seconds", "1.0") for i in range(2)]
    # The background writer (which does not hold rounds back) writes the history
    # before the checkpoint, and only the checkpoint is resumed from: kill once a
    # round's checkpoint is on disk, well before the end. (Waiting for the history
    # alone killed the server between the two writes once: it then started anew.)
    checkpoint = run.state_dir / "blobs" / "checkpoint.npz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if checkpoint.exists():
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no checkpoint after round 1\n{run.logs()}")
    assert run.server is not None
    run.server.send_signal(signal.SIGKILL)
    run.server.wait(10)
    done_before = len(read_history(run.state_dir, "blobs")["rounds"])
    assert done_before < 5
    run.start_server("server-2")
    assert wait_exit(run.server, run) == 0, run.logs()
    for c in clients:
        assert wait_exit(c, run, 30) == 0, run.logs()
    assert "resumed from" in run.server.read_log()
    rounds = read_history(run.state_dir, "blobs")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5]
    for a, b in zip(
        _final_parameters(ref.state_dir, "blobs"),
        _final_parameters(run.state_dir, "blobs"),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_client_killed_mid_round_does_not_stall_it(cluster_factory: Any) -> None:
    fed = federation(
        num_rounds=3,
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=2,
        round_timeout=120.0,
    )
    cluster = cluster_factory({"blobs": fed})
    cluster.start_server()
    victim = cluster.client("blobs", "victim", "--fit-seconds", "60")
    steady = [cluster.client("blobs", f"steady-{i}", "--fit-seconds", "0.2") for i in range(2)]
    deadline = time.monotonic() + 60
    # The victim may join before or after round 1 starts; kill it inside its first fit.
    while ": fit task" not in victim.log.read_text():
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.1)
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    for proc in steady:
        assert wait_exit(proc, cluster, 30) == 0, cluster.logs()
    rounds = read_history(cluster.state_dir, "blobs")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    hit = [r["fit"] for r in rounds if any("victim" in k for k in r["fit"]["dropped"])]
    assert len(hit) == 1, rounds
    reasons = [v for k, v in hit[0]["dropped"].items() if "victim" in k]
    assert "heartbeat" in reasons[0], hit[0]
    # The round did not wait for its 120 s deadline, nor for the victim's 60 s fit.
    assert hit[0]["duration_s"] < 30, hit[0]
    assert time.monotonic() - killed_at < 60


def _stub(port: int) -> tuple[grpc.Channel, pb_grpc.FederationServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, pb_grpc.FederationServiceStub(channel)


def _join(stub: pb_grpc.FederationServiceStub, **overrides: Any) -> pb.JoinResponse:
    info = JoinInfo(
        api_version=API_VERSION,
        federation="blobs",
        instance_id="raw-test",
        display_name="raw",
        model_spec=logreg_spec(),
    )
    request = serde.join_to_proto(info)
    for key, value in overrides.items():
        setattr(request, key, value)
    response: pb.JoinResponse = stub.Join(request, timeout=10)
    return response


def _proof(session: pb.JoinResponse) -> tuple[tuple[str, str], ...]:
    """The metadata proving a raw session (every call after Join carries it)."""
    return serde.session_metadata(session.session_secret)


def _pull_task(stub: pb_grpc.FederationServiceStub, session: pb.JoinResponse) -> Task:
    """One task for a raw session (the federation must be waiting for it)."""
    request = pb.PullTaskRequest(client_id=session.client_id, wait_seconds=10)
    task = serde.task_from_stream(
        iter(stub.PullTask(request, timeout=30, metadata=_proof(session)))
    )
    assert isinstance(task, Task), task
    return task


def test_bad_input_gets_clear_errors_while_others_train(cluster_factory: Any) -> None:
    fed = federation(
        num_rounds=4, min_fit_clients=2, min_evaluate_clients=2, min_available_clients=2
    )
    cluster = cluster_factory({"blobs": fed})
    cluster.start_server()
    good = [cluster.client("blobs", f"good-{i}", "--fit-seconds", "0.5") for i in range(2)]
    channel, stub = _stub(cluster.port)
    with channel:
        # Wrong API version.
        with pytest.raises(grpc.RpcError) as err:
            _join(stub, api_version="2.0")
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "2.0" in str(err.value.details()) and API_VERSION in str(err.value.details())
        # Unknown federation.
        with pytest.raises(grpc.RpcError) as err:
            _join(stub, federation="nope")
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert "nope" in str(err.value.details()) and "blobs" in str(err.value.details())
        # Model spec mismatch at join names the first differing tensor.
        wrong = logreg_spec()
        request = serde.join_to_proto(
            JoinInfo(api_version=API_VERSION, federation="blobs", instance_id="x", model_spec=wrong)
        )
        request.model_spec.tensors[1].shape[:] = [4]
        with pytest.raises(grpc.RpcError) as err:
            stub.Join(request, timeout=10)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "linear.bias" in str(err.value.details())

    # Malformed updates, sent by real clients with broken models.
    nan_client = cluster.client("blobs", "nan-client", "--fail", "nan")
    shape_client = cluster.client("blobs", "shape-client", "--fail", "shape")
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    for proc in [*good, nan_client, shape_client]:
        proc.wait(30)
    history = read_history(cluster.state_dir, "blobs")
    assert len(history["rounds"]) == 4
    dropped = {k: v for r in history["rounds"] for k, v in r["fit"]["dropped"].items()}
    nan_reasons = [v for k, v in dropped.items() if "nan-client" in k]
    shape_reasons = [v for k, v in dropped.items() if "shape-client" in k]
    assert nan_reasons and "NaN" in nan_reasons[0], dropped
    assert shape_reasons and "linear.weight" in shape_reasons[0], dropped
    assert "rejected" in nan_client.log.read_text()
    assert "rejected" in shape_client.log.read_text()


def test_corrupt_tensor_bytes_are_refused(cluster_factory: Any) -> None:
    fed = federation(
        num_rounds=2,
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=1,
        fraction_fit=1.0,
    )
    cluster = cluster_factory({"blobs": fed})
    cluster.start_server()
    channel, stub = _stub(cluster.port)
    with channel:
        session = _join(stub)
        task = _pull_task(stub, session)
        header = serde.result_header_to_proto(
            Result(
                client_id=session.client_id,
                task_id=task.task_id,
                num_examples=10,
                names=task.names,
                parameters=task.parameters,
            )
        )
        chunks = list(serde.iter_chunks(task.parameters))
        chunks[0].data = chunks[0].data[:-3]  # truncated tensor bytes
        stream = [
            pb.PushResultRequest(header=header),
            *(pb.PushResultRequest(chunk=c) for c in chunks),
        ]
        with pytest.raises(grpc.RpcError) as err:
            stub.PushResult(iter(stream), timeout=10, metadata=_proof(session))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "linear.weight" in str(err.value.details()), str(err.value.details())
        # The server is still serving: a good client finishes the federation.
        stub.Leave(
            pb.LeaveRequest(client_id=session.client_id, reason="test done"),
            timeout=5,
            metadata=_proof(session),
        )
    good = cluster.client("blobs", "good")
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    assert good.wait(30) == 0
    history = read_history(cluster.state_dir, "blobs")
    assert len(history["rounds"]) == 2
    assert any("raw" in k for k in history["rounds"][0]["fit"]["dropped"]), history["rounds"][0]


def test_a_federation_with_a_token_refuses_clients_without_it(cluster_factory: Any) -> None:
    fed = federation(
        num_rounds=1,
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=1,
        auth_token="s3cret",
    )
    cluster = cluster_factory({"blobs": fed})
    cluster.start_server()
    channel, stub = _stub(cluster.port)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            _join(stub)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "requires a valid auth token" in str(err.value.details())
    stranger = cluster.client("blobs", "stranger")
    assert wait_exit(stranger, cluster, 30) == 2
    assert "UNAUTHENTICATED" in stranger.log.read_text()
    member = cluster.client("blobs", "member", "--auth-token", "s3cret")
    assert wait_exit(cluster.server, cluster) == 0, cluster.logs()
    assert wait_exit(member, cluster, 30) == 0


def test_a_result_after_the_deadline_is_told_the_task_is_closed(cluster_factory: Any) -> None:
    fed = federation(
        num_rounds=1,
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=1,
        round_timeout=1.0,
        round_retries=0,
    )
    cluster = cluster_factory({"blobs": fed})
    cluster.start_server()
    channel, stub = _stub(cluster.port)
    with channel:
        session = _join(stub)
        task = _pull_task(stub, session)
        time.sleep(1.5)  # past the 1 s deadline; heartbeats are not needed within 3 s
        stream = serde.result_to_stream(
            Result(
                client_id=session.client_id,
                task_id=task.task_id,
                num_examples=10,
                names=task.names,
                parameters=task.parameters,
            )
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.PushResult(stream, timeout=10, metadata=_proof(session))
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "is closed" in str(err.value.details())
    # The round got no result, and round_retries=0: the federation fails, saying why.
    assert wait_exit(cluster.server, cluster) == 1
    assert cluster.server is not None
    assert "got too few results" in cluster.server.read_log()


def test_a_fatal_leave_fails_the_federation_at_once_with_the_reason(cluster_factory: Any) -> None:
    # Two federations, so the exit code covers "one failed while another waited".
    cluster = cluster_factory({"blobs": federation(wait_timeout=120.0), "other": federation()})
    cluster.start_server()
    started = time.monotonic()
    settings = ClientSettings(
        server=f"127.0.0.1:{cluster.port}", federation="blobs", display_name="no-data-client"
    )
    status = report_fatal(
        settings, "cannot load its mnist data: no files", model_spec=logreg_spec()
    )
    assert status == 2
    other = ClientSettings(server=f"127.0.0.1:{cluster.port}", federation="other")
    assert report_fatal(other, "cannot load its data either", model_spec=logreg_spec()) == 2
    assert wait_exit(cluster.server, cluster, 30) == 1, cluster.logs()
    assert time.monotonic() - started < 20
    log = cluster.server.tail()
    assert "federation 'blobs' failed: no-data-client cannot take part: " in log
    assert "cannot load its mnist data: no files" in log
