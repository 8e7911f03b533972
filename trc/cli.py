"""The ``trc`` command line: ``trc generate``, ``trc train``, ``trc analyze``, ``trc sweep``.

Each subcommand maps its flags onto the library's functions and configs, and
every flag's ``--help`` shows its default.  Bad input (a flag, a file, a
device, an output that cannot be written) ends with one line on stderr and exit
status 2, never a traceback, and is caught before the work starts; results are
written before anything is printed, and a closed pipe (``trc ... | head -1``)
ends quietly with status 1, as Python's documentation advises for SIGPIPE.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Iterator

from trc.errors import TRCError
from trc.io import check_device, check_seed


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every optional flag's help ends with its default, unless the help already states it.

    Switches read ``(default: off)``; flags whose default is worked out at run time say so
    in their own help (``(default: the dataset's)``).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("(default" in text or "%(default)" in text or action.required or not action.option_strings
                or action.default is argparse.SUPPRESS
                or (action.default is None and "default " in text)):   # "...; default 1 (4 for pendulum))"
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if action.default else 'off'})"
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2, and whose help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``trc`` parser with its subcommands."""
    from trc.data.generate import add_generate_command
    from trc.evaluation.analyze import add_analyze_command
    from trc.sweep.command import add_sweep_command
    from trc.training.train import add_train_command

    parser = _Parser(prog="trc", description="Tiny Recursive Control.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_generate_command, add_train_command, add_analyze_command, add_sweep_command):
        add(sub)
    for command in sub.choices.values():
        command.add_argument("--threads", type=threads_arg, default=1,
                             help="torch's intra-op threads while the command runs; 0 keeps torch's own default "
                                  "(one per core). One by default: trc's operations are small, so on an idle 2-core "
                                  "CPU two threads saved at most 12 %% of a training's wall time (Van der Pol's ran "
                                  "10 %% slower) for 65-100 %% more CPU, and with other work on the cores a "
                                  "training took 2.2x as long; and the thread count changes the rounding, so one thread gives a "
                                  "seed the same numbers whatever the number of cores")
    return parser


def seed_arg(text: str) -> int:
    """An argparse type: a seed, an integer in ``[0, 2**63 - 1]``."""
    try:
        return check_seed(int(text))
    except (ValueError, TRCError):
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63 - 1], got {text!r}") from None


MAX_THREADS = 1024   # beyond any machine's cores; more threads than the system allows crash torch


def threads_arg(text: str) -> int:
    """An argparse type: a number of threads, an integer >= 0 (0: torch's default)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (0: torch's default), got {text!r}")
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 closed pipe or a sweep worker whose trials failed,
    2 bad input, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
        try:
            if getattr(args, "device", None) is not None:  # every command that takes --device: at the door
                try:
                    check_device(args.device)
                except TRCError as e:
                    raise TRCError(f"--device: {e}") from None
            with _threads(getattr(args, "threads", 0)):
                status = int(args.func(args) or 0)
        except TRCError as e:
            print(f"trc {args.command}: error: {e}", file=sys.stderr)
            return 2
        except (OSError, MemoryError) as e:
            if isinstance(e, BrokenPipeError):
                raise
            print(f"trc {args.command}: error: {_os_message(e)}", file=sys.stderr)
            return 2
        except RuntimeError as e:
            if not _out_of_memory(e):
                raise
            print(f"trc {args.command}: error: out of memory ({str(e).splitlines()[0][:200]})", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"trc {args.command}: interrupted", file=sys.stderr)
            return 130
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return 1


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads inside the block (0: as it is), then restore the caller's
    number: ``main`` may run inside another program (a notebook's kernel, a test)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _out_of_memory(e: RuntimeError) -> bool:
    """Whether torch's error ``e`` is an allocation that failed (torch raises no MemoryError for its tensors)."""
    text = str(e)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _os_message(e: BaseException) -> str:
    """One sentence for an operating-system refusal (disk full, permission, out of memory)."""
    if isinstance(e, MemoryError):
        return "out of memory"
    where = f": {e.filename!r}" if getattr(e, "filename", None) else ""
    return f"{e.strerror or e}{where}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not raise again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stdout (tests, notebooks) has no descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def run() -> None:
    """The ``trc`` console command: :func:`main`, then exit with its status.

    Once the command is done, Ctrl-C is ignored: the interpreter's shutdown runs exit handlers
    (torch's among them), and an interrupt inside one prints a traceback, not a sentence, for a
    command that has already finished and written its files."""
    try:
        status = main()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
