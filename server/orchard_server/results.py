"""What a client's result may hold, checked where it enters the server.

A result is the one thing a client puts into the federation's state: its
parameters go into the aggregate, its example count into the weights, its
loss and metrics into the history and the checkpoint. So every value is
checked here, once, by every pool (gRPC, in-process, simulation) before the
round loop sees it, and a bad one is refused with a message naming it (the
servicer answers ``INVALID_ARGUMENT``) instead of failing the federation
later; the aggregators are then told not to scan the values again:

* parameters: the federation's model spec (names, shapes, dtypes), finite
  (the gRPC servicer scans each chunk of an upload as it lands and refuses
  the upload at the first non-finite one; a simulation's workers scan the
  values of their own results, in parallel; the other pools' values are
  scanned here);
* ``num_examples``: positive for a fit, and at most the federation's
  ``max_examples_per_client`` when results are weighted by their examples
  (one client reporting 10^15 examples would otherwise decide the average
  alone);
* the loss: a finite number when present (strict JSON has no NaN);
* metrics: at most :data:`MAX_METRICS` keys of at most :data:`MAX_KEY_CHARS`
  characters, each a bool, an integer, a finite float or a short string
  (bytes are refused: they have no place in a JSON history).

:class:`ResultPolicy` also says how example counts weigh in averages
(``example_weighting``): ``"examples"`` (FedAvg's weights, counts above the
cap refused), ``"capped"`` (each count clipped to the cap, never refused) or
``"uniform"`` (every client weighs the same, whatever it reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from orchard.messages import Result, Task, TaskType
from orchard.spec import ModelSpec, SpecError

if TYPE_CHECKING:
    from orchard_server.config import FederationConfig

#: How example counts weigh in averages (see the module docstring).
Weighting = Literal["examples", "capped", "uniform"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)

#: Default cap on one client's example count: far above any single device's
#: data set, far below a count that could outweigh a federation of them.
DEFAULT_MAX_EXAMPLES = 10_000_000
MAX_METRICS = 64
MAX_KEY_CHARS = 128
MAX_STRING_CHARS = 1024
#: Integers a metric may hold: what a float64 (and every JSON parser) keeps exactly.
MAX_METRIC_INT = 2**53


class InvalidResultError(ValueError):
    """A result holds a value the federation refuses; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultPolicy:
    """What one federation accepts in a result, and how example counts weigh."""

    max_examples_per_client: int = DEFAULT_MAX_EXAMPLES
    example_weighting: Weighting = "examples"

    def __post_init__(self) -> None:
        if self.max_examples_per_client < 1:
            raise ValueError(
                f"max_examples_per_client must be >= 1, got {self.max_examples_per_client}"
            )
        if self.example_weighting not in WEIGHTINGS:
            raise ValueError(
                f"example_weighting must be one of {', '.join(WEIGHTINGS)}, "
                f"got {self.example_weighting!r}"
            )

    @classmethod
    def from_config(cls, config: FederationConfig) -> ResultPolicy:
        """The policy of a federation's configuration."""
        return cls(
            max_examples_per_client=config.max_examples_per_client,
            example_weighting=config.example_weighting,  # type: ignore[arg-type]
        )

    def weight(self, num_examples: int) -> int:
        """The weight of a result reporting ``num_examples`` in averages."""
        if self.example_weighting == "uniform":
            return 1
        if self.example_weighting == "capped":
            return min(num_examples, self.max_examples_per_client)
        return num_examples

    def check(
        self,
        spec: ModelSpec,
        task: Task,
        result: Result,
        *,
        values_checked: bool = False,
        parameters_held: bool = False,
    ) -> None:
        """Raise :class:`InvalidResultError` (or :class:`SpecError` for the
        parameters) unless ``result`` may enter the federation.

        ``values_checked``: every parameter value was already found finite
        (by the servicer as each chunk arrived, or by a simulation worker:
        :class:`~orchard.simulation.job.JobResult`), so only the names, shapes
        and dtypes are checked here. ``parameters_held``: the
        worker keeps the parameters, which it found to match the spec, every
        value finite, and folds them itself once accepted
        (:mod:`orchard.simulation.partial`); only their names are checked here.
        """
        if result.error:
            return
        fit = task.type is TaskType.FIT
        if fit and parameters_held:
            _check_names(spec, result)
        elif fit:
            _check_parameters(spec, result, finite=not values_checked)
        low = 1 if fit else 0
        if result.num_examples < low:
            raise InvalidResultError(
                f"num_examples must be >= {low} for a {task.type.value} result, "
                f"got {result.num_examples}"
            )
        if self.example_weighting == "examples" and (
            result.num_examples > self.max_examples_per_client
        ):
            raise InvalidResultError(
                f"num_examples {result.num_examples} is above this federation's "
                f"max_examples_per_client ({self.max_examples_per_client})"
            )
        if result.loss is not None and not math.isfinite(result.loss):
            raise InvalidResultError(f"loss must be a finite number, got {result.loss!r}")
        check_metrics(result.metrics)


def _check_names(spec: ModelSpec, result: Result) -> None:
    if result.names and tuple(result.names) != tuple(spec.names):
        for i, (want, got) in enumerate(zip(spec.names, result.names, strict=False)):
            if want != got:
                raise SpecError(f"tensor #{i}: expected {want!r}, got {got!r}")
        raise SpecError(f"expected {len(spec.names)} tensors, got {len(result.names)}")


def _check_parameters(spec: ModelSpec, result: Result, *, finite: bool) -> None:
    _check_names(spec, result)
    spec.validate(result.parameters, require_finite=finite)


def check_metrics(metrics: object) -> None:
    """Raise :class:`InvalidResultError` unless ``metrics`` fit a strict-JSON history."""
    if not isinstance(metrics, dict):
        raise InvalidResultError(f"metrics must be a mapping, got {type(metrics).__name__}")
    if len(metrics) > MAX_METRICS:
        raise InvalidResultError(f"{len(metrics)} metrics, at most {MAX_METRICS} are accepted")
    for key, value in metrics.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise InvalidResultError(
                f"metric name {str(key)[:40]!r} must be 1..{MAX_KEY_CHARS} characters"
            )
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if abs(value) > MAX_METRIC_INT:
                raise InvalidResultError(
                    f"metric {key!r}: integer {value} is beyond +-2^53 (not exact in JSON)"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidResultError(f"metric {key!r} must be finite, got {value!r}")
        elif isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise InvalidResultError(
                    f"metric {key!r}: a string of {len(value)} characters, at most "
                    f"{MAX_STRING_CHARS} are accepted"
                )
        else:
            raise InvalidResultError(
                f"metric {key!r} is {type(value).__name__}; metrics must be numbers, "
                "booleans or strings"
            )
