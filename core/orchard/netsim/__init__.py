"""A user-space network link emulator for realistic federations on one machine.

Each client container reaches the server through a small TCP proxy that adds
one-way delay, jitter and a bandwidth cap per direction
(:class:`~orchard.netsim.proxy.LinkProxy`), with random packet loss from an
iptables rule where asked for (:class:`~orchard.netsim.loss.LossRule`). Links
are described by named profiles (:mod:`orchard.netsim.profiles`, e.g. the
``lan``, ``wan``, ``3g`` and ``lossy`` profiles of
``deploy/network-profiles.toml``).

It works where the kernel has no ``netem`` qdisc (as on this project's CI),
needs no privileges unless loss is asked for, and uses only the standard
library, so every Orchard image carries it.
"""

from orchard.netsim.loss import LossRule
from orchard.netsim.profiles import (
    ENV_PROFILES_FILE,
    LinkProfile,
    LinkSpec,
    ProfileError,
    load_profiles,
    profile_from_settings,
)
from orchard.netsim.proxy import LinkProxy, NetsimError, parse_address

__all__ = [
    "ENV_PROFILES_FILE",
    "LinkProfile",
    "LinkProxy",
    "LinkSpec",
    "LossRule",
    "NetsimError",
    "ProfileError",
    "load_profiles",
    "parse_address",
    "profile_from_settings",
]
