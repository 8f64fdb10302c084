"""Null-training Flower app for Orchard's benchmark (see ../pyproject.toml)."""
