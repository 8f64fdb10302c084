"""``docker compose up`` as users live it: offline data, fast failure, re-runs, cross-framework.

Each test runs the documented commands (``docker compose run --rm data ...``,
``docker compose up --abort-on-container-failure --exit-code-from server``)
against its own compose project, in the foreground as a user would, and
checks what the user sees: the exit status, the logs and the results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.containers.conftest import federation, logreg_federation, server_config
from tests.containers.stack import REPO, Stack, docker, rounds_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: The documented way to run the stack to its end with an honest exit status.
UP = ("--abort-on-container-failure", "--exit-code-from", "server")

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _mnist_stack(workdir: Path, name: str, **env: str) -> Stack:
    """Server, two MXNet clients and one MXNet evaluator on the stack's own data volume."""
    config = server_config(
        workdir,
        name,
        {
            "mnist": federation(
                "mnist-mlp",
                2,
                num_rounds=2,
                num_partitions=2,
                wait_timeout=600.0,
                fit_config={"epochs": 1, "batch_size": 32, "learning_rate": 0.1},
                evaluate_config={"batch_size": 256},
            )
        },
    )
    return Stack(
        project=f"orchard{name}{os.getpid()}",
        env={
            "ORCHARD_SERVER_CONFIG": str(config),
            "ORCHARD_MXNET_CLIENTS": "2",
            "ORCHARD_MXNET_EVALUATORS": "1",
            **env,
        },
    )


def test_offline_data_path_synth_import_then_a_run_labelled_synthetic(
    orchard_images: None, workdir: Path
) -> None:
    carry = workdir / "carry"  # the folder a user carries to the offline machine
    carry.mkdir()
    stack = _mnist_stack(workdir, "offline")
    with stack.running(setup=[]):
        stack.compose("run", "--rm", "--user", str(os.getuid()), "-v", f"{carry}:/import",
                      "data", "synth", "/import", "--dataset", "mnist",
                      "--train", "1200", "--test", "300")  # fmt: skip
        assert (carry / "SYNTHETIC-mnist.txt").is_file()
        imported = stack.compose("run", "--rm", "-v", f"{carry}:/import:ro",
                                 "data", "import", "/import")  # fmt: skip
        assert "mnist: imported 5 file(s) into /data: SYNTHETIC" in imported, imported
        status, output, _ = stack.up_attached(
            "server", "client_mxnet", "evaluator_mxnet", *UP, timeout=200
        )
        assert status == 0, output[-8000:]
        history = stack.history("mnist")
        client_logs = stack.logs("client_mxnet", "evaluator_mxnet")
        server_logs = stack.logs("server")
    assert rounds_of(history) == [1, 2]
    for record in history["rounds"]:
        # Results on synthetic data carry the label wherever a client is named.
        assert record["centralized"]["source"] == "evaluator_mxnet-1 (SYNTHETIC data)", record
        assert 0.0 <= record["centralized"]["metrics"]["accuracy"] <= 1.0
        names = {p["client"] for p in record["fit"]["participants"]}
        assert names == {"client_mxnet-1 (SYNTHETIC data)", "client_mxnet-2 (SYNTHETIC data)"}
    assert client_logs.count("is SYNTHETIC (orchard-data synth)") >= 3, client_logs
    assert "client_mxnet-1 (SYNTHETIC data) joined" in server_logs
    assert "SYNTHETIC" in (carry / "SYNTHETIC-mnist.txt").read_text()
    assert "font" not in server_logs.lower()  # matplotlib's font cache stays quiet


def test_down_removes_the_network_a_data_run_created(orchard_images: None) -> None:
    """``run --rm data`` then ``down`` leaves nothing: the data tool uses the stack's network.

    On the project's own default network it outlived every ``down`` (which
    skips the ``tools`` profile), one per run, until Docker ran out of
    address pools and every stack failed to start.
    """
    stack = Stack(project=f"orchardnetleak{os.getpid()}", env={})
    with stack.running(setup=[]):
        assert "orchard-data" in stack.compose("run", "--rm", "data", "--help")
    label = f"label=com.docker.compose.project={stack.project}"
    assert docker("network", "ls", "--filter", label, "--format", "{{.Name}}").strip() == ""


def test_missing_data_fails_fast_with_the_reason_and_a_nonzero_status(
    orchard_images: None, workdir: Path
) -> None:
    # An empty data volume and a mirror nobody answers: no way to get MNIST.
    stack = _mnist_stack(workdir, "nodata", ORCHARD_DATASET_MIRROR="http://127.0.0.1:9/none")
    with stack.running(setup=[]):
        status, output, seconds = stack.up_attached(
            "server", "client_mxnet", "evaluator_mxnet", *UP, timeout=200
        )
        server_logs = stack.logs("server")
    assert status != 0, output[-6000:]
    # Not the 600 s wait_timeout: the clients told the server why they left.
    assert seconds < 120, (seconds, output[-6000:])
    assert "federation 'mnist' failed: " in server_logs, server_logs
    failure = server_logs.split("federation 'mnist' failed: ", 1)[1].splitlines()[0]
    assert "cannot take part: cannot load its mnist data" in failure
    # Whichever client reports first fails the federation: the trainer wants
    # the training split, the evaluator the test split; each names the URL it tried.
    split = "t10k" if failure.startswith("evaluator_mxnet") else "train"
    assert f"http://127.0.0.1:9/none/{split}-images-idx3-ubyte.gz" in failure, failure
    assert "waiting for clients" not in server_logs.split("failed:")[-1]
    assert "Traceback" not in server_logs


def test_a_second_up_after_a_finished_run_starts_a_new_run(
    orchard_images: None, workdir: Path
) -> None:
    config = server_config(workdir, "rerun", {"blobs": logreg_federation(2, num_rounds=2)})
    stack = Stack(
        project=f"orchardrerun{os.getpid()}",
        env={"ORCHARD_SERVER_CONFIG": str(config)},
        profiles=("reference",),
    )
    with stack.running(setup=[]):
        first, output, _ = stack.up_attached("server", "client_numpy", *UP, timeout=120)
        assert first == 0, output[-6000:]
        first_history = stack.history("blobs")
        second, output, _ = stack.up_attached("server", "client_numpy", *UP, timeout=120)
        assert second == 0, output[-6000:]
        second_history = stack.history("blobs")
        runs = "/var/lib/orchard/state/blobs/runs"
        listing = stack.compose("run", "--rm", "--no-deps", "--entrypoint", "find", "server",
                                runs, "-name", "history.json")  # fmt: skip
        archived = json.loads(stack.read_state(listing.split()[0].split("/state/", 1)[1]))
        server_logs = stack.logs("server")
        client_exits = {int(r["ExitCode"]) for r in stack.containers("client_numpy")}
    assert rounds_of(first_history) == rounds_of(second_history) == [1, 2]
    assert archived == first_history
    assert len(listing.split()) == 1, listing
    assert "the previous run finished all 2 rounds" in server_logs, server_logs
    assert "starting a new run" in server_logs
    assert client_exits == {0}


def test_crossframework_override_reaches_75_percent_test_accuracy_on_fashion_mnist(
    orchard_images: None,
) -> None:
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{FASHION}: Debian's dataset-fashion-mnist is not installed")
    stack = Stack(
        project=f"orchardcross{os.getpid()}",
        files=(REPO / "docker-compose.yml", REPO / "docker-compose.crossframework.yml"),
        env={"ORCHARD_SET": "federations.fashion.num_rounds=3"},
    )
    with stack.running(setup=[]):
        imported = stack.compose("run", "--rm", "-v", f"{FASHION}:/import:ro", "data",
                                 "import", "/import", "--dataset", "fashion-mnist")  # fmt: skip
        assert "official checksums verified" in imported, imported
        status, output, _ = stack.up_attached(*UP, timeout=200)
        assert status == 0, output[-8000:]
        history = stack.history("fashion")
        services = {r["Service"] for r in stack.containers()}
        png = stack.compose("run", "--rm", "--no-deps", "--entrypoint", "ls", "server",
                            "/var/lib/orchard/state/fashion")  # fmt: skip
    assert services == {"server", "client_pytorch", "client_mxnet", "evaluator_pytorch"}
    assert rounds_of(history) == [1, 2, 3]
    for record in history["rounds"]:
        frameworks = {p["framework"] for p in record["fit"]["participants"]}
        assert frameworks == {"pytorch", "mxnet"}, record
    final = history["rounds"][-1]["centralized"]
    assert final["source"] == "evaluator_pytorch-1", final
    assert final["num_examples"] == 10_000
    assert final["metrics"]["accuracy"] >= 0.75, history["rounds"]
    assert "history.png" in png
