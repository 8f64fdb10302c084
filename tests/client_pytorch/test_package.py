"""The package's curated public API."""

from __future__ import annotations

import orchard_pytorch


def test_public_api_is_exactly_the_curated_names() -> None:
    public = {name for name in vars(orchard_pytorch) if not name.startswith("_")}
    modules = {"baseline", "client", "data", "device", "models", "train", "cli"}
    assert public - modules == set(orchard_pytorch.__all__)
    for name in orchard_pytorch.__all__:
        assert getattr(orchard_pytorch, name) is not None
