"""Defences against poisoned updates: update-norm clipping and Krum / Multi-Krum.

A Byzantine client can send any parameters it likes: sign-flipped updates,
updates scaled a hundredfold, noise. FedAvg's weighted mean follows any one of
them as far as it is pushed. Two defences here, beside the coordinate-wise
median and trimmed mean of :mod:`.aggregate`:

* **Update-norm clipping** (:class:`NormClipping`): each client's update
  ``delta_i = x_i - x_t`` (its parameters minus the round's global ones) is
  scaled down to an L2 norm of at most ``max_norm`` before the inner aggregator
  sees it, so one client moves the mean by at most ``max_norm * w_i / sum w``.
  This is the clipping step of differentially private FedAvg (McMahan, Ramage,
  Talwar and Zhang 2018, "Learning Differentially Private Recurrent Language
  Models") and the norm-bounding defence of Sun, Kairouz, Suresh and McMahan
  2019 ("Can You Really Backdoor Federated Learning?"). It wraps any aggregator
  and adds O(model) transient memory per update: a mean stays incremental.
* **Krum and Multi-Krum** (:class:`Krum`; Blanchard, El Mhamdi, Guerraoui and
  Stainer 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
  Descent", NeurIPS): with ``n`` updates of which at most ``f`` are Byzantine,
  each update is scored by the sum of squared distances to its ``n - f - 2``
  nearest others; Krum keeps the update with the lowest score, Multi-Krum
  averages the ``m`` lowest-scored ones (``m = n - f`` by default, as in the
  paper's experiments). The scores need every pair of updates, so Krum
  **stores every update** (O(clients x model) memory) and computes the
  ``n x n`` distance matrix when the round ends. Distances between parameters
  equal distances between updates (the global parameters cancel), so Krum
  needs no reference. Unweighted, as in the paper: a Byzantine client could
  claim any example count.

The paper's guarantee needs ``n > 2f + 2``. With fewer updates (clients dropped
out of the round) the rule still keeps the most central update(s), with at
least one neighbour per score, and says so in the log, rather than failing a
round that the honest majority completed.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from orchard.typing import NDArrays
from orchard_server.strategy._checks import integer, real_in
from orchard_server.strategy.aggregate import (
    F64,
    AggregationError,
    Aggregator,
    _cast_back,
    _StoredUpdates,
)

log = logging.getLogger("orchard.server")

__all__ = ["Krum", "NormClipping", "krum"]


def _flat(update: NDArrays) -> F64:
    """One update as a single float64 vector (tensors concatenated in spec order)."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in update])


class Krum(_StoredUpdates):
    """Krum (``num_selected = 1``) or Multi-Krum (Blanchard et al. 2017).

    ``num_malicious`` is the ``f`` the rule tolerates; ``num_selected`` the
    ``m`` updates averaged: 1 is Krum, 0 means ``n - f`` (Multi-Krum as in the
    paper), any other value is capped at ``n``. Stores every update.
    """

    def __init__(self, num_malicious: int = 1, num_selected: int = 1) -> None:
        super().__init__()
        self.num_malicious = integer(
            num_malicious, what="krum num_malicious", error=AggregationError, low=0
        )
        self.num_selected = integer(
            num_selected, what="krum num_selected", error=AggregationError, low=0
        )

    def scores(self) -> list[float]:
        """Each stored update's Krum score: summed squared distance to its nearest others."""
        self._layout.require_some("Krum")
        n, f = self.count, self.num_malicious
        if n == 1:
            return [0.0]
        neighbours = max(n - f - 2, 1)
        if n <= 2 * f + 2:
            log.warning(
                "krum: %d updates with num_malicious=%d; the guarantee needs more than %d, "
                "scoring against the %d nearest",
                n,
                f,
                2 * f + 2,
                neighbours,
            )
        flat = np.stack([_flat(u) for u in self._updates])
        sq = np.einsum("ij,ij->i", flat, flat)
        # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b; clipped at 0 against rounding.
        dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
        np.fill_diagonal(dist, np.inf)
        nearest = np.sort(dist, axis=1)[:, :neighbours]
        return [float(s) for s in nearest.sum(axis=1)]

    def selected(self) -> list[int]:
        """Indices (in arrival order) of the updates the rule keeps, best first."""
        scores = self.scores()
        n = len(scores)
        m = n - self.num_malicious if self.num_selected == 0 else self.num_selected
        m = min(max(m, 1), n)
        # A stable sort: ties go to the earlier update, so the result is deterministic.
        return [int(i) for i in np.argsort(np.asarray(scores), kind="stable")[:m]]

    def result(self) -> NDArrays:
        """The unweighted mean of the selected updates (the one update itself for Krum)."""
        keep = self.selected()
        out: NDArrays = []
        for i, dtype in enumerate(self._layout.dtypes):
            total = np.zeros(self._updates[0][i].shape, dtype=np.float64)
            for k in keep:
                total += self._updates[k][i]
            out.append(_cast_back(total / len(keep), dtype))
        return out


def krum(
    results: list[tuple[NDArrays, int]], num_malicious: int, num_selected: int = 1
) -> NDArrays:
    """Krum / Multi-Krum of ``(parameters, num_examples)`` pairs (weights unused)."""
    aggregator = Krum(num_malicious, num_selected)
    for arrays, num_examples in results:
        aggregator.add(arrays, num_examples)
    return aggregator.result()


class NormClipping:
    """Clips each update's L2 norm (against ``reference``) before ``inner`` sees it.

    ``reference`` is the round's global parameters: the update of a client is
    ``x_i - reference``, and ``x_i`` is replaced by
    ``reference + delta_i * min(1, max_norm / ||delta_i||)`` (the norm over all
    tensors together). An update whose tensors do not match ``reference`` or
    whose norm is not finite goes to ``inner`` unchanged, which refuses it with
    its own message. Memory: one transient copy of an update.
    """

    def __init__(self, inner: Aggregator, reference: NDArrays, max_norm: float) -> None:
        self.inner = inner
        self.reference = [np.asarray(r) for r in reference]
        self.max_norm = real_in(
            max_norm, what="clip_norm", error=AggregationError, low=0.0, low_open=True
        )
        #: How many updates were scaled down so far (logged by the round loop's caller).
        self.clipped = 0

    @property
    def incremental(self) -> bool:
        """As the inner aggregator: clipping keeps nothing."""
        return self.inner.incremental

    @property
    def count(self) -> int:
        """How many updates the inner aggregator accepted."""
        return self.inner.count

    def _matches(self, arrays: NDArrays) -> bool:
        return (
            isinstance(arrays, list | tuple)
            and len(arrays) == len(self.reference)
            and all(
                isinstance(a, np.ndarray) and a.shape == r.shape and a.dtype.kind in "fiu"
                for a, r in zip(arrays, self.reference, strict=True)
            )
        )

    def add(self, arrays: NDArrays, num_examples: int, *, assume_finite: bool = False) -> None:
        """Clip ``arrays``' update to ``max_norm`` and fold it into the inner aggregator.

        ``assume_finite`` goes to the inner aggregator: clipping finite values
        towards a finite reference keeps them finite.
        """
        if not self._matches(arrays):
            self.inner.add(arrays, num_examples, assume_finite=assume_finite)
            return
        squared = 0.0
        for a, r in zip(arrays, self.reference, strict=True):
            diff = np.asarray(a, dtype=np.float64) - r
            squared += float(np.dot(diff.reshape(-1), diff.reshape(-1)))
        norm = math.sqrt(squared)
        if not math.isfinite(norm) or norm <= self.max_norm:
            self.inner.add(arrays, num_examples, assume_finite=assume_finite)
            return
        scale = self.max_norm / norm
        clipped = [
            _cast_back(r + (np.asarray(a, dtype=np.float64) - r) * scale, a.dtype)
            for a, r in zip(arrays, self.reference, strict=True)
        ]
        self.inner.add(clipped, num_examples, assume_finite=assume_finite)
        self.clipped += 1

    def result(self) -> NDArrays:
        """The inner aggregator's result over the clipped updates."""
        return self.inner.result()
