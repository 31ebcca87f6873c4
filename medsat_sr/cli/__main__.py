"""``python -m medsat_sr.cli``."""

import sys

from medsat_sr.cli import main

sys.exit(main())
