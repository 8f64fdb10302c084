"""``python -m orchard_pytorch``: see :mod:`orchard_pytorch.cli`."""

import sys

from orchard_pytorch.cli import main

sys.exit(main())
