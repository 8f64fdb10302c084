"""Runs of a federation: a run that cannot be resumed is archived, so the next start trains anew.

A federation's directory holds the run in progress (``checkpoint.npz``,
``history.json``, ``history.png``). Resuming makes sense only for a run that
has rounds left; starting the server again after a run *finished* (a second
``docker compose up``, say) means "train again". The finished run's files are
then moved, untouched, into ``runs/<run id>/`` beside them, where the run id
is the UTC time the run's last checkpoint was written (``20261130T201500Z``),
so every past result stays on disk and is easy to tell apart. A history with
no checkpoint beside it cannot be resumed either (a run that failed before
its first round completed; a server killed after writing round 1's history
and before its checkpoint, which the writer writes second; a checkpoint
removed by hand): it is archived the same way, its run id the history's
write time, rather than overwritten by the next run's first round.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from orchard.files import fsync_directory

__all__ = ["ARCHIVE_DIR", "archive_run", "run_id_of"]

#: Subdirectory of a federation's directory holding its archived runs.
ARCHIVE_DIR = "runs"


def run_id_of(last: Path) -> str:
    """The id of the run whose last-written file is ``last``: its UTC write time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(last.stat().st_mtime))


def archive_run(directory: Path, last: Path) -> Path:
    """Move the run files of ``directory`` into ``directory/runs/<run id>/``; that directory.

    ``last`` names the run (its checkpoint, or its history when it has no
    checkpoint) and moves last. Only plain files move (the archive itself stays
    where it is); each move is a rename within one file system, so a kill
    midway leaves every file either in the run directory or in the archive,
    never lost. A second run ending within the same second gets a ``-2``
    (``-3``, ...) suffix.
    """
    base = run_id_of(last)
    target = directory / ARCHIVE_DIR / base
    suffix = 1
    while target.exists():
        suffix += 1
        target = directory / ARCHIVE_DIR / f"{base}-{suffix}"
    target.mkdir(parents=True)
    # ``last`` last: while it is still in place, a crash midway restarts here
    # and archives the rest.
    files = sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p == last)
    for path in files:
        os.replace(path, target / path.name)
    fsync_directory(target)
    fsync_directory(directory)
    return target
