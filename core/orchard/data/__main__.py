"""``python -m orchard.data``: see :mod:`orchard.data.tool`."""

import sys

from orchard.data.tool import main

sys.exit(main())
