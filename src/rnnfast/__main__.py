"""``python -m rnnfast``: the ``rnnfast`` command line."""

import sys

from rnnfast.cli import main

sys.exit(main())
