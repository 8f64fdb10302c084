"""``python -m orchard_mxnet``: see :mod:`orchard_mxnet.cli`."""

import sys

from orchard_mxnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
