"""Plain types shared by every Orchard component.

Parameters are ordered lists of NumPy arrays (as in Flower's NumPyClient), so
the server and the framework adapters meet on NumPy and nothing else.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np

#: Any NumPy array. Deliberately loose (``Any`` shape and dtype): lists of
#: arrays are invariant, and parameters mix dtypes and shapes by nature.
NDArray: TypeAlias = np.ndarray[Any, Any]
NDArrays: TypeAlias = list[NDArray]
Scalar: TypeAlias = bool | int | float | str | bytes
Config: TypeAlias = dict[str, Scalar]
Metrics: TypeAlias = dict[str, Scalar]
