"""``python -m orchard.launch``."""

import sys

from orchard.launch.cli import main

sys.exit(main())
