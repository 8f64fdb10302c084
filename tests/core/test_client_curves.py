"""A client's per-epoch TensorBoard curves (``--tensorboard-dir``)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from orchard.client.curves import EpochCurves
from orchard.client.training import EpochStats

tensorboard = pytest.importorskip("tensorboardX", reason="tensorboardX is optional for clients")


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> (step, value) of every scalar in the event files of ``directory``."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in directory.glob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event()
            event.ParseFromString(data[at + 12 : at + 12 + length])
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
            at += 12 + length + 4
    return out


def test_every_epoch_of_every_fit_is_a_step(tmp_path: Path) -> None:
    curves = EpochCurves(tmp_path, federation="mnist", client="alice")
    for fit in range(2):
        for epoch in (1, 2):
            curves(
                EpochStats(
                    epoch=epoch, epochs=2, loss=1.0 / (fit * 2 + epoch), accuracy=0.5,
                    examples_per_second=100.0,
                )
            )  # fmt: skip
    got = scalars(tmp_path / "mnist" / "clients" / "alice")
    assert [step for step, _ in got["train/loss"]] == [1, 2, 3, 4]
    assert got["train/loss"][-1][1] == pytest.approx(0.25)
    assert set(got) == {"train/loss", "train/accuracy", "train/examples_per_second"}
