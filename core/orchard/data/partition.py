"""Deterministic partitioning of a dataset among federated clients.

Every partitioner is a pure function of its inputs and an integer seed, and
returns one sorted ``int64`` index array per client. Clients compute their own
share independently (``PartitionSpec.select``), so the same spec must produce
the same split on every machine -- including NumPy 1.23 (MXNet clients) and
NumPy 2.x (PyTorch clients). That is why only long-stable primitives of
``numpy.random.Generator`` are used (``permutation``, ``standard_gamma``,
``random``), and the Dirichlet draw is built from them instead of calling
``Generator.dirichlet``, whose algorithm for small ``alpha`` changed in
NumPy 1.25.

Schemes:

* ``iid``: a uniformly random split into near-equal parts.
* ``shards``: the pathological non-IID split of McMahan et al. 2017,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data"
  (AISTATS): sort by label, cut into ``num_partitions * shards_per_client``
  shards, give each client ``shards_per_client`` random shards.
* ``dirichlet``: label skew controlled by a concentration ``alpha`` as in Hsu
  et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for
  Federated Visual Classification" (arXiv:1909.06335). Following the common
  per-class formulation (Yurochkin et al. 2019, "Bayesian Nonparametric
  Federated Learning of Neural Networks", ICML), each class's examples are
  divided among clients in proportions drawn from ``Dir(alpha)``; small
  ``alpha`` gives each client few dominant classes, large ``alpha`` tends to
  IID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "SCHEMES",
    "PartitionError",
    "PartitionSpec",
    "dirichlet",
    "iid",
    "shards",
    "train_val_split",
]

Scheme = Literal["iid", "shards", "dirichlet"]

#: The partitioning schemes :class:`PartitionSpec` understands.
SCHEMES: Final[tuple[str, ...]] = ("iid", "shards", "dirichlet")

#: Default minimum partition size for the Dirichlet scheme (as in the reference
#: implementation of Yurochkin et al. 2019).
DEFAULT_MIN_SIZE: Final = 10

#: How many Dirichlet draws are tried before giving up on ``min_size``.
DEFAULT_MAX_ATTEMPTS: Final = 1000


class PartitionError(ValueError):
    """A partitioning request cannot be satisfied; the message names the option at fault."""


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PartitionError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise PartitionError(f"{name} must be >= {minimum}, got {value}")


def _as_labels(labels: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise PartitionError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise PartitionError(f"labels must have an integer dtype, got {arr.dtype}")
    return arr


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(part).astype(np.int64, copy=False) for part in parts]


def iid(num_examples: int, num_partitions: int, *, seed: int) -> list[np.ndarray]:
    """Split ``range(num_examples)`` uniformly at random into near-equal parts.

    Part sizes differ by at most one; together the parts cover every index once.
    """
    _check_count("num_partitions", num_partitions)
    _check_count("num_examples", num_examples, minimum=0)
    if num_examples < num_partitions:
        raise PartitionError(
            f"too few examples: {num_examples} examples cannot fill "
            f"num_partitions={num_partitions} non-empty partitions"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_examples)
    return _finish(np.array_split(order, num_partitions))


def shards(
    labels: npt.ArrayLike,
    num_partitions: int,
    *,
    shards_per_client: int = 2,
    seed: int,
) -> list[np.ndarray]:
    """The pathological non-IID split of McMahan et al. 2017.

    Examples are sorted by label (stable sort, so ties keep index order), cut
    into ``num_partitions * shards_per_client`` contiguous shards, and each
    client receives ``shards_per_client`` shards chosen at random without
    replacement. When the number of examples is not a multiple of the number
    of shards, shard sizes differ by at most one, so every example is still
    assigned. With MNIST's 60,000 examples, 100 clients and 2 shards per
    client (the paper's setting), shards hold 300 examples and most clients
    see exactly two digits.
    """
    arr = _as_labels(labels)
    _check_count("num_partitions", num_partitions)
    _check_count("shards_per_client", shards_per_client)
    num_shards = num_partitions * shards_per_client
    if arr.size < num_shards:
        raise PartitionError(
            f"too few examples: {arr.size} examples cannot fill {num_shards} shards "
            f"(num_partitions={num_partitions} x shards_per_client={shards_per_client})"
        )
    by_label = np.argsort(arr, kind="stable")
    shard_list = np.array_split(by_label, num_shards)
    rng = np.random.default_rng(seed)
    assignment = rng.permutation(num_shards).reshape(num_partitions, shards_per_client)
    return _finish([np.concatenate([shard_list[s] for s in row]) for row in assignment])


def _dirichlet_draw(rng: np.random.Generator, alpha: float, size: int) -> np.ndarray:
    """One sample of a symmetric ``Dir(alpha)`` of dimension ``size``.

    Normalised gamma variates, with Gamma(alpha) written as
    Gamma(alpha + 1) * U**(1/alpha) (Marsaglia & Tsang 2000) and computed in
    logarithms, so tiny ``alpha`` does not underflow every component to zero.
    """
    uniform = 1.0 - rng.random(size)  # in (0, 1], so the log is finite
    log_gamma = np.log(rng.standard_gamma(alpha + 1.0, size)) + np.log(uniform) / alpha
    weights = np.exp(log_gamma - log_gamma.max())
    normalised: np.ndarray = weights / weights.sum()
    return normalised


def dirichlet(
    labels: npt.ArrayLike,
    num_partitions: int,
    *,
    alpha: float,
    seed: int,
    min_size: int = DEFAULT_MIN_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[np.ndarray]:
    """Label-skewed split: each class is divided among clients by a ``Dir(alpha)`` draw.

    Draws are repeated (continuing the seeded stream, so the result stays
    deterministic) until every partition holds at least ``min_size``
    examples; after ``max_attempts`` draws a :class:`PartitionError` says
    which knob to turn.
    """
    arr = _as_labels(labels)
    _check_count("num_partitions", num_partitions)
    _check_count("min_size", min_size, minimum=0)
    _check_count("max_attempts", max_attempts)
    if not (isinstance(alpha, int | float | np.floating) and np.isfinite(alpha) and alpha > 0):
        raise PartitionError(f"alpha must be a finite number > 0, got {alpha!r}")
    if arr.size < num_partitions * max(min_size, 1):
        raise PartitionError(
            f"too few examples: {arr.size} examples cannot give num_partitions={num_partitions} "
            f"partitions at least min_size={max(min_size, 1)} examples each"
        )
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(arr == c)) for c in np.unique(arr)]
    smallest = 0
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for members in by_class:
            proportions = _dirichlet_draw(rng, float(alpha), num_partitions)
            cuts = np.floor(np.cumsum(proportions)[:-1] * members.size).astype(np.int64)
            for client, piece in enumerate(np.split(members, cuts)):
                parts[client].append(piece)
        sizes = [sum(piece.size for piece in pieces) for pieces in parts]
        smallest = min(sizes)
        if smallest >= min_size:
            return _finish([np.concatenate(pieces) for pieces in parts])
    raise PartitionError(
        f"dirichlet partitioning could not give all num_partitions={num_partitions} partitions "
        f"at least min_size={min_size} examples in max_attempts={max_attempts} draws with "
        f"alpha={alpha} over {arr.size} examples (the last draw's smallest partition had "
        f"{smallest}); raise alpha, lower min_size or use fewer partitions"
    )


def train_val_split(
    indices: npt.ArrayLike, *, val_fraction: float = 0.1, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's indices into (train, validation), 90/10 by default.

    The validation size is ``round(len(indices) * val_fraction)`` (halves
    round up), but at least one example on each side whenever
    ``val_fraction > 0`` and there are two or more indices, so small clients
    still report a validation metric. Both arrays are sorted.
    """
    arr = np.asarray(indices)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise PartitionError(
            f"indices must be a 1-D integer array, got shape {arr.shape} of {arr.dtype}"
        )
    if not (isinstance(val_fraction, int | float) and 0.0 <= val_fraction < 1.0):
        raise PartitionError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = arr.size
    n_val = int(np.floor(n * val_fraction + 0.5))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    shuffled = np.random.default_rng(seed).permutation(arr.astype(np.int64, copy=False))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


@dataclass(frozen=True, kw_only=True, slots=True)
class PartitionSpec:
    """How a dataset is split among ``num_partitions`` clients.

    The server sends this to every client; each client then computes only its
    own share with :meth:`select`, so no index lists cross the wire.

    Attributes:
        scheme: ``"iid"``, ``"shards"`` or ``"dirichlet"`` (see module docs).
        num_partitions: number of clients the data is split among.
        seed: seed of the split; the same spec gives the same split everywhere.
        alpha: Dirichlet concentration, required for ``"dirichlet"`` only.
        shards_per_client: shards per client for ``"shards"``.
        min_size: minimum examples per partition for ``"dirichlet"``.
    """

    scheme: Scheme
    num_partitions: int
    seed: int = 0
    alpha: float | None = None
    shards_per_client: int = 2
    min_size: int = DEFAULT_MIN_SIZE

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise PartitionError(
                f"scheme {self.scheme!r} is not supported (supported: {', '.join(SCHEMES)})"
            )
        _check_count("num_partitions", self.num_partitions)
        _check_count("seed", self.seed, minimum=0)
        _check_count("shards_per_client", self.shards_per_client)
        _check_count("min_size", self.min_size, minimum=0)
        if self.scheme == "dirichlet":
            if self.alpha is None:
                raise PartitionError("alpha is required for scheme 'dirichlet'")
            if not (np.isfinite(self.alpha) and self.alpha > 0):
                raise PartitionError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        elif self.alpha is not None:
            raise PartitionError(
                f"alpha={self.alpha} only applies to scheme 'dirichlet', not {self.scheme!r}"
            )

    def partition(self, labels: npt.ArrayLike) -> list[np.ndarray]:
        """All partitions of a dataset with these labels (one index array per client)."""
        if self.scheme == "iid":
            return iid(_as_labels(labels).size, self.num_partitions, seed=self.seed)
        if self.scheme == "shards":
            return shards(
                labels,
                self.num_partitions,
                shards_per_client=self.shards_per_client,
                seed=self.seed,
            )
        assert self.alpha is not None  # checked in __post_init__
        return dirichlet(
            labels, self.num_partitions, alpha=self.alpha, seed=self.seed, min_size=self.min_size
        )

    def select(self, labels: npt.ArrayLike, partition_id: int) -> np.ndarray:
        """The indices of partition ``partition_id`` (0-based)."""
        if (
            isinstance(partition_id, bool)
            or not isinstance(partition_id, int | np.integer)
            or not 0 <= partition_id < self.num_partitions
        ):
            raise PartitionError(
                f"partition_id {partition_id!r} is out of range for "
                f"num_partitions={self.num_partitions} (valid: 0..{self.num_partitions - 1})"
            )
        return self.partition(labels)[int(partition_id)]
