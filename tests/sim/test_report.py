from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import attrs
import pytest

from mitalk_p2p.sim.report import ReportUnavailable, render_html, write_report
from mitalk_p2p.sim.results import ExpectationResult, ScenarioResult, TreeSnapshot

pytest.importorskip("matplotlib")

HOSTILE_NAME = "<script>alert(1)</script>"


def small_result() -> ScenarioResult:
    before = TreeSnapshot(
        time=4.0,
        label="before crash of l002",
        root="host",
        parents=(("l001", "host"), ("l002", "host"), ("l003", "l002"), (HOSTILE_NAME, "l002")),
        highlight=("l002",),
    )
    after = TreeSnapshot(
        time=5.5,
        label="after repair",
        root="host",
        parents=(("l001", "host"), ("l003", "l001"), (HOSTILE_NAME, "host")),
        highlight=("l003", HOSTILE_NAME),
    )
    return ScenarioResult(
        scenario="crash-relay-small",
        description="A relay crashes & its children are re-parented.",
        seed=7,
        peers=5,
        virtual_s=10.0,
        wall_s=0.42,
        trace_digest="ab12cd34",
        delivery_ratio={"l001": 1.0, "l002": 0.4, "l003": 0.97, HOSTILE_NAME: 0.99},
        latencies_ms=(12.0, 14.5, 15.0, 21.0, 40.0, 95.5),
        tree_repair_ms=(310.0,),
        host_takeover_ms=(),
        expectations=(
            ExpectationResult("delivery_ratio.min >= 0.9", False, "l002 heard 40%"),
            ExpectationResult("tree_repair_ms.max <= 1000", True, "310 ms"),
        ),
        trees=(before, after),
        counters={"datagrams_sent": 1200, "datagrams_lost": 17},
    )


def embedded_images(page: str) -> int:
    return page.count("<svg") + page.count("data:image/png;base64,")


def large_tree(members: int, fan_out: int = 4) -> TreeSnapshot:
    names = [f"p{i:04d}" for i in range(members)]
    parents = tuple((names[i], names[(i - 1) // fan_out]) for i in range(1, members))
    return TreeSnapshot(
        time=1.0, label="large", root=names[0], parents=parents, highlight=(names[5],)
    )


def test_report_holds_header_tables_and_pictures(tmp_path: Path) -> None:
    result = small_result()
    path = write_report(result, tmp_path / "report")
    assert path == tmp_path / "report" / "index.html"
    page = path.read_text(encoding="utf-8")
    assert result.scenario in page
    assert "re-parented" in page and "&amp;" in page
    for expectation in result.expectations:
        assert html.escape(expectation.name) in page
    assert "FAIL" in page
    assert "datagrams_lost" in page
    assert "latency_ms.p95" in page
    assert "before crash of l002" in page and "after repair" in page
    assert embedded_images(page) >= 4


def test_report_is_self_contained(tmp_path: Path) -> None:
    page = write_report(small_result(), tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page
    assert "<script" not in page
    assert "url(http" not in page


def test_user_supplied_names_are_escaped(tmp_path: Path) -> None:
    page = write_report(small_result(), tmp_path).read_text(encoding="utf-8")
    assert HOSTILE_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_passing_result_says_pass(tmp_path: Path) -> None:
    result = attrs.evolve(small_result(), expectations=(ExpectationResult("fine", True, ""),))
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "PASS" in page and "FAIL" not in page


def test_empty_latencies_and_listeners_still_render(tmp_path: Path) -> None:
    result = attrs.evolve(small_result(), latencies_ms=(), delivery_ratio={}, trees=(), counters={})
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "No deliveries" in page
    assert "No listeners" in page
    assert "No tree snapshots" in page


def test_large_tree_and_many_listeners_render(tmp_path: Path) -> None:
    tree = large_tree(300)
    ratios = {f"p{i:04d}": 1.0 - (i % 17) / 100 for i in range(1, 300)}
    latencies = tuple(sorted(float(i % 250) for i in range(20_000)))
    result = attrs.evolve(
        small_result(), trees=(tree, tree), delivery_ratio=ratios, latencies_ms=latencies
    )
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert embedded_images(page) >= 4
    assert "300 members" in page
    assert page.count("p0150") == 0


def test_malformed_tree_is_drawn_whole(tmp_path: Path) -> None:
    tree = TreeSnapshot(
        time=2.0,
        label="odd",
        root="host",
        parents=(("a", "host"), ("b", "ghost"), ("c", "d"), ("d", "c"), ("a", "host")),
    )
    result = attrs.evolve(small_result(), trees=(tree,))
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "odd (t = 2.000 s): 6 members" in page


def test_math_like_and_unusual_names_render(tmp_path: Path) -> None:
    tree = TreeSnapshot(time=0.0, label="$x^", root="$host", parents=(("雪_$", "$host"),))
    result = attrs.evolve(small_result(), trees=(tree,), delivery_ratio={"$a_": 0.5, "雪": 1.0})
    assert "$x^" in write_report(result, tmp_path).read_text(encoding="utf-8")


def test_svg_ids_are_unique_across_figures() -> None:
    page = render_html(small_result())
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_report_is_deterministic(tmp_path: Path) -> None:
    first = write_report(small_result(), tmp_path / "one").read_bytes()
    second = write_report(small_result(), tmp_path / "two").read_bytes()
    assert first == second


def test_missing_matplotlib_raises_report_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ReportUnavailable, match=r"pip install 'mitalk-p2p\[report\]'"):
        write_report(small_result(), tmp_path / "never")
    assert not (tmp_path / "never").exists()
