"""``python -m orchard.netsim``: see :mod:`orchard.netsim.cli`."""

import sys

from orchard.netsim.cli import main

sys.exit(main())
