"""Client selection: Flower's sample-size rule, determinism under a seed, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchard_server.strategy import (
    SelectionError,
    UniformSampling,
    round_rng,
    sample_clients,
    sample_size,
)

CLIENTS = [f"client-{i:02d}" for i in range(10)]


@pytest.mark.parametrize(
    ("num_available", "fraction", "min_clients", "expected"),
    [
        (10, 0.3, 2, 3),  # int(10 * 0.3) = 3 beats the minimum of 2
        (10, 0.1, 2, 2),  # int(10 * 0.1) = 1 is lifted to the minimum
        (10, 1.0, 1, 10),
        (3, 0.5, 5, 3),  # the minimum is capped at the clients available
        (7, 0.5, 1, 3),  # int(3.5) truncates
        (1, 0.01, 1, 1),
    ],
)
def test_sample_size_follows_flower(
    num_available: int, fraction: float, min_clients: int, expected: int
) -> None:
    assert sample_size(num_available, fraction=fraction, min_clients=min_clients) == expected


def test_sample_is_deterministic_under_a_seed() -> None:
    first = sample_clients(CLIENTS, fraction=0.5, min_clients=2, rng=np.random.default_rng(7))
    second = sample_clients(CLIENTS, fraction=0.5, min_clients=2, rng=np.random.default_rng(7))
    assert first == second
    assert len(first) == 5


def test_the_draw_is_positional_so_random_session_ids_do_not_change_who_is_drawn() -> None:
    """Two runs whose clients got other (random) session ids, listed in the same
    stable order (partition, instance), pick the same positions: defect 5."""
    import uuid

    for seed in range(5):
        first = [uuid.uuid4().hex for _ in CLIENTS]
        second = [uuid.uuid4().hex for _ in CLIENTS]
        a = sample_clients(first, fraction=0.4, min_clients=1, rng=np.random.default_rng(seed))
        b = sample_clients(second, fraction=0.4, min_clients=1, rng=np.random.default_rng(seed))
        assert [first.index(c) for c in a] == [second.index(c) for c in b]
        assert a == [c for c in first if c in a]  # in the order given


def test_round_rng_depends_on_seed_round_attempt_and_purpose_only() -> None:
    draw = round_rng(7, 3, attempt=1, purpose="fit").integers(2**62)
    assert round_rng(7, 3, attempt=1, purpose="fit").integers(2**62) == draw
    others = {
        round_rng(8, 3, purpose="fit").integers(2**62),
        round_rng(7, 4, purpose="fit").integers(2**62),
        round_rng(7, 3, attempt=2, purpose="fit").integers(2**62),
        round_rng(7, 3, purpose="evaluate").integers(2**62),
    }
    assert draw not in others and len(others) == 4
    assert round_rng(-1, 1, purpose="fit").integers(2**62) == round_rng(
        2**63 - 1, 1, purpose="fit"
    ).integers(2**62)
    with pytest.raises(SelectionError, match="attempt"):
        round_rng(1, 1, attempt=0, purpose="fit")


def test_different_seeds_draw_different_clients_and_everyone_gets_a_turn() -> None:
    draws = [
        tuple(sample_clients(CLIENTS, fraction=0.3, min_clients=1, rng=np.random.default_rng(s)))
        for s in range(40)
    ]
    assert len(set(draws)) > 10
    assert {c for draw in draws for c in draw} == set(CLIENTS)


def test_one_generator_advances_between_rounds() -> None:
    rng = np.random.default_rng(3)
    rounds = [sample_clients(CLIENTS, fraction=0.3, min_clients=1, rng=rng) for _ in range(10)]
    assert len({tuple(r) for r in rounds}) > 1


@settings(max_examples=60, deadline=None)
@given(
    num=st.integers(min_value=1, max_value=40),
    fraction=st.floats(min_value=1e-3, max_value=1.0),
    min_clients=st.integers(min_value=1, max_value=50),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_sample_properties(num: int, fraction: float, min_clients: int, seed: int) -> None:
    available = [f"c{i}" for i in range(num)]
    picked = sample_clients(
        available, fraction=fraction, min_clients=min_clients, rng=np.random.default_rng(seed)
    )
    expected_size = min(max(math.floor(num * fraction), min_clients), num)
    assert len(picked) == expected_size
    assert len(set(picked)) == len(picked)
    assert set(picked) <= set(available)
    assert picked == [c for c in available if c in picked]  # in the order given


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, math.nan, math.inf, True, "0.5"])
def test_bad_fraction_is_refused(fraction: object) -> None:
    with pytest.raises(SelectionError, match="fraction"):
        sample_clients(
            CLIENTS,
            fraction=fraction,  # type: ignore[arg-type]
            min_clients=1,
            rng=np.random.default_rng(0),
        )


@pytest.mark.parametrize("min_clients", [0, -1, 1.5, True])
def test_bad_min_clients_is_refused(min_clients: object) -> None:
    with pytest.raises(SelectionError, match="min_clients"):
        sample_clients(
            CLIENTS,
            fraction=0.5,
            min_clients=min_clients,  # type: ignore[arg-type]
            rng=np.random.default_rng(0),
        )


def test_bad_client_lists_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SelectionError, match="no clients"):
        sample_clients([], fraction=0.5, min_clients=1, rng=rng)
    with pytest.raises(SelectionError, match="repeated: a"):
        sample_clients(["a", "b", "a"], fraction=0.5, min_clients=1, rng=rng)
    with pytest.raises(SelectionError, match="strings"):
        sample_clients(["a", 3], fraction=0.5, min_clients=1, rng=rng)  # type: ignore[list-item]
    with pytest.raises(SelectionError, match="single string"):
        sample_clients("abc", fraction=0.5, min_clients=1, rng=rng)


def test_a_seed_instead_of_a_generator_is_refused() -> None:
    with pytest.raises(SelectionError, match="default_rng"):
        sample_clients(CLIENTS, fraction=0.5, min_clients=1, rng=42)  # type: ignore[arg-type]


def test_uniform_sampling_is_sample_clients_with_the_policy_numbers() -> None:
    policy = UniformSampling(
        fraction_fit=0.3, min_fit_clients=2, fraction_evaluate=0.5, min_evaluate_clients=4
    )
    for seed in range(5):
        expected = sample_clients(
            CLIENTS, fraction=0.3, min_clients=2, rng=np.random.default_rng(seed)
        )
        assert policy.select_fit(CLIENTS, np.random.default_rng(seed)) == expected
    assert len(policy.select_evaluate(CLIENTS, np.random.default_rng(0))) == 5


def test_too_few_clients_for_evaluation_draw_nothing() -> None:
    policy = UniformSampling(min_evaluate_clients=4, min_fit_clients=1, min_available_clients=1)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert policy.select_evaluate(CLIENTS[:3], rng) == []
    assert rng.bit_generator.state == before  # the generator is not advanced


def test_fraction_evaluate_zero_switches_federated_evaluation_off() -> None:
    policy = UniformSampling(fraction_evaluate=0.0, min_evaluate_clients=1)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert policy.select_evaluate(CLIENTS, rng) == []
    assert rng.bit_generator.state == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction_fit": 0.0}, r"fraction_fit must be in \(0, 1\]"),
        ({"fraction_evaluate": -0.1}, r"fraction_evaluate must be in \[0, 1\]"),
        ({"min_evaluate_clients": 0}, "min_evaluate_clients must be at least 1"),
        ({"min_fit_clients": 3, "min_available_clients": 2}, "no round could ever start"),
    ],
)
def test_uniform_sampling_refuses_bad_numbers(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        UniformSampling(**kwargs)  # type: ignore[arg-type]
