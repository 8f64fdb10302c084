"""Client selection: which of the connected clients train in a round.

Flower's semantics, so results compare with Flower runs: the sample size is
``max(int(len(available) * fraction), min_clients)``, capped at the number of
clients available. Deterministic given the generator: ``available`` is sorted
first, so the order in which clients happened to connect does not change who
is drawn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from orchard_server.strategy._checks import integer, real_in


class SelectionError(ValueError):
    """The selection arguments are invalid; the message names the argument."""


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
    """Draw a round's clients without replacement; returned in sorted order.

    The result is sorted so logs and histories list the same round the same way
    whatever order the generator drew it in.
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
    ids.sort()
    picked = rng.choice(len(ids), size=size, replace=False)
    return sorted(ids[int(i)] for i in picked)
