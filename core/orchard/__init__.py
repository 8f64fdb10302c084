"""Orchard's framework-neutral shared code.

The public surface is small on purpose: model specs, the NumPy-level client
interface and the function that runs a client against a server. Everything
else (serde, wire messages, partitioners) is imported from its module.
"""
