"""Random packet loss with iptables' ``statistic`` match.

A TCP proxy cannot lose packets (TCP below it would hide the loss), so loss
is made by the kernel: an ``INPUT`` rule drops each packet arriving from the
server's port with probability ``p``, and TCP retransmits it after a timeout,
as on a lossy radio link. ``netem`` would do the same but is missing from
many kernels (this project's CI among them); the ``statistic`` match is not.

Only arriving packets are dropped: on ``OUTPUT`` the kernel reports the drop
to the local sender (EPERM), which retries at once, so outgoing loss would
not behave like a network. The rule needs root with ``CAP_NET_ADMIN`` (in a
container: ``cap_add: [NET_ADMIN]`` and starting as root; the client
entrypoint drops to an unprivileged user right after installing it).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from orchard.netsim.proxy import NetsimError

__all__ = ["LossRule"]

log = logging.getLogger("orchard.netsim")


@dataclass(frozen=True, slots=True, kw_only=True)
class LossRule:
    """Drop TCP packets from ``source_port`` (the server's port) with ``probability``.

    Loopback is exempt, so traffic between a client and its local link
    emulator is never dropped; in a client container every other packet from
    that port is the server's.
    """

    probability: float
    source_port: int
    iptables: str = "iptables"

    def __post_init__(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise NetsimError(f"loss must be in (0, 1), got {self.probability}")
        if not 0 < self.source_port <= 65535:
            raise NetsimError(f"source port {self.source_port} is not a TCP port")

    def rule(self) -> list[str]:
        """The rule's match and target, as iptables arguments (without chain)."""
        return [
            "-p",
            "tcp",
            "--sport",
            str(self.source_port),
            "!",
            "-i",
            "lo",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            f"{self.probability:.6f}",
            "-j",
            "DROP",
        ]

    def command(self, action: str) -> list[str]:
        """``iptables -w -I INPUT ...`` (``action`` "-I") or ``-D`` to delete it."""
        return [self.iptables, "-w", action, "INPUT", *self.rule()]

    def install(self) -> None:
        """Insert the rule; clear errors when privileges or iptables are missing."""
        if os.geteuid() != 0:
            raise NetsimError(
                f"packet loss ({self.probability:.1%}) needs root with CAP_NET_ADMIN to add an "
                "iptables rule; in a container start as root with cap_add: [NET_ADMIN] (the "
                "entrypoint drops to its unprivileged user afterwards), or set the loss to 0"
            )
        if shutil.which(self.iptables) is None:
            raise NetsimError(f"packet loss needs {self.iptables!r}, which is not installed")
        done = subprocess.run(self.command("-I"), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NetsimError(
                f"could not add the loss rule ({' '.join(self.command('-I'))}): "
                f"{done.stderr.strip() or done.stdout.strip()}; is CAP_NET_ADMIN granted?"
            )
        log.info(
            "dropping %.1f%% of packets from port %d (iptables statistic match)",
            100 * self.probability,
            self.source_port,
        )

    def remove(self) -> None:
        """Delete the rule again (best effort: a container's rules vanish with it)."""
        done = subprocess.run(self.command("-D"), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log.warning("could not remove the loss rule: %s", done.stderr.strip())
