"""Server optimizers against Reddi et al. 2020 (Algorithm 2) and Hsu et al. 2019, by hand.

Every scenario uses one float64 parameter so the expected values can be
written out step by step; ``d`` is ``aggregate - x`` (Reddi et al.'s Δ_t).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orchard.folding import FLOAT64_BLOCK
from orchard.typing import NDArrays
from orchard_server.strategy import (
    AdaptiveState,
    OptimizerError,
    ServerOptimizer,
    SgdState,
    State,
    adagrad,
    adam,
    pseudo_gradient,
    sgd,
    state_from_arrays,
    state_to_arrays,
    yogi,
)


def one(value: float) -> NDArrays:
    return [np.array([value], dtype=np.float64)]


def run(optimizer: ServerOptimizer, x0: float, steps: list[float]) -> list[float]:
    """Apply the optimizer for aggregates at ``x + d`` for each ``d``; the x after each step."""
    params = one(x0)
    state = optimizer.init(params)
    xs = []
    for d in steps:
        aggregate: NDArrays = [np.asarray(params[0], dtype=np.float64) + d]
        params, state = optimizer.update(pseudo_gradient(params, aggregate), state, params)
        xs.append(float(params[0][0]))
    return xs


# --------------------------------------------------------------------------- SGD / FedAvgM


def test_sgd_lr_one_lands_on_the_aggregate() -> None:
    # x0 = 1, aggregate 3.5 -> pseudo_grad -2.5 -> x1 = 1 - (-2.5) = 3.5
    assert run(sgd(), 1.0, [2.5, -1.5]) == [3.5, 2.0]


def test_fedavgm_momentum_accumulates_over_two_rounds() -> None:
    # Hsu et al.: v = beta * v + g ; x = x - lr * v ; lr 1, beta 0.9.
    # round 1: x0 = 1, aggregate 3.5: g1 = -2.5, v1 = -2.5, x1 = 1 + 2.5 = 3.5
    # round 2: aggregate 2.0: g2 = 3.5 - 2.0 = 1.5, v2 = 0.9 * -2.5 + 1.5 = -0.75,
    #          x2 = 3.5 + 0.75 = 4.25 (momentum carries it past the aggregate)
    params = one(1.0)
    optimizer = sgd(lr=1.0, momentum=0.9)
    state = optimizer.init(params)
    params, state = optimizer.update(pseudo_gradient(params, one(3.5)), state, params)
    assert params[0].tolist() == [3.5]
    params, state = optimizer.update(pseudo_gradient(params, one(2.0)), state, params)
    assert params[0].tolist() == [pytest.approx(4.25, rel=1e-15)]
    assert isinstance(state, SgdState)
    assert state.step == 2
    assert state.velocity[0] is not None
    assert state.velocity[0].tolist() == [pytest.approx(-0.75, rel=1e-15)]


def test_fedavgm_with_a_server_learning_rate() -> None:
    # lr 0.5, beta 0.9. round 1: g1 = 1 - 3.5 = -2.5, v1 = -2.5, x1 = 1 + 1.25 = 2.25
    # round 2: aggregate 2.0: g2 = 0.25, v2 = -2.25 + 0.25 = -2.0, x2 = 2.25 + 1.0 = 3.25
    assert run(sgd(lr=0.5, momentum=0.9), 1.0, [2.5, 2.0 - 2.25]) == pytest.approx(
        [2.25, 3.25], rel=1e-15
    )


def test_sgd_step_is_exact_across_blocks() -> None:
    # A float32 tensor of two whole blocks and a partial one: the block-by-block
    # step equals the whole-tensor expression in every element.
    size = 2 * FLOAT64_BLOCK + 7
    rng = np.random.default_rng(6)
    params: NDArrays = [rng.standard_normal(size, dtype=np.float32)]
    aggregate: NDArrays = [rng.standard_normal(size, dtype=np.float32)]
    optimizer = sgd(lr=0.3)
    grad = pseudo_gradient(params, aggregate)
    new, _ = optimizer.update(grad, optimizer.init(params), params)
    expected = (params[0].astype(np.float64) - 0.3 * np.asarray(grad[0], np.float64)).astype(
        np.float32
    )
    assert new[0].dtype == np.float32
    np.testing.assert_array_equal(new[0], expected)


# --------------------------------------------------------------------------- adaptive

HYPER = {"eta": 1.0, "beta1": 0.5, "tau": 1.0}  # v starts at tau^2 = 1


def test_adam_two_steps_by_hand() -> None:
    # beta2 0.5. round 1: d1 = 1: m1 = 0.5 * 1 = 0.5, v1 = 0.5 * 1 + 0.5 * 1 = 1,
    #   x1 = 1 + 0.5 / (1 + 1) = 1.25
    # round 2: d2 = 3: m2 = 0.5 * 0.5 + 0.5 * 3 = 1.75, v2 = 0.5 * 1 + 0.5 * 9 = 5,
    #   x2 = 1.25 + 1.75 / (sqrt(5) + 1)
    xs = run(adam(beta2=0.5, **HYPER), 1.0, [1.0, 3.0])
    assert xs == pytest.approx([1.25, 1.25 + 1.75 / (math.sqrt(5.0) + 1.0)], rel=1e-14)


def test_yogi_three_steps_by_hand_covering_each_sign() -> None:
    # beta2 0.5; v = v - (1 - beta2) * d^2 * sign(v - d^2)
    # round 1: d1 = 1: sign(1 - 1) = 0, so v1 = 1; m1 = 0.5; x1 = 1 + 0.5 / 2 = 1.25
    # round 2: d2 = 3: sign(1 - 9) = -1, v2 = 1 + 0.5 * 9 = 5.5 (Adam: 5);
    #   m2 = 1.75; x2 = 1.25 + 1.75 / (sqrt(5.5) + 1)
    # round 3: d3 = 1: sign(5.5 - 1) = +1, v3 = 5.5 - 0.5 = 5 (Adam: 3);
    #   m3 = 0.5 * 1.75 + 0.5 * 1 = 1.375; x3 = x2 + 1.375 / (sqrt(5) + 1)
    x2 = 1.25 + 1.75 / (math.sqrt(5.5) + 1.0)
    x3 = x2 + 1.375 / (math.sqrt(5.0) + 1.0)
    xs = run(yogi(beta2=0.5, **HYPER), 1.0, [1.0, 3.0, 1.0])
    assert xs == pytest.approx([1.25, x2, x3], rel=1e-14)


def test_adagrad_two_steps_by_hand() -> None:
    # beta1 0 (the default), eta 1, tau 1: v = v + d^2
    # round 1: d1 = 1: m1 = 1, v1 = 1 + 1 = 2, x1 = 1 + 1 / (sqrt(2) + 1) = sqrt(2)
    # round 2: d2 = 3: m2 = 3, v2 = 2 + 9 = 11, x2 = sqrt(2) + 3 / (sqrt(11) + 1)
    xs = run(adagrad(eta=1.0, tau=1.0), 1.0, [1.0, 3.0])
    expected = [math.sqrt(2.0), math.sqrt(2.0) + 3.0 / (math.sqrt(11.0) + 1.0)]
    assert xs == pytest.approx(expected, rel=1e-14)


def test_adagrad_with_momentum_uses_the_first_moment_line() -> None:
    # beta1 0.5: round 1: m1 = 0.5, v1 = 2, x1 = 1 + 0.5 / (sqrt(2) + 1)
    # round 2: d2 = 3: m2 = 0.25 + 1.5 = 1.75, v2 = 11, x2 = x1 + 1.75 / (sqrt(11) + 1)
    x1 = 1.0 + 0.5 / (math.sqrt(2.0) + 1.0)
    x2 = x1 + 1.75 / (math.sqrt(11.0) + 1.0)
    assert run(adagrad(**HYPER), 1.0, [1.0, 3.0]) == pytest.approx([x1, x2], rel=1e-14)


def test_adaptive_state_holds_the_moments() -> None:
    optimizer = adam(beta2=0.5, **HYPER)
    params = one(1.0)
    state = optimizer.init(params)
    assert isinstance(state, AdaptiveState)
    assert state.step == 0
    assert state.m[0] is not None
    assert state.v[0] is not None
    assert state.m[0].tolist() == [0.0]
    assert state.v[0].tolist() == [1.0]  # v_{-1} = tau^2
    _, state = optimizer.update(pseudo_gradient(params, one(2.0)), state, params)
    assert isinstance(state, AdaptiveState)
    assert state.step == 1
    assert state.m[0] is not None
    assert state.v[0] is not None
    assert state.m[0].tolist() == [0.5]
    assert state.v[0].tolist() == [1.0]


def test_defaults_follow_the_papers() -> None:
    # Adam defaults eta 0.1, beta1 0.9, beta2 0.99, tau 1e-9; one step with d = 2:
    # m1 = 0.1 * 2 = 0.2, v1 = 0.99 * 1e-18 + 0.01 * 4 = 0.04 (+1e-18),
    # x1 = 0 + 0.1 * 0.2 / (0.2 + 1e-9) = 0.1 (to 1e-8 relative)
    assert run(adam(), 0.0, [2.0]) == pytest.approx([0.1], rel=1e-8)
    # Yogi defaults eta 0.01, tau 1e-3: v1 = 1e-6 + 0.01 * 4, x1 = 0.01 * 0.2 / (sqrt(v1) + 1e-3)
    v1 = 1e-6 + 0.04
    assert run(yogi(), 0.0, [2.0]) == pytest.approx([0.01 * 0.2 / (math.sqrt(v1) + 1e-3)])
    # Adagrad defaults eta 0.1, beta1 0, tau 1e-9: x1 = 0.1 * 2 / (2 + 1e-9)
    assert run(adagrad(), 0.0, [2.0]) == pytest.approx([0.1], rel=1e-8)


# --------------------------------------------------------------------------- dtypes


MIXED: NDArrays = [
    np.array([[1.0, -2.0]], dtype=np.float32),
    np.array(7, dtype=np.int64),
    np.array([250, 3], dtype=np.uint8),
    np.array([True, False]),
    np.array(0.5, dtype=np.float16),
]
MIXED_AGGREGATE: NDArrays = [
    np.array([[1.5, -1.0]], dtype=np.float32),
    np.array(9, dtype=np.int64),
    np.array([3, 250], dtype=np.uint8),  # wraps around in uint8 arithmetic
    np.array([False, False]),
    np.array(0.25, dtype=np.float16),
]

OPTIMIZERS = {
    "sgd": sgd(),
    "fedavgm": sgd(lr=0.7, momentum=0.9),
    "adam": adam(),
    "yogi": yogi(),
    "adagrad": adagrad(),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_non_float_tensors_take_the_aggregate_and_dtypes_are_kept(name: str) -> None:
    optimizer = OPTIMIZERS[name]
    state = optimizer.init(MIXED)
    new, _ = optimizer.update(pseudo_gradient(MIXED, MIXED_AGGREGATE), state, MIXED)
    for got, params, aggregate in zip(new, MIXED, MIXED_AGGREGATE, strict=True):
        assert isinstance(got, np.ndarray)
        assert got.dtype == params.dtype
        assert got.shape == params.shape
        if params.dtype.kind != "f":
            np.testing.assert_array_equal(got, aggregate)


def test_sgd_lr_one_reproduces_mixed_aggregates_bit_for_bit() -> None:
    new, _ = sgd().update(pseudo_gradient(MIXED, MIXED_AGGREGATE), sgd().init(MIXED), MIXED)
    for got, aggregate in zip(new, MIXED_AGGREGATE, strict=True):
        assert got.dtype == aggregate.dtype
        assert got.tobytes() == aggregate.tobytes()


# Multiples of 1/64 in [-1024, 1024]: the documented regime in which x - (x - a) is exact.
grid_float32 = st.integers(-65536, 65536).map(lambda k: np.float32(k / 64))


@settings(max_examples=80, deadline=None)
@given(
    params=hnp.arrays(np.float32, 5, elements=grid_float32),
    aggregate=hnp.arrays(np.float32, 5, elements=st.floats(-1e4, 1e4, width=32)),
)
def test_fedavg_step_is_the_aggregate_exactly(params: np.ndarray, aggregate: np.ndarray) -> None:
    # The aggregate is any float32 with |a| >= 2**-28 |x| or a == 0; exclude the rest.
    tiny = np.abs(aggregate) < np.abs(params.astype(np.float64)) * 2.0**-28
    aggregate = np.where(tiny, np.float32(0.0), aggregate)
    new, _ = sgd().update(pseudo_gradient([params], [aggregate]), sgd().init([params]), [params])
    assert new[0].dtype == np.float32
    # Equal values (a -0.0 aggregate comes back as +0.0, the only bit that may differ).
    np.testing.assert_array_equal(new[0], aggregate)


def test_update_leaves_inputs_alone_and_state_is_read_only() -> None:
    params: NDArrays = [np.array([1.0, 2.0], dtype=np.float32)]
    before = params[0].copy()
    optimizer = adam()
    state = optimizer.init(params)
    grad = pseudo_gradient(params, [np.array([3.0, 3.0], dtype=np.float32)])
    _, new_state = optimizer.update(grad, state, params)
    np.testing.assert_array_equal(params[0], before)
    assert isinstance(state, AdaptiveState)
    assert isinstance(new_state, AdaptiveState)
    assert state.step == 0
    assert state.m[0] is not None
    assert new_state.m[0] is not None
    assert state.m[0].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="read-only"):
        new_state.m[0][0] = 1.0


# --------------------------------------------------------------------------- state round trip


def _advance(optimizer: ServerOptimizer, params: NDArrays, state: State, seed: int) -> NDArrays:
    rng = np.random.default_rng(seed)
    aggregate: NDArrays = [
        (p.astype(np.float64) + rng.normal(size=p.shape)).astype(p.dtype)
        if p.dtype.kind == "f"
        else np.asarray(p, dtype=np.int64) + 1
        for p in params
    ]
    return pseudo_gradient(params, aggregate)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_round_trips_through_npz_bit_for_bit(name: str, tmp_path: Path) -> None:
    optimizer = OPTIMIZERS[name]
    rng = np.random.default_rng(0)
    params: NDArrays = [
        rng.normal(size=(3, 4)).astype(np.float32),
        np.array(5, dtype=np.int64),
        rng.normal(size=7),
    ]
    state = optimizer.init(params)
    for seed in (1, 2):
        params, state = optimizer.update(_advance(optimizer, params, state, seed), state, params)

    path = tmp_path / "optimizer.npz"
    np.savez(path, **state_to_arrays(state))  # type: ignore[arg-type]  # numpy's stubs
    with np.load(path, allow_pickle=False) as saved:
        restored = state_from_arrays(optimizer, params, saved)

    assert type(restored) is type(state)
    assert restored.step == state.step == 2
    for original, loaded in zip(state[1:], restored[1:], strict=True):
        assert isinstance(original, tuple)
        assert isinstance(loaded, tuple)
        for a, b in zip(original, loaded, strict=True):
            if a is None:
                assert b is None
            else:
                assert b is not None
                assert b.dtype == a.dtype
                assert b.tobytes() == a.tobytes()
    # Continuing from the restored state is the same as never having stopped.
    grad = _advance(optimizer, params, state, 3)
    expected, _ = optimizer.update(grad, state, params)
    got, _ = optimizer.update(grad, restored, params)
    for want, have in zip(expected, got, strict=True):
        assert want.tobytes() == have.tobytes()


def test_state_arrays_name_their_slots() -> None:
    params: NDArrays = [np.zeros(2, np.float32), np.array(1, np.int64)]
    assert set(state_to_arrays(sgd().init(params))) == {"kind", "step"}
    assert set(state_to_arrays(sgd(momentum=0.5).init(params))) == {"kind", "step", "velocity.0"}
    arrays = state_to_arrays(adam().init(params))
    assert set(arrays) == {"kind", "step", "m.0", "v.0"}
    assert str(arrays["kind"]) == "AdaptiveState"
    assert arrays["step"].dtype == np.int64


def test_restoring_a_state_that_does_not_fit_is_refused() -> None:
    params: NDArrays = [np.zeros(2, np.float32), np.zeros(3, np.float32)]
    arrays = state_to_arrays(adam().init(params))
    with pytest.raises(OptimizerError, match=r"missing \['m.2', 'm.3', 'v.2', 'v.3'\]"):
        state_from_arrays(adam(), [*params, np.zeros(1, np.float32), np.zeros(1)], arrays)
    with pytest.raises(OptimizerError, match=r"unexpected \['m.1', 'v.1'\]"):
        state_from_arrays(adam(), params[:1], arrays)
    with pytest.raises(OptimizerError, match="needs a SgdState"):
        state_from_arrays(sgd(), params, {"kind": arrays["kind"], "step": arrays["step"]})
    wrong_shape = dict(arrays, **{"m.1": np.zeros(4)})
    with pytest.raises(OptimizerError, match=r"'m.1' is float64\[4\], expected float64\[3\]"):
        state_from_arrays(adam(), params, wrong_shape)
    wrong_step = dict(arrays, step=np.array(1.5))
    with pytest.raises(OptimizerError, match="'step' must be an integer scalar"):
        state_from_arrays(adam(), params, wrong_step)
    not_finite = dict(arrays, **{"v.0": np.array([1.0, math.nan])})
    with pytest.raises(OptimizerError, match=r"'v\.0' is not finite"):
        state_from_arrays(adam(), params, not_finite)


# --------------------------------------------------------------------------- errors


def test_a_state_from_another_optimizer_or_model_is_refused() -> None:
    params = one(1.0)
    grad = pseudo_gradient(params, one(2.0))
    with pytest.raises(OptimizerError, match="sgd was given a AdaptiveState"):
        sgd().update(grad, adam().init(params), params)
    with pytest.raises(OptimizerError, match="adam was given a SgdState"):
        adam().update(grad, sgd().init(params), params)
    bigger = adam().init([np.zeros(3)])
    with pytest.raises(OptimizerError, match="state 'm': tensor 0 does not fit"):
        adam().update(grad, bigger, params)
    with pytest.raises(OptimizerError, match="pseudo-gradient has 2 tensors"):
        sgd().update([*grad, *grad], sgd().init(params), params)
    with pytest.raises(OptimizerError, match=r"aggregate: tensor 0 has shape \(2,\)"):
        pseudo_gradient(params, [np.zeros(2)])


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: sgd(lr=0.0), r"sgd lr must be in \(0, inf\)"),
        (lambda: sgd(momentum=1.0), r"sgd momentum must be in \[0, 1\)"),
        (lambda: sgd(lr=True), "sgd lr must be a real number"),
        (lambda: adam(eta=-1.0), "adam eta"),
        (lambda: adam(beta1=1.0), "adam beta1"),
        (lambda: adam(beta2=1.5), "adam beta2"),
        (lambda: adam(tau=0.0), "adam tau"),
        (lambda: yogi(beta2=math.nan), "yogi beta2 must be finite"),
        (lambda: adagrad(tau=1e-200), "underflows"),
    ],
)
def test_bad_hyperparameters_are_refused(factory: object, message: str) -> None:
    with pytest.raises(OptimizerError, match=message):
        factory()  # type: ignore[operator]
