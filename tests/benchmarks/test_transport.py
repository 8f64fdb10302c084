"""The transport benchmark's harness: its round barrier, and one small case end to end.

Not timed: the floor it measures is a benchmark (``make bench``), never a test.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from benchmarks import transport


def test_a_round_starts_when_every_client_pulled_and_ends_with_the_last_push(
    tmp_path: Path,
) -> None:
    out = tmp_path / "rounds.json"
    rounds = transport._Rounds(clients=2, rounds=transport._WARMUP + 1, out=out)

    async def scenario() -> None:
        for rnd in range(transport._WARMUP + 1):
            first = asyncio.ensure_future(rounds.pull(rnd))
            await asyncio.sleep(0.01)
            assert not first.done()  # the other client has not asked yet
            await asyncio.gather(first, rounds.pull(rnd))
            rounds.push(rnd)
            assert len(rounds.durations) == rnd  # one push of two: the round goes on
            rounds.push(rnd)
            assert len(rounds.durations) == rnd + 1

    asyncio.run(scenario())
    measured = json.loads(out.read_text())["round_s"]
    assert measured == rounds.durations[transport._WARMUP :] and len(measured) == 1


def test_a_small_case_runs_its_processes_and_reports_the_floor(tmp_path: Path) -> None:
    case = transport.run_case(3_000_000, clients=2, repeat=2, workdir=tmp_path)
    assert case["rounds_measured"] == 2 and case["clients"] == 2
    assert all(t > 0 for t in case["floor_round_s_all"])
    assert case["aggregate_gb_per_s"] > 0
