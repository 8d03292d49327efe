"""The fuzz targets: one per parser family, each a set of parsers and their seed inputs.

A target's input starts with one selector byte that picks the parser (modulo the
number of parsers); the rest is what that parser reads.  A parser's check feeds
it the input and accepts only its documented error; when the input parses, the
check asserts what must then hold (usually that it re-encodes to the same bytes).
Anything else escaping a check is a bug, and the fuzzer reports it as a crash.

Seeds are real encoded messages, files and texts, built with the code's own
encoders, so the fuzzer starts from inputs that reach deep into each parser.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

SCRATCH_PREFIX = "mitalk-fuzz-"

Check = Callable[[bytes], None]
"""Runs one parser on one input; raises only if the parser misbehaved."""

FAMILIES = (
    "control",
    "media",
    "invite",
    "handshake",
    "bootstrap_node",
    "mdns",
    "link",
    "scenario",
    "profile_files",
    "cli_args",
    "audio",
)
"""The modules of this package that define a target, in the order ``make fuzz`` runs them."""


@attrs.frozen
class Target:
    name: str
    description: str
    parsers: tuple[tuple[str, Check], ...]
    seeds: Callable[[], Iterable[tuple[str, bytes]]] = attrs.field(repr=False)
    """``(parser name, input)`` pairs: real encodings to start the corpus from."""
    dictionary: str | None = None
    """A libFuzzer dictionary in ``fuzz/dicts/``, for targets that parse text."""

    def run(self, data: bytes) -> None:
        """Feed one fuzzer input (selector byte, then the parser's input) to its parser."""
        if not data:
            return
        _name, check = self.parsers[data[0] % len(self.parsers)]
        check(data[1:])

    def seed_inputs(self) -> list[bytes]:
        """The seeds as fuzzer inputs, each prefixed with its parser's selector byte."""
        index = {name: number for number, (name, _check) in enumerate(self.parsers)}
        return [bytes((index[name],)) + data for name, data in self.seeds()]


def load(name: str) -> Target:
    """A family's target, by its name (``profile-files``) or its module (``profile_files``)."""
    module_name = name.replace("-", "_")
    if module_name not in FAMILIES:
        raise KeyError(f"no fuzz target {name!r}; targets: {', '.join(names())}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    target: Target = module.TARGET
    return target


def names() -> list[str]:
    return [family.replace("_", "-") for family in FAMILIES]


def scratch_dir() -> Path:
    """A private directory for targets that parse files, removed when the process ends.

    libFuzzer ends the process without running ``atexit`` handlers, so a new directory
    also removes those left by processes that are gone (the name carries the PID).
    In memory when ``/dev/shm`` exists: a run writes files tens of thousands of times.
    """
    memory = Path("/dev/shm")
    base = memory if memory.is_dir() else Path(tempfile.gettempdir())
    for stale in base.glob(f"{SCRATCH_PREFIX}*"):
        pid = stale.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
        if pid.isdigit() and pid.isascii() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=base))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expect(condition: bool, message: str) -> None:
    """Assert that holds under ``python -O`` too: a failed one is a finding."""
    if not condition:
        raise AssertionError(message)
