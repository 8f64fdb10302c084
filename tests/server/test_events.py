"""Federation events: what the round loop publishes, and the live view kept from them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.examples.logreg import LogRegClient, logreg_spec
from orchard.messages import FederationState
from orchard.typing import Config, Metrics, NDArrays
from orchard_server.events import DropKind, Events, Observer, Phase, drop_kind
from orchard_server.federation import Federation
from orchard_server.pool import InMemoryClientPool
from orchard_server.records import RoundRecord
from tests.helpers.federations import logreg_config

SPEC = logreg_spec()


class Recorder(Observer):
    """Keeps every event as a tuple."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def round_started(self, federation: str, rnd: int, num_rounds: int) -> None:
        self.seen.append(("round", rnd, num_rounds))

    def phase_ended(self, federation: str, rnd: int, phase: Phase, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append(("phase", rnd, phase))

    def client_dropped(
        self, federation: str, rnd: int, client: str, kind: DropKind, reason: str
    ) -> None:
        self.seen.append(("dropped", rnd, kind))

    def round_completed(self, federation: str, record: RoundRecord) -> None:
        self.seen.append(("completed", record.round))

    def federation_ended(self, federation: str, state: FederationState, reason: str) -> None:
        self.seen.append(("ended", state))


class Broken(LogRegClient):
    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        raise RuntimeError("out of memory")


def federation(tmp_path: Path, *factories: Any, **overrides: Any) -> Federation:
    config = logreg_config(**({"num_rounds": 2} | overrides))
    pool = InMemoryClientPool(SPEC)
    for i, factory in enumerate(factories):
        pool.add(factory, partition_id=i, num_partitions=len(factories))
    return Federation(config, pool, tmp_path)


def logreg(ctx: ClientContext) -> NumPyClient:
    return LogRegClient.for_partition(ctx.partition_id)


def broken(ctx: ClientContext) -> NumPyClient:
    return Broken.for_partition(ctx.partition_id)


def test_a_round_publishes_its_phases_in_order_then_completes(tmp_path: Path) -> None:
    fed = federation(tmp_path, logreg, logreg, logreg)
    recorder = Recorder()
    fed.events.subscribe(recorder)
    assert asyncio.run(fed.run()) is FederationState.FINISHED
    first = recorder.seen[: recorder.seen.index(("completed", 1)) + 1]
    assert first == [
        ("round", 1, 2),
        ("phase", 1, Phase.WAITING),
        ("phase", 1, Phase.SAMPLING),
        ("phase", 1, Phase.TRAINING),
        ("phase", 1, Phase.AGGREGATING),
        ("phase", 1, Phase.EVALUATING),
        ("phase", 1, Phase.CHECKPOINTING),
        ("completed", 1),
    ]
    assert recorder.seen[-1] == ("ended", FederationState.FINISHED)


def test_the_view_keeps_timeline_curves_and_drops(tmp_path: Path) -> None:
    fed = federation(tmp_path, logreg, logreg, broken)
    assert asyncio.run(fed.run()) is FederationState.FINISHED
    snap = fed.view.snapshot()
    curves = snap["curves"]
    assert isinstance(curves, list) and [p["round"] for p in curves] == [1, 2]
    assert all(p["distributed_loss"] is not None for p in curves)
    assert all(p["distributed_accuracy"] is not None for p in curves)
    timeline = snap["timeline"]
    assert isinstance(timeline, list)
    first = timeline[0]
    assert [p["phase"] for p in first["phases"]][:3] == ["waiting", "sampling", "training"]
    assert all(p["seconds"] is not None for p in first["phases"])
    assert any(
        d["kind"] == "client_error" and "out of memory" in d["reason"] for d in first["dropped"]
    )
    summary = fed.summary()
    assert summary.rounds_completed == 2 and summary.state is FederationState.FINISHED
    assert len(summary.clients) == 3


def test_a_resumed_federation_starts_its_curves_from_the_history(tmp_path: Path) -> None:
    asyncio.run(federation(tmp_path, logreg, logreg).run())
    # More rounds asked for: the run goes on (a finished one would be archived).
    again = federation(tmp_path, logreg, logreg, num_rounds=3)
    again.restore_or_init()
    assert [p["round"] for p in again.view.curves] == [1, 2]


def test_a_failing_observer_never_stops_the_round(tmp_path: Path) -> None:
    class Failing(Observer):
        def phase_started(self, federation: str, rnd: int, phase: Phase) -> None:
            raise ValueError("observer bug")

    fed = federation(tmp_path, logreg, logreg)
    fed.events.subscribe(Failing())
    assert asyncio.run(fed.run()) is FederationState.FINISHED


def test_events_forward_to_every_subscriber() -> None:
    events, a, b = Events(), Recorder(), Recorder()
    events.subscribe(a)
    events.subscribe(b)
    with events.phase("f", 3, Phase.AGGREGATING):
        pass
    assert a.seen == b.seen == [("phase", 3, Phase.AGGREGATING)]


def test_drop_reasons_are_classified() -> None:
    assert drop_kind("missed the round deadline of 5 s") is DropKind.DEADLINE
    assert drop_kind("no heartbeat for 3.1 s") is DropKind.DISCONNECTED
    assert drop_kind("task failed on the client: boom") is DropKind.CLIENT_ERROR
    assert drop_kind("update rejected: tensor #0 shape") is DropKind.REJECTED
    assert drop_kind("update rejected by the aggregator: not finite") is DropKind.REJECTED
    assert drop_kind("something new") is DropKind.OTHER


def test_fail_publishes_the_end_once_even_when_the_loop_then_stops(tmp_path: Path) -> None:
    # Two clients needed, one present: the loop waits until fail() wakes it.
    fed = federation(tmp_path, logreg, wait_timeout=30.0)
    recorder = Recorder()
    fed.events.subscribe(recorder)

    async def scenario() -> FederationState:
        running = asyncio.ensure_future(fed.run())
        await asyncio.sleep(0.2)
        fed.fail("client x cannot take part: no data")
        assert recorder.seen[-1] == ("ended", FederationState.FAILED)  # at once
        return await asyncio.wait_for(running, 10)

    assert asyncio.run(scenario()) is FederationState.FAILED
    assert [e for e in recorder.seen if e[0] == "ended"] == [("ended", FederationState.FAILED)]
    assert fed.reason == "client x cannot take part: no data"


def test_each_drop_is_published_once(tmp_path: Path) -> None:
    fed = federation(tmp_path, logreg, logreg, broken, num_rounds=1)
    recorder = Recorder()
    fed.events.subscribe(recorder)
    assert asyncio.run(fed.run()) is FederationState.FINISHED
    drops = [e for e in recorder.seen if e[0] == "dropped"]
    # The broken client's fit fails: one event (the fan-out's _drop), not one
    # more from the round loop.
    assert drops == [("dropped", 1, DropKind.CLIENT_ERROR)]
