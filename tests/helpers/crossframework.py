"""The cross-framework equivalence machinery: one case, both frameworks, compared.

PyTorch and MXNet need different NumPy versions, so they never share a
process: each framework's worker (``tests/crossframework/worker_*.py``) runs
in that framework's environment, started by the product launcher
(:mod:`orchard.launch`), which finds the interpreter (``ORCHARD_MXNET_PYTHON``
or ``.venv-mxnet``). The two talk through ``.npz`` files:
:class:`EquivalenceCase` in, :class:`EquivalenceResult` out. The mixed
federation itself is product code (:mod:`orchard.launch.mixed`).

This module imports neither torch nor mxnet, and works on NumPy 1.23 and 2.x,
because the MXNet-side workers import it too.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchard.launch import KINDS, Launcher, LaunchError, find_python
from orchard.models import get_model_spec
from orchard.spec import ModelSpec, TensorSpec
from orchard.typing import NDArrays
from tests.helpers.processes import REPO

__all__ = [
    "FRAMEWORKS",
    "EquivalenceCase",
    "EquivalenceResult",
    "WorkerError",
    "make_case",
    "reference_cross_entropy",
    "reference_logits",
    "run_worker",
    "run_workers",
]

#: The frameworks with an Orchard client, as they announce themselves at join.
FRAMEWORKS: tuple[str, ...] = ("pytorch", "mxnet")


# --- numerical equivalence: the .npz protocol --------------------------------------


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write atomically, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as fh:
        # Names are spec names, never numpy's keyword ``allow_pickle``.
        np.savez(fh, **dict(arrays))  # type: ignore[arg-type]
    partial.replace(path)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _spec_to_json(spec: ModelSpec) -> str:
    return json.dumps(
        {
            "model_id": spec.model_id,
            "tensors": [[t.name, list(t.shape), t.dtype] for t in spec.tensors],
        }
    )


def _spec_from_json(text: str) -> ModelSpec:
    data = json.loads(text)
    return ModelSpec(
        data["model_id"],
        tuple(TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in data["tensors"]),
    )


@dataclass(frozen=True, kw_only=True)
class EquivalenceCase:
    """What both frameworks are given: parameters, a batch and one step's settings.

    ``images`` are raw uint8 (N, 28, 28) so each adapter applies its own
    preprocessing; ``anchor`` is the global model FedProx pulls towards.
    """

    model_id: str
    parameters: NDArrays
    anchor: NDArrays
    images: np.ndarray
    labels: np.ndarray
    learning_rate: float
    proximal_mu: float

    @property
    def spec(self) -> ModelSpec:
        """The registered spec of ``model_id``."""
        return get_model_spec(self.model_id)

    def save(self, path: Path) -> None:
        """Write the case as one ``.npz`` (no pickle)."""
        names = self.spec.names
        arrays: dict[str, np.ndarray] = {
            "model_id": np.array(self.model_id),
            "images": self.images,
            "labels": self.labels,
            "learning_rate": np.array(self.learning_rate, dtype=np.float64),
            "proximal_mu": np.array(self.proximal_mu, dtype=np.float64),
        }
        arrays.update({f"param/{n}": a for n, a in zip(names, self.parameters, strict=True)})
        arrays.update({f"anchor/{n}": a for n, a in zip(names, self.anchor, strict=True)})
        _save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> EquivalenceCase:
        """Inverse of :meth:`save`."""
        data = _load_npz(path)
        model_id = str(data["model_id"])
        names = get_model_spec(model_id).names
        return cls(
            model_id=model_id,
            parameters=[data[f"param/{n}"] for n in names],
            anchor=[data[f"anchor/{n}"] for n in names],
            images=data["images"],
            labels=data["labels"],
            learning_rate=float(data["learning_rate"]),
            proximal_mu=float(data["proximal_mu"]),
        )


@dataclass(frozen=True, kw_only=True)
class EquivalenceResult:
    """What one framework computed from an :class:`EquivalenceCase`.

    * ``spec``: the spec its adapter's model actually has;
    * ``logits`` of the batch and ``loss`` (mean cross-entropy) / ``accuracy``
      from the adapter's evaluation function;
    * ``sgd_step``: parameters after one step of the adapter's training loop
      (plain SGD, no momentum, the whole batch, ``proximal_mu = 0``);
    * ``proximal_gradient``: the gradient of the adapter's FedProx term alone;
    * ``fedprox_step``: parameters after one training step with FedProx on.
    """

    framework: str
    spec: ModelSpec
    logits: np.ndarray
    loss: float
    accuracy: float
    sgd_step: NDArrays
    proximal_gradient: NDArrays
    fedprox_step: NDArrays

    def save(self, path: Path) -> None:
        """Write the result as one ``.npz``, tensors keyed by spec name."""
        arrays: dict[str, np.ndarray] = {
            "framework": np.array(self.framework),
            "spec": np.array(_spec_to_json(self.spec)),
            "logits": self.logits,
            "loss": np.array(self.loss, dtype=np.float64),
            "accuracy": np.array(self.accuracy, dtype=np.float64),
        }
        for prefix, tensors in (
            ("sgd", self.sgd_step),
            ("proxgrad", self.proximal_gradient),
            ("fedprox", self.fedprox_step),
        ):
            arrays.update(
                {f"{prefix}/{n}": a for n, a in zip(self.spec.names, tensors, strict=True)}
            )
        _save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> EquivalenceResult:
        """Inverse of :meth:`save`."""
        data = _load_npz(path)
        spec = _spec_from_json(str(data["spec"]))
        return cls(
            framework=str(data["framework"]),
            spec=spec,
            logits=data["logits"],
            loss=float(data["loss"]),
            accuracy=float(data["accuracy"]),
            sgd_step=[data[f"sgd/{n}"] for n in spec.names],
            proximal_gradient=[data[f"proxgrad/{n}"] for n in spec.names],
            fedprox_step=[data[f"fedprox/{n}"] for n in spec.names],
        )


def make_case(
    model_id: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    learning_rate: float = 0.1,
    proximal_mu: float = 0.5,
    anchor_offset: float = 0.01,
) -> EquivalenceCase:
    """A case with seeded parameters and an anchor ``anchor_offset`` away from them.

    Weights are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like a fresh layer's, so
    activations and gradients have realistic magnitudes.
    """
    rng = np.random.default_rng(seed)
    parameters: NDArrays = []
    fan_in = 1
    for tensor in get_model_spec(model_id).tensors:
        if len(tensor.shape) >= 2:
            fan_in = math.prod(tensor.shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        parameters.append(rng.uniform(-bound, bound, size=tensor.shape).astype(np.float32))
    anchor = [
        (p + rng.uniform(-anchor_offset, anchor_offset, size=p.shape)).astype(np.float32)
        for p in parameters
    ]
    return EquivalenceCase(
        model_id=model_id,
        parameters=parameters,
        anchor=anchor,
        images=np.ascontiguousarray(images, dtype=np.uint8),
        labels=np.ascontiguousarray(labels, dtype=np.int64),
        learning_rate=learning_rate,
        proximal_mu=proximal_mu,
    )


def run_worker(compute: Callable[[EquivalenceCase], EquivalenceResult], argv: Sequence[str]) -> int:
    """A worker's command line, ``CASE.npz RESULT.npz``: read, compute, write; returns 0."""
    case_path, result_path = (Path(a) for a in argv)
    compute(EquivalenceCase.load(case_path)).save(result_path)
    return 0


class WorkerError(RuntimeError):
    """An equivalence worker failed; the message holds its output."""


def run_workers(
    workdir: Path,
    case: EquivalenceCase,
    *,
    mxnet: Path | str | None = None,
    timeout: float = 180.0,
) -> dict[str, EquivalenceResult]:
    """Run both frameworks' workers on ``case``, each in its own process and environment.

    Both run at once, within one ``timeout``; the result maps framework name to what its worker
    wrote. ``mxnet`` overrides the MXNet interpreter the launcher would find.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    request = workdir / f"case-{case.model_id}.npz"
    case.save(request)
    results: dict[str, EquivalenceResult] = {}
    failures: list[str] = []
    with Launcher(workdir) as launcher:
        running = {}
        for framework in FRAMEWORKS:
            override = mxnet if framework == "mxnet" else None
            python = str(override) if override is not None else find_python(KINDS[framework])
            out = workdir / f"result-{case.model_id}-{framework}.npz"
            module = f"tests.crossframework.worker_{framework}"
            running[framework] = (
                launcher.start_process(
                    f"worker-{case.model_id}-{framework}",
                    [python, "-m", module, str(request), str(out)],
                    env={"OMP_NUM_THREADS": "1"},
                    cwd=REPO,
                ),
                out,
            )
        deadline = time.monotonic() + timeout
        for framework, (proc, out) in running.items():
            try:
                code = proc.wait(max(deadline - time.monotonic(), 1.0))
            except LaunchError as exc:
                failures.append(str(exc))
                continue
            if code == 0 and out.is_file():
                results[framework] = EquivalenceResult.load(out)
            else:
                failures.append(proc.tail(lines=200))
    if failures:
        raise WorkerError("\n".join(failures))
    return results


# --- an independent reference of the spec's conventions -------------------------------


def _dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The spec's dense layer: weights are (out, in), ``y = x @ W.T + b``."""
    out: np.ndarray = x @ weight.T + bias
    return out


def _conv_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Stride-1 'same' cross-correlation with an OIHW kernel on NCHW input."""
    kh, kw = weight.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    out: np.ndarray = np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)
    biased: np.ndarray = out + bias[None, :, None, None]
    return biased


def _maxpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    out: np.ndarray = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return out


def _relu(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(x, 0.0)
    return out


def reference_logits(
    model_id: str, parameters: Sequence[np.ndarray], images: np.ndarray, *, flatten: str = "chw"
) -> np.ndarray:
    """Logits computed in float64 NumPy straight from the spec's written conventions.

    Written from :mod:`orchard.models`' docstring, not from either adapter,
    so agreement proves each adapter follows the spec rather than merely the
    other one. ``flatten="hwc"`` flattens the CNN's feature map in the wrong
    (channels-last) order, for showing that a layout slip is caught.
    """
    if flatten not in ("chw", "hwc"):
        raise ValueError(f"flatten must be 'chw' or 'hwc', got {flatten!r}")
    spec = get_model_spec(model_id)
    p = {
        name: np.asarray(a, dtype=np.float64)
        for name, a in zip(spec.names, parameters, strict=True)
    }
    x = images.astype(np.float64)[:, np.newaxis, :, :] / 255.0
    n = x.shape[0]
    if model_id == "mnist-mlp":
        h = x.reshape(n, -1)
        h = _relu(_dense(h, p["fc1.weight"], p["fc1.bias"]))
        h = _relu(_dense(h, p["fc2.weight"], p["fc2.bias"]))
        return _dense(h, p["fc3.weight"], p["fc3.bias"])
    if model_id == "mnist-cnn":
        h = _maxpool2(_relu(_conv_same(x, p["conv1.weight"], p["conv1.bias"])))
        h = _maxpool2(_relu(_conv_same(h, p["conv2.weight"], p["conv2.bias"])))
        h = h.reshape(n, -1) if flatten == "chw" else h.transpose(0, 2, 3, 1).reshape(n, -1)
        h = _relu(_dense(h, p["fc1.weight"], p["fc1.bias"]))
        return _dense(h, p["fc2.weight"], p["fc2.bias"])
    raise ValueError(f"no reference implementation of model id {model_id!r}")


def reference_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy in float64 (log-sum-exp stabilised)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())
