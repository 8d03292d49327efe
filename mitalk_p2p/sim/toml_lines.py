"""Line numbers for values in TOML text, which :mod:`tomllib` does not report.

:func:`locate` maps a key path into the parsed document back to the line where
it is defined, so validation errors can say ``FILE:LINE: reason``; :func:`describe`
renders such a path for people.  The scanner assumes the text is valid TOML
(``tomllib`` has already accepted it); on malformed input it keeps what it found
before the problem.
"""

from __future__ import annotations

import contextlib
import functools
import json
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from types import MappingProxyType

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = frozenset(",]}#\r\n")


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line defining ``path`` in ``text``, or of its nearest found ancestor.

    ``path`` indexes ``tomllib.loads(text)``: table keys and array indices.  A
    table or array-of-tables element resolves to its header, a key to its
    assignment, an array element to the line where it begins.  ``None`` when no
    prefix of the path is defined.
    """
    lines = _index(text)
    key = tuple(path)
    for end in range(len(key), 0, -1):
        line = lines.get(key[:end])
        if line is not None:
            return line
    return None


def describe(path: Sequence[str | int]) -> str:
    """Render a path like ``timeline[3].peer`` or ``"odd key".x``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        bare = part != "" and all(c in _BARE for c in part)
        name = part if bare else json.dumps(part, ensure_ascii=False)
        out.append(f".{name}" if out else name)
    return "".join(out)


class _Stop(Exception):
    """The text is not shaped as the scanner expects; scanning ends there."""


@functools.lru_cache(maxsize=16)
def _index(text: str) -> Mapping[Path, int]:
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop):
        scanner.run()
    return MappingProxyType({**scanner.implicit, **scanner.explicit})


class _Scanner:
    """One pass over the text, recording the line of every table, key and array element."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.explicit: dict[Path, int] = {}
        """Headers, assignments and array elements."""
        self.implicit: dict[Path, int] = {}
        """Tables created on the way to a longer header or dotted key: first mention."""
        self.aot_counts: dict[Path, int] = {}
        """Elements seen so far of each array of tables."""

    def line(self) -> int:
        return bisect_left(self.newlines, self.pos) + 1

    def peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.text[i] if i < len(self.text) else ""

    def skip_blank(self, newlines: bool) -> None:
        """Skip spaces and tabs, plus comments and line ends when ``newlines``."""
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            elif newlines and c == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end + 1

    def run(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.key_value(table)
            self.skip_line()

    def header(self) -> Path:
        line = self.line()
        is_array = self.peek(1) == "["
        self.pos += 2 if is_array else 1
        keys = self.keys()
        if not is_array:
            table = self.resolve(keys, line)
        else:
            array = (*self.resolve(keys[:-1], line), keys[-1])
            count = self.aot_counts.get(array, 0)
            self.aot_counts[array] = count + 1
            self.explicit.setdefault(array, line)
            table = (*array, count)
        self.explicit[table] = line
        return table

    def resolve(self, keys: list[str], line: int) -> Path:
        """The path of a header's keys, entering the latest element of arrays of tables."""
        path: Path = ()
        for key in keys:
            path = (*path, key)
            self.implicit.setdefault(path, line)
            count = self.aot_counts.get(path)
            if count:
                path = (*path, count - 1)
        return path

    def key_value(self, table: Path) -> None:
        line = self.line()
        keys = self.keys()
        path = table
        for key in keys[:-1]:
            path = (*path, key)
            self.implicit.setdefault(path, line)
        path = (*path, keys[-1])
        if self.peek() != "=":
            raise _Stop
        self.pos += 1
        self.skip_blank(newlines=False)
        self.explicit[path] = line
        self.value(path)

    def keys(self) -> list[str]:
        """A dotted key, leaving the position after its last part and any blanks."""
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            parts.append(self.key())
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.pos += 1

    def key(self) -> str:
        if self.peek() in ('"', "'"):
            return self.string()
        start = self.pos
        while self.peek() in _BARE:
            self.pos += 1
        if self.pos == start:
            raise _Stop
        return self.text[start : self.pos]

    def value(self, path: Path) -> None:
        start = self.pos
        c = self.peek()
        if c == "[":
            self.array(path)
        elif c == "{":
            self.inline_table(path)
        elif c in ('"', "'"):
            self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
        if self.pos == start:
            raise _Stop

    def array(self, path: Path) -> None:
        self.pos += 1
        index = 0
        while True:
            self.skip_blank(newlines=True)
            c = self.peek()
            if c in ("]", ""):
                self.pos += 1
                return
            if c == ",":
                self.pos += 1
                continue
            element = (*path, index)
            self.explicit[element] = self.line()
            self.value(element)
            index += 1

    def inline_table(self, path: Path) -> None:
        self.pos += 1
        while True:
            self.skip_blank(newlines=True)
            c = self.peek()
            if c in ("}", ""):
                self.pos += 1
                return
            if c == ",":
                self.pos += 1
                continue
            self.key_value(path)

    def string(self) -> str:
        """Consume a string of any of the four kinds; return its value if single-line."""
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            self.multiline_string(quote)
            return ""
        self.pos += 1
        chars: list[str] = []
        while True:
            c = self.peek()
            if c in ("", "\n"):
                raise _Stop
            if c == quote:
                self.pos += 1
                return "".join(chars)
            if c == "\\" and quote == '"':
                chars.append(self.escape())
            else:
                chars.append(c)
                self.pos += 1

    def escape(self) -> str:
        kind = self.peek(1)
        if kind in _ESCAPES:
            self.pos += 2
            return _ESCAPES[kind]
        digits = {"u": 4, "U": 8}.get(kind)
        if kind == "" or digits is None:
            raise _Stop
        code = self.text[self.pos + 2 : self.pos + 2 + digits]
        self.pos += 2 + digits
        try:
            return chr(int(code, 16))
        except ValueError:
            raise _Stop from None

    def multiline_string(self, quote: str) -> None:
        delimiter = quote * 3
        self.pos += 3
        while self.pos < len(self.text):
            if quote == '"' and self.text[self.pos] == "\\":
                self.pos += 2
            elif self.text.startswith(delimiter, self.pos):
                self.pos += 3
                # Up to two more quotes belong to the content, e.g. """a"""" is 'a"'.
                for _ in range(2):
                    if self.peek() == quote:
                        self.pos += 1
                return
            else:
                self.pos += 1
        raise _Stop
