"""``python -m orchard_server``."""

import sys

from orchard_server.cli import main

sys.exit(main())
