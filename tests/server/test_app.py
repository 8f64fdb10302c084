"""The server process: stopping on a signal leaves nothing unretrieved."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path
from typing import Any

from orchard.examples.logreg import logreg_spec
from orchard_server.app import OrchardServer
from orchard_server.config import FederationConfig, ServerConfig


def test_sigterm_stops_cleanly_without_unretrieved_exceptions(tmp_path: Path) -> None:
    config = ServerConfig(
        address="127.0.0.1:0",
        state_dir=tmp_path,
        insecure=True,
        federations=(
            FederationConfig(name="blobs", model="logreg", tensors=logreg_spec().tensors),
        ),
    )
    problems: list[dict[str, Any]] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: problems.append(context))
        server = OrchardServer(config)
        await server.start()
        loop.call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)
        code = await server.run(linger=0)
        gc.collect()
        await asyncio.sleep(0)
        return code

    assert asyncio.run(main()) == 0
    gc.collect()
    assert not problems, [p.get("message") for p in problems]
