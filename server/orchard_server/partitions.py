"""Which data partition each client instance trains on, kept across restarts.

A federation splits its clients' data into ``num_partitions`` partitions. A
client either fixes its partition itself (the user passed one) or lets the
server assign one: the partition it had before (same ``instance_id``, so a
client re-joining after a crash or a server restart sees the same data), else
the partition fewest connected trainers use. The registry is a small mutable
map the federation's checkpoint stores (:meth:`to_json`/:meth:`restore`), so a
resumed server hands out the same partitions as the one that was killed.

The registry is bounded (``max_entries``): instance ids are chosen by
clients, so a script joining under ever new ids would otherwise grow it, and
the checkpoint with it, without end. When it is over its bound, the
assignments used longest ago whose instances are not connected are pruned
(a client returning after that is simply assigned a partition afresh).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from orchard.messages import Role

if TYPE_CHECKING:
    from orchard_server.pool import ClientInfo

log = logging.getLogger("orchard.server")


class PartitionRegistry:
    """instance_id -> partition of one federation.

    ``num_partitions`` 0 means the federation does not assign partitions (an
    in-process simulation whose clients all fix their own): :meth:`assign`
    then raises ``ValueError``.
    """

    def __init__(
        self, num_partitions: int, *, federation: str = "", max_entries: int = 10_000
    ) -> None:
        if num_partitions < 0:
            raise ValueError(f"num_partitions must be >= 0, got {num_partitions}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.num_partitions = num_partitions
        self.federation = federation
        self.max_entries = max_entries
        #: In order of last use (a dict keeps insertion order; use moves to the end).
        self._by_instance: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_instance)

    def get(self, instance_id: str) -> int | None:
        """The partition recorded for ``instance_id``, if any."""
        return self._by_instance.get(instance_id)

    def assign(self, instance_id: str, members: Sequence[ClientInfo]) -> int:
        """The partition of a joining client: its old one, else the least used one.

        ``members`` are the connected clients; only trainers count, since an
        evaluator holds the central test set, not a partition's share.
        """
        if instance_id in self._by_instance:
            partition = self._by_instance.pop(instance_id)
            self._by_instance[instance_id] = partition  # most recently used now
            return partition
        if self.num_partitions == 0:
            raise ValueError(
                f"federation {self.federation!r} assigns no partitions: the client must fix "
                "its partition_id and num_partitions"
            )
        counts = dict.fromkeys(range(self.num_partitions), 0)
        for info in members:
            if info.role is Role.TRAINER and info.partition_id in counts:
                counts[info.partition_id] += 1
        partition = min(counts, key=lambda p: (counts[p], p))
        if counts[partition] > 0:
            log.warning(
                "federation %r: more clients than its %d partitions; partition %d is now shared",
                self.federation,
                self.num_partitions,
                partition,
            )
        self._by_instance[instance_id] = partition
        self._prune({i.instance_id for i in members} | {instance_id})
        return partition

    def record(
        self,
        instance_id: str,
        partition_id: int,
        num_partitions: int,
        members: Sequence[ClientInfo] = (),
    ) -> int:
        """Record a partition the client's user fixed, so history and later assignments know.

        ``members`` are the connected clients, whose assignments are never pruned.
        """
        if self.num_partitions and num_partitions != self.num_partitions:
            log.warning(
                "federation %r: %s uses partition %d of %d, but the federation splits "
                "data into %d partitions",
                self.federation,
                instance_id[:12],
                partition_id,
                num_partitions,
                self.num_partitions,
            )
        self._by_instance.pop(instance_id, None)
        self._by_instance[instance_id] = partition_id
        self._prune({i.instance_id for i in members} | {instance_id})
        return partition_id

    def _prune(self, connected: set[str]) -> None:
        """Drop the least recently used assignments of instances not in ``connected``
        until at most ``max_entries`` remain."""
        excess = len(self._by_instance) - self.max_entries
        if excess <= 0:
            return
        stale = [i for i in self._by_instance if i not in connected][:excess]
        for instance_id in stale:
            del self._by_instance[instance_id]
        log.info(
            "federation %r: pruned %d stale partition assignment(s); %d kept",
            self.federation,
            len(stale),
            len(self._by_instance),
        )

    def to_json(self) -> dict[str, int]:
        """A JSON-able copy, for the checkpoint."""
        return dict(self._by_instance)

    def restore(self, saved: Mapping[str, object]) -> None:
        """Replace the contents with a checkpoint's; a malformed entry is an error naming it."""
        restored: dict[str, int] = {}
        for instance_id, partition in saved.items():
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise ValueError(
                    f"federation {self.federation!r}: saved partition of {instance_id!r} is "
                    f"{partition!r}, not a partition number"
                )
            restored[instance_id] = partition
        self._by_instance = restored
        self._prune(set())
