"""The error hierarchy, after h11: misuse of the API versus a misbehaving peer."""

from __future__ import annotations


class MitalkError(Exception):
    """Base class of every error this package raises on purpose."""


class LocalProtocolError(MitalkError):
    """The local caller misused the API (a bug on our side, or bad user input)."""


class RemoteProtocolError(MitalkError):
    """A remote peer sent something malformed, forged or out of place.

    Drivers drop the offending input, count it, and carry on.
    """


class WireError(RemoteProtocolError):
    """Bytes that do not decode: truncated, oversized, trailing garbage, bad UTF-8."""


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, with (nested) exception groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
    return [exc]
