"""Address-proof cookies: how a node tells that a client receives what is sent to it.

A cookie is an HMAC, under a secret only this node process knows, of the client's
source IP and the current period of ``period`` seconds.  The node keeps no state
per cookie: it recomputes the HMAC to check one.  A cookie is accepted during the
period it was made in and the next, so it lasts between one and two periods, and
it is worthless from any other address or after the node restarts (a fresh secret).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

import attrs

from .protocol import COOKIE_SIZE, NO_COOKIE

_LABEL = b"mitalk bootstrap address proof v1\x00"
SECRET_SIZE = 32


@attrs.define
class CookieMinter:
    """Makes and checks address-proof cookies.  ``now`` is any monotonic clock in seconds."""

    secret: bytes = attrs.field(factory=lambda: secrets.token_bytes(SECRET_SIZE), repr=False)
    period: float = 60.0

    def issue(self, source: str, now: float) -> bytes:
        """The cookie for ``source`` (its IP address as text) at ``now``."""
        return self._mac(source, self._period_of(now))

    def check(self, source: str, cookie: bytes, now: float) -> bool:
        """True if ``cookie`` was issued to ``source`` in this period or the one before."""
        if len(cookie) != COOKIE_SIZE or cookie == NO_COOKIE:
            return False
        current = self._period_of(now)
        return any(
            hmac.compare_digest(cookie, self._mac(source, period))
            for period in (current, current - 1)
        )

    def _period_of(self, now: float) -> int:
        return math.floor(now / self.period)

    def _mac(self, source: str, period: int) -> bytes:
        message = _LABEL + source.encode("utf-8") + b"\x00" + period.to_bytes(8, "big", signed=True)
        return hmac.digest(self.secret, message, hashlib.sha256)[:COOKIE_SIZE]
