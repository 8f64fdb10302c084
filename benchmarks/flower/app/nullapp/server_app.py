"""The server: FedAvg over null-training clients, timing each round.

Each round sends the global arrays to every node, waits for every reply
(``Grid.send_and_receive``) and takes their example-weighted mean, exactly
what Orchard's benchmark federation does. Round times (seconds, wall clock)
are written as JSON to the ``out`` path of the run config.
"""

from __future__ import annotations

import json
import time

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()

#: The McMahan et al. (2017) MNIST CNN's tensors (1,663,370 parameters), as in orchard.models.
MNIST_CNN = [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (512, 3136), (512,), (10, 512), (10,)]


def _initial(workload: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if workload == "mnist-cnn":
        return [rng.standard_normal(shape, dtype=np.float32) for shape in MNIST_CNN]
    return [rng.standard_normal(int(workload), dtype=np.float32)]


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Wait for every node (bounded), then run the rounds and write their times."""
    cfg = context.run_config
    rounds, clients = int(cfg["num-server-rounds"]), int(cfg["num-clients"])
    deadline = time.monotonic() + 300
    nodes = list(grid.get_node_ids())
    while len(nodes) < clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {clients} nodes connected after 300 s")
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    arrays = _initial(str(cfg["workload"]))
    ends: list[float] = []
    durations: list[float] = []
    for _ in range(rounds):
        start = time.time()
        messages = [
            Message(
                content=RecordDict({"arrays": ArrayRecord(arrays)}),
                message_type=MessageType.TRAIN,
                dst_node_id=node,
            )
            for node in nodes[:clients]
        ]
        replies = list(grid.send_and_receive(messages, timeout=600))
        ok = [r for r in replies if r.has_content()]
        if len(ok) < clients:
            raise RuntimeError(f"only {len(ok)} of {clients} replies")
        weights = [float(r.content["metrics"]["num-examples"]) for r in ok]
        updates = [r.content["arrays"].to_numpy_ndarrays() for r in ok]
        total = sum(weights)
        arrays = [
            (
                sum(w * u[i].astype(np.float64) for w, u in zip(weights, updates, strict=True))
                / total
            ).astype(np.float32)
            for i in range(len(arrays))
        ]
        end = time.time()
        durations.append(end - start)
        ends.append(end)
    with open(str(cfg["out"]), "w") as fh:
        json.dump({"round_s": durations, "finished_at": ends}, fh)
