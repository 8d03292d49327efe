"""The ``mitalk`` command line.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its
parser and binds its handler with ``set_defaults(handler=...)``, and
``_cmd_<name>(args, ctx)`` runs it and returns the exit status.  To add a
subcommand, write that pair and list the ``_add_<name>`` function in
:data:`SUBCOMMANDS`.  Handlers that need trio call ``trio.run`` themselves, so
importing this module stays cheap.

This is the only module that configures logging.  Errors the package raises on
purpose (:class:`~mitalk_p2p.core.errors.MitalkError`) and usage mistakes are
reported as ``mitalk: error: <message>`` with exit status 2; Ctrl-C exits with
status 130 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, Protocol, TextIO, TypeAlias, cast

import attrs

from . import profile
from .core.errors import MitalkError, leaf_exceptions

PROG = "mitalk"
EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_LOG_HANDLER_NAME = "mitalk-cli"
_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class UsageError(MitalkError):
    """The command line itself is wrong: unknown option, missing argument, and so on."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


@attrs.frozen
class Context:
    """What every subcommand handler receives besides its parsed arguments."""

    profile_override: Path | None
    """The ``--profile DIR`` given on the command line, if any."""
    env: Mapping[str, str]
    """The process environment."""
    out: TextIO
    """Where normal output goes."""

    def profile_dir(self) -> Path:
        """The profile directory: ``--profile DIR``, or the XDG default."""
        if self.profile_override is not None:
            return self.profile_override
        return profile.default_profile_dir(self.env)


Handler = Callable[[argparse.Namespace, Context], int]
_SubParsers: TypeAlias = "argparse._SubParsersAction[_Parser]"


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


# -- subcommands --------------------------------------------------------------------


def _add_id(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "id",
        help="show this profile's identity, creating it on first use",
        description=(
            "Show the display name, fingerprint and public key of this profile. "
            "The identity is created on first use."
        ),
        parents=[_global_options(suppress_defaults=True)],
    )
    parser.add_argument("--name", metavar="NAME", help="set the display name")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(handler=_cmd_id)


def _cmd_id(args: argparse.Namespace, ctx: Context) -> int:
    profile_dir = ctx.profile_dir()
    name: str | None = args.name
    identity, created = profile.load_or_create_identity(profile_dir, display_name=name)
    info = {
        "display_name": identity.display_name,
        "fingerprint": identity.fingerprint,
        "public_key": identity.public_key.raw.hex(),
        "profile": str(profile_dir),
        "created": created,
    }
    if args.json:
        ctx.out.write(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
        return EXIT_OK
    status = "created just now" if created else "existing"
    ctx.out.write(
        f"display name: {identity.display_name}\n"
        f"fingerprint:  {identity.fingerprint}\n"
        f"public key:   {info['public_key']}\n"
        f"profile:      {profile_dir}\n"
        f"status:       {status}\n"
    )
    return EXIT_OK


class _Walkthrough(Protocol):
    def run(self, out: TextIO) -> int: ...


def _add_demo(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a live room of 10 processes on this machine, in under a minute",
        description=(
            "Start a bootstrap node, a host and 8 listeners as separate processes on "
            "127.0.0.1 and walk through a session: joining, speaking, a raised hand, "
            "the stage, and a relay killed mid-talk.  What each listener heard is "
            "written to demo-out/.  With --walkthrough, tour a simulated room instead."
        ),
        parents=[_global_options(suppress_defaults=True)],
    )
    parser.add_argument(
        "--walkthrough",
        action="store_true",
        help="run the guided walkthrough of a simulated room (in memory, no processes)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("demo-out"), metavar="DIR", help="(demo-out)"
    )
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    if not args.walkthrough:
        from . import live_demo

        return live_demo.run(ctx.out, args.output)
    module_name = f"{__package__}.walkthrough"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise MitalkError("the demo walkthrough is not part of this installation") from None
    walkthrough = cast(_Walkthrough, module)
    return int(walkthrough.run(ctx.out))


def _add_scenario(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "scenario",
        help="run simulated multi-peer scenarios",
        description="Run a scenario file in the deterministic simulator, or list the shipped ones.",
        parents=[_global_options(suppress_defaults=True)],
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run one scenario; exit 0 only if every expectation holds",
        description=(
            "Run one scenario and judge its expectations.  Exit status: 0 when every "
            "expectation holds, 1 when one fails, 2 when the scenario can't run."
        ),
        parents=[_global_options(suppress_defaults=True)],
    )
    run.add_argument("path", metavar="PATH", help="a scenario file, or a shipped scenario's name")
    run.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    run.add_argument(
        "--report", metavar="DIR", type=Path, default=None, help="write an HTML report into DIR"
    )
    run.set_defaults(handler=_cmd_scenario_run)
    listing = actions.add_parser(
        "list",
        help="list the shipped scenarios",
        parents=[_global_options(suppress_defaults=True)],
    )
    listing.set_defaults(handler=_cmd_scenario_list)


def _cmd_scenario_run(args: argparse.Namespace, ctx: Context) -> int:
    from .sim import command

    return command.run(
        args.path,
        seed=args.seed,
        as_json=args.json,
        report=args.report,
        out=ctx.out,
        progress_to=command.wants_progress(args.json),
    )


def _cmd_scenario_list(args: argparse.Namespace, ctx: Context) -> int:
    from .sim import command

    return command.list_scenarios(ctx.out)


def _add_bootstrap(subparsers: _SubParsers) -> None:
    from bootstrap import command

    parser = subparsers.add_parser(
        "bootstrap",
        help="run a bootstrap node, where peers find rooms by name or id",
        description=command.DESCRIPTION + " The same as the mitalk-bootstrap command.",
        parents=[_global_options(suppress_defaults=True)],
    )
    command.add_options(parser)
    parser.set_defaults(handler=_cmd_bootstrap)


def _cmd_bootstrap(args: argparse.Namespace, ctx: Context) -> int:
    from bootstrap import command

    return command.run(args, ctx.out)


def _add_bench(subparsers: _SubParsers) -> None:
    from .bench import command

    command.add_bench(subparsers, [_global_options(suppress_defaults=True)])


def _room_command(name: str) -> Callable[[_SubParsers], None]:
    """A subcommand defined in :mod:`.room_cli`, given the shared options."""

    def add(subparsers: _SubParsers) -> None:
        from . import room_cli

        builder = getattr(room_cli, f"add_{name}")
        builder(subparsers, [_global_options(suppress_defaults=True)])

    return add


SUBCOMMANDS: tuple[Callable[[_SubParsers], None], ...] = (
    _add_id,
    _room_command("host"),
    _room_command("join"),
    _room_command("rooms"),
    _room_command("invite"),
    _room_command("devices"),
    _add_bootstrap,
    _add_scenario,
    _add_bench,
    _add_demo,
)
"""Every subcommand's parser builder, in the order ``--help`` lists them."""


# -- parser -------------------------------------------------------------------------


def _global_options(*, suppress_defaults: bool) -> _Parser:
    """Options accepted both before and after the subcommand name.

    The copy attached to subcommands has suppressed defaults, so an option
    given before the subcommand is not reset by the subcommand's parser.
    """
    parser = _Parser(add_help=False)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        default=argparse.SUPPRESS if suppress_defaults else None,
        help="use the profile in DIR (default: $XDG_CONFIG_HOME/mitalk or ~/.config/mitalk)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress_defaults else 0,
        help="log more (-v for info, -vv for debug)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The complete ``mitalk`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Serverless peer-to-peer audio rooms.",
        parents=[_global_options(suppress_defaults=False)],
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


# -- logging ------------------------------------------------------------------------


def _install_logging(verbosity: int, stream: TextIO) -> tuple[logging.Handler, int]:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _LOG_HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream)
    handler.set_name(_LOG_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(level)
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    return handler, previous_level


def _uninstall_logging(handler: logging.Handler, previous_level: int) -> None:
    root = logging.getLogger()
    root.removeHandler(handler)
    root.setLevel(previous_level)
    handler.close()


# -- entry point --------------------------------------------------------------------


def _report(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mitalk`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so it can be called in-process.
    """
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version end here
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
        profile_override: Path | None = args.profile
        ctx = Context(
            profile_override=profile_override.expanduser() if profile_override else None,
            env=os.environ,
            out=sys.stdout,
        )
        handler: Handler = args.handler
        log_handler, previous_level = _install_logging(args.verbose, sys.stderr)
        try:
            return handler(args, ctx)
        finally:
            _uninstall_logging(log_handler, previous_level)
    except UsageError as exc:
        sys.stderr.write(exc.usage)
        _report(str(exc))
        return EXIT_ERROR
    except MitalkError as exc:
        _report(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return EXIT_INTERRUPTED
        if all(isinstance(leaf, MitalkError | KeyboardInterrupt) for leaf in leaves):
            for leaf in leaves:
                if isinstance(leaf, MitalkError):
                    _report(str(leaf))
            return EXIT_ERROR
        raise
