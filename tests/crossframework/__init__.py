"""Tests that drive PyTorch and MXNet together, each in its own environment."""
