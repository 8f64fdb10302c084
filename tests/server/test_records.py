"""Typed round records: built in one place each, from what the round loop saw."""

from __future__ import annotations

import math

import pytest

from orchard.messages import Result, Role
from orchard_server.pool import ClientInfo
from orchard_server.records import (
    CentralizedRecord,
    ClientOutcome,
    EvaluateRecord,
    FitRecord,
    format_metrics,
)


def client(name: str, framework: str = "pytorch", partition: int = 0) -> ClientInfo:
    return ClientInfo(
        client_id=f"id-{name}",
        display_name=name,
        framework=framework,
        role=Role.TRAINER,
        partition_id=partition,
        instance_id=f"inst-{name}",
    )


def result(n: int, loss: float, **metrics: float | str | bytes) -> Result:
    return Result(client_id="x", task_id="t", num_examples=n, loss=loss, metrics=metrics)


def test_client_outcome_names_the_client_and_keeps_json_safe_metrics() -> None:
    outcome = ClientOutcome.of(
        client("alice", partition=3), result(10, math.nan, accuracy=0.5, blob=b"x", tag="a")
    )
    assert (outcome.client, outcome.client_id, outcome.partition) == ("alice", "id-alice", 3)
    assert outcome.loss is None  # NaN is kept as None, as history.json writes it
    assert outcome.metrics == {"accuracy": 0.5, "tag": "a"}  # bytes are not JSON


def test_fit_record_weights_metrics_and_train_loss_by_examples() -> None:
    results = [
        (client("a"), result(1, 1.0, accuracy=0.0, train_loss=99.0)),
        (client("b"), result(3, 3.0, accuracy=1.0)),
        (client("c"), result(4, math.inf)),  # a diverged client does not poison the mean
    ]
    record = FitRecord.of(
        results, dropped={"d (id-d)": "left"}, selected=4, attempts=2, duration=1.23456
    )
    # train_loss is the clients' loss, (1 * 1 + 3 * 3) / 4, never a reported metric of that name
    assert record.metrics == {"accuracy": 0.75, "train_loss": 2.5}
    assert record.num_examples == 8
    assert (record.selected, record.attempts, record.duration_s) == (4, 2, 1.235)
    assert record.dropped == {"d (id-d)": "left"}
    assert [p.client for p in record.participants] == ["a", "b", "c"]


def test_evaluate_record_without_results_has_no_loss() -> None:
    record = EvaluateRecord.of([], dropped={"a": "timeout"}, duration=0.5)
    assert record.loss is None
    assert (record.num_examples, record.participants, record.metrics) == (0, (), {})
    weighted = EvaluateRecord.of(
        [(client("a"), result(1, 2.0)), (client("b"), result(1, 4.0))], dropped={}, duration=0
    )
    assert weighted.loss == pytest.approx(3.0)


def test_centralized_record_of_a_failure_and_of_the_server() -> None:
    failed = CentralizedRecord.of("evaluator", None, {}, dropped={"evaluator (id)": "gone"})
    assert (failed.loss, failed.source, failed.dropped) == (
        None,
        "evaluator",
        {"evaluator (id)": "gone"},
    )
    server = CentralizedRecord.of("server", -math.inf, {"accuracy": 0.9})
    assert (server.loss, server.metrics, server.num_examples) == (None, {"accuracy": 0.9}, 0)


def test_format_metrics_for_logs() -> None:
    assert format_metrics({"accuracy": 0.71, "n": 3, "train_loss": 0.5}) == (
        ", accuracy 0.7100, train_loss 0.5000"
    )
    assert format_metrics({"accuracy": 0.71, "train_loss": 0.5}, "train_") == ", train_loss 0.5000"
