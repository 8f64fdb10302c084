"""The background state writer: latest state wins, flush never loses the last round."""

from __future__ import annotations

import gc
import itertools
import json
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from orchard_server.writer import Snapshot, StateWriter
from tests.helpers.histories import rounds_on_disk, short_history, wait_for_rounds


def test_flush_writes_the_last_snapshot_history_before_checkpoint(tmp_path: Path) -> None:
    order: list[tuple[str, int]] = []
    writer = StateWriter(tmp_path, plot_interval=3600.0)

    def checkpoint(rnd: int) -> None:
        # history.json of this round is already on disk when its checkpoint is written
        written = json.loads((tmp_path / "history.json").read_text())
        order.append(("checkpoint", len(written["rounds"])))
        assert len(written["rounds"]) >= rnd

    for rnd in (1, 2, 3):
        writer.submit(Snapshot(rnd, short_history(rnd), lambda rnd=rnd: checkpoint(rnd)))  # type: ignore[misc]
    writer.flush()
    assert order[-1] == ("checkpoint", 3)
    assert writer.written_round == 3
    assert (tmp_path / "history.png").is_file()  # always drawn on the final flush


def test_a_pending_snapshot_is_replaced_by_a_newer_one(tmp_path: Path) -> None:
    release = threading.Event()
    started = threading.Event()
    written: list[int] = []

    def slow(rnd: int) -> None:
        started.set()
        release.wait(10)
        written.append(rnd)

    writer = StateWriter(tmp_path, plot_interval=3600.0)
    writer.submit(Snapshot(1, short_history(1), lambda: slow(1)))
    assert started.wait(10)
    writer.submit(Snapshot(2, short_history(2), lambda: written.append(2)))
    writer.submit(Snapshot(3, short_history(3), lambda: written.append(3)))  # replaces round 2
    release.set()
    writer.flush(plot=False)
    assert written == [1, 3]


def test_a_failed_write_is_raised_to_the_round_loop_once(tmp_path: Path) -> None:
    writer = StateWriter(tmp_path)

    def broken() -> None:
        raise OSError("disk full")

    writer.submit(Snapshot(1, short_history(1), broken))
    with pytest.raises(RuntimeError, match="disk full"):
        writer.flush(plot=False)
    writer.submit(Snapshot(2, short_history(2), lambda: None))
    writer.flush(plot=False)
    assert writer.written_round == 2


def test_the_first_plot_waits_for_the_interval_but_the_final_flush_draws(
    tmp_path: Path,
) -> None:
    writer = StateWriter(tmp_path, plot_interval=3600.0)
    writer.submit(Snapshot(1, short_history(1), lambda: None))
    writer.flush(plot=False)
    assert (tmp_path / "history.json").is_file()
    assert not (tmp_path / "history.png").exists()  # round 1 does not pay matplotlib
    writer.flush()
    assert (tmp_path / "history.png").is_file()


def test_checkpoints_wait_for_the_interval_and_flush_writes_the_last(tmp_path: Path) -> None:
    saved: list[int] = []
    writer = StateWriter(tmp_path, plot_interval=3600.0, checkpoint_interval=3600.0)
    for rnd in (1, 2, 3):
        writer.submit(Snapshot(rnd, short_history(rnd), lambda rnd=rnd: saved.append(rnd)))  # type: ignore[misc]
        wait_for_rounds(tmp_path, rnd)
    # The first round's checkpoint is due at once; later ones wait for the interval,
    # while every round's history is written.
    assert saved == [1]
    assert writer.written_round == 1
    writer.flush(plot=False)
    assert saved == [1, 3]  # round 2's checkpoint was replaced by round 3's, not written
    assert writer.written_round == 3


def test_a_checkpoint_not_yet_due_is_written_when_the_interval_ends_without_a_later_round(
    tmp_path: Path,
) -> None:
    interval = 0.3
    saved: list[tuple[int, float, int]] = []
    writer = StateWriter(tmp_path, plot_interval=3600.0, checkpoint_interval=interval)

    def save(rnd: int) -> None:
        # its round's history is on disk before the checkpoint
        saved.append((rnd, time.monotonic(), rounds_on_disk(tmp_path)))

    writer.submit(Snapshot(1, short_history(1), lambda: save(1)))
    writer.submit(Snapshot(2, short_history(2), lambda: save(2)))  # may replace round 1
    deadline = time.monotonic() + 10
    while writer.written_round < 2:  # no flush, no later round: the writer's own timer
        assert time.monotonic() < deadline, f"round 2's checkpoint never written: {saved}"
        time.sleep(0.01)
    assert saved[-1][0] == 2 and saved[-1][2] >= 2
    times = [at for _, at, _ in saved]
    assert all(b - a >= interval for a, b in itertools.pairwise(times)), saved
    writer.flush(plot=False)
    assert [rnd for rnd, _, _ in saved][-1] == 2 and len(saved) <= 2  # nothing left to write


def test_interval_zero_writes_every_round_it_gets_to(tmp_path: Path) -> None:
    saved: list[int] = []
    writer = StateWriter(tmp_path, plot_interval=3600.0, checkpoint_interval=0.0)
    for rnd in (1, 2, 3):
        writer.submit(Snapshot(rnd, short_history(rnd), lambda rnd=rnd: saved.append(rnd)))  # type: ignore[misc]
        writer.flush(plot=False)
    assert saved == [1, 2, 3]


class _BlockedPlotter:
    """A plot helper whose drawings, once ``blocking``, wait until released
    (matplotlib's first import can take seconds on a busy server)."""

    def __init__(self) -> None:
        self.blocking = False
        self.drawing = threading.Event()
        self.release = threading.Event()

    def draw(self, history: Path, png: Path, *, title: str = "") -> None:
        if self.blocking:
            self.drawing.set()
            assert self.release.wait(10), "the test never released the drawing"


@pytest.mark.parametrize("checkpoint_interval", [0.0, 3600.0])
def test_a_drawing_holds_no_round_model_once_a_newer_round_came(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_interval: float
) -> None:
    # Measured (docs/performance.md, item 18): while the writer waited for the
    # plot helper, the snapshot it had just written kept that round's model
    # alive beside the next rounds' models, one more model at the server's peak.
    plotter = _BlockedPlotter()
    monkeypatch.setattr("orchard_server.writer.shared_plotter", lambda: plotter)
    writer = StateWriter(tmp_path, plot_interval=0.0, checkpoint_interval=checkpoint_interval)
    saved: list[int] = []
    models: list[weakref.ref[np.ndarray]] = []

    def snapshot(rnd: int) -> Snapshot:
        model = np.full(1000, float(rnd), dtype=np.float32)
        models.append(weakref.ref(model))
        return Snapshot(rnd, short_history(rnd), lambda: saved.append(int(model[0])))

    writer.submit(snapshot(1))
    writer.flush(plot=False)  # round 1: history and checkpoint (the first is due at once)
    plotter.blocking = True
    writer.submit(snapshot(2))  # its history is written, then the writer draws, and waits
    assert plotter.drawing.wait(10)
    writer.submit(snapshot(3))  # a newer round: round 2's model is no longer needed
    gc.collect()
    try:
        assert models[0]() is None, "round 1's model outlived its writes"
        assert models[1]() is None, "round 2's model is held while the writer draws"
        assert models[2]() is not None  # round 3's is pending
    finally:
        plotter.release.set()
    writer.flush(plot=False)
    assert saved == ([1, 2, 3] if checkpoint_interval == 0 else [1, 3])
    assert rounds_on_disk(tmp_path) == 3
