"""Checkpoints: exact round trip, clear errors for unusable files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from orchard.models import MNIST_MLP
from orchard_server.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_federation,
    save_checkpoint,
    save_federation,
)
from orchard_server.history import History
from orchard_server.initial import seeded_parameters
from orchard_server.records import EvaluateRecord, FitRecord, RoundRecord
from orchard_server.strategy import SgdState, sgd


def test_round_trip_is_exact_and_leaves_no_temp_files(tmp_path: Path) -> None:
    params = seeded_parameters(MNIST_MLP, seed=1)
    opt = {"m_0": np.arange(3, dtype=np.float64), "step": np.array(4)}
    path = tmp_path / "fed" / "checkpoint.npz"
    save_checkpoint(
        path,
        Checkpoint(
            round=3,
            parameters=params,
            optimizer_state=opt,
            meta={"rng": {"state": 2**100}, "history": {"x": [1]}},
        ),
    )
    loaded = load_checkpoint(path, MNIST_MLP)
    assert loaded is not None and loaded.round == 3
    for a, b in zip(params, loaded.parameters, strict=True):
        assert a.tobytes() == b.tobytes()
    assert loaded.optimizer_state.keys() == opt.keys()
    assert loaded.meta["rng"]["state"] == 2**100
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.npz"]


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none.npz", MNIST_MLP) is None


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=f"{path}.*unreadable.*move it away"):
        load_checkpoint(path, MNIST_MLP)
    assert path.read_bytes().startswith(b"PK")  # nothing deleted


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.npz"
    params = seeded_parameters(MNIST_MLP, seed=1)
    params[2] = params[2][:, :5]
    save_checkpoint(path, Checkpoint(round=1, parameters=params, optimizer_state={}, meta={}))
    with pytest.raises(CheckpointError, match=r"does not match model 'mnist-mlp'.*fc2.weight"):
        load_checkpoint(path, MNIST_MLP)


def test_seeded_init_is_deterministic_and_pytorch_like() -> None:
    a, b = seeded_parameters(MNIST_MLP, 5), seeded_parameters(MNIST_MLP, 5)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
    assert np.abs(a[0]).max() <= 1 / np.sqrt(784)
    assert np.abs(a[1]).max() <= 1 / np.sqrt(784)  # bias bound follows its layer's fan-in
    assert not np.array_equal(a[0], seeded_parameters(MNIST_MLP, 6)[0])


def evaluation(loss: float | None) -> EvaluateRecord:
    return EvaluateRecord(
        loss=loss, metrics={"a": 1.0}, num_examples=3, participants=(), dropped={}, duration_s=0.1
    )


def test_federation_state_round_trip(tmp_path: Path) -> None:
    params = seeded_parameters(MNIST_MLP, seed=2)
    optimizer = sgd(lr=1.0, momentum=0.9)
    _, state = optimizer.update([p * 0.5 for p in params], optimizer.init(params), params)
    history = History(federation="digits")
    for rnd in (1, 2):
        history.add_round(
            RoundRecord(
                round=rnd,
                fit=FitRecord(
                    selected=2,
                    participants=(),
                    dropped={"c": "left"},
                    num_examples=0,
                    metrics={},
                    attempts=1,
                    duration_s=0.5,
                ),
                evaluate=evaluation(math.nan if rnd == 2 else 0.5),
                centralized=None,
                duration_s=0.5,
            )
        )
    history.to_json_text()  # the writer has encoded these rounds before: the cache is used
    path = tmp_path / "checkpoint.npz"
    save_federation(
        path,
        round=4,
        parameters=params,
        opt_state=state,
        history=history,
        meta={"partitions": {"inst-a": 1}},
    )
    resumed = load_federation(path, MNIST_MLP, optimizer)
    assert resumed is not None
    assert (resumed.round, resumed.history, resumed.meta["partitions"]) == (
        4,
        History(
            federation="digits",
            rounds=[
                history.rounds[0],
                dataclasses.replace(history.rounds[1], evaluate=evaluation(None)),
            ],
        ),
        {"inst-a": 1},
    )
    assert isinstance(resumed.opt_state, SgdState) and isinstance(state, SgdState)
    assert resumed.opt_state.step == state.step == 1
    for a, b in zip(resumed.opt_state.velocity, state.velocity, strict=True):
        assert a is not None and b is not None and a.tobytes() == b.tobytes()
    assert load_federation(tmp_path / "none.npz", MNIST_MLP, optimizer) is None


def test_a_checkpoint_with_an_unreadable_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.npz"
    params = seeded_parameters(MNIST_MLP, seed=1)
    meta = {"rng": {}, "history": {"schema_version": 9, "federation": "x", "rounds": []}}
    save_checkpoint(path, Checkpoint(round=1, parameters=params, optimizer_state={}, meta=meta))
    with pytest.raises(CheckpointError, match=f"{path} lacks a usable history.*schema_version 9"):
        load_federation(path, MNIST_MLP, sgd())


def test_metadata_given_both_encoded_and_as_a_value_is_refused(tmp_path: Path) -> None:
    params = seeded_parameters(MNIST_MLP, seed=1)
    checkpoint = Checkpoint(round=1, parameters=params, optimizer_state={}, meta={"history": {}})
    with pytest.raises(ValueError, match="'history' given both encoded and as a value"):
        save_checkpoint(tmp_path / "c.npz", checkpoint, encoded_meta={"history": "{}"})
    assert not (tmp_path / "c.npz").exists()
