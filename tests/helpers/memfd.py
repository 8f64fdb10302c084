"""The simulation's shared-memory segments a test process holds open."""

from __future__ import annotations

import os


def open_segments() -> set[str]:
    """This process's open orchard segments (an mmap holds a duplicate descriptor)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("/memfd:orchard-sim-"):
            out.add(link)
    return out
