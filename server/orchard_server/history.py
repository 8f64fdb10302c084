"""The history of a federation: its round records in ``history.json``.

The layout is documented field by field in ``docs/history.md``:
``{"schema_version": 1, "federation": ..., "rounds": [...]}``, one object per
:class:`.RoundRecord` with the dataclasses' field names as keys. It is strict
JSON: a non-finite number (a diverged client's loss) is written as ``null``,
because NaN and Infinity are not JSON and other tools refuse them. Files
written before the version existed have the same keys and are read as
version 1; a newer version is refused with a message saying so.

Written atomically after every round, so a crash never leaves a half-written
file and a resumed federation carries its history on. Each round is encoded
once and its JSON kept (:class:`History` caches it, and the round loop's
snapshots share that cache): rewriting the file after round N then costs
O(N) bytes of copying, not N rounds of re-encoding. Re-encoding everything
cost the writer thread, which shares the GIL with the round loop, most of
its time in long runs: with 100 virtual clients a round, more than a third
of the GIL-holding samples of a simulation (py-spy, 40 rounds).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from orchard_server.plot import plot_history
from orchard_server.records import (
    CentralizedRecord,
    ClientOutcome,
    EvaluateRecord,
    FitRecord,
    HistoryValue,
    RoundRecord,
    finite,
)
from orchard_server.storage import atomic_write_bytes

#: The layout version written at the top of ``history.json``.
SCHEMA_VERSION = 1
#: The history's file name in a federation's directory (its plot: ``history.png``).
HISTORY_FILE = "history.json"


class HistoryError(ValueError):
    """A history document cannot be read; the message names the field at fault."""


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


class _Reader:
    """Typed access to one JSON object, naming the field path in every error."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise HistoryError(f"{where} must be an object, got {type(data).__name__}")
        self.data, self.where = data, where

    def get(self, key: str, kinds: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise HistoryError(f"{self.where} has no {key!r}")
            return default
        value = self.data[key]
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise HistoryError(f"{self.where}.{key} has the wrong type: {value!r}")
        return value

    def number(self, key: str) -> float | None:
        value = self.get(key, (int, float, type(None)), None)
        return None if value is None else float(value)

    def metrics(self, key: str) -> dict[str, HistoryValue]:
        raw = self.get(key, dict, {})
        for name, value in raw.items():
            if not isinstance(value, bool | int | float | str | None):
                raise HistoryError(f"{self.where}.{key}.{name} is not a scalar: {value!r}")
        return dict(raw)

    def dropped(self) -> dict[str, str]:
        raw = self.get("dropped", dict, {})
        return {str(k): str(v) for k, v in raw.items()}

    def outcomes(self) -> tuple[ClientOutcome, ...]:
        raw = self.get("participants", list, [])
        out = []
        for i, item in enumerate(raw):
            r = _Reader(item, f"{self.where}.participants[{i}]")
            out.append(
                ClientOutcome(
                    client=r.get("client", str),
                    client_id=r.get("client_id", str, ""),
                    framework=r.get("framework", str, ""),
                    partition=r.get("partition", int, -1),
                    num_examples=r.get("num_examples", int),
                    loss=r.number("loss"),
                    metrics=r.metrics("metrics"),
                )
            )
        return tuple(out)


def _round_from_json(data: object, index: int) -> RoundRecord:
    r = _Reader(data, f"rounds[{index}]")
    fit = _Reader(r.get("fit", dict), f"rounds[{index}].fit")
    evaluate = r.get("evaluate", (dict, type(None)), None)
    centralized = r.get("centralized", (dict, type(None)), None)
    ev = None if evaluate is None else _Reader(evaluate, f"rounds[{index}].evaluate")
    ce = None if centralized is None else _Reader(centralized, f"rounds[{index}].centralized")
    return RoundRecord(
        round=r.get("round", int),
        fit=FitRecord(
            selected=fit.get("selected", int),
            participants=fit.outcomes(),
            dropped=fit.dropped(),
            num_examples=fit.get("num_examples", int),
            metrics=fit.metrics("metrics"),
            attempts=fit.get("attempts", int, 1),
            duration_s=fit.number("duration_s") or 0.0,
        ),
        evaluate=None
        if ev is None
        else EvaluateRecord(
            loss=ev.number("loss"),
            metrics=ev.metrics("metrics"),
            num_examples=ev.get("num_examples", int, 0),
            participants=ev.outcomes(),
            dropped=ev.dropped(),
            duration_s=ev.number("duration_s") or 0.0,
        ),
        centralized=None
        if ce is None
        else CentralizedRecord(
            loss=ce.number("loss"),
            metrics=ce.metrics("metrics"),
            num_examples=ce.get("num_examples", int, 0),
            source=ce.get("source", str, ""),
            dropped=ce.dropped(),
        ),
        duration_s=r.number("duration_s") or 0.0,
        finished_at=r.number("finished_at"),
    )


#: Indentation of ``history.json``; a round object sits two levels deep in it.
_INDENT = 2


def _round_to_json(record: RoundRecord) -> dict[str, Any]:
    value: dict[str, Any] = _strict(dataclasses.asdict(record))
    return value


class _Encoded(NamedTuple):
    """One round record's indented JSON text (only the text is kept: it is what is written)."""

    record: RoundRecord
    #: ``json.dumps(value, indent=2)`` with every line indented to its place in the file.
    text: str


def _encode(record: RoundRecord) -> _Encoded:
    text = json.dumps(_round_to_json(record), indent=_INDENT, allow_nan=False)
    return _Encoded(record, text.replace("\n", "\n" + " " * (2 * _INDENT)))


#: round number -> that round's encoding (checked against the record's identity).
RoundCache = dict[int, _Encoded]


@dataclass(slots=True)
class History:
    """The rounds of one federation, in round order.

    ``cache`` holds each round's JSON text once it was encoded. Records are
    frozen, so an entry stays right for as long as its record is the one in
    ``rounds``; a replaced round (after a resume) is encoded again. Copies
    made for the writer share the cache. Whichever thread writes fills it
    (the writer's, in a server): entries are checked against the record on
    use, and a dict's single-key reads and writes are atomic under the GIL,
    so two threads filling it at once only repeat work.
    """

    federation: str
    rounds: list[RoundRecord] = field(default_factory=list)
    cache: RoundCache = field(default_factory=dict, repr=False, compare=False)

    def add_round(self, record: RoundRecord) -> None:
        """Append (or replace, after a resume) the record of one round."""
        if not self.rounds or record.round > self.rounds[-1].round:
            self.rounds = [*self.rounds, record]  # a new list: snapshots keep the old one
            return
        self.rounds = sorted(
            [r for r in self.rounds if r.round != record.round] + [record], key=lambda r: r.round
        )

    def copy(self) -> History:
        """A copy with its own record list and the same cache (for the writer's snapshots)."""
        return History(federation=self.federation, rounds=list(self.rounds), cache=self.cache)

    def _encoded(self) -> list[_Encoded]:
        out = []
        for record in self.rounds:
            hit = self.cache.get(record.round)
            if hit is None or hit.record is not record:
                hit = self.cache[record.round] = _encode(record)
            out.append(hit)
        return out

    def to_json(self) -> dict[str, Any]:
        """The document written to ``history.json`` (strict JSON; see docs/history.md)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "federation": self.federation,
            "rounds": [_round_to_json(r) for r in self.rounds],
        }

    def to_json_text(self) -> str:
        """:meth:`to_json` as indented JSON, exactly ``json.dumps(..., indent=2)``.

        Built from the cached text of each round, so only new rounds are encoded.
        """
        # '{\n  "schema_version": 1,\n  "federation": "..."\n}' without its closing "\n}".
        head = json.dumps(
            {"schema_version": SCHEMA_VERSION, "federation": self.federation}, indent=_INDENT
        )[:-2]
        pad = " " * _INDENT
        rounds = ",\n".join(pad * 2 + e.text for e in self._encoded())
        if not rounds:
            return f'{head},\n{pad}"rounds": []\n}}'
        return f'{head},\n{pad}"rounds": [\n{rounds}\n{pad}]\n}}'

    @classmethod
    def from_json(cls, data: object) -> History:
        """Inverse of :meth:`to_json`; a document without a version is read as version 1.

        Raises :class:`HistoryError` naming the field for anything else, and
        for a version newer than this code knows.
        """
        doc = _Reader(data, "history")
        version = doc.get("schema_version", int, SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise HistoryError(
                f"history has schema_version {version}; this Orchard reads version "
                f"{SCHEMA_VERSION} (and unversioned files from before it)"
            )
        rounds = [_round_from_json(r, i) for i, r in enumerate(doc.get("rounds", list, []))]
        return cls(federation=doc.get("federation", str), rounds=rounds)

    @classmethod
    def load(cls, path: Path) -> History:
        """Read a ``history.json``; the error names the file."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise HistoryError(f"{path}: {exc}") from None

    def save(self, directory: Path, *, title: str = "", plot: bool = True) -> None:
        """Write ``history.json`` and (with ``plot``) ``history.png``, titled ``title``, in
        ``directory``."""
        atomic_write_bytes(directory / HISTORY_FILE, (self.to_json_text() + "\n").encode())
        if plot:
            plot_history(self, directory / "history.png", title=title)
