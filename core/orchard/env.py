"""``ORCHARD_*`` environment variables as typed option defaults.

Containers are configured with environment variables and people with flags;
every command line takes its defaults from these helpers, so a malformed
value ends the command naming the variable instead of starting a wrong run.
Standard library only: the link emulator uses it too.
"""

from __future__ import annotations

import os
from typing import overload

__all__ = ["env_default", "env_flag", "env_float", "env_int"]


def env_default(name: str, default: str | None = None) -> str | None:
    """The value of ``ORCHARD_<name>`` or ``default``."""
    return os.environ.get(f"ORCHARD_{name}", default)


@overload
def env_int(name: str) -> int | None: ...
@overload
def env_int(name: str, default: int) -> int: ...
def env_int(name: str, default: int | None = None) -> int | None:
    """``ORCHARD_<name>`` as an integer (``default`` when unset or empty).

    A value that is not an integer ends the command naming the variable:
    a typo in a container's environment should not start a wrong run.
    """
    value = env_default(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"ORCHARD_{name}={value!r} is not an integer") from None


@overload
def env_float(name: str) -> float | None: ...
@overload
def env_float(name: str, default: float) -> float: ...
def env_float(name: str, default: float | None = None) -> float | None:
    """``ORCHARD_<name>`` as a number (``default`` when unset or empty)."""
    value = env_default(name)
    if value is None or not value.strip():
        return default
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"ORCHARD_{name}={value!r} is not a number") from None


def env_flag(name: str) -> bool:
    """Whether ``ORCHARD_<name>`` is set to 1, true, yes or on (any case)."""
    return (env_default(name, "") or "").lower() in {"1", "true", "yes", "on"}
