"""history.png in the plot helper process: drawn, errors named, a dead or stuck helper replaced."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchard_server.plot import HELPER_CODE, PlotError, Plotter, round_axis
from orchard_server.writer import Snapshot, StateWriter
from tests.helpers.histories import short_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plotter() -> Iterator[Plotter]:
    p = Plotter()
    yield p
    p.close()


def test_the_helper_draws_history_json_into_a_png(tmp_path: Path, plotter: Plotter) -> None:
    short_history(3).save(tmp_path, plot=False)
    plotter.draw(tmp_path / "history.json", tmp_path / "history.png", title="t")
    assert (tmp_path / "history.png").read_bytes().startswith(PNG_SIGNATURE)
    assert plotter.pid is not None and plotter.pid != os.getpid()


def test_round_axes_are_ticked_at_whole_rounds() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        ax.plot(range(1, 21), range(20))  # matplotlib's own ticks: 2.5, 5.0, 7.5, ...
        round_axis(ax, "communication round")
        fig.canvas.draw()
        ticks = ax.get_xticks()
        assert ax.get_xlabel() == "communication round"
        assert len(ticks) >= 3
        assert all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)


def test_a_missing_history_is_named_and_the_helper_goes_on(
    tmp_path: Path, plotter: Plotter
) -> None:
    with pytest.raises(PlotError, match=r"nowhere\.json"):
        plotter.draw(tmp_path / "nowhere.json", tmp_path / "a.png")
    helper = plotter.pid
    assert helper is not None
    short_history(2).save(tmp_path, plot=False)
    plotter.draw(tmp_path / "history.json", tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes().startswith(PNG_SIGNATURE)
    assert plotter.pid == helper, "one bad request does not cost the helper"


def test_a_killed_helper_is_replaced_at_the_next_drawing(tmp_path: Path, plotter: Plotter) -> None:
    short_history(2).save(tmp_path, plot=False)
    plotter.draw(tmp_path / "history.json", tmp_path / "a.png")
    first = plotter.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    plotter.draw(tmp_path / "history.json", tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes().startswith(PNG_SIGNATURE)
    assert plotter.pid not in (None, first)


def test_a_helper_past_its_timeout_is_stopped_and_the_error_says_so(
    tmp_path: Path, plotter: Plotter
) -> None:
    short_history(2).save(tmp_path, plot=False)
    plotter.timeout = 0.001  # less than importing matplotlib takes
    with pytest.raises(PlotError, match="timed out"):
        plotter.draw(tmp_path / "history.json", tmp_path / "a.png")
    assert plotter.pid is None
    plotter.timeout = 120.0
    plotter.draw(tmp_path / "history.json", tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_closed_plotter_refuses_to_draw(tmp_path: Path) -> None:
    plotter = Plotter()
    plotter.close()
    with pytest.raises(PlotError, match="closed"):
        plotter.draw(tmp_path / "history.json", tmp_path / "a.png")


def test_a_failed_drawing_is_logged_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "history.png").mkdir()  # the PNG cannot be written over a directory
    writer = StateWriter(tmp_path, plot_interval=3600.0)
    writer.submit(Snapshot(1, short_history(1), lambda: None))
    with caplog.at_level(logging.ERROR, logger="orchard.server"):
        writer.flush()  # draws, fails, and does not raise
    assert "history.png not drawn" in caplog.text
    writer.submit(Snapshot(2, short_history(2), lambda: None))
    writer.flush(plot=False)
    assert writer.written_round == 2


def test_the_server_process_never_imports_matplotlib(tmp_path: Path) -> None:
    # A fresh interpreter: this test process may have imported matplotlib already.
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.helpers.histories import short_history
        from orchard_server.writer import Snapshot, StateWriter

        writer = StateWriter(Path({str(tmp_path)!r}), plot_interval=0.0)
        for rnd in (1, 2, 3):
            writer.submit(Snapshot(rnd, short_history(rnd), lambda: None))
        writer.flush()
        assert Path({str(tmp_path)!r}, "history.png").is_file()
        assert "matplotlib" not in sys.modules, "drawn in the server process"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_a_helper_that_cannot_start_fails_the_drawing_with_its_exit_code(
    tmp_path: Path, plotter: Plotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchard_server.plot.HELPER_CODE", "import sys; sys.exit(3)")
    with pytest.raises(PlotError, match="exited with code 3"):
        plotter.draw(tmp_path / "history.json", tmp_path / "a.png")


def test_a_helper_whose_server_is_gone_ends_quietly(tmp_path: Path) -> None:
    # The server SIGKILLed mid-drawing: the reply has nobody to go to. The helper
    # must end at once and cleanly, not print a traceback into the server's log.
    short_history(2).save(tmp_path, plot=False)
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert helper.stdin is not None and helper.stdout is not None
    helper.stdout.close()  # the reading end is gone, as when the server dies
    request = {"history": str(tmp_path / "history.json"), "png": str(tmp_path / "a.png")}
    helper.stdin.write(json.dumps(request).encode() + b"\n")
    helper.stdin.flush()
    _, stderr = helper.communicate(timeout=120)
    assert (tmp_path / "a.png").read_bytes().startswith(PNG_SIGNATURE)  # it drew, then found no one
    assert b"BrokenPipeError" not in stderr and b"Traceback" not in stderr, stderr.decode()
    assert helper.returncode == 0
