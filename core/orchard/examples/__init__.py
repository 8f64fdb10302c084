"""Runnable example clients."""
