"""Link profiles: the delay, jitter, bandwidth and loss of an emulated network link.

A profile describes the link between one client and the server as two
one-way directions (``up``: client to server, ``down``: server to client),
each with its own propagation delay, jitter and bandwidth, plus a random loss
rate of the packets arriving from the server. Profiles are chosen by name
from a TOML file (``deploy/network-profiles.toml``) whose top-level tables are
the profiles::

    [wan]
    description = "a continental link"
    delay_ms = 40        # one way, both directions
    jitter_ms = 5        # uniform in [-5, +5] ms around delay_ms
    rate_mbit = 50       # both directions; up_rate_mbit / down_rate_mbit override
    loss = 0.0           # probability of dropping a packet from the server

Values given directly (command line or ``ORCHARD_NET_*`` environment
variables) override the chosen profile's, so a profile can be tweaked without
editing the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_PROFILES_FILE",
    "LinkProfile",
    "LinkSpec",
    "ProfileError",
    "load_profiles",
    "profile_from_settings",
]

#: Environment variable naming the profiles file.
ENV_PROFILES_FILE = "ORCHARD_NET_PROFILES"

_KEYS = {
    "description",
    "delay_ms",
    "jitter_ms",
    "rate_mbit",
    "up_rate_mbit",
    "down_rate_mbit",
    "loss",
}


class ProfileError(ValueError):
    """A profile is unknown or malformed; the message names the file, profile and key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """One direction of a link: propagation delay, jitter and bandwidth.

    ``rate_mbit`` is the capacity in megabits per second (10**6 bits), or
    ``None`` for no cap. Jitter is drawn uniformly from ``[-jitter_ms,
    +jitter_ms]`` around ``delay_ms`` (never below zero); bytes are still
    delivered in order, as TCP would deliver them, so a late segment holds
    back the ones behind it.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbit: float | None = None

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ProfileError(f"{name} must be a finite number >= 0, got {value}")
        if self.rate_mbit is not None and (
            not math.isfinite(self.rate_mbit) or self.rate_mbit <= 0
        ):
            raise ProfileError(f"rate_mbit must be > 0 (or unset for no cap), got {self.rate_mbit}")

    @property
    def is_ideal(self) -> bool:
        """True when this direction adds nothing (no delay, jitter or cap)."""
        return self.delay_ms == 0 and self.jitter_ms == 0 and self.rate_mbit is None

    @property
    def bytes_per_second(self) -> float | None:
        """The cap in bytes per second, or None."""
        return None if self.rate_mbit is None else self.rate_mbit * 1e6 / 8


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    """Both directions of a client's link to the server, and the loss rate."""

    name: str = "custom"
    description: str = ""
    up: LinkSpec = field(default_factory=LinkSpec)
    down: LinkSpec = field(default_factory=LinkSpec)
    #: Probability that a packet arriving from the server is dropped
    #: (iptables ``statistic`` match; TCP retransmits it, as on a lossy link).
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.loss) or not 0.0 <= self.loss < 1.0:
            raise ProfileError(f"profile {self.name!r}: loss must be in [0, 1), got {self.loss}")

    @property
    def needs_proxy(self) -> bool:
        """True when delay, jitter or a bandwidth cap must be emulated in user space."""
        return not (self.up.is_ideal and self.down.is_ideal)

    @property
    def is_ideal(self) -> bool:
        """True when the profile changes nothing at all."""
        return not self.needs_proxy and self.loss == 0.0

    def describe(self) -> str:
        """One line for logs: ``wan: 40±5 ms one way, 50/50 Mbit/s up/down, loss 0%``."""

        def rate(spec: LinkSpec) -> str:
            return "unlimited" if spec.rate_mbit is None else f"{spec.rate_mbit:g}"

        delay = f"{self.up.delay_ms:g}±{self.up.jitter_ms:g} ms"
        if (self.down.delay_ms, self.down.jitter_ms) != (self.up.delay_ms, self.up.jitter_ms):
            delay = f"up {delay}, down {self.down.delay_ms:g}±{self.down.jitter_ms:g} ms"
        return (
            f"{self.name}: {delay} one way, {rate(self.up)}/{rate(self.down)} Mbit/s up/down, "
            f"loss {self.loss:.1%}"
        )


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _profile(name: str, where: str, table: Mapping[str, Any]) -> LinkProfile:
    """A profile from one TOML table (or from settings given directly)."""
    unknown = set(table) - _KEYS
    if unknown:
        raise ProfileError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    values = {k: _number(where, k, v) for k, v in table.items() if k != "description"}
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{where}: description must be a string")
    rate = values.get("rate_mbit")
    try:
        common = {
            "delay_ms": values.get("delay_ms", 0.0),
            "jitter_ms": values.get("jitter_ms", 0.0),
        }
        return LinkProfile(
            name=name,
            description=description,
            up=LinkSpec(**common, rate_mbit=values.get("up_rate_mbit", rate)),
            down=LinkSpec(**common, rate_mbit=values.get("down_rate_mbit", rate)),
            loss=values.get("loss", 0.0),
        )
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None


def load_profiles(path: Path | str) -> dict[str, LinkProfile]:
    """All profiles of a TOML file, by name."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(f"network profiles file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"network profiles file {path}: {exc}") from None
    profiles: dict[str, LinkProfile] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ProfileError(f"{path}: {name!r} must be a table [{name}] of link settings")
        profiles[name] = _profile(name, f"{path} [{name}]", table)
    return profiles


def profile_from_settings(
    name: str | None,
    *,
    profiles_file: Path | str | None = None,
    overrides: Mapping[str, float | None] | None = None,
) -> LinkProfile:
    """The profile called ``name`` (if any) with ``overrides`` applied on top.

    ``overrides`` uses the file's keys (``delay_ms``, ``rate_mbit``, ...);
    ``None`` values are ignored, and a rate of 0 removes the profile's cap.
    ``profiles_file`` defaults to the file named by ``ORCHARD_NET_PROFILES``.
    """
    given: dict[str, float | None] = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in ("rate_mbit", "up_rate_mbit", "down_rate_mbit"):
        if given.get(key) == 0:  # 0 lifts a profile's cap
            given[key] = None
    base = LinkProfile(name="custom")
    if name:
        source = profiles_file or os.environ.get(ENV_PROFILES_FILE)
        if not source:
            raise ProfileError(
                f"network profile {name!r} asked for, but no profiles file: pass --profiles FILE "
                f"or set {ENV_PROFILES_FILE}"
            )
        profiles = load_profiles(source)
        if name not in profiles:
            raise ProfileError(
                f"no network profile {name!r} in {source} (defined: {', '.join(sorted(profiles))})"
            )
        base = profiles[name]
    if not given:
        return base
    unknown = set(given) - (_KEYS - {"description"})
    if unknown:
        raise ProfileError(f"unknown link setting(s) {', '.join(sorted(unknown))}")
    up, down = dataclasses.asdict(base.up), dataclasses.asdict(base.down)
    for key in ("delay_ms", "jitter_ms"):
        if key in given:
            up[key] = down[key] = given[key]
    for key, directions in (
        ("rate_mbit", (up, down)),
        ("up_rate_mbit", (up,)),
        ("down_rate_mbit", (down,)),
    ):
        if key in given:
            for direction in directions:
                direction["rate_mbit"] = given[key]
    return LinkProfile(
        name=f"{base.name}+overrides" if name else "custom",
        description=base.description,
        up=LinkSpec(**up),
        down=LinkSpec(**down),
        loss=float(given["loss"] or 0.0) if "loss" in given else base.loss,
    )
