"""Prometheus metrics of every federation, fed by its events (:mod:`.events`).

One :class:`ServerMetrics` per server holds its own registry (never the
process-global one, so two servers in one process, as in tests, do not
collide) and subscribes to every federation's event stream. Connected
clients are read from the pools at scrape time, so the gauge is never stale.
The web app serves :meth:`ServerMetrics.exposition` at ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchard.messages import Role
from orchard_server.events import DropKind, Observer, Phase, Stage, curve_point
from orchard_server.pool import ClientPool
from orchard_server.records import RoundRecord

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

#: The media type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds: phases range from milliseconds (sampling) to many minutes (training).
_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _Connected(Collector):
    """``orchard_connected_clients{federation, role}``, read from the pools when scraped."""

    def __init__(self, pools: Callable[[], Mapping[str, ClientPool]]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "orchard_connected_clients",
            "Clients connected to a federation, by role",
            labels=["federation", "role"],
        )
        for name, pool in self._pools().items():
            for role in Role:
                family.add_metric([name, role.value], len(pool.clients(role)))
        yield family


class ServerMetrics(Observer):
    """The server's Prometheus metrics; subscribe it to each federation's events."""

    def __init__(self, pools: Callable[[], Mapping[str, ClientPool]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Connected(pools))
        r = self.registry
        self.rounds = Counter(
            "orchard_rounds_completed", "Rounds completed", ["federation"], registry=r
        )
        self.round_seconds = Histogram(
            "orchard_round_duration_seconds",
            "Duration of a whole round",
            ["federation"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "orchard_client_stage_duration_seconds",
            "Time one client's task spent in a stage of the training phase ("
            + ", ".join(s.value for s in Stage)
            + ")",
            ["federation", "stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            "orchard_phase_duration_seconds",
            "Duration of a round phase (" + ", ".join(p.value for p in Phase) + ")",
            ["federation", "phase"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.sent = Counter(
            "orchard_sent_bytes", "Parameter bytes sent to clients", ["federation"], registry=r
        )
        self.received = Counter(
            "orchard_received_bytes",
            "Parameter bytes received from clients",
            ["federation"],
            registry=r,
        )
        self.dropped = Counter(
            "orchard_dropped_clients",
            "Clients that gave no usable result in a round, by reason",
            ["federation", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "orchard_rejected_updates",
            "Updates refused (malformed, or refused by the aggregator)",
            ["federation"],
            registry=r,
        )
        self.loss = Gauge(
            "orchard_last_loss",
            "Loss of the last evaluated global model (kind: train, distributed, centralized)",
            ["federation", "kind"],
            registry=r,
        )
        self.accuracy = Gauge(
            "orchard_last_accuracy",
            "Accuracy of the last evaluated global model (kind: distributed, centralized)",
            ["federation", "kind"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def phase_ended(self, federation: str, rnd: int, phase: Phase, seconds: float) -> None:
        self.phase_seconds.labels(federation, phase.value).observe(seconds)

    def client_stage(
        self, federation: str, rnd: int, client_id: str, stage: Stage, seconds: float
    ) -> None:
        self.stage_seconds.labels(federation, stage.value).observe(seconds)

    def client_dropped(
        self, federation: str, rnd: int, client: str, kind: DropKind, reason: str
    ) -> None:
        self.dropped.labels(federation, kind.value).inc()
        if kind is DropKind.REJECTED:
            self.rejected.labels(federation).inc()

    def transferred(self, federation: str, *, sent: int = 0, received: int = 0) -> None:
        if sent:
            self.sent.labels(federation).inc(sent)
        if received:
            self.received.labels(federation).inc(received)

    def round_completed(self, federation: str, record: RoundRecord) -> None:
        self.rounds.labels(federation).inc()
        self.round_seconds.labels(federation).observe(record.duration_s)
        point = curve_point(record)
        for kind in ("train", "distributed", "centralized"):
            loss = point.get(f"{kind}_loss")
            if loss is not None:
                self.loss.labels(federation, kind).set(loss)
            accuracy = point.get(f"{kind}_accuracy")
            if accuracy is not None:
                self.accuracy.labels(federation, kind).set(accuracy)
