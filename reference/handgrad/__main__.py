"""``python -m handgrad`` runs the command line."""

import sys

from handgrad.cli import main

sys.exit(main())
