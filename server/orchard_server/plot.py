"""``history.png``: loss and accuracy per round, read from the typed history records."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from orchard_server.storage import atomic_write_bytes

if TYPE_CHECKING:
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
        ax.set_xlabel("round")
        ax.set_title(f"{title or history.federation}: {quantity}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
