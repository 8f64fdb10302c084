"""Checkpoints: exact round trip, clear errors for unusable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchard.models import MNIST_MLP
from orchard_server.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from orchard_server.initial import seeded_parameters


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
