"""Draw a :class:`~.results.ScenarioResult` as one self-contained HTML page.

:func:`write_report` writes ``index.html`` holding the verdict, the expectation,
metric and counter tables, and inline SVG pictures: the latency CDF, the delivery
ratio of every listener, and each media-tree snapshot.  The page loads nothing
from elsewhere.

matplotlib is an optional dependency, imported only when a report is drawn; without
it :class:`ReportUnavailable` is raised.  Figures are built with
:class:`matplotlib.figure.Figure` directly, never through pyplot, so no global
figure state is kept between calls, and the SVG output is byte-for-byte repeatable.
"""

from __future__ import annotations

import html
import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from .results import ScenarioResult, TreeSnapshot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ReportUnavailable", "render_html", "write_report"]

INSTALL_HINT = "pip install 'mitalk-p2p[report]'"

LABELLED_TREE_LIMIT = 80
"""Trees with more members than this are drawn as dots and edges only."""

LABELLED_BAR_LIMIT = 40
"""Up to this many listeners get one named bar each; more get one unlabelled step curve."""

CDF_POINTS = 512
"""The latency CDF is drawn through at most this many quantiles."""

WORST_LISTENERS_SHOWN = 10
HIGHLIGHTS_LISTED = 20

_RC_PARAMS: dict[str, Any] = {
    "svg.hashsalt": "mitalk-p2p-report",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

_ROOT_COLOUR = "#1f3b5c"
_MEMBER_COLOUR = "#4c8cbf"
_HIGHLIGHT_COLOUR = "#d62728"
_EDGE_COLOUR = "#9aa5b1"
_BAR_COLOUR = "#4c8cbf"


class ReportUnavailable(RuntimeError):
    """Drawing a report needs matplotlib, which is not installed."""


# ---------------------------------------------------------------------------
# Entry points


def write_report(result: ScenarioResult, directory: Path) -> Path:
    """Write ``index.html`` for ``result`` into ``directory`` and return its path.

    The directory is created when missing.  Raises :class:`ReportUnavailable`
    before touching the file system when matplotlib cannot be imported.
    """
    page = render_html(result)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def render_html(result: ScenarioResult) -> str:
    """The complete report page for ``result`` as one HTML string."""
    mpl = _require_matplotlib()
    with mpl.rc_context(_RC_PARAMS), _missing_glyphs_tolerated():
        figures = _FigureNumbering()
        sections = [
            _header_section(result),
            _expectations_section(result),
            _metrics_section(result),
            _latency_section(result, figures),
            _delivery_section(result, figures),
            _trees_section(result, figures),
            _counters_section(result),
        ]
    return _page(result, sections)


# ---------------------------------------------------------------------------
# matplotlib access


def _require_matplotlib() -> ModuleType:
    """Import matplotlib and its SVG backend, or explain how to install them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            import matplotlib
            import matplotlib.backends.backend_svg
            import matplotlib.collections
            import matplotlib.figure
    except ImportError as exc:
        raise ReportUnavailable(
            f"the HTML report needs matplotlib, which could not be imported ({exc}); "
            f"install it with: {INSTALL_HINT}  (or `make install`)"
        ) from exc
    return matplotlib


@contextmanager
def _missing_glyphs_tolerated() -> Iterator[None]:
    """Names the bundled font cannot show are drawn with blank glyphs, without a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        yield


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


class _FigureNumbering:
    """Hands out distinct prefixes so ids inside several inline SVGs never collide."""

    def __init__(self) -> None:
        self._count = 0

    def inline_svg(self, figure: Figure, description: str) -> str:
        self._count += 1
        return _figure_as_inline_svg(figure, f"fig{self._count}-", description)


_SVG_ID = re.compile(r'\bid="([^"]*)"')
_SVG_URL_REFERENCE = re.compile(r"url\(#([^)]*)\)")
_SVG_HREF_REFERENCE = re.compile(r'\b((?:xlink:)?href)="#([^"]*)"')
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def _figure_as_inline_svg(figure: Figure, id_prefix: str, description: str) -> str:
    """Render ``figure`` as an ``<svg>`` element fit to sit inside an HTML page."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    figure.clear()
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = _SVG_METADATA.sub("", svg)
    svg = _SVG_ID.sub(lambda m: f'id="{id_prefix}{m.group(1)}"', svg)
    svg = _SVG_URL_REFERENCE.sub(lambda m: f"url(#{id_prefix}{m.group(1)})", svg)
    svg = _SVG_HREF_REFERENCE.sub(lambda m: f'{m.group(1)}="#{id_prefix}{m.group(2)}"', svg)
    label = html.escape(description, quote=True)
    return svg.replace("<svg", f'<svg role="img" aria-label="{label}"', 1).strip()


# ---------------------------------------------------------------------------
# Page and tables


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d2733; }
h1 { margin-bottom: 0.3rem; }
.verdict { font-size: 0.9em; padding: 0.1em 0.5em; border-radius: 0.3em; color: white; }
.pass { background: #2e7d32; }
.fail { background: #c62828; }
td.pass, td.fail { color: white; font-weight: bold; text-align: center; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #c8d0d8; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #eef2f6; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; word-break: break-all; }
figure { margin: 0.5rem 0 1.5rem; }
figure svg { width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #4a5968; }
.note { font-style: italic; color: #4a5968; }
.pairs { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1rem; }
"""

_CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _page(result: ScenarioResult, sections: Iterable[str]) -> str:
    title = _escape(f"mitalk-p2p scenario report: {result.scenario}")
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _verdict(ok: bool) -> tuple[str, str]:
    """The word and CSS class for a pass or a failure."""
    return ("PASS", "pass") if ok else ("FAIL", "fail")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; ``rows`` hold cells already rendered as ``<td>`` elements."""
    head = "".join(f"<th>{_escape(h)}</th>" for h in headers)
    body = "\n".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _text_cell(value: object) -> str:
    return f"<td>{_escape(value)}</td>"


def _number_cell(value: object) -> str:
    return f'<td class="number">{_escape(_format_value(value))}</td>'


def _format_value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _header_section(result: ScenarioResult) -> str:
    word, css = _verdict(result.ok)
    facts = [
        ("seed", str(result.seed)),
        ("peers", str(result.peers)),
        ("virtual seconds", f"{result.virtual_s:.3f}"),
        ("wall seconds", f"{result.wall_s:.3f}"),
    ]
    rows = [[_text_cell(name), _number_cell(value)] for name, value in facts]
    rows.append(
        [_text_cell("trace digest"), f"<td><code>{_escape(result.trace_digest)}</code></td>"]
    )
    rows.append([_text_cell("overall"), f'<td class="{css}">{word}</td>'])
    return (
        "<header>\n"
        f'<h1>{_escape(result.scenario)} <span class="verdict {css}">{word}</span></h1>\n'
        f"<p>{_escape(result.description)}</p>\n"
        f"{_table(['fact', 'value'], rows)}\n"
        "</header>"
    )


def _expectations_section(result: ScenarioResult) -> str:
    if not result.expectations:
        return '<section>\n<h2>Expectations</h2>\n<p class="note">No expectations.</p>\n</section>'
    rows = []
    for expectation in result.expectations:
        word, css = _verdict(expectation.ok)
        rows.append(
            [
                _text_cell(expectation.name),
                f'<td class="{css}">{word}</td>',
                _text_cell(expectation.detail),
            ]
        )
    return f"<section>\n<h2>Expectations</h2>\n{_table(['name', 'ok', 'detail'], rows)}\n</section>"


def _metric_rows(result: ScenarioResult) -> list[tuple[str, object]]:
    """``result.metrics()`` flattened to dotted names, followed by sample counts."""
    rows = list(_flatten(result.metrics()))
    rows += [
        ("listeners", len(result.delivery_ratio)),
        ("deliveries", len(result.latencies_ms)),
        ("tree repairs", len(result.tree_repair_ms)),
        ("host takeovers", len(result.host_takeover_ms)),
    ]
    return rows


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _metrics_section(result: ScenarioResult) -> str:
    rows = [[_text_cell(name), _number_cell(value)] for name, value in _metric_rows(result)]
    return f"<section>\n<h2>Metrics</h2>\n{_table(['metric', 'value'], rows)}\n</section>"


def _counters_section(result: ScenarioResult) -> str:
    if not result.counters:
        return '<section>\n<h2>Counters</h2>\n<p class="note">No counters.</p>\n</section>'
    rows = [
        [_text_cell(name), _number_cell(value)] for name, value in sorted(result.counters.items())
    ]
    return f"<section>\n<h2>Counters</h2>\n{_table(['counter', 'value'], rows)}\n</section>"


def _figure_block(svg: str, caption: str) -> str:
    return f"<figure>\n{svg}\n<figcaption>{_escape(caption)}</figcaption>\n</figure>"


def _note(text: str) -> str:
    return f'<p class="note">{_escape(text)}</p>'


# ---------------------------------------------------------------------------
# Latency CDF


def _latency_section(result: ScenarioResult, figures: _FigureNumbering) -> str:
    latencies = result.latencies_ms
    if not latencies:
        content = _note("No deliveries, so there is no latency distribution to draw.")
    else:
        figure = _latency_cdf_figure(latencies, result.latency_percentiles())
        svg = figures.inline_svg(figure, "latency CDF")
        content = _figure_block(svg, f"Latency CDF over {len(latencies)} deliveries.")
    return f"<section>\n<h2>Latency</h2>\n{content}\n</section>"


def _cdf_points(sorted_values: Sequence[float], limit: int) -> tuple[list[float], list[float]]:
    """At most ``limit`` + 1 (value, cumulative fraction) points of the empirical CDF."""
    count = len(sorted_values)
    step_count = min(count, limit)
    indices = sorted({math.ceil((k + 1) * count / step_count) - 1 for k in range(step_count)})
    xs = [sorted_values[0]] + [sorted_values[i] for i in indices]
    ys = [0.0] + [(i + 1) / count for i in indices]
    return xs, ys


def _latency_cdf_figure(
    latencies: Sequence[float], percentiles: Mapping[str, float | None]
) -> Figure:
    figure = _new_figure(8.0, 3.6)
    axes = figure.add_subplot()
    xs, ys = _cdf_points(latencies, CDF_POINTS)
    axes.step(xs, ys, where="post", color=_BAR_COLOUR, linewidth=1.5)
    for (name, value), style in zip(percentiles.items(), (":", "--", "-."), strict=False):
        if value is not None:
            axes.axvline(
                value, color="#555555", linestyle=style, linewidth=1, label=f"{name} = {value:g} ms"
            )
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("fraction of deliveries")
    axes.set_ylim(0.0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    return figure


# ---------------------------------------------------------------------------
# Delivery ratio per listener


def _delivery_section(result: ScenarioResult, figures: _FigureNumbering) -> str:
    ranked = sorted(result.delivery_ratio.items(), key=lambda item: (item[1], item[0]))
    if not ranked:
        content = _note("No listeners.")
    else:
        figure = _delivery_figure(ranked)
        svg = figures.inline_svg(figure, "delivery ratio per listener")
        caption = f"Delivery ratio of each of {len(ranked)} listeners, lowest first."
        content = _figure_block(svg, caption) + "\n" + _worst_listeners_table(ranked)
    return f"<section>\n<h2>Delivery ratio per listener</h2>\n{content}\n</section>"


def _delivery_figure(ranked: Sequence[tuple[str, float]]) -> Figure:
    figure = _new_figure(8.0, 3.6)
    axes = figure.add_subplot()
    ratios = [ratio for _, ratio in ranked]
    if len(ranked) <= LABELLED_BAR_LIMIT:
        _draw_named_bars(axes, ranked)
    else:
        _draw_ranked_steps(axes, ratios)
    mean = sum(ratios) / len(ratios)
    axes.axhline(mean, color="#555555", linestyle="--", linewidth=1)
    axes.set_title(f"min {ratios[0]:.4f}, mean {mean:.4f} (dashed)", loc="left", fontsize=9)
    axes.set_ylim(0.0, max(1.05, max(ratios) * 1.05))
    axes.set_ylabel("delivery ratio")
    axes.grid(True, axis="y", alpha=0.3)
    return figure


def _draw_named_bars(axes: Axes, ranked: Sequence[tuple[str, float]]) -> None:
    positions = list(range(len(ranked)))
    axes.bar(positions, [ratio for _, ratio in ranked], color=_BAR_COLOUR, width=0.8)
    axes.set_xticks(
        positions,
        [name for name, _ in ranked],
        rotation=90,
        fontsize=7,
        parse_math=False,
    )
    axes.set_xlim(-0.6, len(ranked) - 0.4)


def _draw_ranked_steps(axes: Axes, ratios: Sequence[float]) -> None:
    axes.stairs(ratios, range(len(ratios) + 1), fill=True, color=_BAR_COLOUR)
    axes.set_xlim(0, len(ratios))
    axes.set_xlabel(f"listeners ranked by delivery ratio (n = {len(ratios)})")


def _worst_listeners_table(ranked: Sequence[tuple[str, float]]) -> str:
    shown = ranked[:WORST_LISTENERS_SHOWN]
    rows = [[_text_cell(name), _number_cell(round(ratio, 6))] for name, ratio in shown]
    heading = f"<h3>Lowest {len(shown)} delivery ratios</h3>"
    return f"{heading}\n{_table(['listener', 'delivery ratio'], rows)}"


# ---------------------------------------------------------------------------
# Media trees


class _TreeLayout(NamedTuple):
    positions: dict[str, tuple[float, float]]
    """Per member: (x, -depth)."""
    edges: list[tuple[str, str]]
    """(parent, child) pairs as drawn."""
    depth: int
    leaves: int
    widest_layer: int


def _trees_section(result: ScenarioResult, figures: _FigureNumbering) -> str:
    if not result.trees:
        return '<section>\n<h2>Media trees</h2>\n<p class="note">No tree snapshots.</p>\n</section>'
    blocks = "\n".join(_tree_block(snapshot, figures) for snapshot in result.trees)
    return f'<section>\n<h2>Media trees</h2>\n<div class="pairs">\n{blocks}\n</div>\n</section>'


def _tree_block(snapshot: TreeSnapshot, figures: _FigureNumbering) -> str:
    layout = _layout_tree(snapshot)
    highlighted = set(snapshot.highlight)
    figure = _tree_figure(snapshot, layout, highlighted)
    svg = figures.inline_svg(figure, f"media tree: {snapshot.label}")
    return _figure_block(svg, _tree_caption(snapshot, layout))


def _tree_caption(snapshot: TreeSnapshot, layout: _TreeLayout) -> str:
    caption = (
        f"{snapshot.label} (t = {snapshot.time:.3f} s): {len(layout.positions)} members, "
        f"depth {layout.depth}, root {snapshot.root}."
    )
    if snapshot.highlight:
        listed = ", ".join(snapshot.highlight[:HIGHLIGHTS_LISTED])
        more = len(snapshot.highlight) - HIGHLIGHTS_LISTED
        suffix = f" and {more} more" if more > 0 else ""
        caption += f" Highlighted: {listed}{suffix}."
    return caption


def _children_by_parent(snapshot: TreeSnapshot) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for child, parent in snapshot.parents:
        if child != parent:
            children.setdefault(parent, []).append(child)
    for names in children.values():
        names.sort()
    return children


def _walk_order(snapshot: TreeSnapshot) -> list[tuple[str, int, str | None]]:
    """Every member once, depth first, as (name, depth, parent drawn above it).

    The walk starts at the root; parents named by nobody and members caught in
    cycles start further walks, so a malformed snapshot is still drawn whole.
    """
    children = _children_by_parent(snapshot)
    child_names = {child for child, _ in snapshot.parents}
    every_name = child_names | set(children) | {snapshot.root}
    dangling_parents = sorted(set(children) - child_names - {snapshot.root})
    starts = [snapshot.root, *dangling_parents, *sorted(every_name)]
    seen: set[str] = set()
    order: list[tuple[str, int, str | None]] = []
    for start in starts:
        stack: list[tuple[str, int, str | None]] = [(start, 0, None)]
        while stack:
            name, depth, parent = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            order.append((name, depth, parent))
            stack.extend((child, depth + 1, name) for child in reversed(children.get(name, [])))
    return order


def _layout_tree(snapshot: TreeSnapshot) -> _TreeLayout:
    """Leaves left to right in walk order, each parent centred over its children."""
    order = _walk_order(snapshot)
    drawn_children: dict[str, list[str]] = {}
    for name, _, parent in order:
        if parent is not None:
            drawn_children.setdefault(parent, []).append(name)
    xs: dict[str, float] = {}
    leaves = 0
    for name, _, _ in order:
        if name not in drawn_children:
            xs[name] = float(leaves)
            leaves += 1
    for name, _, _ in reversed(order):
        kids = drawn_children.get(name)
        if kids:
            xs[name] = (xs[kids[0]] + xs[kids[-1]]) / 2
    layer_sizes: dict[int, int] = {}
    for _, depth, _ in order:
        layer_sizes[depth] = layer_sizes.get(depth, 0) + 1
    return _TreeLayout(
        positions={name: (xs[name], -float(depth)) for name, depth, _ in order},
        edges=[(parent, name) for name, _, parent in order if parent is not None],
        depth=max(layer_sizes),
        leaves=leaves,
        widest_layer=max(layer_sizes.values()),
    )


def _tree_figure(snapshot: TreeSnapshot, layout: _TreeLayout, highlighted: set[str]) -> Figure:
    from matplotlib.collections import LineCollection

    labelled = len(layout.positions) <= LABELLED_TREE_LIMIT
    width = min(14.0, max(5.0, 0.16 * layout.leaves + 1.0))
    height = min(9.0, max(2.5, 0.8 * (layout.depth + 1) + (1.0 if labelled else 0.3)))
    figure = _new_figure(width, height)
    axes = figure.add_subplot()
    axes.set_axis_off()

    positions = layout.positions
    segments = [(positions[parent], positions[child]) for parent, child in layout.edges]
    edge_colours = [
        _HIGHLIGHT_COLOUR if child in highlighted else _EDGE_COLOUR for _, child in layout.edges
    ]
    axes.add_collection(LineCollection(segments, colors=edge_colours, linewidths=0.8, zorder=1))

    plain = [name for name in positions if name not in highlighted]
    marked = [name for name in positions if name in highlighted]
    dot_size = 30.0 if labelled else 6.0
    _draw_nodes(axes, positions, plain, dot_size, [_node_colour(n, snapshot.root) for n in plain])
    _draw_nodes(axes, positions, marked, dot_size * 3, _HIGHLIGHT_COLOUR)
    if labelled:
        _label_tree_nodes(axes, positions, rotate=layout.widest_layer > 12)
    axes.set_xlim(-1.0, max(1.0, layout.leaves))
    axes.set_ylim(-layout.depth - (0.9 if labelled else 0.3), 0.4)
    return figure


def _node_colour(name: str, root: str) -> str:
    return _ROOT_COLOUR if name == root else _MEMBER_COLOUR


def _draw_nodes(
    axes: Axes,
    positions: Mapping[str, tuple[float, float]],
    names: Sequence[str],
    size: float,
    colours: str | Sequence[str],
) -> None:
    if names:
        axes.scatter(
            [positions[name][0] for name in names],
            [positions[name][1] for name in names],
            s=size,
            c=colours,
            zorder=2,
            linewidths=0,
        )


def _label_tree_nodes(
    axes: Axes, positions: Mapping[str, tuple[float, float]], *, rotate: bool
) -> None:
    for name, (x, y) in positions.items():
        axes.text(
            x,
            y - 0.12,
            name,
            fontsize=6,
            ha="center",
            va="top",
            rotation=90 if rotate else 0,
            parse_math=False,
            zorder=3,
        )
