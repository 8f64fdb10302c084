"""Run Orchard's benchmarks and print one JSON document.

* ``serde``: streaming a parameter set through chunks and back (MB/s).
* ``aggregation``: peak memory of incremental FedAvg over many clients, relative to one model
  (should stay near 2x: a float64 accumulator) against the naive list-of-updates approach.
* ``grpc_round``: a real server process and echo client processes (started by
  :mod:`orchard.launch`) on loopback exchanging a model
  far above gRPC's 4 MiB message limit; round time and the server's peak RSS.

Numbers depend on the machine; the JSON records its CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from orchard import serde
from orchard.launch import ClientOptions, Launcher
from orchard_server.strategy import WeightedMean


def bench_serde(mb: int) -> dict[str, Any]:
    """Encode to chunks and reassemble a float32 parameter set of ``mb`` MB."""
    n = mb * (1 << 20) // 4
    arrays = [np.random.default_rng(0).standard_normal(n // 4, dtype=np.float32) for _ in range(4)]
    names = [f"t{i}" for i in range(4)]
    start = time.perf_counter()
    header = serde.parameters_header(names, arrays)
    chunks = list(serde.iter_chunks(arrays))
    encode = time.perf_counter() - start
    start = time.perf_counter()
    _, out = serde.arrays_from_parts(header, chunks)
    decode = time.perf_counter() - start
    assert all(np.array_equal(a, b) for a, b in zip(arrays, out, strict=True))
    size = sum(a.nbytes for a in arrays) / 1e6
    return {
        "model_mb": round(size, 1),
        "chunks": len(chunks),
        "encode_mb_per_s": round(size / encode, 1),
        "decode_mb_per_s": round(size / decode, 1),
    }


def bench_aggregation(mb: int, clients: int) -> dict[str, Any]:
    """Peak traced memory of folding ``clients`` updates, incremental vs stored."""
    n = mb * (1 << 20) // 4
    rng = np.random.default_rng(1)
    model_bytes = n * 4

    tracemalloc.start()
    agg = WeightedMean()
    for i in range(clients):
        update = [rng.standard_normal(n, dtype=np.float32)]  # as if just received
        agg.add(update, 100 + i)
        del update
    agg.result()
    _, incremental_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    tracemalloc.start()
    stored = [[rng.standard_normal(n, dtype=np.float32)] for _ in range(clients)]
    weights = np.arange(100, 100 + clients, dtype=np.float64)
    np.average(np.stack([s[0] for s in stored]), axis=0, weights=weights)
    _, naive_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "model_mb": round(model_bytes / 1e6, 1),
        "clients": clients,
        "incremental_peak_mb": round(incremental_peak / 1e6, 1),
        "incremental_peak_in_models": round(incremental_peak / model_bytes, 2),
        "naive_peak_mb": round(naive_peak / 1e6, 1),
        "naive_peak_in_models": round(naive_peak / model_bytes, 2),
    }


def bench_grpc_round(
    mb: int, clients: int, rounds: int, tensors: int, workdir: Path
) -> dict[str, Any]:
    """A real server and echo clients on loopback exchanging a large model of ``tensors`` tensors.

    Real models have many tensors, and the server's temporaries are per tensor:
    one giant tensor is the worst case for its peak memory.
    """
    n = mb * (1 << 20) // 4 // tensors * tensors
    federation = {
        "model": "big",
        "tensors": [{"name": f"w{i}", "shape": [n // tensors]} for i in range(tensors)],
        "num_rounds": rounds,
        "min_fit_clients": clients,
        "min_available_clients": clients,
        "min_evaluate_clients": clients,
        "evaluate_every": 0,
        "round_timeout": 300.0,
    }
    server_table = {"heartbeat_interval": 0.5, "heartbeat_timeout": 30.0, "max_poll_seconds": 5.0}
    with Launcher(workdir) as launcher:
        server = launcher.start_server(
            {"server": server_table, "federations": {"big": federation}}, linger=0.5
        )
        for i in range(clients):
            launcher.start_client("echo", ClientOptions(federation="big", name=f"echo-{i}"))
        peak_kb = 0
        status = Path(f"/proc/{server.process.pid}/status")

        def sample_peak() -> None:
            nonlocal peak_kb
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass

        start = time.perf_counter()
        history = launcher.wait(600.0, progress=sample_peak)["big"]
        total = time.perf_counter() - start
    fit_times = [r["fit"]["duration_s"] for r in history["rounds"]]
    model_mb = n * 4 / 1e6
    return {
        "model_mb": round(model_mb, 1),
        "tensors": tensors,
        "clients": clients,
        "rounds": rounds,
        "grpc_message_limit_mb": 4.19,
        "fit_phase_s": fit_times,
        "mb_moved_per_round": round(2 * clients * model_mb, 1),
        "throughput_mb_per_s": round(2 * clients * model_mb / (sum(fit_times) / rounds), 1),
        "server_peak_rss_mb": round(peak_kb / 1024, 1),
        "server_peak_rss_in_models": round(peak_kb * 1024 / (n * 4), 2),
        "wall_s": round(total, 1),
    }


def main() -> None:
    """Parse sizes, run every benchmark, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serde-mb", type=int, default=128)
    parser.add_argument("--agg-mb", type=int, default=64)
    parser.add_argument("--agg-clients", type=int, default=16)
    parser.add_argument("--grpc-mb", type=int, default=128)
    parser.add_argument("--grpc-clients", type=int, default=3)
    parser.add_argument("--grpc-rounds", type=int, default=2)
    parser.add_argument("--grpc-tensors", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "serde": bench_serde(args.serde_mb),
        "aggregation": bench_aggregation(args.agg_mb, args.agg_clients),
        "grpc_round": bench_grpc_round(
            args.grpc_mb, args.grpc_clients, args.grpc_rounds, args.grpc_tensors, workdir
        ),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
