"""The error raised when a dataset on disk is missing, damaged or of the wrong kind."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """Dataset files are missing, fail their checksum, or do not have the expected layout.

    Messages name the file or directory at fault and how to fix it, because
    the person reading them is usually provisioning a machine, not debugging.
    """
