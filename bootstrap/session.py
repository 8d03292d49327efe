"""What a bootstrap node replies on one connection, without I/O.

:func:`answer` turns one request into its response.  :class:`Session` adds what
belongs to a connection: its request budget (a :class:`TokenBucket`) and its
address proof.  Until the client has proven its address (see
:mod:`bootstrap.protocol`), no reply is larger than the request that caused it;
a larger one is replaced by ``ProofRequired``, and a request too small for even
that gets no reply.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import assert_never

import attrs

from mitalk_p2p.core.errors import WireError

from .address_proof import CookieMinter
from .protocol import (
    PROOF_REQUIRED_SIZE,
    Announce,
    Error,
    ErrorCode,
    LookupId,
    LookupName,
    Ok,
    ProofRequired,
    ProtocolError,
    Prove,
    Response,
    Rooms,
    Withdraw,
    decode_request,
    encode_response,
    peel_proof,
)
from .registry import Registry, RegistryError

logger = logging.getLogger(__name__)

_MIN_REPLY_SIZE = len(encode_response(ProofRequired()))


@attrs.define
class TokenBucket:
    """A request budget that refills at ``rate`` per second up to ``burst``."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def answer(registry: Registry, message: bytes | str, now: float) -> Response:
    """The full reply to one request message, ``now`` in unix seconds.  Never raises for bad
    input.  A ``Prove`` here is refused: the connection's :class:`Session` unwraps it."""
    if isinstance(message, str):
        return Error(ErrorCode.MALFORMED, "requests are binary websocket messages")
    try:
        request = decode_request(message)
    except ProtocolError as exc:
        return Error(exc.code, str(exc))
    except WireError as exc:
        return Error(ErrorCode.MALFORMED, str(exc))
    try:
        if isinstance(request, Announce):
            return Ok(registry.announce(request.announcement, now).value)
        if isinstance(request, Withdraw):
            return Ok("withdrawn" if registry.withdraw(request.withdrawal, now) else "absent")
        if isinstance(request, LookupId):
            found = registry.lookup_id(request.room_id, now)
            return Rooms(() if found is None else (found,))
        if isinstance(request, LookupName):
            return Rooms(tuple(registry.lookup_name(request.text, now)))
        if isinstance(request, Prove):
            return Error(ErrorCode.MALFORMED, "a proof may only wrap a request, once")
        assert_never(request)
    except RegistryError as exc:
        return Error(exc.code.value, str(exc))


@attrs.define
class Session:
    """One connection's state: where it comes from, its budget, and whether it is proven.

    :meth:`respond` counts error replies by code in ``errors`` and address-proof
    events in ``proofs`` (``required``, ``proven``, ``bad-cookie``, ``withheld``);
    the node passes its own counters so they add up across connections.
    """

    source: str
    """The client's IP address, which its cookie is bound to."""
    registry: Registry
    cookies: CookieMinter
    bucket: TokenBucket
    errors: Counter[str] = attrs.Factory(Counter)
    proofs: Counter[str] = attrs.Factory(Counter)
    proven: bool = False

    def respond(self, message: bytes | str, now: float, wall: float) -> bytes | None:
        """The reply to send for ``message``, or None if nothing may be sent.

        ``now`` is the monotonic clock of the budget and cookies; ``wall`` is unix
        seconds, for the registry.
        """
        size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8"))
        response = self._respond(message, now, wall)
        if isinstance(response, Error):
            self.errors[response.code] += 1
        reply = encode_response(response)
        if self.proven or len(reply) <= size:
            return reply
        if size >= PROOF_REQUIRED_SIZE:
            self.proofs["required"] += 1
            return encode_response(ProofRequired(self.cookies.issue(self.source, now)))
        if size >= _MIN_REPLY_SIZE:
            self.proofs["required"] += 1
            return encode_response(ProofRequired())
        self.proofs["withheld"] += 1
        return None

    def _respond(self, message: bytes | str, now: float, wall: float) -> Response:
        if not self.bucket.take(now):
            return Error(ErrorCode.RATE_LIMITED, "too many requests; slow down")
        if isinstance(message, bytes) and (peeled := peel_proof(message)) is not None:
            cookie, message = peeled
            if not self.proven and self.cookies.check(self.source, cookie, now):
                self.proven = True
                self.proofs["proven"] += 1
            elif not self.proven and any(cookie):
                self.proofs["bad-cookie"] += 1
        try:
            return answer(self.registry, message, wall)
        except Exception:  # a bug, not bad input: answer() handles all of that
            logger.exception("failed to answer a request from %s", self.source)
            return Error(ErrorCode.INTERNAL, "the node failed to answer this request")
