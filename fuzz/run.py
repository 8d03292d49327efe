"""Run one fuzz target under atheris (libFuzzer), or write its seed corpus.

    python -m fuzz.run --list                    the target names, one per line
    python -m fuzz.run --describe                names and what each one fuzzes
    python -m fuzz.run --seed DIR TARGET         write TARGET's seeds into DIR
    python -m fuzz.run TARGET [LIBFUZZER ARGS]   fuzz, e.g. CORPUS_DIR -max_total_time=60

Fuzzing writes the seeds into the first corpus directory given, then hands the
rest of the arguments to libFuzzer: ``-max_total_time=S``, ``-timeout=S``,
``-jobs=N -workers=N``, ``-merge=1``, ``-artifact_prefix=DIR/``, or a crash file to
replay it.  A check that raises anything but its parser's documented error is a
crash: libFuzzer prints the traceback, writes the input to ``crash-<sha1>`` and
exits non-zero.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path

from . import targets


def write_seeds(target: targets.Target, directory: Path) -> int:
    """Put each seed in ``directory`` under a name derived from its bytes; return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    inputs = target.seed_inputs()
    for data in inputs:
        path = directory / f"seed-{hashlib.sha1(data).hexdigest()}"
        if not path.exists():
            path.write_bytes(data)
    return len(inputs)


DICTIONARIES = Path(__file__).resolve().parent / "dicts"
TARGET_ENV = "MITALK_FUZZ_TARGET"
"""Names the target for the processes libFuzzer starts itself (``-jobs``, ``-fork``,
``-merge``): it runs them as ``argv[0]`` plus flags, without the target name."""


def fuzz(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    root = str(Path(__file__).resolve().parents[1])
    os.environ[TARGET_ENV] = name
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    # libFuzzer starts its child processes through the shell with argv[0] in front.
    libfuzzer_args = [f"{shlex.quote(sys.executable)} -m fuzz.run", *libfuzzer_args[1:]]

    # Instrument the parsers for coverage: they are imported by the target's module.
    with atheris.instrument_imports(include=["mitalk_p2p", "bootstrap", "fuzz"]):
        target = targets.load(name)
    corpus = [arg for arg in libfuzzer_args[1:] if not arg.startswith("-")]
    if corpus and Path(corpus[0]).is_dir():
        write_seeds(target, Path(corpus[0]))
    if target.dictionary and not any(arg.startswith("-dict=") for arg in libfuzzer_args):
        libfuzzer_args.append(f"-dict={DICTIONARIES / target.dictionary}")
    atheris.Setup(libfuzzer_args, target.run)
    atheris.Fuzz()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    if argv[1] == "--list":
        print("\n".join(targets.names()))
        return 0
    if argv[1] == "--describe":
        for name in targets.names():
            print(f"{name:<16} {targets.load(name).description}")
        return 0
    if argv[1] == "--seed":
        if len(argv) != 4:
            print("usage: python -m fuzz.run --seed DIR TARGET", file=sys.stderr)
            return 2
        target = targets.load(argv[3])
        print(f"{write_seeds(target, Path(argv[2]))} seeds for {target.name} in {argv[2]}")
        return 0
    child_of = os.environ.get(TARGET_ENV)
    if argv[1] not in targets.names() and child_of:
        fuzz(child_of, argv)  # a process libFuzzer started for -jobs, -fork or -merge
        return 0
    if argv[1] not in targets.names():  # checked without importing: see fuzz()
        print(f"fuzz: no target {argv[1]!r}; targets: {', '.join(targets.names())}",
              file=sys.stderr)
        return 2
    fuzz(argv[1], [argv[0], *argv[2:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
