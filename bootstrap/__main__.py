"""``python -m bootstrap``: the same as the ``mitalk-bootstrap`` command."""

import sys

from .command import main

sys.exit(main())
