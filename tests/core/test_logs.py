"""Logging set-up: human lines by default, one JSON event per line on request."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchard.logs import configure_logging


def _log(log_format: str) -> str:
    """Stderr of a fresh process that logs two lines (one with a round) in ``log_format``."""
    code = (
        "import logging; from orchard.logs import configure_logging; "
        f"configure_logging('INFO', {log_format!r}, "
        "fields={'federation': 'mnist', 'client': 'a'}); "
        "log = logging.getLogger('orchard.test'); "
        "log.info('joined'); log.info('round %d done', 3, extra={'round': 3})"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stderr


def test_json_lines_carry_the_ids() -> None:
    first, second = (json.loads(line) for line in _log("json").splitlines())
    assert first["message"] == "joined" and first["level"] == "INFO"
    assert (first["federation"], first["client"], first["logger"]) == ("mnist", "a", "orchard.test")
    assert second["message"] == "round 3 done" and second["round"] == 3
    assert "time" in second


def test_text_is_the_default_for_people() -> None:
    lines = _log("text").splitlines()
    assert lines[1].endswith("INFO    orchard.test: round 3 done")


def test_an_unknown_format_is_named() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("INFO", "xml")
