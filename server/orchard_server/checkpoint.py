"""Checkpoints: everything needed to resume a federation after a crash.

One ``.npz`` per federation holds the global parameters, the server
optimizer's state, and a JSON document (round number, history, partition
assignments). There is no generator state to keep: every random draw of a
round comes from (seed, round, attempt) alone
(:func:`~orchard_server.strategy.round_rng`). One file, written atomically, so parameters and
metadata can never disagree after a kill. :func:`save_federation` and
:func:`load_federation` are the glue between a federation's live state
(optimizer state, typed history) and that file.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchard.spec import ModelSpec, SpecError
from orchard.typing import NDArrays
from orchard_server.history import History, HistoryError
from orchard_server.storage import atomic_write_npz
from orchard_server.strategy import ServerOptimizer, State, state_from_arrays, state_to_arrays

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The state of a federation after a completed round."""

    round: int
    parameters: NDArrays
    optimizer_state: dict[str, np.ndarray]
    meta: dict[str, Any]


def save_checkpoint(
    path: Path, checkpoint: Checkpoint, *, encoded_meta: Mapping[str, str] | None = None
) -> None:
    """Write ``checkpoint`` atomically.

    ``encoded_meta`` adds metadata entries whose values are already JSON text
    (the history, encoded round by round once: see :mod:`orchard_server.history`);
    they are spliced into the metadata document as they are, not parsed again.
    """
    arrays: dict[str, np.ndarray] = {f"param_{i}": p for i, p in enumerate(checkpoint.parameters)}
    arrays.update({f"opt_{k}": v for k, v in checkpoint.optimizer_state.items()})
    meta = {"format": FORMAT_VERSION, "round": checkpoint.round, **checkpoint.meta}
    text = json.dumps(meta)
    for key, value in (encoded_meta or {}).items():
        if key in meta:
            raise ValueError(f"checkpoint metadata {key!r} given both encoded and as a value")
        text = f"{text[:-1]}, {json.dumps(key)}: {value}}}"
    arrays["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
    atomic_write_npz(path, arrays)


def load_checkpoint(path: Path, spec: ModelSpec) -> Checkpoint | None:
    """The checkpoint at ``path``, or None if there is none; validated against ``spec``."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            meta = json.loads(npz["meta"].tobytes().decode())
            params = [npz[f"param_{i}"] for i in range(len(spec.tensors)) if f"param_{i}" in files]
            opt = {k[4:]: npz[k] for k in files if k.startswith("opt_")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({exc}); move it away to start the federation afresh"
        ) from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')}, expected {FORMAT_VERSION}"
        )
    try:
        spec.validate(params)
    except SpecError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not match model {spec.model_id!r}: {exc}; "
            "move it away to start afresh"
        ) from None
    return Checkpoint(round=int(meta["round"]), parameters=params, optimizer_state=opt, meta=meta)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed:
    """A federation's state as its checkpoint holds it."""

    round: int
    parameters: NDArrays
    opt_state: State
    history: History
    #: Everything else the federation stored (``partitions``, ``model_id``, ``strategy``).
    meta: dict[str, Any]


def save_federation(
    path: Path,
    *,
    round: int,
    parameters: NDArrays,
    opt_state: State,
    history: History,
    meta: dict[str, Any],
) -> None:
    """Write a federation's state after ``round`` atomically (``meta`` is stored as is)."""
    save_checkpoint(
        path,
        Checkpoint(
            round=round,
            parameters=parameters,
            optimizer_state=state_to_arrays(opt_state),
            meta=meta,
        ),
        encoded_meta={"history": history.to_json_text()},
    )


def load_federation(path: Path, spec: ModelSpec, optimizer: ServerOptimizer) -> Resumed | None:
    """The state saved by :func:`save_federation`, or None when there is no checkpoint."""
    checkpoint = load_checkpoint(path, spec)
    if checkpoint is None:
        return None
    meta = dict(checkpoint.meta)
    try:
        history = History.from_json(meta.pop("history"))
        meta.pop("rng", None)  # kept by earlier versions; nothing reads it any more
    except (KeyError, HistoryError) as exc:
        raise CheckpointError(
            f"checkpoint {path} lacks a usable history ({exc}); move it away to start afresh"
        ) from None
    return Resumed(
        round=checkpoint.round,
        parameters=checkpoint.parameters,
        opt_state=state_from_arrays(optimizer, checkpoint.parameters, checkpoint.optimizer_state),
        history=history,
        meta=meta,
    )
