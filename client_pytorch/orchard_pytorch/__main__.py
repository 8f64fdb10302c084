"""``python -m orchard_pytorch``: see :mod:`orchard_pytorch.cli`."""

import sys

from orchard_pytorch.cli import main

if __name__ == "__main__":
    sys.exit(main())
