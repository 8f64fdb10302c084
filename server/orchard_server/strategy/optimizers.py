"""Server optimizers: the step from the aggregate back to the global model.

The FedOpt view (Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and
McMahan 2020, "Adaptive Federated Optimization", Algorithm 2): the server
treats ``pseudo_grad = x_t - aggregate(x_i)`` as a gradient and takes one
optimizer step on it. SGD with ``lr=1`` lands exactly on the aggregate
(FedAvg); SGD with momentum is FedAvgM (Hsu, Qi and Brown 2019, "Measuring the
Effects of Non-Identical Data Distribution for Federated Visual
Classification"); Adam, Yogi and Adagrad share one adaptive step and differ
only in how the second moment ``v`` is updated.

In the optax style, an optimizer is a frozen pair of pure functions closing
over its hyperparameters: ``init(params) -> state`` and
``update(pseudo_grad, state, params) -> (new_params, new_state)``. The state is
an immutable NamedTuple whose arrays are read-only, so checkpoints can save it
(:func:`state_to_arrays`) and restore it bit for bit (:func:`state_from_arrays`).

Numerics: only floating-point tensors are optimized, in float64 (moments are
kept in float64 too: Adagrad's ever-growing sum would lose small increments in
float32), and new parameters are cast back to each tensor's dtype. Non-float
tensors (a batch-norm step counter, a bool mask) have no gradient to speak of:
they simply take the aggregate's value, whatever the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from orchard.folding import FLOAT64_BLOCK
from orchard.spec import all_finite
from orchard.typing import NDArray, NDArrays
from orchard_server.strategy._checks import real_in


class OptimizerError(ValueError):
    """Bad hyperparameters, or a state/parameters mismatch; the message says which."""


#: A float64 array: moments and intermediate results.
F64: TypeAlias = npt.NDArray[np.float64]

#: One moment slot per tensor: a float64 array for a float tensor, None otherwise.
Slots: TypeAlias = tuple[F64 | None, ...]


class SgdState(NamedTuple):
    """State of :func:`sgd`: the step count and, with momentum, one velocity per tensor."""

    step: int
    velocity: Slots


class AdaptiveState(NamedTuple):
    """State of :func:`adam`, :func:`yogi` and :func:`adagrad`: step count, m and v."""

    step: int
    m: Slots
    v: Slots


State: TypeAlias = SgdState | AdaptiveState


@dataclass(frozen=True, kw_only=True)
class ServerOptimizer:
    """A named pair of pure functions; hyperparameters live in their closures.

    ``advance`` is set on an optimizer whose step lands exactly on the
    aggregate (plain FedAvg: SGD with ``lr=1`` and no momentum). Its
    ``update`` would compute ``x - (x - aggregate)`` through a float64
    pseudo-gradient, passes over the model that reproduce the aggregate at
    best; :meth:`Strategy.step <orchard_server.strategy.base.Strategy.step>`
    then takes the aggregate itself and ``advance`` gives the next state.
    """

    name: str
    init: Callable[[NDArrays], State]
    update: Callable[[NDArrays, State, NDArrays], tuple[NDArrays, State]]
    advance: Callable[[State], State] | None = None


def _is_float(array: NDArray) -> bool:
    return bool(array.dtype.kind == "f")


def _frozen(values: F64 | np.float64) -> F64:
    """A read-only float64 array, so nobody updates a saved state in place.

    Arithmetic on 0-d arrays yields NumPy scalars; ``asarray`` turns them back.
    """
    array = np.asarray(values, dtype=np.float64)
    array.flags.writeable = False
    return array


def _cast(values: F64 | np.float64, dtype: np.dtype[np.generic]) -> NDArray:
    """New parameter values in the tensor's dtype, as an array even for 0-d tensors."""
    return np.asarray(values).astype(dtype)


def _zero_slots(params: NDArrays, fill: float = 0.0) -> Slots:
    return tuple(
        _frozen(np.full(p.shape, fill, dtype=np.float64)) if _is_float(p) else None for p in params
    )


def _exact_difference(a: NDArray, b: NDArray) -> NDArray:
    """``a - b`` for a non-float tensor, such that ``a - (a - b) == b`` exactly.

    Integer subtraction wraps around, which is exactly what makes the round
    trip exact; bools use xor, their own subtraction.
    """
    out = np.empty_like(a)
    if a.dtype.kind == "b":
        np.logical_xor(a, b, out=out)
    else:
        np.subtract(a, b, out=out)
    return out


def pseudo_gradient(params: NDArrays, aggregate: NDArrays) -> NDArrays:
    """``x_t - aggregate``: float64 for float tensors, exact in the tensor's dtype otherwise.

    Float64 makes ``x_t - pseudo_grad`` reproduce a float32 (or float16)
    aggregate bit for bit whenever the difference is representable in float64,
    which holds unless the aggregate is more than 2**-28 times smaller than the
    parameter in magnitude (then the error is below 2**-52 times the parameter).
    For float64 tensors the round trip is within one unit in the last place.
    """
    _check_same_layout(params, aggregate, "aggregate")
    return [
        np.asarray(np.subtract(p, a, dtype=np.float64)) if _is_float(p) else _exact_difference(p, a)
        for p, a in zip(params, aggregate, strict=True)
    ]


def _check_same_layout(params: NDArrays, other: NDArrays, what: str) -> None:
    if len(other) != len(params):
        raise OptimizerError(f"{what} has {len(other)} tensors, the parameters {len(params)}")
    for i, (p, o) in enumerate(zip(params, other, strict=True)):
        if np.shape(o) != p.shape:
            raise OptimizerError(
                f"{what}: tensor {i} has shape {np.shape(o)}, the parameter {p.shape}"
            )


def _check_slots(params: NDArrays, slots: Slots, what: str) -> None:
    if len(slots) != len(params):
        raise OptimizerError(
            f"optimizer state {what!r} has {len(slots)} tensors, the parameters {len(params)}"
        )
    for i, (p, s) in enumerate(zip(params, slots, strict=True)):
        if _is_float(p) != (s is not None) or (s is not None and s.shape != p.shape):
            raise OptimizerError(
                f"optimizer state {what!r}: tensor {i} does not fit a parameter of dtype "
                f"{p.dtype} and shape {p.shape}; was the state made for another model?"
            )


def _sgd_step(param: NDArray, direction: F64, lr: float) -> NDArray:
    """``_cast(param.astype(float64) - lr * direction, param.dtype)``, block by block.

    The same values as the one-line expression, without its three float64
    temporaries of the whole tensor (six float32 models at the server's peak).
    """
    out = np.empty(param.shape, dtype=param.dtype)
    flat_out, flat_p, flat_d = out.reshape(-1), param.reshape(-1), direction.reshape(-1)
    for start in range(0, flat_p.size, FLOAT64_BLOCK):
        stop = min(start + FLOAT64_BLOCK, flat_p.size)
        flat_out[start:stop] = flat_p[start:stop].astype(np.float64) - lr * flat_d[start:stop]
    return out


def _take_aggregate(param: NDArray, grad: NDArray) -> NDArray:
    """The new value of a non-float tensor: the aggregate, recovered exactly."""
    return _exact_difference(param, np.asarray(grad, dtype=param.dtype))


def _check_state(state: object, kind: type[State], name: str) -> None:
    if not isinstance(state, kind):
        raise OptimizerError(
            f"{name} was given a {type(state).__name__}; it needs the {kind.__name__} "
            f"that its own init() returns"
        )


def sgd(*, lr: float = 1.0, momentum: float = 0.0) -> ServerOptimizer:
    """Server SGD, optionally with heavy-ball momentum (FedAvg and FedAvgM).

    ``v = momentum * v + g; x = x - lr * v`` (Hsu et al. 2019, with the
    velocity starting at zero). ``lr=1, momentum=0`` returns the aggregate
    itself: that is FedAvg. Without momentum the state holds no arrays.
    """
    lr = real_in(lr, what="sgd lr", error=OptimizerError, low=0.0, low_open=True)
    momentum = real_in(momentum, what="sgd momentum", error=OptimizerError, low=0.0, high=1.0)

    def init(params: NDArrays) -> State:
        return SgdState(step=0, velocity=_zero_slots(params) if momentum > 0.0 else ())

    def update(pseudo_grad: NDArrays, state: State, params: NDArrays) -> tuple[NDArrays, State]:
        _check_state(state, SgdState, "sgd")
        assert isinstance(state, SgdState)  # for the type checker; checked just above
        _check_same_layout(params, pseudo_grad, "pseudo-gradient")
        if momentum > 0.0:
            _check_slots(params, state.velocity, "velocity")
            velocity = state.velocity
        else:
            velocity = (None,) * len(params)
        new_params: NDArrays = []
        new_velocity: list[F64 | None] = []
        for p, g, v in zip(params, pseudo_grad, velocity, strict=True):
            if not _is_float(p):
                new_params.append(_take_aggregate(p, g))
                new_velocity.append(None)
                continue
            direction = np.asarray(g, dtype=np.float64)
            if v is not None:
                direction = _frozen(momentum * v + direction)
                new_velocity.append(direction)
            new_params.append(_sgd_step(p, direction, lr))
        slots = tuple(new_velocity) if momentum > 0.0 else ()
        return new_params, SgdState(step=state.step + 1, velocity=slots)

    def advance(state: State) -> State:
        _check_state(state, SgdState, "sgd")
        assert isinstance(state, SgdState)  # for the type checker; checked just above
        return SgdState(step=state.step + 1, velocity=())

    takes_aggregate = lr == 1.0 and momentum == 0.0
    return ServerOptimizer(
        name="sgd", init=init, update=update, advance=advance if takes_aggregate else None
    )


#: ``(v_{t-1}, Δ_t^2) -> v_t``: the only line in which Adam, Yogi and Adagrad differ.
SecondMoment: TypeAlias = Callable[[F64, F64], F64]


def _adaptive(
    *, name: str, eta: float, beta1: float, tau: float, rule: SecondMoment
) -> ServerOptimizer:
    """Reddi et al. 2020, Algorithm 2, with the second-moment rule plugged in.

    With ``Δ_t = -pseudo_grad = aggregate - x_t``::

        m_t = beta1 * m_{t-1} + (1 - beta1) * Δ_t
        v_t = rule(v_{t-1}, Δ_t^2)
        x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)

    with ``m_{-1} = 0`` and ``v_{-1} = tau^2``, the smallest start the
    algorithm allows (``v_{-1} >= tau^2``). No bias correction, as in the
    paper: ``tau`` and ``eta`` already set the early step sizes.
    """
    eta = real_in(eta, what=f"{name} eta", error=OptimizerError, low=0.0, low_open=True)
    beta1 = real_in(beta1, what=f"{name} beta1", error=OptimizerError, low=0.0, high=1.0)
    tau = real_in(tau, what=f"{name} tau", error=OptimizerError, low=0.0, low_open=True)
    v_start = tau * tau
    if v_start == 0.0:
        raise OptimizerError(f"{name} tau={tau!r} is so small that tau**2 underflows to 0")

    def init(params: NDArrays) -> State:
        return AdaptiveState(step=0, m=_zero_slots(params), v=_zero_slots(params, v_start))

    def update(pseudo_grad: NDArrays, state: State, params: NDArrays) -> tuple[NDArrays, State]:
        _check_state(state, AdaptiveState, name)
        assert isinstance(state, AdaptiveState)  # for the type checker; checked just above
        _check_same_layout(params, pseudo_grad, "pseudo-gradient")
        _check_slots(params, state.m, "m")
        _check_slots(params, state.v, "v")
        new_params: NDArrays = []
        new_m: list[F64 | None] = []
        new_v: list[F64 | None] = []
        for p, g, m, v in zip(params, pseudo_grad, state.m, state.v, strict=True):
            if m is None or v is None:
                new_params.append(_take_aggregate(p, g))
                new_m.append(None)
                new_v.append(None)
                continue
            delta = -np.asarray(g, dtype=np.float64)
            m_t = _frozen(beta1 * m + (1.0 - beta1) * delta)
            v_t = _frozen(rule(v, delta * delta))
            x = p.astype(np.float64) + eta * m_t / (np.sqrt(v_t) + tau)
            new_params.append(_cast(x, p.dtype))
            new_m.append(m_t)
            new_v.append(v_t)
        return new_params, AdaptiveState(step=state.step + 1, m=tuple(new_m), v=tuple(new_v))

    return ServerOptimizer(name=name, init=init, update=update)


def _beta2(name: str, beta2: float) -> float:
    return real_in(beta2, what=f"{name} beta2", error=OptimizerError, low=0.0, high=1.0)


def adam(
    *, eta: float = 1e-1, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-9
) -> ServerOptimizer:
    """FedAdam's server step: ``v_t = beta2 * v + (1 - beta2) * Δ^2`` (Reddi et al. 2020).

    Defaults are the paper's (beta1 0.9, beta2 0.99) and Flower's (eta 0.1, tau 1e-9).
    """
    b2 = _beta2("adam", beta2)
    return _adaptive(
        name="adam", eta=eta, beta1=beta1, tau=tau, rule=lambda v, d2: b2 * v + (1.0 - b2) * d2
    )


def yogi(
    *, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
) -> ServerOptimizer:
    """FedYogi's server step: ``v_t = v - (1 - beta2) * Δ^2 * sign(v - Δ^2)`` (Reddi et al. 2020).

    Unlike Adam, ``v`` moves towards ``Δ^2`` by an amount that does not scale with
    ``v`` itself, so a large past ``v`` does not fade multiplicatively. Defaults as
    in Flower (eta 1e-2, tau 1e-3) and the paper (beta1 0.9, beta2 0.99).
    """
    b2 = _beta2("yogi", beta2)
    return _adaptive(
        name="yogi",
        eta=eta,
        beta1=beta1,
        tau=tau,
        rule=lambda v, d2: v - (1.0 - b2) * d2 * np.sign(v - d2),
    )


def adagrad(*, eta: float = 1e-1, beta1: float = 0.0, tau: float = 1e-9) -> ServerOptimizer:
    """FedAdagrad's server step: ``v_t = v + Δ^2`` (Reddi et al. 2020).

    Why ``beta1`` defaults to 0: Algorithm 2 writes one first-moment line for
    all three methods, so FedAdagrad *may* carry momentum; but Adagrad itself
    (Duchi, Hazan and Singer 2011) has none, the paper's convergence analysis
    takes ``beta1 = 0``, and Flower's FedAdagrad fixes ``beta1 = 0``.
    Defaulting to 0 keeps FedAdagrad what its name says and comparable with
    Flower; the momentum variant is one option away (``beta1=0.9``).
    """
    return _adaptive(name="adagrad", eta=eta, beta1=beta1, tau=tau, rule=lambda v, d2: v + d2)


def state_to_arrays(state: State) -> dict[str, NDArray]:
    """The state as named arrays, ready for ``numpy.savez`` (no pickle needed).

    Keys: ``kind`` (the state's type name), ``step`` (int64) and one
    ``<field>.<tensor index>`` float64 array per moment slot; tensors without a
    slot (non-float ones) have no key.
    """
    arrays: dict[str, NDArray] = {"kind": np.array(type(state).__name__)}
    for field, value in zip(state._fields, state, strict=True):
        if isinstance(value, tuple):
            for i, slot in enumerate(value):
                if slot is not None:
                    arrays[f"{field}.{i}"] = np.array(slot, copy=True)
        else:
            arrays[field] = np.array(value, dtype=np.int64)
    return arrays


def state_from_arrays(
    optimizer: ServerOptimizer, params_template: NDArrays, arrays: Mapping[str, NDArray]
) -> State:
    """Rebuild a state saved by :func:`state_to_arrays`, bit for bit.

    ``params_template`` (the model's parameters, or zeros shaped like them)
    fixes which slots exist and their shapes: the restored state must be one
    that ``optimizer.init(params_template)`` could have grown into.
    """
    template = optimizer.init(params_template)
    expected = state_to_arrays(template)
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise OptimizerError(
            f"saved {optimizer.name} optimizer state does not fit this model: "
            f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}"
        )
    kind = str(np.asarray(arrays["kind"]))
    if kind != type(template).__name__:
        raise OptimizerError(
            f"saved optimizer state is a {kind}; the {optimizer.name} optimizer needs a "
            f"{type(template).__name__}"
        )
    fields: dict[str, object] = {}
    for field, value in zip(template._fields, template, strict=True):
        if not isinstance(value, tuple):
            saved = np.asarray(arrays[field])
            if saved.shape != () or saved.dtype.kind not in "iu":
                raise OptimizerError(
                    f"saved optimizer state {field!r} must be an integer scalar, got "
                    f"{saved.dtype}{list(saved.shape)}"
                )
            fields[field] = int(saved)
            continue
        slots: list[F64 | None] = []
        for i, slot in enumerate(value):
            if slot is None:
                slots.append(None)
                continue
            saved = np.asarray(arrays[f"{field}.{i}"])
            if saved.shape != slot.shape or saved.dtype != slot.dtype:
                raise OptimizerError(
                    f"saved optimizer state '{field}.{i}' is {saved.dtype}{list(saved.shape)}, "
                    f"expected {slot.dtype}{list(slot.shape)}"
                )
            if not all_finite(saved):
                raise OptimizerError(f"saved optimizer state '{field}.{i}' is not finite")
            slots.append(_frozen(np.array(saved, copy=True)))
        fields[field] = tuple(slots)
    return type(template)(**fields)  # type: ignore[arg-type]  # fields mirror the template
