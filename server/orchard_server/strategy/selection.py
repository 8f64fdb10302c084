"""Client selection: which of the connected clients train in a round.

Flower's semantics, so results compare with Flower runs: the sample size is
``max(int(len(available) * fraction), min_clients)``, capped at the number of
clients available. Deterministic given the generator *and the order of*
``available``: the draw is positional, so callers pass clients in an order
made of stable keys. The round loop passes them ordered by (partition,
instance id) (:attr:`~orchard_server.pool.ClientInfo.sort_key`), never by the
random session ids, so two seeded runs, or a run and its resumed twin, draw the
same clients. :func:`round_rng` gives the generator of one draw: it depends
only on (federation seed, round, attempt, purpose), so a round aborted by a
kill re-draws the same sample when the resumed server runs it again, by
construction, whatever happened in earlier rounds. :class:`UniformSampling`
packages the rule as a strategy's selection policy (:class:`SelectionPolicy`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from orchard_server.strategy._checks import integer, real_in


class SelectionError(ValueError):
    """The selection arguments are invalid; the message names the argument."""


#: What a round's generator is drawn for: one independent stream each.
DrawPurpose = Literal["fit", "evaluate"]
_PURPOSES: dict[DrawPurpose, int] = {"fit": 0, "evaluate": 1}


def round_rng(
    seed: int, rnd: int, *, attempt: int = 1, purpose: DrawPurpose
) -> np.random.Generator:
    """The generator of one round's draw, from (seed, round, attempt, purpose) only.

    Nothing carried from earlier rounds (no generator state, no counter), so a
    resumed federation re-draws exactly what the killed one drew in the round
    it did not finish, and a retried attempt draws afresh. Any integer seed
    works (negative ones are wrapped).
    """
    key = [seed % 2**63, integer(rnd, what="round", error=SelectionError, low=0)]
    key += [integer(attempt, what="attempt", error=SelectionError, low=1), _PURPOSES[purpose]]
    return np.random.default_rng(np.random.SeedSequence(key))


def sample_size(num_available: int, *, fraction: float, min_clients: int) -> int:
    """How many clients a round samples out of ``num_available``.

    Separate from :func:`sample_clients` so the round loop can log or wait for
    the number before it draws anyone.
    """
    available = integer(num_available, what="num_available", error=SelectionError, low=0)
    frac = real_in(
        fraction,
        what="fraction",
        error=SelectionError,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=False,
    )
    minimum = integer(min_clients, what="min_clients", error=SelectionError, low=1)
    return min(max(int(available * frac), minimum), available)


def sample_clients(
    available: Sequence[str],
    *,
    fraction: float,
    min_clients: int,
    rng: np.random.Generator,
) -> list[str]:
    """Draw a round's clients without replacement, positionally from ``available``.

    ``available`` must come in an order of stable keys (the round loop sorts
    by partition, then instance id): the draw picks positions, so the same
    order and generator give the same clients. The result keeps the order of
    ``available``, so logs and histories list a round the same way whatever
    order the generator drew it in.
    """
    if isinstance(available, str):
        raise SelectionError("available must be a sequence of client ids, not a single string")
    ids = list(available)
    for client_id in ids:
        if not isinstance(client_id, str):
            raise SelectionError(
                f"client ids must be strings, got {client_id!r} ({type(client_id).__name__})"
            )
    duplicates = sorted(cid for cid, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise SelectionError(f"client ids must be unique; repeated: {', '.join(duplicates)}")
    if not ids:
        raise SelectionError("no clients are available to sample from")
    if not isinstance(rng, np.random.Generator):
        raise SelectionError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    size = sample_size(len(ids), fraction=fraction, min_clients=min_clients)
    picked = rng.choice(len(ids), size=size, replace=False)
    return [ids[int(i)] for i in sorted(picked)]


class SelectionPolicy(Protocol):
    """Which clients a round waits for, trains and evaluates; part of a strategy.

    A policy is stateless: the round loop makes a fresh generator for each
    draw (:func:`round_rng`, so a resumed federation draws what an
    uninterrupted one would) and passes it in. ``available`` holds client ids
    in an order of stable keys; the result is a subset of it.
    """

    @property
    def min_available_clients(self) -> int:
        """Clients the round loop waits for before a round starts."""
        ...

    @property
    def min_fit_clients(self) -> int:
        """Fit results a round needs; with fewer, the round is tried again."""
        ...

    def select_fit(self, available: Sequence[str], rng: np.random.Generator) -> list[str]:
        """The clients that train this round."""
        ...

    @property
    def evaluates(self) -> bool:
        """Whether federated evaluation is on at all (False: switched off on purpose)."""
        ...

    def select_evaluate(self, available: Sequence[str], rng: np.random.Generator) -> list[str]:
        """The clients that evaluate the new model; empty to skip federated evaluation."""
        ...


@dataclass(frozen=True, kw_only=True)
class UniformSampling:
    """Flower's client sampling: a uniform draw of ``max(int(n * fraction), min)`` clients.

    Federated evaluation is skipped (no draw, so the generator is not advanced)
    when fewer than ``min_evaluate_clients`` clients are connected, and always
    with ``fraction_evaluate = 0`` (as in Flower: for clients that hold no
    validation data, when only the centralized evaluation counts).
    """

    fraction_fit: float = 1.0
    min_fit_clients: int = 2
    fraction_evaluate: float = 1.0
    min_evaluate_clients: int = 2
    min_available_clients: int = 2

    def __post_init__(self) -> None:
        for key in ("fraction_fit", "fraction_evaluate"):
            real_in(
                getattr(self, key),
                what=key,
                error=SelectionError,
                low=0.0,
                high=1.0,
                low_open=key == "fraction_fit",
                high_open=False,
            )
        for key in ("min_fit_clients", "min_evaluate_clients", "min_available_clients"):
            integer(getattr(self, key), what=key, error=SelectionError, low=1)
        if self.min_available_clients < self.min_fit_clients:
            raise SelectionError(
                f"min_available_clients ({self.min_available_clients}) is below "
                f"min_fit_clients ({self.min_fit_clients}); no round could ever start"
            )

    @property
    def evaluates(self) -> bool:
        """False with ``fraction_evaluate = 0``."""
        return self.fraction_evaluate > 0.0

    def select_fit(self, available: Sequence[str], rng: np.random.Generator) -> list[str]:
        """A uniform draw of ``fraction_fit`` of ``available``, at least ``min_fit_clients``."""
        return sample_clients(
            available, fraction=self.fraction_fit, min_clients=self.min_fit_clients, rng=rng
        )

    def select_evaluate(self, available: Sequence[str], rng: np.random.Generator) -> list[str]:
        """Like :meth:`select_fit` with the evaluate numbers; empty below the minimum
        or with ``fraction_evaluate = 0``."""
        if not self.evaluates or len(available) < self.min_evaluate_clients:
            return []
        return sample_clients(
            available,
            fraction=self.fraction_evaluate,
            min_clients=self.min_evaluate_clients,
            rng=rng,
        )
