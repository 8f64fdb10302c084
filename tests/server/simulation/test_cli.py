"""``orchard-sim --config sim.toml`` end to end on null clients."""

from __future__ import annotations

import json
from pathlib import Path

from orchard_server.simulation.cli import main
from tests.server.simulation.conftest import PROBE

SIM = """
[federations.null]
model = "mnist-mlp"
num_rounds = 2
min_fit_clients = 5
min_available_clients = 5
evaluate_every = 0

[simulation]
num_clients = 5
workers = 2
client_fn = "orchard.simulation.clients:null_client"
"""


def test_runs_a_federation_and_writes_its_history(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.toml"
    path.write_text(SIM)
    code = main(["--config", str(path), "--state-dir", str(tmp_path / "state"), "--plot"])
    assert code == 0
    history = json.loads((tmp_path / "state" / "null" / "history.json").read_text())
    assert [r["fit"]["selected"] for r in history["rounds"]] == [5, 5]
    assert (tmp_path / "state" / "null" / "plot.png").is_file()
    assert "finished" in capsys.readouterr().out


def test_a_bad_config_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.toml"
    path.write_text(SIM.replace("workers = 2", "workers = -1"))
    assert main(["--config", str(path)]) == 2
    assert "workers must be >= 0" in capsys.readouterr().err


def test_a_worker_that_cannot_start_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.toml"
    path.write_text(SIM.replace("null_client", "no_such_client"))
    assert main(["--config", str(path), "--state-dir", str(tmp_path)]) == 2
    assert "no attribute 'no_such_client'" in capsys.readouterr().err


def test_a_run_that_completes_no_round_says_it_wrote_no_history(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.toml"
    failing = "".join(f'partition_{i} = "raise"\n' for i in range(5))
    path.write_text(
        SIM.replace("orchard.simulation.clients:null_client", PROBE)
        + "\n[simulation.node_config]\n"
        + failing
    )
    code = main(["--config", str(path), "--state-dir", str(tmp_path / "state"), "--plot"])
    assert code == 1
    out = capsys.readouterr().out
    assert "failed" in out
    assert "history: none written (no round completed)" in out
    assert not (tmp_path / "state" / "null" / "history.json").exists()
    assert not (tmp_path / "state" / "null" / "plot.png").exists()
