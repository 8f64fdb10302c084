"""The client: returns the arrays it received plus a constant, at once (null training)."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Echo the model plus 0.001 * (partition + 1); 1,000 examples, like Orchard's echo client."""
    partition = int(context.node_config.get("partition-id", 0))
    delta = np.float32(0.001 * (partition + 1))
    arrays = [a + delta for a in msg.content["arrays"].to_numpy_ndarrays()]
    content = RecordDict(
        {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1000})}
    )
    return Message(content=content, reply_to=msg)
