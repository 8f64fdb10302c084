"""The partition registry: stable per instance, spreading, kept by checkpoints."""

from __future__ import annotations

import logging

import pytest

from orchard.messages import Role
from orchard_server.partitions import PartitionRegistry
from orchard_server.pool import ClientInfo


def member(instance: str, partition: int, role: Role = Role.TRAINER) -> ClientInfo:
    return ClientInfo(
        client_id=f"c-{instance}",
        display_name=instance,
        framework="numpy",
        role=role,
        partition_id=partition,
        instance_id=instance,
    )


def test_assignment_spreads_is_stable_and_reuses_freed_partitions() -> None:
    registry = PartitionRegistry(3, federation="blobs")
    members: list[ClientInfo] = []
    for i in range(3):
        partition = registry.assign(f"inst-{i}", members)
        members.append(member(f"inst-{i}", partition))
    assert [m.partition_id for m in members] == [0, 1, 2]
    # The same instance (re-joining after a restart) keeps its partition.
    assert registry.assign("inst-1", members) == 1
    # A newcomer takes the partition of a client that left.
    left = [m for m in members if m.instance_id != "inst-1"]
    assert registry.assign("inst-new", left) == 1


def test_evaluators_do_not_hold_a_share(caplog: pytest.LogCaptureFixture) -> None:
    registry = PartitionRegistry(2, federation="blobs")
    members = [member("judge", 0, Role.EVALUATOR), member("a", 1)]
    assert registry.assign("b", members) == 0
    assert "shared" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="orchard.server"):
        assert registry.assign("c", [*members, member("b", 0)]) == 0
    assert "more clients than its 2 partitions; partition 0 is now shared" in caplog.text


def test_fixed_partitions_are_recorded_and_a_different_count_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = PartitionRegistry(3, federation="blobs")
    with caplog.at_level(logging.WARNING, logger="orchard.server"):
        assert registry.record("fixed", 4, 5) == 4
    assert "uses partition 4 of 5, but the federation splits data into 3" in caplog.text
    assert registry.get("fixed") == 4
    assert registry.assign("fixed", []) == 4


def test_without_partitions_only_fixed_ones_are_possible() -> None:
    registry = PartitionRegistry(0, federation="sim")
    registry.record("a", 1, 2)
    with pytest.raises(ValueError, match="assigns no partitions"):
        registry.assign("b", [])


def test_round_trip_through_json_and_bad_saved_entries() -> None:
    registry = PartitionRegistry(3)
    registry.assign("a", [])
    registry.record("b", 2, 3)
    restored = PartitionRegistry(3)
    restored.restore(registry.to_json())
    assert restored.to_json() == {"a": 0, "b": 2} and len(restored) == 2
    for bad in ("1", -1, True, 1.5):
        with pytest.raises(ValueError, match="saved partition of 'x'"):
            restored.restore({"x": bad})
    assert restored.to_json() == {"a": 0, "b": 2}  # a bad checkpoint changes nothing
    with pytest.raises(ValueError, match="num_partitions"):
        PartitionRegistry(-1)


def test_stale_assignments_are_pruned_but_connected_ones_kept() -> None:
    registry = PartitionRegistry(2, federation="f", max_entries=3)
    connected = [member("keep", 0)]
    registry.record("keep", 0, 2)
    for n in range(300):  # a script joining under ever new instance ids
        registry.assign(f"drive-by-{n}", connected)
    assert len(registry) == 3
    assert registry.get("keep") == 0  # connected: never pruned
    assert set(registry.to_json()) == {"keep", "drive-by-298", "drive-by-299"}
    # A checkpoint holding more than the bound is cut to it when restored.
    registry.restore({f"old-{n}": 0 for n in range(10)})
    assert list(registry.to_json()) == ["old-7", "old-8", "old-9"]
