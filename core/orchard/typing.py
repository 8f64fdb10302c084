"""Plain types shared by every Orchard component.

Parameters are ordered lists of NumPy arrays (as in Flower's NumPyClient), so
the server and the framework adapters meet on NumPy and nothing else.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

NDArray: TypeAlias = npt.NDArray[np.generic]
NDArrays: TypeAlias = list[NDArray]
Scalar: TypeAlias = bool | int | float | str | bytes
Config: TypeAlias = dict[str, Scalar]
Metrics: TypeAlias = dict[str, Scalar]
