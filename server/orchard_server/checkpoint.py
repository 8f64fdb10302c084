"""Checkpoints: everything needed to resume a federation after a crash.

One ``.npz`` per federation holds the global parameters, the server
optimizer's state, and a JSON document (round number, RNG state, history,
partition assignments). One file, written atomically, so parameters and
metadata can never disagree after a kill.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchard.spec import ModelSpec, SpecError
from orchard.typing import NDArrays
from orchard_server.storage import atomic_write_npz

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


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically."""
    arrays: dict[str, np.ndarray] = {f"param_{i}": p for i, p in enumerate(checkpoint.parameters)}
    arrays.update({f"opt_{k}": v for k, v in checkpoint.optimizer_state.items()})
    meta = {"format": FORMAT_VERSION, "round": checkpoint.round, **checkpoint.meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
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
