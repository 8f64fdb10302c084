"""The curated public API of the shared package (httpx style)."""

import orchard


def test_public_api_is_exactly_this() -> None:
    assert orchard.__all__ == [
        "API_VERSION",
        "MODEL_SPECS",
        "ClientContext",
        "ClientSettings",
        "ModelSpec",
        "NumPyClient",
        "Role",
        "SpecError",
        "TensorSpec",
        "TlsSettings",
        "get_model_spec",
        "run_client",
    ]
    assert all(hasattr(orchard, name) for name in orchard.__all__)


def test_shared_code_imports_no_ml_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, orchard, orchard.serde, orchard.client.runtime, orchard.data.partition, "
        "orchard.data.mnist, orchard.data.cifar10, orchard.client.cli, orchard.client.training, "
        "orchard.data.client_data; "
        "print(sorted(m for m in ('torch', 'mxnet') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
