"""``mitalk scenario``: run a scenario file, or list the shipped ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from ..core.crypto_memo import sharing_crypto_results
from ..core.errors import MitalkError
from .results import ScenarioResult
from .runner import Progress, run_scenario
from .scenario import Scenario, ScenarioError, load_scenario

SHIPPED = Path(__file__).resolve().parents[2] / "scenarios"
EXIT_PASSED, EXIT_FAILED = 0, 1
BAR_WIDTH = 30


def shipped_scenarios() -> list[Path]:
    return sorted(SHIPPED.glob("*.toml")) if SHIPPED.is_dir() else []


def resolve(spec: str) -> Path:
    """A path, or the name of a shipped scenario (``small_room``)."""
    path = Path(spec)
    if path.exists() or path.suffix == ".toml" or "/" in spec:
        return path
    candidate = SHIPPED / f"{spec}.toml"
    if candidate.exists():
        return candidate
    names = ", ".join(p.stem for p in shipped_scenarios()) or "none"
    raise MitalkError(f"no scenario file {spec!r} (shipped scenarios: {names})")


def load(spec: str) -> Scenario:
    try:
        return load_scenario(resolve(spec))
    except ScenarioError as problem:
        raise MitalkError(str(problem)) from None


def list_scenarios(out: TextIO) -> int:
    rows = []
    for path in shipped_scenarios():
        try:
            scenario = load_scenario(path)
            rows.append((path.stem, scenario.description, len(scenario.peers)))
        except ScenarioError as problem:
            rows.append((path.stem, f"(broken: {problem.reason})", 0))
    width = max((len(name) for name, _, _ in rows), default=0)
    for name, description, peers in rows:
        print(f"{name:<{width}}  {peers:>5} peers  {description}", file=out)
    return EXIT_PASSED


def run(
    spec: str,
    *,
    seed: int | None,
    as_json: bool,
    report: Path | None,
    out: TextIO,
    progress_to: TextIO | None = None,
) -> int:
    scenario = load(spec)
    progress = _bar(progress_to, scenario.name) if progress_to is not None else None
    with sharing_crypto_results():
        result, _sim = run_scenario(scenario, seed=seed, progress=progress)
    if progress_to is not None:
        progress_to.write("\r" + " " * (BAR_WIDTH + 40) + "\r")
        progress_to.flush()
    if report is not None:
        from .report import ReportUnavailable, write_report

        try:
            written = write_report(result, report)
        except ReportUnavailable as problem:
            raise MitalkError(str(problem)) from None
        except OSError as problem:
            raise MitalkError(f"can't write the report to {report}: {problem}") from None
    if as_json:
        print(json.dumps(result.to_json(), indent=2), file=out)
    else:
        print_table(result, out)
        if report is not None:
            print(f"report: {written}", file=out)
    return EXIT_PASSED if result.ok else EXIT_FAILED


def wants_progress(as_json: bool) -> TextIO | None:
    """A progress bar on the terminal, and none when output is piped."""
    if sys.stderr.isatty() and sys.stdout.isatty() and not as_json:
        return sys.stderr
    return None


def _bar(stream: TextIO, name: str) -> Progress:
    def show(done: float, total: float) -> None:
        filled = round(BAR_WIDTH * done / total) if total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        stream.write(f"\r{name} [{bar}] {done:6.1f}/{total:.0f} s virtual")
        stream.flush()

    return show


def print_table(result: ScenarioResult, out: TextIO) -> None:
    verdict = "PASSED" if result.ok else "FAILED"
    print(
        f"{result.scenario}: {verdict}  (seed {result.seed}, {result.peers} peers, "
        f"{result.virtual_s:.1f} s virtual in {result.wall_s:.1f} s wall)",
        file=out,
    )
    print(f"trace digest {result.trace_digest}", file=out)
    print("", file=out)
    width = max((len(e.name) for e in result.expectations), default=10)
    for e in result.expectations:
        mark = "ok  " if e.ok else "FAIL"
        print(f"  {mark}  {e.name:<{width}}  {e.detail}", file=out)
    metrics = result.metrics()
    print("", file=out)
    ratio = metrics["delivery_ratio"]
    latency = metrics["latency_ms"]
    rows = [
        ("delivery ratio", f"min {_show(ratio['min'])}, mean {_show(ratio['mean'])}"),
        (
            "latency",
            f"p50 {_show(latency['p50'])} ms, p95 {_show(latency['p95'])} ms, "
            f"p99 {_show(latency['p99'])} ms",
        ),
        ("tree repair", f"max {_show(metrics['tree_repair_ms']['max'])} ms"),
        ("host takeover", f"max {_show(metrics['host_takeover_ms']['max'])} ms"),
    ]
    if metrics["concealed_ratio"] is not None:
        rows.append(("concealed", f"{metrics['concealed_ratio'] * 100:.2f} % of samples"))
    counters = result.counters
    rows.append(
        (
            "datagrams",
            f"{counters.get('datagrams_sent', 0)} sent, {counters.get('datagrams_lost', 0)} lost, "
            f"{counters.get('datagrams_burst_lost', 0)} lost in bursts, "
            f"{counters.get('datagrams_queue_dropped', 0)} dropped by full uplinks",
        )
    )
    for label, value in rows:
        print(f"  {label:<15} {value}", file=out)


def _show(value: object) -> str:
    return "-" if value is None else str(value)
