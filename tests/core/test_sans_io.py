"""The core package stays sans-I/O: no sockets, clocks, RNGs, threads or event loops.

The rule is checked statically, by walking the syntax tree of every module under
``mitalk_p2p/core`` (imports inside functions and ``TYPE_CHECKING`` blocks count
too), and dynamically, by importing the whole core in a fresh interpreter and
looking at what got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

import mitalk_p2p.core

CORE_DIR = Path(mitalk_p2p.core.__file__).resolve().parent
CORE_PACKAGE = "mitalk_p2p.core"

FORBIDDEN: dict[str, str] = {
    "trio": "event loop; only mitalk_p2p.runtime may use trio",
    "trio_websocket": "network I/O",
    "asyncio": "event loop",
    "socket": "network I/O",
    "selectors": "I/O multiplexing",
    "ssl": "network I/O",
    "time": "wall clock; take `now` as an argument",
    "random": "RNG; inject randomness, take key material from libsodium",
    "os": "operating-system I/O",
    "threading": "threads",
    "_thread": "threads",
    "multiprocessing": "processes",
    "subprocess": "processes",
    "signal": "process signals",
    "zeroconf": "mDNS I/O",
    "sounddevice": "audio I/O",
    "opuslib": "native codec; wrap it in mitalk_p2p.codec",
    "importlib": "dynamic imports hide dependencies from this check",
}
"""Top-level modules the core must not import, with the reason shown on failure."""

# Modules that must not even be loaded indirectly (through a third-party
# dependency).  `os`, `time` and `threading` are missing here because the
# interpreter and common libraries load them regardless.
FORBIDDEN_AT_RUNTIME = frozenset(
    {
        "trio",
        "trio_websocket",
        "asyncio",
        "socket",
        "selectors",
        "subprocess",
        "zeroconf",
        "sounddevice",
        "opuslib",
    }
)


@attrs.frozen
class Violation:
    line: int
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.imported} ({self.reason})"


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str | None:
    """The absolute name of ``from <level dots><target> import ...`` inside ``module``.

    None if the dots climb above the top-level package.
    """
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level - 1 >= len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _check_name(name: str, line: int) -> Violation | None:
    top = name.split(".")[0]
    if top in FORBIDDEN:
        return Violation(line, name, FORBIDDEN[top])
    if top == "mitalk_p2p" and name != CORE_PACKAGE and not name.startswith(CORE_PACKAGE + "."):
        return Violation(line, name, "the core may import only from mitalk_p2p.core")
    return None


def find_violations(source: str, module: str, *, is_package: bool = False) -> list[Violation]:
    """Every import in ``source`` (the text of ``module``) that breaks the sans-I/O rule.

    Covers ``import x``, ``import x.y``, ``from x import y``, ``from x.y import z``,
    relative imports that resolve outside the core, imports nested anywhere
    (functions, classes, ``if TYPE_CHECKING:``), and ``__import__`` calls.
    """
    violations: list[Violation] = []
    for node in ast.walk(ast.parse(source)):
        found: list[Violation | None] = []
        if isinstance(node, ast.Import):
            found = [_check_name(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                names = [node.module]
            else:
                base = _resolve_relative(module, is_package, node.level, node.module)
                if base is None:
                    written = "." * node.level + (node.module or "")
                    reason = "relative import beyond the top-level package"
                    violations.append(Violation(node.lineno, written, reason))
                    continue
                # `from .. import x` may name a module x as well as an attribute.
                names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            found = [_check_name(name, node.lineno) for name in names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found = [Violation(node.lineno, "__import__()", "dynamic import")]
        violations.extend(v for v in found if v is not None)
    return sorted(violations, key=lambda v: v.line)


def core_modules() -> list[tuple[Path, str, bool]]:
    """(path, dotted module name, is_package) for every .py file in the core."""
    modules = []
    for path in sorted(CORE_DIR.rglob("*.py")):
        relative = path.relative_to(CORE_DIR).with_suffix("")
        parts = CORE_PACKAGE.split(".") + list(relative.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules.append((path, ".".join(parts), is_package))
    return modules


def test_core_modules_are_found() -> None:
    names = {name for _, name, _ in core_modules()}
    assert {CORE_PACKAGE, f"{CORE_PACKAGE}.errors", f"{CORE_PACKAGE}.identity"} <= names


@pytest.mark.parametrize(
    ("path", "module", "is_package"),
    core_modules(),
    ids=[str(path.relative_to(CORE_DIR)) for path, _, _ in core_modules()],
)
def test_core_module_is_sans_io(path: Path, module: str, is_package: bool) -> None:
    violations = find_violations(path.read_text(encoding="utf-8"), module, is_package=is_package)
    assert not violations, f"{path} breaks the sans-I/O rule:\n" + "\n".join(
        f"  {v}" for v in violations
    )


PLANTED = [
    ("import trio", "trio"),
    ("import trio.lowlevel", "trio.lowlevel"),
    ("import socket as s", "socket"),
    ("import attrs, time", "time"),
    ("import os.path", "os.path"),
    ("from trio import sleep", "trio"),
    ("from trio.lowlevel import current_clock", "trio.lowlevel"),
    ("from random import Random", "random"),
    ("from os import urandom", "os"),
    ("from asyncio import get_event_loop", "asyncio"),
    ("from zeroconf import Zeroconf", "zeroconf"),
    ("import sounddevice", "sounddevice"),
    ("import selectors", "selectors"),
    ("import threading", "threading"),
    ("import subprocess", "subprocess"),
    ("import opuslib.api", "opuslib.api"),
    ("import importlib\nimportlib.import_module('trio')", "importlib"),
    ("def f():\n    import time\n    return time.monotonic()", "time"),
    ("class C:\n    def m(self):\n        from socket import socket", "socket"),
    ("if TYPE_CHECKING:\n    import trio", "trio"),
    ("try:\n    import trio\nexcept ImportError:\n    pass", "trio"),
    ("x = __import__('trio')", "__import__()"),
    ("from mitalk_p2p.runtime import udp", "mitalk_p2p.runtime"),
    ("import mitalk_p2p.cli", "mitalk_p2p.cli"),
    ("from .. import runtime", "mitalk_p2p.runtime"),
    ("from ..runtime.udp import open_udp", "mitalk_p2p.runtime.udp"),
    ("from ... import anything", "..."),
    ("from ...elsewhere import x", "...elsewhere"),
]


@pytest.mark.parametrize(("source", "imported"), PLANTED)
def test_checker_detects_planted_violation(source: str, imported: str) -> None:
    violations = find_violations(source, f"{CORE_PACKAGE}.peer")
    assert [v.imported for v in violations] == [imported]


def test_checker_reports_line_numbers() -> None:
    source = textwrap.dedent(
        """\
        import attrs

        def now() -> float:
            import time
            return time.time()
        """
    )
    [violation] = find_violations(source, f"{CORE_PACKAGE}.clock")
    assert violation.line == 4
    assert "line 4: time" in str(violation)


@pytest.mark.parametrize(
    "source",
    [
        "import attrs",
        "import hashlib, hmac, struct, enum",
        "import nacl.signing",
        "from collections.abc import Callable",
        "from typing import TYPE_CHECKING",
        "import timeit",  # shares a prefix with `time`, but is a different module
        "import randomness",
        "import oslo",
        "from . import errors",
        "from .errors import WireError",
        "from .. import core",
        "from ..core import ids",
        "from mitalk_p2p.core import wire",
        "import mitalk_p2p.core.identity",
        "x = time_budget(now)",
    ],
)
def test_checker_accepts_allowed_imports(source: str) -> None:
    assert find_violations(source, f"{CORE_PACKAGE}.peer") == []


def test_relative_imports_resolve_from_a_package_init() -> None:
    module = f"{CORE_PACKAGE}.media"
    assert find_violations("from . import frames", module, is_package=True) == []
    assert find_violations("from .. import wire", module, is_package=True) == []
    [violation] = find_violations("from ... import audio", module, is_package=True)
    assert violation.imported == "mitalk_p2p.audio"


def test_importing_the_core_loads_no_io_modules() -> None:
    script = textwrap.dedent(
        """\
        import importlib, json, pkgutil, sys
        import mitalk_p2p.core as core
        failed = {}
        for info in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                failed[info.name] = repr(exc)
        print(json.dumps({"loaded": sorted(sys.modules), "failed": failed}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout)
    loaded = {name.split(".")[0] for name in report["loaded"]}
    # Modules that fail to import are reported by their own tests; this test
    # is about what the importable ones drag in.
    assert not loaded & FORBIDDEN_AT_RUNTIME, (
        f"importing mitalk_p2p.core loads {sorted(loaded & FORBIDDEN_AT_RUNTIME)}"
    )
