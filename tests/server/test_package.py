"""The server's public API, and its promise never to import an ML framework."""

import subprocess
import sys

import orchard_server


def test_public_api_is_exactly_this() -> None:
    assert orchard_server.__all__ == [
        "ClientDroppedError",
        "ClientInfo",
        "ClientPool",
        "ConfigError",
        "EvaluateFn",
        "Federation",
        "FederationConfig",
        "InMemoryClientPool",
        "OrchardServer",
        "ServerConfig",
        "load_config",
    ]


def test_server_never_imports_torch_or_mxnet() -> None:
    code = (
        "import sys, tempfile, pathlib, orchard_server, orchard_server.cli, "
        "orchard_server.history, orchard_server.web, orchard_server.tensorboard; "
        # tensorboardX imports torch whenever it can; the server's writer must not let it.
        "orchard_server.tensorboard.TensorBoardWriter(pathlib.Path(tempfile.mkdtemp()), 'f'); "
        "print(sorted(m for m in ('torch', 'mxnet') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
