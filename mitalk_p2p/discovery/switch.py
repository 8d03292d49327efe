"""The one switch for all mDNS: ``MITALK_MDNS=off`` in the environment.

Kept apart from :mod:`.mdns` so that checking it does not import zeroconf.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from ..core.errors import MitalkError

MDNS_ENV: Final = "MITALK_MDNS"
_OFF: Final = frozenset({"off", "0", "no", "false", "disabled"})


class MdnsError(MitalkError):
    """mDNS can't be used here: turned off, or no interface to use.  One line for people."""


def mdns_allowed(env: Mapping[str, str] | None = None) -> bool:
    """False when ``MITALK_MDNS`` is ``off`` (or ``0``, ``no``, ``false``, ``disabled``)."""
    value = (os.environ if env is None else env).get(MDNS_ENV, "")
    return value.strip().lower() not in _OFF
