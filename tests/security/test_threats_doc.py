"""THREATS.md names the tests that prove each defence: every name must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_NAME = re.compile(r"\btest_\w+")
TEST_FILE = re.compile(r"\btests/[\w/]+\.py\b")


def _defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names.update(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(), re.M))
    return names


def test_every_test_named_in_threats_md_exists() -> None:
    text = (ROOT / "THREATS.md").read_text()
    named = {name for name in TEST_NAME.findall(text) if not name.endswith("_py")}
    # File names such as test_faults.py match the pattern too; they are checked below.
    named -= {Path(path).stem for path in TEST_FILE.findall(text)}
    named = {name for name in named if f"{name}.py" not in text}
    missing = sorted(named - _defined_tests())
    assert len(named) > 60
    assert missing == []


def test_every_test_file_named_in_threats_md_exists() -> None:
    text = (ROOT / "THREATS.md").read_text()
    files = set(TEST_FILE.findall(text))
    assert len(files) > 10
    assert sorted(path for path in files if not (ROOT / path).is_file()) == []


def test_every_adversarial_test_module_is_in_threats_md() -> None:
    text = (ROOT / "THREATS.md").read_text()
    modules = sorted((ROOT / "tests" / "security").glob("test_*.py"))
    unnamed = [m.name for m in modules if m.name != Path(__file__).name and m.name not in text]
    assert unnamed == []
