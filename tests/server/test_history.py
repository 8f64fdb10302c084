"""history.json: versioned, strict JSON, read back into the typed records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from orchard_server.history import SCHEMA_VERSION, History, HistoryError
from orchard_server.records import (
    CentralizedRecord,
    ClientOutcome,
    EvaluateRecord,
    FitRecord,
    RoundRecord,
)


def outcome(name: str, loss: float | None) -> ClientOutcome:
    return ClientOutcome(
        client=name,
        client_id=f"id-{name}",
        framework="mxnet",
        partition=1,
        num_examples=10,
        loss=loss,
        metrics={"accuracy": 0.5},
    )


def record(rnd: int, *, loss: float | None = 0.25) -> RoundRecord:
    return RoundRecord(
        round=rnd,
        fit=FitRecord(
            selected=3,
            participants=(outcome("a", 0.5), outcome("b", None)),
            dropped={"c (id-c)": "missed the round deadline of 1 s"},
            num_examples=20,
            metrics={"train_loss": 0.5},
            attempts=1,
            duration_s=1.5,
        ),
        evaluate=EvaluateRecord(
            loss=loss,
            metrics={"accuracy": 0.75},
            num_examples=20,
            participants=(outcome("a", 0.25),),
            dropped={},
            duration_s=0.5,
        ),
        centralized=CentralizedRecord(
            loss=0.3, metrics={"accuracy": 0.8}, num_examples=100, source="server"
        ),
        duration_s=2.25,
    )


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, as strict JSON parsers do."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_round_trip_through_the_file_gives_the_same_records(tmp_path: Path) -> None:
    history = History(federation="digits")
    history.add_round(record(2))
    history.add_round(record(1))
    history.add_round(record(2, loss=0.125))  # a resumed round replaces the old one
    history.save(tmp_path)
    data = strict_loads((tmp_path / "history.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    # The keys readers used before the records were typed are all still there.
    fit = data["rounds"][0]["fit"]
    assert set(fit) == {
        "selected",
        "participants",
        "dropped",
        "num_examples",
        "metrics",
        "attempts",
        "duration_s",
    }
    assert set(fit["participants"][0]) == {
        "client",
        "client_id",
        "framework",
        "partition",
        "num_examples",
        "loss",
        "metrics",
    }
    back = History.load(tmp_path / "history.json")
    assert back == history
    assert back.rounds[1].evaluate is not None and back.rounds[1].evaluate.loss == 0.125
    assert (tmp_path / "history.png").stat().st_size > 1000


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    history = History(federation="digits", rounds=[record(1, loss=math.nan)])
    nan_metric = RoundRecord(
        round=2,
        fit=FitRecord(
            selected=1,
            participants=(outcome("a", math.inf),),
            dropped={},
            num_examples=10,
            metrics={"train_loss": -math.inf},
            attempts=1,
            duration_s=1.0,
        ),
        evaluate=None,
        centralized=None,
        duration_s=1.0,
    )
    history.add_round(nan_metric)
    history.save(tmp_path)
    data = strict_loads((tmp_path / "history.json").read_text())
    assert data["rounds"][0]["evaluate"]["loss"] is None
    assert data["rounds"][1]["fit"]["participants"][0]["loss"] is None
    assert data["rounds"][1]["fit"]["metrics"] == {"train_loss": None}
    back = History.load(tmp_path / "history.json")
    assert back.rounds[1].fit.participants[0].loss is None
    assert back.rounds[1].evaluate is None


def test_an_unversioned_file_from_before_is_read() -> None:
    old = {
        "federation": "blobs",
        "rounds": [
            {
                "round": 1,
                "fit": {
                    "selected": 2,
                    "participants": [
                        {
                            "client": "sim-0",
                            "client_id": "sim-0",
                            "framework": "numpy",
                            "partition": 0,
                            "num_examples": 270,
                            "loss": 0.6,
                            "metrics": {},
                        }
                    ],
                    "dropped": {"sim-1 (sim-1)": "GPU fell off the bus"},
                    "num_examples": 270,
                    "metrics": {"train_loss": 0.6},
                    "attempts": 1,
                    "duration_s": 0.1,
                },
                # the shapes old files had for an evaluation without results and a
                # failed centralized evaluation
                "evaluate": {
                    "loss": None,
                    "metrics": {},
                    "participants": [],
                    "dropped": {},
                    "duration_s": 0.0,
                },
                "centralized": {"loss": None, "metrics": {}, "dropped": {"ev (ev)": "gone"}},
                "duration_s": 0.2,
            }
        ],
    }
    history = History.from_json(old)
    (only,) = history.rounds
    assert only.fit.participants[0].client == "sim-0"
    assert only.evaluate is not None and only.evaluate.num_examples == 0
    assert only.centralized is not None and only.centralized.dropped == {"ev (ev)": "gone"}
    assert History.from_json(history.to_json()) == history


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=2), "schema_version 2; this Orchard reads version 1"),
        (lambda d: d.pop("federation"), "history has no 'federation'"),
        (
            lambda d: d["rounds"][0]["fit"].update(num_examples="20"),
            r"rounds\[0\].fit.num_examples",
        ),
        (lambda d: d["rounds"][0]["fit"].update(attempts=True), r"rounds\[0\].fit.attempts"),
        (
            lambda d: d["rounds"][0]["fit"]["participants"][1].pop("client"),
            r"rounds\[0\].fit.participants\[1\] has no 'client'",
        ),
        (
            lambda d: d["rounds"][0]["evaluate"]["metrics"].update(bad=[1]),
            r"rounds\[0\].evaluate.metrics.bad is not a scalar",
        ),
    ],
)
def test_a_malformed_document_names_the_field(mutate: Any, message: str) -> None:
    data = json.loads(json.dumps(History(federation="x", rounds=[record(1)]).to_json()))
    mutate(data)
    with pytest.raises(HistoryError, match=message):
        History.from_json(data)


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text("{not json")
    with pytest.raises(HistoryError, match=str(path)):
        History.load(path)


@pytest.mark.parametrize("rounds", [[], [1], [1, 2, 5]])
def test_the_file_text_is_exactly_indented_json_of_the_document(rounds: list[int]) -> None:
    history = History(federation='quo"ted', rounds=[record(r, loss=math.nan) for r in rounds])
    assert history.to_json_text() == json.dumps(history.to_json(), indent=2, allow_nan=False)


def test_each_round_is_encoded_once_and_a_replaced_round_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orchard_server.history as module

    encoded: list[int] = []
    real = module._encode

    def counting(rec: RoundRecord) -> Any:
        encoded.append(rec.round)
        return real(rec)

    monkeypatch.setattr(module, "_encode", counting)
    history = History(federation="digits")
    history.add_round(record(1))
    history.add_round(record(2))
    history.to_json_text()
    snapshot = history.copy()  # what the writer gets: shares the cache
    history.add_round(record(3))
    snapshot.to_json_text()
    history.to_json_text()
    assert encoded == [1, 2, 3]
    history.add_round(record(2, loss=0.125))  # a resumed run redoes round 2
    data = json.loads(history.to_json_text())
    assert encoded == [1, 2, 3, 2]
    assert data["rounds"][1]["evaluate"]["loss"] == 0.125
    # The snapshot taken before still holds, and writes, the record it had.
    assert json.loads(snapshot.to_json_text())["rounds"][1]["evaluate"]["loss"] == 0.25
    assert snapshot.rounds == [record(1), record(2)]


def test_rounds_added_in_order_or_out_of_order_end_sorted() -> None:
    history = History(federation="digits")
    for rnd in (1, 3, 2, 4):
        history.add_round(record(rnd))
    assert [r.round for r in history.rounds] == [1, 2, 3, 4]
