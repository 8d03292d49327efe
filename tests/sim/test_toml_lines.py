"""Tests for mapping TOML key paths back to source lines."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mitalk_p2p.sim.toml_lines import describe, locate

Path = tuple[str | int, ...]

SCENARIO = """\
# Scenario: a relay crashes mid-call. [not.a.header]
name = "relay crash # not a comment"
seed = 42
description = \"\"\"
[network]
loss = 0.5 \\\"\"\" still inside
[[timeline]] \\
\"\"\"
notes = '''
peer = "ghost" # '''
"odd key".x = 1
network.loss = 0.1
network.jitter_ms = 5

[peers]
names = [
  "host",   # the first one
  'l001',
  "l#002", "l]003",
]
count=3
roles = [{ name = "host", weight = 2 }, { name = "listener" }]
"a\\u0020b" = 'c:\\path\\'

[[ network . link ]]
latency_ms = 40

[[network.link]]
latency_ms = { base = 40, spread = 5 }
a.b = 1
"quoted.dot" = "x = 1"

[network.link.extra]
mtu = 1200

[[network.link.hops]]
via = "a"

[[timeline]]
at = 0.0
action = "join"
peer = "host"

[[timeline]]
at = 1.5
action = "join"
peer = "l001"

[[timeline]] # a comment with [brackets]
at = 3.0
action = "crash"
peer = \"\"\"l002\"\"\"

[[timeline]]
at = 4.5
action = "say"
peer = "l003"
text = \"\"\"she said "hi\"\"\"\"\"

[[expect]]
kind = "delivered"
peers = ["l001",
         "l003"]

[[expect]]
kind = "tree_repaired"
within_s = 2
"""


def _get(document: Any, path: Path) -> Any:
    for part in path:
        document = document[part]
    return document


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("name",), 2),
        (("seed",), 3),
        (("description",), 4),
        (("notes",), 9),
        (("odd key",), 11),
        (("odd key", "x"), 11),
        (("network",), 12),
        (("network", "loss"), 12),
        (("network", "jitter_ms"), 13),
        (("peers",), 15),
        (("peers", "names"), 16),
        (("peers", "names", 0), 17),
        (("peers", "names", 1), 18),
        (("peers", "names", 2), 19),
        (("peers", "names", 3), 19),
        (("peers", "count"), 21),
        (("peers", "roles"), 22),
        (("peers", "roles", 1), 22),
        (("peers", "roles", 1, "name"), 22),
        (("peers", "a b"), 23),
        (("network", "link"), 25),
        (("network", "link", 0), 25),
        (("network", "link", 0, "latency_ms"), 26),
        (("network", "link", 1), 28),
        (("network", "link", 1, "latency_ms"), 29),
        (("network", "link", 1, "latency_ms", "spread"), 29),
        (("network", "link", 1, "a"), 30),
        (("network", "link", 1, "a", "b"), 30),
        (("network", "link", 1, "quoted.dot"), 31),
        (("network", "link", 1, "extra"), 33),
        (("network", "link", 1, "extra", "mtu"), 34),
        (("network", "link", 1, "hops", 0), 36),
        (("network", "link", 1, "hops", 0, "via"), 37),
        (("timeline",), 39),
        (("timeline", 0), 39),
        (("timeline", 0, "peer"), 42),
        (("timeline", 1, "at"), 45),
        (("timeline", 2), 49),
        (("timeline", 2, "peer"), 52),
        (("timeline", 3, "peer"), 57),
        (("timeline", 3, "text"), 58),
        (("expect", 0, "peers", 1), 63),
        (("expect", 1), 65),
        (("expect", 1, "within_s"), 67),
    ],
)
def test_scenario_lines(path: Path, line: int) -> None:
    _get(tomllib.loads(SCENARIO), path)
    assert locate(SCENARIO, path) == line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("timeline", 2, "missing"), 49),
        (("timeline", 9), 39),
        (("timeline", 9, "peer"), 39),
        (("network", "link", 0, "nope", "deeper"), 25),
        (("peers", "names", 7), 16),
        (("seed", "not", "a", "table"), 3),
        (("network", "missing"), 12),
    ],
)
def test_missing_paths_fall_back_to_nearest_ancestor(path: Path, line: int) -> None:
    assert locate(SCENARIO, path) == line


@pytest.mark.parametrize("path", [(), ("nope",), ("nope", "loss"), (0,), ("Name",)])
def test_unknown_paths_give_none(path: Path) -> None:
    assert locate(SCENARIO, path) is None


def test_multiline_string_contents_are_not_keys() -> None:
    assert locate(SCENARIO, ("loss",)) is None
    assert locate(SCENARIO, ("peer",)) is None


def test_implicit_tables_use_first_mention_until_defined() -> None:
    text = "[a.b.c]\nx = 1\n[a]\ny = 2\nd.e.f = 3\n"
    assert locate(text, ("a", "b")) == 1
    assert locate(text, ("a", "b", "c", "x")) == 2
    assert locate(text, ("a",)) == 3
    assert locate(text, ("a", "d")) == 5
    assert locate(text, ("a", "d", "e", "f")) == 5


def test_crlf_line_endings() -> None:
    text = SCENARIO.replace("\n", "\r\n")
    assert locate(text, ("timeline", 3, "peer")) == 57
    assert locate(text, ("peers", "names", 2)) == 19


def test_malformed_text_keeps_what_came_before() -> None:
    text = 'a = 1\n[b]\nc = "unterminated\nd = 3\n'
    assert locate(text, ("a",)) == 1
    assert locate(text, ("b", "d")) == 2


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("timeline", 3, "peer"), "timeline[3].peer"),
        (("network", "link", 1, "latency_ms"), "network.link[1].latency_ms"),
        (("odd key", "x"), '"odd key".x'),
        (("a.b", 'q"', ""), '"a.b"."q\\"".""'),
        ((0, "x-y_1"), "[0].x-y_1"),
        (("clé",), '"clé"'),
    ],
)
def test_describe(path: Path, text: str) -> None:
    assert describe(path) == text


# Random documents: each generator returns the TOML text of a value and the
# lines, relative to the value's first line, of the leaves inside it.

Leaves = list[tuple[Path, int]]
Rendered = tuple[str, Leaves]

TRICKY = "ab #=[]{}.,'\"\\"
KEY_CHARS = "ab_-1 .#=[]'\"\\é"


def _key(name: str, draw: st.DrawFn) -> str:
    bare = name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    if bare and draw(st.booleans()):
        return name
    if "'" not in name and draw(st.booleans()):
        return f"'{name}'"
    return json.dumps(name, ensure_ascii=draw(st.booleans()))


keys = st.text(KEY_CHARS, max_size=5)


@st.composite
def strings(draw: st.DrawFn, multiline: bool = True) -> Rendered:
    kinds = ["basic", "literal", "ml_basic", "ml_literal"] if multiline else ["basic", "literal"]
    kind = draw(st.sampled_from(kinds))
    if kind == "basic":
        return json.dumps(draw(st.text(TRICKY + "\n\t", max_size=8))), []
    if kind == "literal":
        return "'" + draw(st.text(TRICKY.replace("'", ""), max_size=8)) + "'", []
    lines = draw(st.lists(st.sampled_from(["[t]", "[[t]]", "k = 1", "# c", "'", '"', ""])))
    body = "\n".join(lines)
    # Up to two quotes may directly precede the closing delimiter.
    tail = draw(st.integers(0, 2))
    if kind == "ml_basic":
        body = body.replace("\\", "\\\\").replace('"', '\\"')
        return '"""\n' + body + '"' * tail + '"""', []
    body = body.replace("'", "")
    return "'''\n" + body + "'" * tail + "'''", []


def _plain(text: str) -> Rendered:
    return text, []


_others = st.one_of(
    st.integers().map(str),
    st.sampled_from(["true", "false", "1.5", "-0.0", "inf", "1979-05-27 07:32:00Z"]),
).map(_plain)
scalars = strings() | _others
single_line_scalars = strings(multiline=False) | _others


@st.composite
def inline_tables(draw: st.DrawFn) -> Rendered:
    names = draw(st.lists(keys, unique=True, max_size=3))
    parts = []
    for name in names:
        text, _ = draw(single_line_scalars)
        parts.append(f"{_key(name, draw)} = {text}")
    leaves: Leaves = [((name,), 0) for name in names]
    return "{" + ", ".join(parts) + "}", leaves


@st.composite
def arrays(draw: st.DrawFn) -> Rendered:
    elements = draw(st.lists(st.one_of(scalars, inline_tables()), max_size=4))
    multiline = draw(st.booleans())
    text = "["
    offset = 0
    leaves: Leaves = []
    for index, (element, inner) in enumerate(elements):
        if multiline:
            text += "\n  " + draw(st.sampled_from(["", "# [x] = 1\n  ", "\n  "]))
            offset = text.count("\n")
        leaves.append(((index,), offset))
        leaves.extend(((index, *sub), offset + line) for sub, line in inner)
        text += element + ","
        offset = text.count("\n")
    return text + ("\n]" if multiline else "]"), leaves


values = st.one_of(scalars, arrays(), inline_tables())


class _Doc:
    """A TOML text being written, with the expected line of every leaf."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.expected: dict[Path, int] = {}

    def emit(self, text: str) -> int:
        self.lines.extend(text.split("\n"))
        return len(self.lines) - text.count("\n")

    def pairs(self, draw: st.DrawFn, table: Path, names: list[str]) -> None:
        for name in names:
            if draw(st.booleans()):
                self.emit(draw(st.sampled_from(["", "# a = [b]", "  # [[c]] 'd'"])))
            dotted = draw(st.none() | keys)
            parts = [name] if dotted is None else [name, dotted]
            written = ".".join(_key(part, draw) for part in parts)
            path = (*table, *parts)
            text, leaves = draw(values)
            space = draw(st.sampled_from(["=", " = ", " =\t"]))
            line = self.emit(f"{written}{space}{text}" + draw(st.sampled_from(["", " # x = 1"])))
            self.expected[path] = line
            for sub, offset in leaves:
                self.expected[(*path, *sub)] = line + offset

    def header(self, draw: st.DrawFn, path: tuple[str, ...], array: bool) -> int:
        gap = draw(st.sampled_from(["", " "]))
        dot = draw(st.sampled_from([".", " . "]))
        name = dot.join(_key(part, draw) for part in path)
        opened, closed = ("[[", "]]") if array else ("[", "]")
        return self.emit(f"{opened}{gap}{name}{gap}{closed}")


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[Path, int]]:
    doc = _Doc()
    names = draw(st.lists(keys, unique=True, max_size=8))
    kinds = [draw(st.sampled_from(["pair", "table", "array"])) for _ in names]
    doc.pairs(draw, (), [n for n, k in zip(names, kinds, strict=True) if k == "pair"])
    for name, kind in zip(names, kinds, strict=True):
        if kind == "table":
            inner = draw(st.lists(keys, unique=True, max_size=4))
            doc.expected[(name,)] = doc.header(draw, (name,), array=False)
            doc.pairs(draw, (name,), inner[1:])
            if draw(st.booleans()) and inner:
                table = (name, inner[0])
                doc.expected[table] = doc.header(draw, table, array=False)
                doc.pairs(draw, table, draw(st.lists(keys, unique=True, max_size=3)))
        elif kind == "array":
            for index in range(draw(st.integers(1, 3))):
                inner = draw(st.lists(keys, unique=True, max_size=4))
                doc.expected[(name, index)] = doc.header(draw, (name,), array=True)
                doc.pairs(draw, (name, index), inner[1:])
                if draw(st.booleans()) and inner:
                    # A sub-table of this element, or 1-2 elements of a nested array of tables.
                    nested = draw(st.integers(0, 2))
                    sub: Path = (name, index, inner[0])
                    for at in [(*sub, j) for j in range(nested)] or [sub]:
                        doc.expected[at] = doc.header(draw, (name, inner[0]), array=nested > 0)
                        doc.pairs(draw, at, draw(st.lists(keys, unique=True, max_size=3)))
    return "\n".join(doc.lines) + "\n", doc.expected


@settings(max_examples=300, deadline=None)
@given(documents())
def test_random_documents(case: tuple[str, dict[Path, int]]) -> None:
    text, expected = case
    parsed = tomllib.loads(text)
    for path, line in expected.items():
        _get(parsed, path)
        assert locate(text, path) == line, (describe(path), text)
