"""``python -m bootstrap``: the same as the ``mitalk-bootstrap`` command."""

import sys

from .server import main

sys.exit(main())
