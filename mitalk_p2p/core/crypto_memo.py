"""An exact memo of signature checks, frame decryptions and parsed messages, shared in one process.

In a simulated room a thousand peers verify the very same signed bytes: every
member checks each log entry, heartbeat and media frame.  The memo remembers
each answer, keyed by *every* input byte (public key, message, signature; or
sender key, room and datagram), so a remembered answer is always the answer the
primitive would give again.  A tampered byte, another key or an old sender key
is a different entry and is checked for real, so forgeries and removed members
are caught exactly as without it.

Parsing is remembered the same way, keyed by the whole message, and only for
messages that decode to immutable values; a malformed message is never
remembered and fails again for every peer that receives it.

Only the simulator switches it on (:func:`sharing_crypto_results`).  A real peer
never meets the same bytes twice, so it would gain nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import attrs

DEFAULT_MAX_ENTRIES = 1 << 16
Parsed = TypeVar("Parsed")


@attrs.define(eq=False)
class CryptoMemo:
    max_entries: int = DEFAULT_MAX_ENTRIES
    hits: int = 0
    misses: int = 0
    _verified: dict[tuple[bytes, bytes, bytes], bool] = attrs.Factory(dict)
    _opened: dict[tuple[bytes, bytes, bytes], bytes | None] = attrs.Factory(dict)
    _parsed: dict[bytes, object] = attrs.Factory(dict)

    def verified(
        self, key: bytes, message: bytes, signature: bytes, check: Callable[[], bool]
    ) -> bool:
        entry = (key, message, signature)
        answer = self._verified.get(entry)
        if answer is None:
            self.misses += 1
            answer = check()
            if len(self._verified) >= self.max_entries:
                self._verified.clear()
            self._verified[entry] = answer
        else:
            self.hits += 1
        return answer

    def opened(
        self, key: bytes, context: bytes, data: bytes, open_: Callable[[], bytes | None]
    ) -> bytes | None:
        entry = (key, context, data)
        if entry in self._opened:
            self.hits += 1
            return self._opened[entry]
        self.misses += 1
        plaintext = open_()
        if len(self._opened) >= self.max_entries:
            self._opened.clear()
        self._opened[entry] = plaintext
        return plaintext

    def parsed(self, data: bytes, parse: Callable[[], Parsed]) -> Parsed:
        """``parse()``'s immutable result for ``data``; exceptions pass through unremembered."""
        if data in self._parsed:
            self.hits += 1
            return self._parsed[data]  # type: ignore[return-value]
        self.misses += 1
        value = parse()
        if len(self._parsed) >= self.max_entries:
            self._parsed.clear()
        self._parsed[data] = value
        return value


_active: CryptoMemo | None = None


def active_memo() -> CryptoMemo | None:
    return _active


@contextmanager
def sharing_crypto_results(memo: CryptoMemo | None = None) -> Iterator[CryptoMemo]:
    """Within this block every peer in the process shares one :class:`CryptoMemo`."""
    global _active
    previous, _active = _active, memo or CryptoMemo()
    try:
        yield _active
    finally:
        _active = previous
