"""The ``trc`` command line: ``trc generate``, ``trc train``, ``trc analyze``, ``trc sweep``.

Each subcommand maps its flags onto the library's functions and configs.  Bad
input ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from trc.evaluation.analyze import add_analyze_command
from trc.data.generate import add_generate_command
from trc.errors import TRCError
from trc.sweep.command import add_sweep_command
from trc.training.train import add_train_command


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``trc`` parser with its subcommands."""
    parser = _Parser(prog="trc", description="Tiny Recursive Control.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_generate_command, add_train_command, add_analyze_command, add_sweep_command):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TRCError as e:
        print(f"trc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
