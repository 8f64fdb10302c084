"""The web view's app, Prometheus metrics and TensorBoard writer, on an in-process federation."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from tensorboardX.proto.event_pb2 import Event

from orchard.messages import FederationState
from orchard_server.federation import Federation
from orchard_server.metrics import ServerMetrics
from orchard_server.tensorboard import TensorBoardWriter
from orchard_server.web import build_app
from tests.server.test_events import broken, federation, logreg


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def finished(tmp_path: Path) -> tuple[Federation, ServerMetrics]:
    fed = federation(tmp_path, logreg, logreg, broken)
    metrics = ServerMetrics(lambda: {"blobs": fed.pool})
    fed.events.subscribe(metrics)
    assert asyncio.run(fed.run()) is FederationState.FINISHED
    return fed, metrics


def test_metrics_count_rounds_phases_drops_and_last_loss(tmp_path: Path) -> None:
    _, metrics = finished(tmp_path)
    got = samples(metrics.exposition().decode())
    fed = (("federation", "blobs"),)
    assert got[("orchard_rounds_completed_total", fed)] == 2
    assert got[("orchard_round_duration_seconds_count", fed)] == 2
    phase = (("federation", "blobs"), ("phase", "training"))
    assert got[("orchard_phase_duration_seconds_count", phase)] == 2
    assert (
        got[
            ("orchard_dropped_clients_total", (("federation", "blobs"), ("reason", "client_error")))
        ]
        == 2
    )
    assert got[("orchard_connected_clients", (("federation", "blobs"), ("role", "trainer")))] == 3
    accuracy = got[("orchard_last_accuracy", (("federation", "blobs"), ("kind", "distributed")))]
    assert 0.5 < accuracy <= 1.0
    assert got[("orchard_last_loss", (("federation", "blobs"), ("kind", "distributed")))] > 0


def test_pages_and_api_show_the_federation(tmp_path: Path) -> None:
    fed, metrics = finished(tmp_path)

    async def check() -> None:
        app = build_app({"blobs": fed}, metrics)
        async with TestClient(TestServer(app)) as client:
            listing = await (await client.get("/api/federations")).json()
            (row,) = listing["federations"]
            assert row["name"] == "blobs" and row["state"] == "finished"
            assert row["rounds_completed"] == 2 and row["num_rounds"] == 2
            assert row["clients_by_kind"] == {"in-process trainer": 3}
            detail = await (await client.get("/api/federations/blobs")).json()
            assert [p["round"] for p in detail["curves"]] == [1, 2]
            assert detail["timeline"][0]["dropped"]
            page = await client.get("/federations/blobs")
            assert page.status == 200 and "loss-chart" in await page.text()
            assert (await client.get("/federations/nope")).status == 404
            chart = await client.get("/static/chart.umd.min.js")
            assert chart.status == 200 and "Chart.js" in (await chart.text())[:200]
            scrape = await client.get("/metrics")
            assert "orchard_rounds_completed_total" in await scrape.text()

    asyncio.run(check())


def test_a_token_guards_every_path(tmp_path: Path) -> None:
    fed, metrics = finished(tmp_path)

    async def check() -> None:
        app = build_app({"blobs": fed}, metrics, token="s3cret")
        async with TestClient(TestServer(app)) as client:
            for path in ("/", "/metrics", "/api/federations", "/static/orchard.js"):
                assert (await client.get(path)).status == 401, path
            assert (await client.get("/api/federations?token=wrong")).status == 401
            assert (await client.get("/api/federations?token=s3cret")).status == 200
            bearer = {"Authorization": "Bearer s3cret"}
            assert (await client.get("/metrics", headers=bearer)).status == 200

    asyncio.run(check())


def read_events(path: Path) -> Iterator[Event]:
    """The events of a TFRecord file (length, its CRC, the record, its CRC; CRCs not checked)."""
    data, at = path.read_bytes(), 0
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        event = Event()
        event.ParseFromString(data[at + 12 : at + 12 + length])
        yield event
        at += 12 + length + 4


def test_tensorboard_gets_every_round(tmp_path: Path) -> None:
    fed = federation(tmp_path / "state", logreg, logreg)
    fed.events.subscribe(TensorBoardWriter(tmp_path / "tb", "blobs"))
    assert asyncio.run(fed.run()) is FederationState.FINISHED
    (events_file,) = (tmp_path / "tb" / "blobs").glob("events.out.tfevents.*")
    scalars: dict[str, list[int]] = {}
    for event in read_events(events_file):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append(event.step)
    assert scalars["distributed/loss"] == [1, 2]
    assert scalars["distributed/accuracy"] == [1, 2]
    assert scalars["fit/train_loss"] == [1, 2]
    assert scalars["phase_seconds/training"] == [1, 2]
