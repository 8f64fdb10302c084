"""``history.png``: loss and accuracy per round, read from the typed history records.

:func:`plot_history` draws in the calling process. A server draws through a
:class:`Plotter` instead: one helper process (:func:`main`, run by
``python -c``) per server process, started at its first drawing,
reads ``history.json`` and writes ``history.png``. matplotlib then never
loads into the server: its import and first drawing added about 40 MB to
the server's resident memory (about one 11.2M-parameter model, at the
round's peak; measured in ``docs/performance.md``), and each drawing held
the server's GIL for 0.1 to 0.5 s, stalling the round loop.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

from orchard.logs import take_stdout
from orchard_server.storage import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from orchard_server.history import History
    from orchard_server.records import RoundRecord


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _curves(record: RoundRecord) -> dict[str, tuple[float | None, float | None]]:
    """(loss, accuracy) of each curve one round contributes to."""
    out: dict[str, tuple[float | None, float | None]] = {}
    if record.evaluate is not None:
        metrics = record.evaluate.metrics
        out["federated"] = (record.evaluate.loss, _number(metrics.get("accuracy")))
    if record.centralized is not None:
        metrics = record.centralized.metrics
        out["centralized"] = (record.centralized.loss, _number(metrics.get("accuracy")))
    fit = record.fit.metrics
    train_accuracy = _number(fit.get("accuracy", fit.get("train_accuracy")))
    out["train"] = (_number(fit.get("train_loss")), train_accuracy)
    return out


def round_axis(ax: Axes, label: str = "round") -> None:
    """Label ``ax``'s x axis as rounds, ticked at whole rounds only.

    Matplotlib's default ticks put "2.5" under a 20-round curve; a round has
    no halves. (matplotlib is imported here: the server process never loads it.)
    """
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: History, path: Path, *, title: str = "") -> None:
    """Loss and accuracy per round, federated, centralized and train, as a PNG.

    ``title`` heads both plots (say ``"fashion: mnist-mlp on fashion-mnist"``);
    the federation's name when empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    loss: dict[str, list[tuple[int, float]]] = {}
    acc: dict[str, list[tuple[int, float]]] = {}
    for record in history.rounds:
        for label, (round_loss, round_acc) in _curves(record).items():
            if round_loss is not None:
                loss.setdefault(label, []).append((record.round, round_loss))
            if round_acc is not None:
                acc.setdefault(label, []).append((record.round, round_acc))
    for axis, points in ((ax_loss, loss), (ax_acc, acc)):
        for label, series in points.items():
            axis.plot(*zip(*series, strict=True), marker="o", label=label)
    for ax, quantity in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        round_axis(ax)
        ax.set_title(f"{title or history.federation}: {quantity}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


class PlotError(RuntimeError):
    """The helper process could not draw (named file, its error, a timeout, or its exit)."""


class Plotter:
    """Draws ``history.png`` files in one helper process, started on first use.

    :meth:`draw` waits at most ``timeout`` seconds; a helper that overruns it
    or dies is stopped, the error says what happened, and the next drawing
    starts a new one. Calls from several threads (one writer per federation)
    take turns. The helper exits when its pipe closes, so it cannot outlive
    the server, however the server ends.
    """

    def __init__(self, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The helper's process id (None: not running)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def draw(self, history_json: Path, png: Path, *, title: str = "") -> None:
        """Draw ``history_json``'s rounds into ``png``; raises :class:`PlotError`.

        A helper found dead when asked (it was killed between drawings) is
        replaced and asked again, once; one that dies on a fresh start fails
        this drawing.
        """
        request = json.dumps({"history": str(history_json), "png": str(png), "title": title})
        with self._lock:
            if self._closed:
                raise PlotError("the plotter is closed (the server is stopping)")
            reply = self._ask(request.encode() + b"\n", png, retry=self._proc is not None)
        answer = json.loads(reply)
        if answer.get("error"):
            raise PlotError(str(answer["error"]))

    def _ask(self, request: bytes, png: Path, *, retry: bool) -> bytes:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
            reply = _read_line(proc.stdout, self.timeout)
        except TimeoutError:
            self._stop()
            raise PlotError(
                f"drawing {png} timed out after {self.timeout:g} s (the helper is stopped)"
            ) from None
        except OSError:
            reply = b""  # a broken pipe: the helper is gone
        if reply:
            return reply
        code = self._stop()
        if retry:
            return self._ask(request, png, retry=False)
        raise PlotError(f"the plot helper exited with code {code} while drawing {png}")

    def close(self) -> None:
        """Stop the helper (it exits at the end of its pipe) and refuse further drawings."""
        with self._lock:
            self._closed = True
            self._stop()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [sys.executable, "-c", HELPER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return self._proc

    def _stop(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # already broken: the helper is gone
                proc.stdin.close()
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One reply line (b"" when the helper closed its end), waiting at most ``timeout`` s.

    ``select`` itself resumes after a signal with the time left (PEP 475).
    """
    readable, _, _ = select.select([stream], [], [], timeout)
    if not readable:
        raise TimeoutError
    return stream.readline()


#: What the helper runs (``-c``: under ``-m`` this module would be imported twice,
#: once by the package).
HELPER_CODE = "import sys; from orchard_server.plot import main; sys.exit(main())"

_shared: list[Plotter] = []
_shared_lock = threading.Lock()


def shared_plotter() -> Plotter:
    """This process's plotter: one helper however many federations draw."""
    with _shared_lock:
        if not _shared:
            _shared.append(Plotter())
            atexit.register(_shared[0].close)
        return _shared[0]


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    """The helper's loop: one JSON request per line, one JSON reply per line, until EOF."""
    from orchard_server.history import History

    for line in inp:
        try:
            request = json.loads(line)
            history = History.load(Path(request["history"]))
            plot_history(history, Path(request["png"]), title=str(request.get("title", "")))
            reply: dict[str, str] = {}
        except Exception as exc:  # any failure is this drawing's, reported; the helper goes on
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    return 0


def main() -> int:
    """Entry point: the replies get stdout to themselves; anything printed goes to stderr.

    A server killed while its drawing runs leaves nobody to read the reply:
    the helper then ends quietly (status 0), instead of printing a broken
    pipe's traceback into the server's log, where it would read as the
    server's own failure.
    """
    try:
        return serve(sys.stdin.buffer, take_stdout())
    except BrokenPipeError:
        os._exit(0)  # not sys.exit: closing the reply stream would flush it into the pipe again
