"""Orchard's framework-neutral shared code.

The public surface is small on purpose: model specs, the NumPy-level client
interface and the function that runs a client against a server. Everything
else (serde, wire messages, partitioners, datasets) is imported from its
module, so each name keeps meaning its module.
"""

from orchard.client.numpy_client import ClientContext, NumPyClient
from orchard.client.runtime import ClientSettings, TlsSettings, run_client
from orchard.messages import API_VERSION, Role
from orchard.models import MODEL_SPECS, get_model_spec
from orchard.spec import ModelSpec, SpecError, TensorSpec

__all__ = [
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
