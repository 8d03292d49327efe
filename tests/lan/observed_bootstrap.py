"""The bootstrap node, telling on stdout what it stores: ``python -m tests.lan.observed_bootstrap``.

It is the real node (:func:`bootstrap.server.serve_bootstrap`) with a registry
that prints one JSON line per accepted announcement, so a test can wait for
"the room is announced" instead of guessing how long that takes.  Lines:

- ``{"event": "listening", "address": "HOST:PORT"}`` once it accepts connections;
- ``{"event": "announced", "room_id": HEX, "addresses": [...], "outcome": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import attrs
import trio

from bootstrap.announcement import Announcement
from bootstrap.registry import Outcome, Registry
from bootstrap.server import serve_bootstrap


def _say(record: dict[str, object]) -> None:
    print(json.dumps({**record, "time": time.monotonic()}), flush=True)


@attrs.define
class ReportingRegistry(Registry):
    """A :class:`Registry` that announces each stored announcement on stdout."""

    def announce(self, announcement: Announcement, now: float) -> Outcome:
        outcome = super().announce(announcement, now)
        _say({"event": "announced", "room_id": announcement.room_id.hex,
              "addresses": list(announcement.addresses), "outcome": outcome.value})  # fmt: skip
        return outcome


async def _serve(address: str) -> None:
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(
            lambda task_status: serve_bootstrap(
                address, registry=ReportingRegistry(), task_status=task_status
            )
        )
        _say({"event": "listening", "address": actual})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observed_bootstrap")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve, args.listen)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
