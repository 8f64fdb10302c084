"""The history of a federation: what happened in every round, as JSON and a plot.

Written atomically after every round, so a crash never leaves a half-written
file and a resumed federation carries its history on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard_server.storage import atomic_write_json


@dataclass(slots=True)
class History:
    """Rounds as plain JSON-ready dicts (see :meth:`add_round` for the keys)."""

    federation: str
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def add_round(self, record: dict[str, Any]) -> None:
        """Append (or replace, after a resume) the record of one round.

        Keys: ``round``, ``fit`` (selected, participants, dropped: {client: reason},
        num_examples, metrics, attempts, duration_s), ``evaluate`` (loss, metrics,
        participants, dropped, duration_s) or None, ``centralized`` (loss, metrics)
        or None, and ``duration_s``.
        """
        self.rounds = [r for r in self.rounds if r["round"] != record["round"]]
        self.rounds.append(record)
        self.rounds.sort(key=lambda r: r["round"])

    def series(self, phase: str, key: str) -> list[tuple[int, float]]:
        """(round, value) pairs of one number, e.g. ("evaluate", "loss")."""
        out: list[tuple[int, float]] = []
        for r in self.rounds:
            block = r.get(phase) or {}
            value = block.get(key, (block.get("metrics") or {}).get(key))
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append((r["round"], float(value)))
        return out

    def to_json(self) -> dict[str, Any]:
        """The document written to ``history.json``."""
        return {"federation": self.federation, "rounds": self.rounds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_json`."""
        return cls(federation=data["federation"], rounds=list(data.get("rounds", [])))

    def save(self, directory: Path, *, title: str = "") -> None:
        """Write ``history.json`` and ``history.png`` (plots titled ``title``) in ``directory``."""
        atomic_write_json(directory / "history.json", self.to_json())
        plot_history(self, directory / "history.png", title=title)


def plot_history(history: History, path: Path, *, title: str = "") -> None:
    """Loss and accuracy per round, distributed and centralized, as a PNG.

    ``title`` heads both plots (say ``"fashion: mnist-mlp on fashion-mnist"``);
    the federation's name when empty.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orchard_server.storage import atomic_write_bytes

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for phase, label in (
        ("evaluate", "federated"),
        ("centralized", "centralized"),
        ("fit", "train"),
    ):
        loss = history.series(phase, "loss") or history.series(phase, "train_loss")
        acc = history.series(phase, "accuracy") or history.series(phase, "train_accuracy")
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), marker="o", label=label)
        if acc:
            ax_acc.plot(*zip(*acc, strict=True), marker="o", label=label)
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
