"""``python -m geoscreen``."""

import sys

from geoscreen.cli import main

sys.exit(main())
