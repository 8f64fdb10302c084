"""Logging for every Orchard command: lines for people by default, JSON on request.

``text`` writes ``12:00:01 INFO    orchard.server: ...`` lines. ``json`` writes
one JSON object per line (python-json-logger) with the time, level, logger
and message plus the ids a log line carries: ``federation``, ``round`` and
``client`` where the code passes them (``extra=``), and any ``fields`` given
here for the whole process (a client's federation and name), so a log
collector can filter one federation's or one client's events.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import BinaryIO, Final

from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_FORMATS", "configure_logging", "take_stdout"]

#: The values of ``--log-format``.
LOG_FORMATS: Final = ("text", "json")


class _Fields(logging.Filter):
    """Adds fixed fields to every record that does not set them itself."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(
    level: str, log_format: str = "text", *, fields: Mapping[str, object] | None = None
) -> None:
    """Set up the root logger once for a command (``log_format``: ``text`` or ``json``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(
            f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
        )
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        if fields:
            handler.addFilter(_Fields(fields))
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
            )
        )
    # Like basicConfig always did here: a process (or test) that set up logging keeps it.
    logging.basicConfig(level=level.upper(), handlers=[handler])


def take_stdout() -> BinaryIO:
    """This process's original stdout, for a line protocol; stdout itself now goes to stderr.

    A helper process that answers its parent on stdout (a simulation worker,
    the plot helper) must not let a ``print`` or a library's output corrupt a
    reply: after this call, anything written to file descriptor 1 lands on
    stderr, and only the returned stream reaches the parent's pipe.
    """
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return replies
